/* ulib.c - user-space helpers and the signal return trampoline. */
#include "ulib.h"

asm(".globl __restore_rt\n"
    "__restore_rt:\n"
    "\tmovl $" "10" ", %eax\n"	/* __NR_rt_sigreturn */
    "\tsyscall\n"
    "\thlt\n");

size_t ustrlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int ustreq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

char *ustpcpy(char *d, const char *s)
{
	while ((*d = *s++))
		d++;
	return d;
}

char *ultoa(char *d, long v)
{
	char tmp[24];
	int n = 0;
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;

	if (v < 0)
		*d++ = '-';
	do {
		tmp[n++] = '0' + u % 10;
		u /= 10;
	} while (u);
	while (n)
		*d++ = tmp[--n];
	*d = 0;
	return d;
}

void uputs(const char *s)
{
	write(1, s, ustrlen(s));
}

/* Plain computation between system calls, so that user mode takes its share
 * of every slice as it would in a real program. */
unsigned long user_work(unsigned long seed, int rounds)
{
	volatile unsigned long h = seed;
	int i;

	for (i = 0; i < rounds; i++)
		h = h * 6364136223846793005UL + 1442695040888963407UL;
	return h;
}
