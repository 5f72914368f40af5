/* test_klp_callbacks_mod.c - the upstream selftests' idle target module: it
 * only says when it is loaded and removed. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int test_klp_callbacks_mod_init(void)
{
	pr_info("%s\n", __func__);
	return 0;
}

static void test_klp_callbacks_mod_exit(void)
{
	pr_info("%s\n", __func__);
}

module_init(test_klp_callbacks_mod_init);
module_exit(test_klp_callbacks_mod_exit);
MODULE_LICENSE("GPL");
