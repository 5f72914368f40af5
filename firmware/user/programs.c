/* programs.c - the user programs of the workloads. */
#include "ulib.h"

/* Sets the host name and reads it back, over and over: sethostname() reaches
 * capable(CAP_SYS_ADMIN) in the kernel. */
void user_cap_main(void)
{
	char name[16], back[65];
	unsigned long i;

	for (i = 0;; i++) {
		char *p = ustpcpy(name, "lab-");
		ultoa(p, i % 100);
		if (sethostname(name, ustrlen(name)) != 0)
			uputs("sethostname failed");
		if (gethostname(back, sizeof(back)) != 0 || !ustreq(back, name))
			uputs("hostname mismatch");
		user_work(i, 150);
	}
}

/* Reads /proc/cmdline again and again, printing it whenever it changes: the
 * way to see a patched show function from user space. */
void user_cat_main(void)
{
	static char last[256], buf[256];

	for (;;) {
		long fd = open("/proc/cmdline", O_RDONLY), n;
		char line[300];

		if (fd < 0) {
			uputs("open /proc/cmdline failed");
			exit(1);
		}
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 0)
			n = 0;
		buf[n] = 0;
		if (n && buf[n - 1] == '\n')
			buf[n - 1] = 0;
		if (!ustreq(buf, last)) {
			ustpcpy(ustpcpy(line, "/proc/cmdline: "), buf);
			uputs(line);
			ustpcpy(last, buf);
		}
		user_work(n, 400);
	}
}

static volatile int signals_seen;

static void on_signal(int sig)
{
	char line[48];

	signals_seen++;
	ultoa(ustpcpy(line, "caught signal "), sig);
	uputs(line);
}

/* The eternal sleeper: reads an empty pipe whose write end it holds itself,
 * so no data ever comes.  SIGUSR1 has SA_RESTART (the read is restarted after
 * the handler), SIGUSR2 has not (the read fails with -EINTR). */
void user_reader_main(void)
{
	int fds[2];
	char buf[32], line[64];

	sigaction(SIGUSR1, on_signal, SA_RESTART);
	sigaction(SIGUSR2, on_signal, 0);
	if (pipe(fds) != 0) {
		uputs("pipe failed");
		exit(1);
	}
	for (;;) {
		long n = read(fds[0], buf, sizeof(buf));

		ultoa(ustpcpy(line, "read returned "), n);
		uputs(line);
	}
}

/* Calls sethostname() as fast as it can. */
void user_hammer_main(void)
{
	unsigned long i;
	char name[8] = "h-0";

	for (i = 0;; i++) {
		name[2] = '0' + i % 10;
		if (sethostname(name, 3) != 0)
			uputs("sethostname failed");
		user_work(i, 20);
	}
}

/* test_klp-call_getpid, upstream's syscall selftest helper: calls getpid()
 * until a signal ends it, and fails if the answer ever changes. */
void user_getpid_main(void)
{
	long pid = getpid();

	for (;;)
		if (getpid() != pid)
			exit(1);
}

/* A module image in the program, as a file read by insmod would give it:
 * upstream's livepatch sample, built for this kernel (patches/samples/). */
asm(".pushsection .rodata.klp_sample, \"a\"\n"
    ".globl klp_sample_image\nklp_sample_image:\n"
    ".incbin \"../patches/samples/livepatch_sample.o\"\n"
    ".globl klp_sample_image_end\nklp_sample_image_end:\n"
    ".popsection");
extern const char klp_sample_image[], klp_sample_image_end[];

static void say_result(const char *what, long ret)
{
	char line[64], *p = ustpcpy(line, what);

	p = ustpcpy(p, " returned ");
	ultoa(p, ret);
	uputs(line);
}

/* insmod of the sample through init_module(), then exit. */
void user_insmod_main(void)
{
	say_result("init_module(livepatch_sample)",
		   init_module(klp_sample_image, klp_sample_image_end - klp_sample_image, ""));
	exit(0);
}

/* rmmod of the sample through delete_module(), then exit. */
void user_rmmod_main(void)
{
	say_result("delete_module(livepatch_sample)", delete_module("livepatch_sample", 0));
	exit(0);
}
