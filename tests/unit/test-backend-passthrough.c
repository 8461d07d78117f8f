/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the common code's dispatch of NULL operations
 * (backend.c): in a filter, an operation left NULL passes to the layer
 * below; in a bottom layer, NULL keeps its own meaning (trim and cache
 * succeed doing nothing, one data extent, not a hole).
 */
#include "fixture-backend.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/compiler.h"

#include <check.h>
#include <errno.h>
#include <string.h>

#define PROBE_SIZE (1 * MiB)

/* A bottom layer that counts the calls of each operation. */
enum probe_op {
    P_PREAD,
    P_PWRITE,
    P_FLUSH,
    P_TRIM,
    P_ZERO,
    P_CACHE,
    P_EXTENTS,
    P_HOLE,
    P_NR,
};

struct probe {
    struct backend be;
    unsigned calls[P_NR];
};

static struct probe *to_probe(struct backend *b)
{
    return container_of(b, struct probe, be);
}

static int probe_pread(struct backend *b, void *buf, uint32_t len,
                       uint64_t offset)
{
    (void)offset;
    to_probe(b)->calls[P_PREAD]++;
    memset(buf, 'p', len);
    return 0;
}

static int probe_pwrite(struct backend *b, const void *buf, uint32_t len,
                        uint64_t offset, bool fua)
{
    (void)buf, (void)len, (void)offset, (void)fua;
    to_probe(b)->calls[P_PWRITE]++;
    return 0;
}

static int probe_flush(struct backend *b)
{
    to_probe(b)->calls[P_FLUSH]++;
    return 0;
}

static int probe_trim(struct backend *b, uint64_t offset, uint64_t len,
                      bool fua)
{
    (void)offset, (void)len, (void)fua;
    to_probe(b)->calls[P_TRIM]++;
    return 0;
}

static int probe_zero(struct backend *b, uint64_t offset, uint64_t len,
                      unsigned flags, bool fua)
{
    (void)offset, (void)len, (void)flags, (void)fua;
    to_probe(b)->calls[P_ZERO]++;
    return 0;
}

static int probe_cache(struct backend *b, uint64_t offset, uint64_t len)
{
    (void)offset, (void)len;
    to_probe(b)->calls[P_CACHE]++;
    return 0;
}

/* All hole, so that a pass-through is told from the one data extent the
 * common code makes up. */
static int probe_extents(struct backend *b, enum backend_meta meta,
                         uint64_t offset, uint64_t len,
                         struct backend_extent *out, unsigned max)
{
    (void)offset, (void)max;
    to_probe(b)->calls[P_EXTENTS]++;
    if (meta != BACKEND_META_ALLOCATION) {
        return -ENOTSUP;
    }
    out[0] = (struct backend_extent){.length = len, .hole = true};
    return 1;
}

static int probe_range_is_hole(struct backend *b, uint64_t offset, uint64_t len)
{
    (void)offset, (void)len;
    to_probe(b)->calls[P_HOLE]++;
    return 1;
}

static void nothing_to_close(struct backend *b)
{
    (void)b; /* lives on the test's stack */
}

static const struct backend_ops probe_ops = {
    .name = "probe",
    .close = nothing_to_close,
    .pread = probe_pread,
    .pwrite = probe_pwrite,
    .flush = probe_flush,
    .trim = probe_trim,
    .zero = probe_zero,
    .cache = probe_cache,
    .extents = probe_extents,
    .range_is_hole = probe_range_is_hole,
};

/* The same bottom layer with every optional operation left NULL. */
static const struct backend_ops bare_ops = {
    .name = "bare",
    .close = nothing_to_close,
    .pread = probe_pread,
    .pwrite = probe_pwrite,
    .flush = probe_flush,
    .zero = probe_zero,
};

#define ALL_CAPS                                                               \
    (BACKEND_CAP_TRIM | BACKEND_CAP_ZERO | BACKEND_CAP_CACHE |                 \
     BACKEND_CAP_EXTENTS)

/* A filter that implements nothing but close. */
static const struct backend_ops empty_filter_ops = {
    .name = "empty",
    .close = nothing_to_close,
};

/* A filter that implements writes only (and fails them). */
static int refuse_pwrite(struct backend *b, const void *buf, uint32_t len,
                         uint64_t offset, bool fua)
{
    (void)b, (void)buf, (void)len, (void)offset, (void)fua;
    return -EROFS;
}

static const struct backend_ops write_filter_ops = {
    .name = "refuse-writes",
    .close = nothing_to_close,
    .pwrite = refuse_pwrite,
};

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void teardown(void)
{
    fixture_loops_stop();
}

/* backend_extents_meta for the depth map, in a coroutine. */
struct depth_call {
    struct backend *be;
    struct backend_extent ext;
    int r;
};

static void depth_entry(void *arg)
{
    struct depth_call *c = arg;
    c->r = backend_extents_meta(c->be, BACKEND_META_DEPTH, 0, PROBE_SIZE,
                                &c->ext, 1);
}

UNIT_TEST("passthrough", test_backend_filter_null_ops_pass_down)
{
    struct probe p;
    memset(&p, 0, sizeof p);
    backend_init(&p.be, &probe_ops, NULL, PROBE_SIZE, ALL_CAPS,
                 BACKEND_PARALLEL);
    struct backend f;
    backend_init(&f, &empty_filter_ops, backend_ref(&p.be), PROBE_SIZE,
                 ALL_CAPS, BACKEND_SERIAL);

    char buf[512] = {0};
    ck_assert_int_eq(t_pread(&f, buf, sizeof buf, 0), 0);
    ck_assert_int_eq(buf[0], 'p');
    ck_assert_int_eq(t_pwrite(&f, buf, sizeof buf, 4096, true), 0);
    ck_assert_int_eq(t_flush(&f), 0);
    ck_assert_int_eq(t_trim(&f, 0, 4096, false), 0);
    ck_assert_int_eq(t_zero(&f, 0, 4096, 0, false), 0);
    ck_assert_int_eq(t_cache(&f, 0, 4096), 0);
    struct backend_extent ext;
    ck_assert_int_eq(t_extents(&f, 0, PROBE_SIZE, &ext, 1), 1);
    ck_assert(ext.hole);
    ck_assert_int_eq(t_is_hole(&f, 0, 4096), 1);
    for (unsigned op = 0; op < P_NR; op++) {
        ck_assert_msg(p.calls[op] == 1,
                      "op %u reached the layer below %u times", op,
                      p.calls[op]);
    }
    /* The depth map passes down too: the bottom layer holds it all. */
    struct depth_call d = {.be = &f};
    fixture_run_on(0, depth_entry, &d);
    ck_assert_int_eq(d.r, 1);
    ck_assert_uint_eq(d.ext.depth, 1);
    ck_assert_uint_eq(d.ext.length, PROBE_SIZE);
    /* The filter's own checks still come first. */
    ck_assert_int_eq(t_pread(&f, buf, 1, PROBE_SIZE), -EINVAL);
    ck_assert_uint_eq(p.calls[P_PREAD], 1);

    backend_unref(&f);
    ck_assert_uint_eq(refcount_read(&p.be.refs), 1);
}
END_TEST

UNIT_TEST("passthrough", test_backend_filter_own_op_does_not_pass_down)
{
    struct probe p;
    memset(&p, 0, sizeof p);
    backend_init(&p.be, &probe_ops, NULL, PROBE_SIZE, ALL_CAPS,
                 BACKEND_PARALLEL);
    struct backend f;
    backend_init(&f, &write_filter_ops, backend_ref(&p.be), PROBE_SIZE,
                 ALL_CAPS, BACKEND_PARALLEL);
    char buf[16] = {0};
    ck_assert_int_eq(t_pwrite(&f, buf, sizeof buf, 0, false), -EROFS);
    ck_assert_uint_eq(p.calls[P_PWRITE], 0);
    ck_assert_int_eq(t_pread(&f, buf, sizeof buf, 0), 0);
    ck_assert_uint_eq(p.calls[P_PREAD], 1);
    backend_unref(&f);
}
END_TEST

UNIT_TEST("passthrough", test_backend_bottom_null_ops_keep_their_meaning)
{
    struct probe p;
    memset(&p, 0, sizeof p);
    backend_init(&p.be, &bare_ops, NULL, PROBE_SIZE, ALL_CAPS,
                 BACKEND_PARALLEL);
    ck_assert_int_eq(t_trim(&p.be, 0, 4096, false), 0);
    ck_assert_int_eq(t_cache(&p.be, 0, 4096), 0);
    struct backend_extent ext;
    ck_assert_int_eq(t_extents(&p.be, 0, PROBE_SIZE, &ext, 1), 1);
    ck_assert(!ext.hole);
    ck_assert_uint_eq(ext.length, PROBE_SIZE);
    ck_assert_int_eq(t_is_hole(&p.be, 0, 4096), 0);
    struct depth_call d = {.be = &p.be};
    fixture_run_on(0, depth_entry, &d);
    ck_assert_int_eq(d.r, 1);
    ck_assert_uint_eq(d.ext.depth, 1);
    /* And a filter over it passes the same answers up. */
    struct backend f;
    backend_init(&f, &empty_filter_ops, backend_ref(&p.be), PROBE_SIZE,
                 ALL_CAPS, BACKEND_PARALLEL);
    ck_assert_int_eq(t_trim(&f, 0, 4096, false), 0);
    ck_assert_int_eq(t_extents(&f, 0, PROBE_SIZE, &ext, 1), 1);
    ck_assert(!ext.hole);
    ck_assert_int_eq(t_is_hole(&f, 0, 4096), 0);
    backend_unref(&f);
    for (unsigned op = P_TRIM; op < P_NR; op++) {
        ck_assert_uint_eq(p.calls[op], 0);
    }
}
END_TEST

UNIT_SUITE("backend-passthrough");
UNIT_TCASE("passthrough", 30, setup, teardown);
