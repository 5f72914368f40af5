/* The init hands over a kgr_patch that lived in a stack frame which has returned.  Linux: the core reads whatever the stack holds now: garbage names, an oops or a patch of the wrong thing. */
#include "bad.h"

static __noinline struct kgr_patch *bad_make_patch(void)
{
	struct kgr_patch p = {
		.name = "bad_patch_dangling",
		.patches = {
			KGR_PATCH(capable, bad_good_capable, true),
			KGR_PATCH_END
		}
	};

	return OPAQUE(&p);
}

static __noinline void bad_scribble(void)
{
	volatile unsigned long junk[64];
	int i;

	for (i = 0; i < 64; i++)
		junk[i] = 0x4141414141414141UL + i;
	(void)junk[0];
}

static int __init bad_init(void)
{
	struct kgr_patch *p = bad_make_patch();

	bad_scribble();
	return kgr_patch_kernel(p);
}
module_init(bad_init);
