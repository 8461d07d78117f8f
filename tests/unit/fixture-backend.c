/* SPDX-License-Identifier: MIT */
/*
 * The storage layer's conformance suite: what backend.h promises, checked
 * through the interface alone against each backend and filter (read what
 * you wrote, bounds, FUA and flush, zero and trim semantics, extents and
 * holes, read-only layers, references, parallel use from many loops).
 * Each test is a Check loop test whose index picks the implementation.
 */
#include "fixture-backend.h"

#include "fixture-loops.h"
#include "nbdsrv/compiler.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- Running backend calls on the loops ---- */

enum call_op {
    CALL_PREAD,
    CALL_PWRITE,
    CALL_FLUSH,
    CALL_TRIM,
    CALL_ZERO,
    CALL_CACHE,
    CALL_EXTENTS,
    CALL_IS_HOLE,
};

struct call {
    enum call_op op;
    struct backend *be;
    void *buf;
    uint64_t offset;
    uint64_t len;
    unsigned flags;
    bool fua;
    struct backend_extent *ext;
    unsigned max;
    int r;
};

static void call_entry(void *arg)
{
    struct call *c = arg;
    switch (c->op) {
    case CALL_PREAD:
        c->r = backend_pread(c->be, c->buf, (uint32_t)c->len, c->offset);
        break;
    case CALL_PWRITE:
        c->r =
            backend_pwrite(c->be, c->buf, (uint32_t)c->len, c->offset, c->fua);
        break;
    case CALL_FLUSH:
        c->r = backend_flush(c->be);
        break;
    case CALL_TRIM:
        c->r = backend_trim(c->be, c->offset, c->len, c->fua);
        break;
    case CALL_ZERO:
        c->r = backend_zero(c->be, c->offset, c->len, c->flags, c->fua);
        break;
    case CALL_CACHE:
        c->r = backend_cache(c->be, c->offset, c->len);
        break;
    case CALL_EXTENTS:
        c->r = backend_extents(c->be, c->offset, c->len, c->ext, c->max);
        break;
    case CALL_IS_HOLE:
        c->r = backend_range_is_hole(c->be, c->offset, c->len);
        break;
    }
}

static unsigned next_loop;

void t_reset(void)
{
    next_loop = 0;
}

/* Runs one call in a coroutine, on loop 0 and loop 1 in turn. */
static int call_run(struct call *c)
{
    fixture_run_on(next_loop, call_entry, c);
    next_loop ^= 1;
    return c->r;
}

int t_pread(struct backend *be, void *buf, uint64_t len, uint64_t offset)
{
    struct call c = {
        .op = CALL_PREAD, .be = be, .buf = buf, .len = len, .offset = offset};
    return call_run(&c);
}

int t_pwrite(struct backend *be, const void *buf, uint64_t len, uint64_t offset,
             bool fua)
{
    struct call c = {.op = CALL_PWRITE,
                     .be = be,
                     .buf = (void *)buf,
                     .len = len,
                     .offset = offset,
                     .fua = fua};
    return call_run(&c);
}

int t_flush(struct backend *be)
{
    struct call c = {.op = CALL_FLUSH, .be = be};
    return call_run(&c);
}

int t_trim(struct backend *be, uint64_t offset, uint64_t len, bool fua)
{
    struct call c = {
        .op = CALL_TRIM, .be = be, .offset = offset, .len = len, .fua = fua};
    return call_run(&c);
}

int t_zero(struct backend *be, uint64_t offset, uint64_t len, unsigned flags,
           bool fua)
{
    struct call c = {.op = CALL_ZERO,
                     .be = be,
                     .offset = offset,
                     .len = len,
                     .flags = flags,
                     .fua = fua};
    return call_run(&c);
}

int t_cache(struct backend *be, uint64_t offset, uint64_t len)
{
    struct call c = {.op = CALL_CACHE, .be = be, .offset = offset, .len = len};
    return call_run(&c);
}

int t_extents(struct backend *be, uint64_t offset, uint64_t len,
              struct backend_extent *ext, unsigned max)
{
    struct call c = {.op = CALL_EXTENTS,
                     .be = be,
                     .offset = offset,
                     .len = len,
                     .ext = ext,
                     .max = max};
    return call_run(&c);
}

int t_is_hole(struct backend *be, uint64_t offset, uint64_t len)
{
    struct call c = {
        .op = CALL_IS_HOLE, .be = be, .offset = offset, .len = len};
    return call_run(&c);
}

void fill_pattern(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)((i * 31 + seed) % 251 + 1);
    }
}

void assert_reads_zero(struct backend *be, uint64_t offset, size_t len)
{
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    memset(buf, 0xaa, len);
    ck_assert_int_eq(t_pread(be, buf, len, offset), 0);
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != 0) {
            ck_abort_msg("byte %zu of [%llu, +%zu) is %u", i,
                         (unsigned long long)offset, len, buf[i]);
        }
    }
    free(buf);
}

/* ---- The conformance suite ---- */

static const struct backend_impl *impls;

static void conf_setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void conf_teardown(void)
{
    fixture_loops_stop();
}

/*
 * A model of the layer's contents: what every byte must read as.  Kept
 * next to the layer; each change is made to both.
 */
struct model {
    struct backend *be;
    unsigned char *bytes;
    uint64_t size;
};

static void model_open(struct model *m, int i, uint64_t size)
{
    m->be = impls[i].open(size, false);
    ck_assert_ptr_nonnull(m->be);
    ck_assert_uint_eq(backend_size(m->be), size);
    m->bytes = calloc(1, size);
    ck_assert_ptr_nonnull(m->bytes);
    m->size = size;
}

static void model_close(struct model *m)
{
    backend_unref(m->be);
    free(m->bytes);
}

static void model_write(struct model *m, uint64_t offset, uint32_t len,
                        unsigned seed, bool fua)
{
    fill_pattern(m->bytes + offset, len, seed);
    ck_assert_int_eq(t_pwrite(m->be, m->bytes + offset, len, offset, fua), 0);
}

/* The layer reads exactly as the model says, over the whole export. */
static void model_check(const struct model *m)
{
    unsigned char *got = malloc(m->size);
    ck_assert_ptr_nonnull(got);
    memset(got, 0x55, m->size);
    ck_assert_int_eq(t_pread(m->be, got, m->size, 0), 0);
    for (uint64_t i = 0; i < m->size; i++) {
        if (got[i] != m->bytes[i]) {
            ck_abort_msg("%s: byte %llu reads %u, want %u", backend_name(m->be),
                         (unsigned long long)i, got[i], m->bytes[i]);
        }
    }
    free(got);
}

START_TEST(test_backend_conformance_fresh_reads_zero)
{
    struct model m;
    model_open(&m, _i, 2 * MiB + 3);
    model_check(&m);
    struct backend_extent ext[4];
    int n = t_extents(m.be, 0, m.size, ext, 4);
    ck_assert_int_ge(n, 1);
    if (impls[_i].holes) {
        ck_assert_int_eq(n, 1);
        ck_assert(ext[0].hole);
        ck_assert_uint_eq(ext[0].length, m.size);
        ck_assert_int_eq(t_is_hole(m.be, 0, m.size), 1);
    }
    model_close(&m);
}
END_TEST

START_TEST(test_backend_conformance_read_what_you_wrote)
{
    struct model m;
    model_open(&m, _i, 4 * MiB + 3);
    const struct {
        uint64_t offset;
        uint32_t len;
    } cases[] = {
        {0, 1},          {1, 3},
        {511, 2},        {4095, 8193},
        {65537, 100000}, {3 * MiB + 17, 1 * MiB - 20},
        {m.size - 1, 1}, {m.size - 70001, 70001},
        {4096, 4096},    {1 * MiB, 1 * MiB},
    };
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        model_write(&m, cases[i].offset, cases[i].len, i, i % 3 == 0);
        unsigned char *in = malloc(cases[i].len);
        ck_assert_ptr_nonnull(in);
        ck_assert_int_eq(t_pread(m.be, in, cases[i].len, cases[i].offset), 0);
        ck_assert_mem_eq(in, m.bytes + cases[i].offset, cases[i].len);
        free(in);
    }
    /* Overwrites, and what lay around them, as the model says. */
    model_check(&m);
    /* Zero-length reads and writes do nothing, even at the end. */
    unsigned char b = 0;
    ck_assert_int_eq(t_pread(m.be, &b, 0, m.size), 0);
    ck_assert_int_eq(t_pwrite(m.be, &b, 0, m.size, false), 0);
    model_check(&m);
    model_close(&m);
}
END_TEST

START_TEST(test_backend_conformance_bounds)
{
    struct model m;
    model_open(&m, _i, 8192);
    char buf[16] = {0};
    struct backend_extent ext[1];
    ck_assert_int_eq(t_pread(m.be, buf, 2, 8191), -EINVAL);
    ck_assert_int_eq(t_pread(m.be, buf, 1, UINT64_MAX), -EINVAL);
    ck_assert_int_eq(t_pwrite(m.be, buf, 1, 8192, false), -EINVAL);
    ck_assert_int_eq(t_pwrite(m.be, buf, 16, UINT64_MAX - 8, true), -EINVAL);
    ck_assert_int_eq(t_trim(m.be, 4096, 8192, false), -EINVAL);
    ck_assert_int_eq(t_zero(m.be, UINT64_MAX, 2, 0, false), -EINVAL);
    ck_assert_int_eq(t_cache(m.be, 0, 8193), -EINVAL);
    ck_assert_int_eq(t_extents(m.be, 8192, 1, ext, 1), -EINVAL);
    ck_assert_int_eq(t_extents(m.be, 0, 0, ext, 1), -EINVAL);
    ck_assert_int_eq(t_extents(m.be, 0, 1, ext, 0), -EINVAL);
    ck_assert_int_eq(t_is_hole(m.be, 0, 0), -EINVAL);
    ck_assert_int_eq(t_is_hole(m.be, 8191, 2), -EINVAL);
    /* The last byte is inside. */
    model_write(&m, 8191, 1, 5, false);
    ck_assert_int_eq(t_cache(m.be, 0, 8192), 0);
    model_check(&m);
    model_close(&m);
}
END_TEST

START_TEST(test_backend_conformance_fua_and_flush)
{
    struct model m;
    model_open(&m, _i, 1 * MiB);
    ck_assert_int_eq(t_flush(m.be), 0);
    model_write(&m, 777, 12345, 3, true);
    model_write(&m, 64 * KiB, 64 * KiB, 4, false);
    ck_assert_int_eq(t_flush(m.be), 0);
    ck_assert_int_eq(t_zero(m.be, 100 * KiB, 4 * KiB, 0, true), 0);
    memset(m.bytes + 100 * KiB, 0, 4 * KiB);
    model_check(&m);
    model_close(&m);
}
END_TEST

/* Fills [0, 1 MiB) of the model's layer with data. */
static void fill_first_mib(struct model *m)
{
    model_write(m, 0, 1 * MiB, 7, false);
}

START_TEST(test_backend_conformance_zero)
{
    struct model m;
    model_open(&m, _i, 4 * MiB);
    ck_assert(backend_can_zero(m.be));
    const unsigned flag_sets[] = {0, BACKEND_ZERO_MAY_TRIM, BACKEND_ZERO_FAST,
                                  BACKEND_ZERO_FAST | BACKEND_ZERO_MAY_TRIM};
    for (unsigned f = 0; f < ARRAY_SIZE(flag_sets); f++) {
        unsigned flags = flag_sets[f];
        fill_first_mib(&m);
        int r = t_zero(m.be, 256 * KiB, 512 * KiB, flags, f % 2 == 1);
        if ((flags & BACKEND_ZERO_FAST) && !backend_can_fast_zero(m.be)) {
            /* Refused, or done fast all the same. */
            ck_assert_msg(r == -ENOTSUP || r == 0, "r = %d", r);
        } else {
            ck_assert_int_eq(r, 0);
        }
        if (r == 0) {
            memset(m.bytes + 256 * KiB, 0, 512 * KiB);
        }
        model_check(&m);
        /* Unaligned: partial blocks cleared, their neighbours kept. */
        ck_assert_int_eq(
            t_zero(m.be, 1000, 5000, flags & ~BACKEND_ZERO_FAST, false), 0);
        memset(m.bytes + 1000, 0, 5000);
        model_check(&m);
    }
    /* A range that is zero already, and one of length 0. */
    ck_assert_int_eq(t_zero(m.be, 2 * MiB, 2 * MiB, 0, false), 0);
    ck_assert_int_eq(t_zero(m.be, 5, 0, 0, false), 0);
    model_check(&m);
    model_close(&m);
}
END_TEST

START_TEST(test_backend_conformance_trim)
{
    struct model m;
    model_open(&m, _i, 2 * MiB);
    fill_first_mib(&m);
    ck_assert_int_eq(t_trim(m.be, 256 * KiB + 1, 512 * KiB, false), 0);
    ck_assert_int_eq(t_trim(m.be, 0, 0, false), 0);
    ck_assert_int_eq(t_trim(m.be, 1 * MiB, 1 * MiB, true), 0);
    /* NBD_CMD_TRIM promises nothing about the trimmed bytes: each reads
     * as it was or as zero.  Every other byte is untouched. */
    unsigned char *got = malloc(m.size);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(t_pread(m.be, got, m.size, 0), 0);
    for (uint64_t i = 0; i < m.size; i++) {
        bool trimmed = i >= 256 * KiB + 1 && i < 768 * KiB + 1;
        if (got[i] != m.bytes[i] && !(trimmed && got[i] == 0)) {
            ck_abort_msg("byte %llu reads %u, want %u", (unsigned long long)i,
                         got[i], m.bytes[i]);
        }
    }
    free(got);
    /* A write after the trim reads back. */
    model_write(&m, 300 * KiB, 4 * KiB, 11, false);
    unsigned char in[4096];
    ck_assert_int_eq(t_pread(m.be, in, sizeof in, 300 * KiB), 0);
    ck_assert_mem_eq(in, m.bytes + 300 * KiB, sizeof in);
    model_close(&m);
}
END_TEST

/*
 * The map must cover exactly what was asked (clipped to the end), and a
 * hole must read as zeroes: a written range reported as a hole would
 * make a client skip its data.  (Data where there are zeroes is always
 * a safe answer.)
 */
static void check_map(const struct model *m, uint64_t offset, uint64_t len,
                      unsigned max)
{
    struct backend_extent ext[64];
    ck_assert_uint_le(max, ARRAY_SIZE(ext));
    int n = t_extents(m->be, offset, len, ext, max);
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, (int)max);
    uint64_t want = len < m->size - offset ? len : m->size - offset;
    uint64_t pos = offset;
    for (int i = 0; i < n; i++) {
        ck_assert_uint_gt(ext[i].length, 0);
        ck_assert_uint_le(pos + ext[i].length, offset + want);
        if (ext[i].hole) {
            for (uint64_t b = pos; b < pos + ext[i].length; b++) {
                if (m->bytes[b] != 0) {
                    ck_abort_msg("%s: [%llu, +%llu) is a hole but byte "
                                 "%llu holds %u",
                                 backend_name(m->be), (unsigned long long)pos,
                                 (unsigned long long)ext[i].length,
                                 (unsigned long long)b, m->bytes[b]);
                }
            }
        }
        pos += ext[i].length;
    }
    if (n < (int)max) {
        ck_assert_uint_eq(pos, offset + want);
    }
}

START_TEST(test_backend_conformance_extents)
{
    struct model m;
    model_open(&m, _i, 2 * MiB);
    /* Data at [0, 64K) and [1M, 1M+64K), zeroes elsewhere. */
    model_write(&m, 0, 64 * KiB, 1, false);
    model_write(&m, 1 * MiB, 64 * KiB, 2, false);
    const struct {
        uint64_t offset, len;
        unsigned max;
    } cases[] = {
        {0, 2 * MiB, 64},         {0, 2 * MiB, 1},
        {100 * KiB, 2 * MiB, 64}, {32 * KiB, 64 * KiB, 64},
        {1 * MiB + 1, 1000, 64},  {512 * KiB, 4096, 64},
        {1 * MiB, UINT64_MAX, 3}, {2 * MiB - 1, 1, 64},
    };
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        check_map(&m, cases[i].offset, cases[i].len, cases[i].max);
    }
    if (impls[_i].holes) {
        struct backend_extent ext[8];
        ck_assert_int_eq(t_extents(m.be, 0, 2 * MiB, ext, 8), 4);
        ck_assert(!ext[0].hole);
        ck_assert_uint_eq(ext[0].length, 64 * KiB);
        ck_assert(ext[1].hole);
        ck_assert_uint_eq(ext[1].length, 1 * MiB - 64 * KiB);
        ck_assert(!ext[2].hole);
        ck_assert(ext[3].hole);
        ck_assert_int_eq(t_is_hole(m.be, 64 * KiB, 1 * MiB - 64 * KiB), 1);
        /* Zeroing with MAY_TRIM makes a hole again. */
        ck_assert_int_eq(
            t_zero(m.be, 0, 64 * KiB, BACKEND_ZERO_MAY_TRIM, false), 0);
        memset(m.bytes, 0, 64 * KiB);
        ck_assert_int_eq(t_extents(m.be, 0, 2 * MiB, ext, 8), 3);
        ck_assert(ext[0].hole);
        ck_assert_uint_eq(ext[0].length, 1 * MiB);
    }
    /* range_is_hole never calls data a hole. */
    ck_assert_int_eq(t_is_hole(m.be, 1 * MiB, 4096), 0);
    ck_assert_int_eq(t_is_hole(m.be, 1 * MiB - 1, 2), 0);
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        check_map(&m, cases[i].offset, cases[i].len, cases[i].max);
    }
    model_check(&m);
    model_close(&m);
}
END_TEST

START_TEST(test_backend_conformance_read_only)
{
    struct backend *be = impls[_i].open(1 * MiB, true);
    ck_assert_ptr_nonnull(be);
    ck_assert(backend_read_only(be));
    ck_assert(!backend_can_trim(be));
    ck_assert(!backend_can_zero(be));
    ck_assert(!backend_can_fast_zero(be));
    char buf[4096];
    memset(buf, 1, sizeof buf);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, false), -EPERM);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, true), -EPERM);
    ck_assert_int_eq(t_trim(be, 0, 64 * KiB, false), -EPERM);
    ck_assert_int_eq(t_zero(be, 0, 64 * KiB, 0, false), -EPERM);
    ck_assert_int_eq(t_zero(be, 0, 64 * KiB,
                            BACKEND_ZERO_MAY_TRIM | BACKEND_ZERO_FAST, false),
                     -EPERM);
    ck_assert_int_eq(t_flush(be), 0);
    assert_reads_zero(be, 0, 1 * MiB);
    backend_unref(be);
}
END_TEST

START_TEST(test_backend_conformance_caps_consistent)
{
    struct backend *be = impls[_i].open(64 * KiB, false);
    ck_assert(!backend_read_only(be));
    if (backend_can_fast_zero(be)) {
        ck_assert(backend_can_zero(be));
    }
    ck_assert_str_ne(backend_name(be), "");
    enum backend_concurrency c = backend_concurrency(be);
    ck_assert(c == BACKEND_SERIAL || c == BACKEND_PER_CONN ||
              c == BACKEND_PARALLEL);
    ck_assert_ptr_eq(backend_ref(be), be);
    backend_unref(be);
    /* Still usable on the remaining reference. */
    ck_assert_int_eq(t_pwrite(be, "abc", 3, 10, false), 0);
    char buf[3];
    ck_assert_int_eq(t_pread(be, buf, 3, 10), 0);
    ck_assert_mem_eq(buf, "abc", 3);
    backend_unref(be);
    backend_unref(NULL);
}
END_TEST

#define PAR_LOOPS 4
#define PAR_WORKERS 16
#define PAR_REGION (64 * KiB)

struct par {
    struct backend *be;
    atomic_int done;
    atomic_int failures;
};

struct par_worker {
    struct par *par;
    unsigned id;
};

/* Each worker owns one region: writes, zeroes and reads it back. */
static void par_entry(void *arg)
{
    struct par_worker *w = arg;
    struct backend *be = backend_ref(w->par->be);
    uint64_t base = (uint64_t)w->id * PAR_REGION;
    static const unsigned char zeroes[PAR_REGION];
    unsigned char *out = malloc(PAR_REGION);
    unsigned char *in = malloc(PAR_REGION);
    int bad = out == NULL || in == NULL;
    for (unsigned round = 0; !bad && round < 20; round++) {
        fill_pattern(out, PAR_REGION, w->id * 100 + round);
        bad |= backend_pwrite(be, out, PAR_REGION, base, round % 4 == 0) != 0;
        bad |= backend_pread(be, in, PAR_REGION, base) != 0;
        bad |= memcmp(in, out, PAR_REGION) != 0;
        unsigned flags = round % 2 ? BACKEND_ZERO_MAY_TRIM : 0;
        bad |= backend_zero(be, base, PAR_REGION, flags, false) != 0;
        bad |= backend_pread(be, in, PAR_REGION, base) != 0;
        bad |= memcmp(in, zeroes, PAR_REGION) != 0;
        if (round % 5 == 0) {
            bad |= backend_flush(be) != 0;
        }
    }
    free(in);
    free(out);
    backend_unref(be);
    atomic_fetch_add(&w->par->failures, bad);
    atomic_fetch_add(&w->par->done, 1);
}

static bool par_done(void *arg)
{
    return atomic_load(&((struct par *)arg)->done) == PAR_WORKERS;
}

START_TEST(test_backend_conformance_parallel_from_many_loops)
{
    fixture_loops_stop();
    fixture_loops_start(PAR_LOOPS, 0);
    struct par par = {.done = 0, .failures = 0};
    par.be = impls[_i].open(PAR_WORKERS * PAR_REGION, false);
    struct par_worker workers[PAR_WORKERS];
    for (unsigned i = 0; i < PAR_WORKERS; i++) {
        workers[i] = (struct par_worker){.par = &par, .id = i};
        fixture_spawn_on(i % PAR_LOOPS, par_entry, &workers[i]);
    }
    ck_assert(fixture_wait_until(par_done, &par, 30000));
    ck_assert_int_eq(atomic_load(&par.failures), 0);
    backend_unref(par.be);
}
END_TEST

void fixture_backend_conformance(Suite *s, const struct backend_impl *list,
                                 unsigned n)
{
    impls = list;
    TCase *tc = tcase_create("conformance");
    tcase_add_checked_fixture(tc, conf_setup, conf_teardown);
    tcase_set_timeout(tc, 60);
    int end = (int)n;
    tcase_add_loop_test(tc, test_backend_conformance_fresh_reads_zero, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_read_what_you_wrote, 0,
                        end);
    tcase_add_loop_test(tc, test_backend_conformance_bounds, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_fua_and_flush, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_zero, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_trim, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_extents, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_read_only, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_caps_consistent, 0, end);
    tcase_add_loop_test(tc, test_backend_conformance_parallel_from_many_loops,
                        0, end);
    suite_add_tcase(s, tc);
}
