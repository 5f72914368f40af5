/* bad.h - what the bad patches share: a correct replacement of capable()
 * (so that only the thing each patch gets wrong is wrong) and a way to hide
 * a constant from gcc, which would otherwise fold a NULL dereference into a
 * trap of its own choosing. */
#ifndef _LAB_BAD_H
#define _LAB_BAD_H

#include "kernel.h"
#include "kgraft.h"

#define OPAQUE(x) ({ __typeof__(x) __x = (x); asm volatile("" : "+r"(__x)); __x; })

static bool bad_good_capable(int cap)
{
	return ns_capable(&init_user_ns, cap);
}

#define BAD_PATCH(_name) \
	static struct kgr_patch patch = { \
		.name = _name, \
		.owner = THIS_MODULE, \
		.patches = { \
			KGR_PATCH(capable, bad_good_capable, true), \
			KGR_PATCH_END \
		} \
	}

#endif
