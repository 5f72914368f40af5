/* slab.c - kmalloc()/kzalloc()/kfree() over a fixed heap.
 *
 * Linux's slab allocators are far more; the lab needs only what modules
 * use (shadow variables, a patch's state data): a first-fit list of blocks
 * in one static arena, each with a header, neighbours merged on free.
 * Deterministic like everything in the lab: equal calls, equal addresses.
 */
#include "kernel.h"
#include "module.h"

#define HEAP_SIZE   0x20000		/* room for a module image (init_module()) */
#define ALIGN       16
#define BLOCK_MAGIC 0x6b6d616cU	/* "kmal" */

struct block {
	u32 magic;
	u32 free;
	size_t size;		/* bytes after the header */
};

static char heap[HEAP_SIZE] __attribute__((aligned(ALIGN)));
static bool heap_ready;
unsigned long kmalloc_bytes;	/* in use, read by the lab */

static struct block *next_block(struct block *b)
{
	char *n = (char *)(b + 1) + b->size;
	return n < heap + HEAP_SIZE ? (struct block *)n : NULL;
}

void *kmalloc(size_t size, gfp_t flags)
{
	struct block *b;
	unsigned long irq;

	if (!size || size > HEAP_SIZE / 2)
		return NULL;
	size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
	irq = local_irq_save();
	if (!heap_ready) {
		b = (struct block *)heap;
		b->magic = BLOCK_MAGIC;
		b->free = 1;
		b->size = HEAP_SIZE - sizeof(*b);
		heap_ready = true;
	}
	for (b = (struct block *)heap; b; b = next_block(b)) {
		if (!b->free || b->size < size)
			continue;
		if (b->size >= size + sizeof(*b) + ALIGN) {
			struct block *rest = (struct block *)((char *)(b + 1) + size);
			rest->magic = BLOCK_MAGIC;
			rest->free = 1;
			rest->size = b->size - size - sizeof(*b);
			b->size = size;
		}
		b->free = 0;
		kmalloc_bytes += b->size;
		local_irq_restore(irq);
		return b + 1;
	}
	local_irq_restore(irq);
	return NULL;
}

void *kzalloc(size_t size, gfp_t flags)
{
	void *p = kmalloc(size, flags);

	if (p)
		memset(p, 0, size);
	return p;
}

void kfree(const void *p)
{
	struct block *b, *n;
	unsigned long irq;

	if (!p)
		return;
	b = (struct block *)p - 1;
	/* a pointer kmalloc() never returned, or a double free: Linux's
	 * SLUB debugging reports these as a BUG */
	BUG_ON((char *)b < heap || (char *)b >= heap + HEAP_SIZE || b->magic != BLOCK_MAGIC || b->free);
	irq = local_irq_save();
	b->free = 1;
	kmalloc_bytes -= b->size;
	while ((n = next_block(b)) && n->free) {
		b->size += sizeof(*n) + n->size;
		n->magic = 0;
	}
	local_irq_restore(irq);
}
