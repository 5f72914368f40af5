/* ceiling_stop - end a Unicorn slice without `count`: a code hook, compiled,
 * on the addresses where slices end, that stops the run at the n-th arrival
 * at the slice's end address (bench_ceiling.py builds and loads it).
 *
 * count_hits counts the arrivals at `target` (while a counted run finds the
 * plan); stop_at stops the run on the `remaining`-th one.  Both are called by
 * Unicorn as UC_HOOK_CODE callbacks: (uc, address, size, user_data). */
#include <stdint.h>

struct slice_end {
	uint64_t target;
	int64_t remaining;
	int (*stop)(void *uc);		/* uc_emu_stop */
};

void count_hits(void *uc, uint64_t address, uint32_t size, struct slice_end *s)
{
	(void)uc; (void)size;
	if (address == s->target)
		s->remaining++;
}

void stop_at(void *uc, uint64_t address, uint32_t size, struct slice_end *s)
{
	(void)size;
	if (address == s->target && --s->remaining == 0)
		s->stop(uc);
}

/* a block hook that does the least a count kept per block would: add up */
void on_block(void *uc, uint64_t address, uint32_t size, struct slice_end *s)
{
	(void)uc; (void)address;
	s->remaining += size;
}
