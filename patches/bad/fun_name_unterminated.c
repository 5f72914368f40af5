/* A kgr_patch_fun whose function name is 300 bytes with no NUL.  Linux: kallsyms_lookup_name() reads past the array and finds no such symbol: -ENOENT with abort_if_missing. */
#include "bad.h"

static char bad_fname[300] = { [0 ... 299] = 'c' };

static struct kgr_patch patch = {
	.name = "bad_fun_name_unterminated",
	.owner = THIS_MODULE,
	.patches = {
		{ .name = bad_fname, .new_fun = bad_good_capable, .abort_if_missing = 1 },
		KGR_PATCH_END
	}
};

static char bad_tail[64] = { [0 ... 63] = 'd' };

static int __init bad_init(void)
{
	bad_tail[0] = bad_fname[0];
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
