/*
 * _pages.c - the page loop of a snapshot's restore (lab/machine.py,
 * Machine._copy_changed_pages) in one call from Python.
 *
 * A restore compares the RAM pages the host backed with the snapshot's copy
 * and copies back the ones that differ.  Done from Python that is a hundred
 * ctypes calls (memcmp and memmove per page, a dozen more per text page to
 * find the bytes that differ), most of a restore's time with the caches
 * cold after a schedule's run.  lab/_native.py compiles this file once per
 * machine (cc -O2 -shared -fPIC) and falls back to the Python loop where no
 * compiler is found; tests run both and compare what they do.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PAGE 4096

/* Append the run [lo, hi) to drops; -1 when max are there already. */
static int push(uint64_t *drops, long *n, long max, uint64_t lo, uint64_t hi)
{
    if (*n == max)
        return -1;
    drops[2 * *n] = lo;
    drops[2 * *n + 1] = hi;
    (*n)++;
    return 0;
}

/*
 * Copy into ram the pages, within the byte ranges runs[0..2*nruns) (pairs
 * [lo, hi), page-aligned, ascending), where copy differs.  Adjacent changed
 * pages form one run.  For each run, drops[] gets the byte range whose
 * translations must go: the whole run, or, where the run overlaps one of the
 * code ranges code[0..2*ncode) (read-only text), the bytes from the first
 * that differs to the last.  Returns the number of pairs written to drops,
 * or -1 if more than max would be (nothing is copied then).
 */
long lab_copy_changed(uint8_t *ram, const uint8_t *copy, const uint64_t *runs, long nruns,
                      const uint64_t *code, long ncode, uint64_t *drops, long max)
{
    long n = 0;
    uint64_t open_lo = 0, open_hi = 0;     /* the changed run being gathered, empty when equal */

    /* first pass: the changed runs, into drops as (lo, hi) */
    for (long r = 0; r < nruns; r++) {
        uint64_t lo = runs[2 * r], hi = runs[2 * r + 1];
        if (hi <= lo || memcmp(ram + lo, copy + lo, hi - lo) == 0)
            continue;
        for (uint64_t p = lo; p < hi; p += PAGE) {
            uint64_t end = p + PAGE < hi ? p + PAGE : hi;
            if (memcmp(ram + p, copy + p, end - p) == 0)
                continue;
            if (open_hi == p && open_hi != open_lo) {
                open_hi = end;
                continue;
            }
            if (open_hi != open_lo && push(drops, &n, max, open_lo, open_hi) < 0)
                return -1;
            open_lo = p;
            open_hi = end;
        }
    }
    if (open_hi != open_lo && push(drops, &n, max, open_lo, open_hi) < 0)
        return -1;

    /* second pass: narrow the runs in code, then copy */
    for (long i = 0; i < n; i++) {
        uint64_t lo = drops[2 * i], hi = drops[2 * i + 1];
        int in_code = 0;
        for (long c = 0; c < ncode; c++)
            if (code[2 * c] < hi && lo < code[2 * c + 1])
                in_code = 1;
        if (in_code) {
            uint64_t first = lo, last = hi;
            while (ram[first] == copy[first])
                first++;
            while (ram[last - 1] == copy[last - 1])
                last--;
            drops[2 * i] = first;
            drops[2 * i + 1] = last;
        }
        memmove(ram + lo, copy + lo, hi - lo);
    }
    return n;
}
