/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the memory backend: the conformance suite, then what only
 * it promises: pages allocated on first write and given back by trims
 * and zeroes (whole pages only), holes where nothing was written, sizes
 * that are not a multiple of a page, and its limits.
 */
#include "fixture-backend.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096u

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void teardown(void)
{
    fixture_loops_stop();
}

static struct backend *mem_open(uint64_t size, bool read_only)
{
    struct err err;
    err_clear(&err);
    struct backend *be = backend_memory_new(size, read_only, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return be;
}

UNIT_TEST("memory", test_backend_mem_facts)
{
    struct backend *be = mem_open(10 * GiB + 3, false);
    ck_assert_uint_eq(backend_size(be), 10 * GiB + 3);
    ck_assert_str_eq(backend_name(be), "memory");
    ck_assert(!backend_read_only(be));
    ck_assert(backend_can_trim(be));
    ck_assert(backend_can_zero(be));
    ck_assert(backend_can_fast_zero(be));
    ck_assert(backend_can_extents(be));
    ck_assert(backend_can_multi_conn(be));
    ck_assert(!backend_can_cache(be));
    ck_assert(!backend_is_rotational(be));
    ck_assert_int_eq(backend_concurrency(be), BACKEND_PARALLEL);
    ck_assert(!backend_same_file(be, "/dev/null"));
    ck_assert_uint_eq(backend_memory_allocated(be), 0);
    backend_unref(be);

    /* An export of 0 bytes is allowed, and the largest one. */
    be = mem_open(0, false);
    ck_assert_uint_eq(backend_size(be), 0);
    backend_unref(be);
    be = mem_open(BACKEND_MEMORY_MAX_SIZE, false);
    backend_unref(be);
}
END_TEST

UNIT_TEST("memory", test_backend_mem_too_large)
{
    struct err err;
    err_clear(&err);
    ck_assert_ptr_null(
        backend_memory_new(BACKEND_MEMORY_MAX_SIZE + 1, false, &err));
    ck_assert_int_eq(err.errnum, EFBIG);
    ck_assert_str_eq(err.msg, "memory: 17592186044417 bytes is more than a "
                              "memory export may hold (16T)");
    ck_assert_ptr_null(backend_memory_new(UINT64_MAX, false, NULL));
}
END_TEST

UNIT_TEST("memory", test_backend_mem_pages_on_first_write)
{
    struct backend *be = mem_open(64 * MiB, false);
    unsigned char buf[3 * PAGE];
    fill_pattern(buf, sizeof buf, 1);
    /* One byte allocates one page. */
    ck_assert_int_eq(t_pwrite(be, buf, 1, 5 * PAGE + 7, false), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), PAGE);
    /* Two bytes across a page boundary: one more page. */
    ck_assert_int_eq(t_pwrite(be, buf, 2, 7 * PAGE - 1, false), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 3 * PAGE);
    /* Rewriting allocated pages allocates nothing. */
    ck_assert_int_eq(t_pwrite(be, buf, 2 * PAGE, 5 * PAGE, true), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 3 * PAGE);
    /* Reads allocate nothing, even of holes. */
    unsigned char *big = malloc(4 * MiB);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(t_pread(be, big, 4 * MiB, 32 * MiB), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 3 * PAGE);
    /* The bytes around a partial first write read as zeroes. */
    ck_assert_int_eq(t_pread(be, big, 8 * PAGE, 0), 0);
    for (unsigned i = 0; i < 8 * PAGE; i++) {
        unsigned char want = 0;
        if (i >= 5 * PAGE && i < 7 * PAGE) {
            want = buf[i - 5 * PAGE];
        } else if (i == 7 * PAGE) {
            want = buf[1];
        }
        ck_assert_msg(big[i] == want, "byte %u is %u, want %u", i, big[i],
                      want);
    }
    free(big);
    backend_unref(be);
}
END_TEST

UNIT_TEST("memory", test_backend_mem_trim_and_zero_give_pages_back)
{
    struct backend *be = mem_open(64 * MiB, false);
    unsigned char *buf = malloc(32 * MiB);
    ck_assert_ptr_nonnull(buf);
    fill_pattern(buf, 32 * MiB, 2);
    ck_assert_int_eq(t_pwrite(be, buf, 32 * MiB, 0, false), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 32 * MiB);

    /* A trim frees the whole pages inside it and clears the partial
     * ones at its ends. */
    ck_assert_int_eq(t_trim(be, PAGE + 1, 3 * PAGE, false), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 32 * MiB - 2 * PAGE);
    assert_reads_zero(be, PAGE + 1, 3 * PAGE);
    unsigned char got[PAGE];
    ck_assert_int_eq(t_pread(be, got, 1, PAGE), 0);
    ck_assert_uint_eq(got[0], buf[PAGE]);
    ck_assert_int_eq(t_pread(be, got, 1, 4 * PAGE + 1), 0);
    ck_assert_uint_eq(got[0], buf[4 * PAGE + 1]);

    /* A zero without MAY_TRIM gives pages back as well. */
    ck_assert_int_eq(t_zero(be, 8 * PAGE, 8 * PAGE, 0, false), 0);
    ck_assert_uint_eq(backend_memory_allocated(be), 32 * MiB - 10 * PAGE);
    assert_reads_zero(be, 8 * PAGE, 8 * PAGE);

    /* Whole leaves (16 MiB) and everything else. */
    ck_assert_int_eq(t_zero(be, 0, 64 * MiB,
                            BACKEND_ZERO_FAST | BACKEND_ZERO_MAY_TRIM, true),
                     0);
    ck_assert_uint_eq(backend_memory_allocated(be), 0);
    assert_reads_zero(be, 0, 32 * MiB);
    struct backend_extent ext[2];
    ck_assert_int_eq(t_extents(be, 0, 64 * MiB, ext, 2), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 64 * MiB);
    free(buf);
    backend_unref(be);
}
END_TEST

UNIT_TEST("memory", test_backend_mem_extents_by_page)
{
    struct backend *be = mem_open(1 * TiB + 100, false);
    struct backend_extent ext[8];
    ck_assert_int_eq(t_extents(be, 0, UINT64_MAX, ext, 8), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * TiB + 100);

    /* A byte makes its page data; the map is by pages. */
    ck_assert_int_eq(t_pwrite(be, "x", 1, 3 * PAGE + 5, false), 0);
    ck_assert_int_eq(t_pwrite(be, "y", 1, 1 * TiB + 99, false), 0);
    ck_assert_int_eq(t_extents(be, 0, UINT64_MAX, ext, 8), 4);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 3 * PAGE);
    ck_assert(!ext[1].hole);
    ck_assert_uint_eq(ext[1].length, PAGE);
    ck_assert(ext[2].hole);
    ck_assert_uint_eq(ext[2].length, 1 * TiB - 4 * PAGE);
    /* The last page is short: it ends with the export. */
    ck_assert(!ext[3].hole);
    ck_assert_uint_eq(ext[3].length, 100);
    /* Starting inside the data page, clipped. */
    ck_assert_int_eq(t_extents(be, 3 * PAGE + 100, 10, ext, 8), 1);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 10);
    ck_assert_int_eq(t_is_hole(be, 4 * PAGE, 1 * TiB - 4 * PAGE), 1);
    ck_assert_int_eq(t_is_hole(be, 3 * PAGE, 1), 0);
    backend_unref(be);
}
END_TEST

static const struct backend_impl conformance_impls[] = {
    {.name = "memory", .open = mem_open, .holes = true},
};

UNIT_SUITE("backend-mem");
UNIT_TCASE("memory", 30, setup, teardown);
FIXTURE_BACKEND_CONFORMANCE(conformance_impls);
