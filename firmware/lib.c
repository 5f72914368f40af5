/* lib.c - string helpers, vsnprintf, and user-copy helpers. */
#include "kernel.h"

void *memcpy(void *d, const void *s, size_t n)
{
	char *dp = d;
	const char *sp = s;

	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memset(void *d, int c, size_t n)
{
	char *dp = d;

	while (n--)
		*dp++ = c;
	return d;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	while (n && *a && *a == *b)
		a++, b++, n--;
	return n ? (unsigned char)*a - (unsigned char)*b : 0;
}

char *strscpy(char *d, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n && s[i]; i++)
		d[i] = s[i];
	if (n)
		d[i] = 0;
	return d;
}

unsigned long simple_strtoul(const char *s, const char **end)
{
	unsigned long v = 0;

	while (*s >= '0' && *s <= '9')
		v = v * 10 + (*s++ - '0');
	if (end)
		*end = s;
	return v;
}

#define PUTC(p, end, c) do { if ((p) < (end)) *(p) = (c); (p)++; } while (0)

static char *put_num(char *p, char *end, unsigned long v, int base, int width,
		     char pad, bool neg)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	while (width-- > n)
		PUTC(p, end, pad);
	while (n--)
		PUTC(p, end, tmp[n]);
	return p;
}

/* %s %c %d %i %u %x %p %% with l/ll/z, a width and 0 padding; %pGg
 * prints a gfp_t by name, as Linux's vsprintf does. */
int vsnprintf(char *buf, size_t size, const char *fmt, __builtin_va_list ap)
{
	char *p = buf, *end = buf + (size ? size - 1 : 0);

	for (; *fmt; fmt++) {
		int width = 0, lng = 0;
		char pad = ' ';

		if (*fmt != '%') {
			PUTC(p, end, *fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = __builtin_va_arg(ap, const char *);
			int len;
			if (!s)
				s = "(null)";
			len = strlen(s);
			while (width-- > len)
				PUTC(p, end, ' ');
			while (*s)
				PUTC(p, end, *s++);
			break;
		}
		case 'c':
			PUTC(p, end, (char)__builtin_va_arg(ap, int));
			break;
		case 'd':
		case 'i': {
			long v = lng ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int);
			p = put_num(p, end, v < 0 ? -(unsigned long)v : (unsigned long)v, 10,
				    width, pad, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long v = lng ? __builtin_va_arg(ap, unsigned long)
					      : __builtin_va_arg(ap, unsigned int);
			p = put_num(p, end, v, *fmt == 'u' ? 10 : 16, width, pad, false);
			break;
		}
		case 'p':
			if (fmt[1] == 'G' && fmt[2] == 'g') {
				const unsigned int *gfp = __builtin_va_arg(ap, const unsigned int *);
				const char *s = *gfp ? "GFP_ATOMIC" : "GFP_KERNEL";
				while (*s)
					PUTC(p, end, *s++);
				fmt += 2;
				break;
			}
			PUTC(p, end, '0');
			PUTC(p, end, 'x');
			p = put_num(p, end, (unsigned long)__builtin_va_arg(ap, void *), 16, 0, ' ', false);
			break;
		case '%':
			PUTC(p, end, '%');
			break;
		default:
			PUTC(p, end, '?');
		}
	}
	if (size)
		*(p < end ? p : end) = 0;
	return p - buf;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	__builtin_va_list ap;
	int n;

	__builtin_va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	__builtin_va_end(ap);
	return n;
}

/* No MMU: user memory is the user region of the one address space, and a
 * copy is valid when it stays inside it. */
extern char __user_start[], __user_end[];

bool access_ok(const void *p, size_t len)
{
	unsigned long a = (unsigned long)p;

	return a >= (unsigned long)__user_start && a + len >= a &&
	       a + len <= USER_STACKS_TOP && len < 0x100000;
}

long copy_to_user(void *to, const void *from, size_t n)
{
	if (!access_ok(to, n))
		return n;
	memcpy(to, from, n);
	return 0;
}

long copy_from_user(void *to, const void *from, size_t n)
{
	if (!access_ok(from, n))
		return n;
	memcpy(to, from, n);
	return 0;
}

/* sprintf(): a sysfs show() writes into a page-sized buffer */
int sprintf(char *buf, const char *fmt, ...)
{
	__builtin_va_list ap;
	int n;

	__builtin_va_start(ap, fmt);
	n = vsnprintf(buf, 4096, fmt, ap);
	__builtin_va_end(ap);
	return n;
}
