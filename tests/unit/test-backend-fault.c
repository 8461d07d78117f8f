/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of filters and chains: the fault-injection filter (the
 * conformance suite with rules that never fire, then errors by operation
 * and range, delays, its text form), and the common code's promises to a
 * chain (capabilities and class from below, a SERIAL layer entered by
 * one call at a time from many loops).
 */
#include "fixture-backend.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/coro-io.h"

#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void teardown(void)
{
    fixture_loops_stop();
}

static struct backend *memory(uint64_t size, bool read_only)
{
    struct err err;
    err_clear(&err);
    struct backend *be = backend_memory_new(size, read_only, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return be;
}

static struct backend *wrap(struct backend *lower, const char *rules_text)
{
    struct backend_fault_rule *rules = NULL;
    unsigned nr = 0;
    struct err err;
    err_clear(&err);
    if (rules_text != NULL) {
        ck_assert_msg(backend_fault_parse(rules_text, &rules, &nr, &err) == 0,
                      "%s", err.msg);
    }
    struct backend *be = backend_fault_new(lower, rules, nr, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    free(rules);
    return be;
}

/* Conformance: rules that match nothing the suite does (a range past
 * every export it makes) must change nothing. */
static struct backend *conf_fault_memory(uint64_t size, bool read_only)
{
    return wrap(memory(size, read_only), NULL);
}

static struct backend *conf_fault_file(uint64_t size, bool read_only)
{
    char path[] = "/tmp/nbdsrv-fault-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
    struct err err;
    err_clear(&err);
    struct backend *be = backend_file_open(path, read_only, &err);
    unlink(path);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return wrap(be, "read+write+trim+zero+cache+extents@1T-:EIO");
}

static const struct backend_impl conformance_impls[] = {
    {.name = "fault over memory", .open = conf_fault_memory, .holes = true},
    {.name = "fault over a file", .open = conf_fault_file, .holes = true},
};

UNIT_TEST("fault", test_backend_fault_errors_by_operation_and_range)
{
    struct backend *lower = memory(4 * MiB, false);
    struct backend *be =
        wrap(backend_ref(lower), "read@1M-2M:EIO,write@3M-:ENOSPC,"
                                 "trim+zero@0-4K:EROFS,extents@2M-3M:EDQUOT");
    ck_assert_str_eq(backend_name(be), "fault");
    unsigned char buf[8192], in[8192];
    fill_pattern(buf, sizeof buf, 3);

    /* Reads: only those overlapping [1M, 2M) fail. */
    ck_assert_int_eq(t_pread(be, in, 4096, 1 * MiB), -EIO);
    ck_assert_int_eq(t_pread(be, in, 2, 1 * MiB - 1), -EIO);
    ck_assert_int_eq(t_pread(be, in, 4096, 2 * MiB - 4096), -EIO);
    ck_assert_int_eq(t_pread(be, in, 4096, 1 * MiB - 4096), 0);
    ck_assert_int_eq(t_pread(be, in, 4096, 2 * MiB), 0);
    /* Writes into the range fail and leave the layer below untouched. */
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 3 * MiB, true), -ENOSPC);
    ck_assert_int_eq(t_pwrite(be, buf, 2, 3 * MiB - 1, false), -ENOSPC);
    assert_reads_zero(lower, 3 * MiB - 1, 4096);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, false), 0);
    ck_assert_int_eq(t_pread(lower, in, sizeof in, 0), 0);
    ck_assert_mem_eq(in, buf, sizeof buf);
    /* Trim and zero by a '+' list; flush and cache have no rule. */
    ck_assert_int_eq(t_trim(be, 0, 1, false), -EROFS);
    ck_assert_int_eq(t_zero(be, 4095, 2, 0, false), -EROFS);
    ck_assert_int_eq(t_zero(be, 4096, 4096, 0, false), 0);
    ck_assert_int_eq(t_pread(lower, in, 4096, 0), 0);
    ck_assert_mem_eq(in, buf, 4096);
    ck_assert_int_eq(t_flush(be), 0);
    ck_assert_int_eq(t_cache(be, 0, 4 * MiB), 0);
    struct backend_extent ext[4];
    ck_assert_int_eq(t_extents(be, 2 * MiB + 5, 10, ext, 4), -EDQUOT);
    ck_assert_int_eq(t_extents(be, 0, 2 * MiB, ext, 4), 2);
    /* Checks of the common code come first: out of range is EINVAL. */
    ck_assert_int_eq(t_pread(be, in, 1, 4 * MiB), -EINVAL);
    backend_unref(be);
    backend_unref(lower);
}
END_TEST

UNIT_TEST("fault", test_backend_fault_flush_and_first_rule_wins)
{
    struct backend *be =
        wrap(memory(1 * MiB, false), "flush:EIO,write@0-4K:EPERM,write:EIO");
    ck_assert_int_eq(t_flush(be), -EIO);
    ck_assert_int_eq(t_pwrite(be, "x", 1, 0, false), -EPERM);
    ck_assert_int_eq(t_pwrite(be, "x", 1, 8192, false), -EIO);
    ck_assert_int_eq(t_pread(be, (char[1]){0}, 1, 0), 0);
    backend_unref(be);
}
END_TEST

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

UNIT_TEST("fault", test_backend_fault_delay_then_pass_or_fail)
{
    struct backend *be = wrap(memory(1 * MiB, false),
                              "write@0-4K:delay=50,read@0-4K:delay=50/EIO");
    unsigned char buf[100], in[100];
    fill_pattern(buf, sizeof buf, 9);
    /* A delay is a lower bound only: the call sleeps at least that long. */
    double start = now_seconds();
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 10, false), 0);
    ck_assert_double_ge(now_seconds() - start, 0.050);
    start = now_seconds();
    ck_assert_int_eq(t_pread(be, in, sizeof in, 10), -EIO);
    ck_assert_double_ge(now_seconds() - start, 0.050);
    /* The delayed write reached the layer below. */
    ck_assert_int_eq(t_pread(be, in, sizeof in, 8192), 0);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 8192, false), 0);
    ck_assert_int_eq(t_pread(be, in, sizeof in, 8192), 0);
    ck_assert_mem_eq(in, buf, sizeof in);
    backend_unref(be);
}
END_TEST

UNIT_TEST("fault", test_backend_fault_read_rule_is_not_a_hole)
{
    struct backend *be = wrap(memory(4 * MiB, false), "read@1M-2M:EIO");
    ck_assert_int_eq(t_is_hole(be, 0, 1 * MiB), 1);
    ck_assert_int_eq(t_is_hole(be, 1 * MiB, 64 * KiB), 0);
    ck_assert_int_eq(t_is_hole(be, 512 * KiB, 1 * MiB), 0);
    ck_assert_int_eq(t_is_hole(be, 2 * MiB, 2 * MiB), 1);
    backend_unref(be);
}
END_TEST

UNIT_TEST("fault", test_backend_fault_chain_facts_from_below)
{
    struct backend *lower = memory(3 * MiB + 1, true);
    struct backend *be = wrap(backend_ref(lower), "read:EIO");
    ck_assert_uint_eq(backend_size(be), 3 * MiB + 1);
    ck_assert_uint_eq(backend_caps(be), backend_caps(lower));
    ck_assert(backend_read_only(be));
    ck_assert_int_eq(backend_concurrency(be), BACKEND_PARALLEL);
    char c = 0;
    ck_assert_int_eq(t_pwrite(be, &c, 1, 0, false), -EPERM);
    /* Dropping the filter keeps the layer below for its other holder. */
    backend_unref(be);
    ck_assert_int_eq(t_pread(lower, &c, 1, 0), 0);
    backend_unref(lower);
}
END_TEST

static const struct {
    const char *text;
    const char *error;
} bad_rules[] = {
    {"", "fault rule '': expected OPS:ACTION"},
    {"read", "fault rule 'read': expected OPS:ACTION"},
    {"read:", "fault rule 'read:': no action"},
    {"frob:EIO", "fault rule 'frob:EIO': unknown operation 'frob'"},
    {"read+:EIO", "unknown operation ''"},
    {":EIO", "fault rule ':EIO': no operation"},
    {"read:EBOGUS", "unknown action 'EBOGUS' (an errno name such as EIO"},
    {"read@5:EIO", "expected @START-END or @START- with START < END"},
    {"read@2M-1M:EIO", "with START < END"},
    {"read@x-:EIO", "with START < END"},
    {"read:delay=soon", "unknown action 'delay=soon'"},
    {"read:EIO,write", "fault rule 'write': expected OPS:ACTION"},
};

UNIT_LOOP_TEST("fault", test_backend_fault_parse_errors, 0,
               ARRAY_SIZE(bad_rules))
{
    struct backend_fault_rule *rules = (void *)1;
    unsigned nr = 7;
    struct err err;
    err_clear(&err);
    ck_assert_int_eq(backend_fault_parse(bad_rules[_i].text, &rules, &nr, &err),
                     -EINVAL);
    ck_assert_ptr_null(rules);
    ck_assert_uint_eq(nr, 0);
    ck_assert_msg(strstr(err.msg, bad_rules[_i].error) != NULL,
                  "'%s': got '%s', want '%s'", bad_rules[_i].text, err.msg,
                  bad_rules[_i].error);
}
END_TEST

UNIT_TEST("fault", test_backend_fault_parse_good)
{
    struct backend_fault_rule *r;
    unsigned nr;
    struct err err;
    err_clear(&err);
    ck_assert_int_eq(backend_fault_parse("write+zero@1M-2M:ENOSPC,all:delay=20,"
                                         "flush:delay=5/EIO,read@4K-:EIO",
                                         &r, &nr, &err),
                     0);
    ck_assert_uint_eq(nr, 4);
    ck_assert_uint_eq(r[0].ops, BACKEND_FAULT_WRITE | BACKEND_FAULT_ZERO);
    ck_assert_uint_eq(r[0].start, 1 * MiB);
    ck_assert_uint_eq(r[0].end, 2 * MiB);
    ck_assert_int_eq(r[0].error, ENOSPC);
    ck_assert_uint_eq(r[0].delay_ns, 0);
    ck_assert_uint_eq(r[1].ops, BACKEND_FAULT_ALL);
    ck_assert_uint_eq(r[1].start, 0);
    ck_assert_uint_eq(r[1].end, UINT64_MAX);
    ck_assert_int_eq(r[1].error, 0);
    ck_assert_uint_eq(r[1].delay_ns, 20000000);
    ck_assert_int_eq(r[2].error, EIO);
    ck_assert_uint_eq(r[2].delay_ns, 5000000);
    ck_assert_uint_eq(r[3].start, 4 * KiB);
    ck_assert_uint_eq(r[3].end, UINT64_MAX);
    free(r);
}
END_TEST

/*
 * A BACKEND_SERIAL layer made for this test: every read sleeps a little
 * on its loop and records how many reads are inside it at once.
 */
struct probe {
    struct backend be;
    atomic_int inside;
    atomic_int most;
};

static int probe_pread(struct backend *b, void *buf, uint32_t len,
                       uint64_t offset)
{
    (void)offset;
    struct probe *p = container_of(b, struct probe, be);
    int now = atomic_fetch_add(&p->inside, 1) + 1;
    int most = atomic_load(&p->most);
    while (now > most && !atomic_compare_exchange_weak(&p->most, &most, now)) {
    }
    coro_sleep_ns(2 * 1000 * 1000);
    memset(buf, 0, len);
    atomic_fetch_sub(&p->inside, 1);
    return 0;
}

static int probe_flush(struct backend *b)
{
    (void)b;
    return 0;
}

static void probe_close(struct backend *b)
{
    (void)b; /* lives on the test's stack */
}

static const struct backend_ops probe_ops = {
    .name = "probe",
    .close = probe_close,
    .pread = probe_pread,
    .flush = probe_flush,
};

#define PROBE_LOOPS 4
#define PROBE_READERS 16

struct probe_run {
    struct backend *be;
    atomic_int done;
};

static void probe_reader(void *arg)
{
    struct probe_run *run = arg;
    char buf[16];
    for (int i = 0; i < 4; i++) {
        backend_pread(run->be, buf, sizeof buf, 0);
    }
    atomic_fetch_add(&run->done, 1);
}

static bool probe_done(void *arg)
{
    return atomic_load(&((struct probe_run *)arg)->done) == PROBE_READERS;
}

UNIT_TEST("chain", test_backend_serial_layer_entered_one_call_at_a_time)
{
    fixture_loops_stop();
    fixture_loops_start(PROBE_LOOPS, 0);
    struct probe p;
    memset(&p, 0, sizeof p);
    backend_init(&p.be, &probe_ops, NULL, 4096, BACKEND_CAP_READ_ONLY,
                 BACKEND_SERIAL);
    /* A parallel filter over it: the chain reports the stricter class,
     * and the filter's calls still meet the layer's mutex. */
    struct backend *top = wrap(backend_ref(&p.be), NULL);
    ck_assert_int_eq(backend_concurrency(top), BACKEND_SERIAL);
    struct probe_run run = {.be = top, .done = 0};
    for (unsigned i = 0; i < PROBE_READERS; i++) {
        fixture_spawn_on(i % PROBE_LOOPS, probe_reader, &run);
    }
    ck_assert(fixture_wait_until(probe_done, &run, 30000));
    ck_assert_int_eq(atomic_load(&p.most), 1);
    backend_unref(top);
    ck_assert_uint_eq(refcount_read(&p.be.refs), 1);
    backend_unref(&p.be);
}
END_TEST

UNIT_SUITE("backend-fault");
UNIT_TCASE("fault", 30, setup, teardown);
UNIT_TCASE("chain", 30, setup, teardown);
FIXTURE_BACKEND_CONFORMANCE(conformance_impls);
