/* capability.c - capabilities, as kernel/capability.c layers them:
 * capable() -> ns_capable() -> security_capable(). */
#include "kernel.h"

struct user_namespace init_user_ns = { 0 };

static int cap_capable(const struct cred *cred, struct user_namespace *ns, int cap)
{
	return (cred->cap_effective & (1UL << cap)) ? 0 : -EPERM;
}

int security_capable(const struct cred *cred, struct user_namespace *ns, int cap)
{
	return cap_capable(cred, ns, cap);
}

bool ns_capable(struct user_namespace *ns, int cap)
{
	if (security_capable(current->cred, ns, cap) == 0)
		return true;
	return false;
}

/* The function the kGraft article's sample patch replaces. */
bool capable(int cap)
{
	return ns_capable(&init_user_ns, cap);
}
