/* printk.c - printk into the kernel's log ring buffer; each finished line is
 * also handed to the lab's console (HC_CONSOLE), the way a serial console
 * driver would write it out. */
#include "kernel.h"

#define LOG_BUF_LEN 8192
char log_buf[LOG_BUF_LEN];
unsigned long log_next;		/* bytes written so far; the ring wraps */
int console_loglevel = CONSOLE_LOGLEVEL_DEFAULT;

static void log_store(const char *text, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		log_buf[(log_next + i) % LOG_BUF_LEN] = text[i];
	log_next += len;
}

int vprintk(const char *fmt, __builtin_va_list ap)
{
	char line[200];
	int level = 4, n;
	unsigned long flags;

	if (fmt[0] == KERN_SOH[0] && fmt[1] >= '0' && fmt[1] <= '7') {
		level = fmt[1] - '0';
		fmt += 2;
	}
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	if (n && line[n - 1] == '\n')
		n--;
	flags = local_irq_save();
	log_store(line, n);
	log_store("\n", 1);
	hypercall3(HC_CONSOLE, (long)line, n, level);
	local_irq_restore(flags);
	return n;
}

int printk(const char *fmt, ...)
{
	__builtin_va_list ap;
	int n;

	__builtin_va_start(ap, fmt);
	n = vprintk(fmt, ap);
	__builtin_va_end(ap);
	return n;
}

void panic(const char *msg)
{
	local_irq_save();
	printk(KERN_ERR "Kernel panic - not syncing: %s\n", msg);
	hypercall1(HC_PANIC, msg);
	for (;;)
		asm volatile("hlt");
}
