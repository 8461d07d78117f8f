/* SPDX-License-Identifier: MIT */
/*
 * Test fixture for the storage layer: backend calls run in coroutines on
 * the fixture loops, and the conformance suite that every backend and
 * filter passes through the interface alone.
 */
#ifndef NBDSRV_FIXTURE_BACKEND_H
#define NBDSRV_FIXTURE_BACKEND_H

#include "fixture-main.h"
#include "nbdsrv/backend.h"
#include "nbdsrv/compiler.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#define KiB (1024u)
#define MiB (1024u * 1024)
#define GiB (1024ull * 1024 * 1024)
#define TiB (1024ull * 1024 * 1024 * 1024)

/*
 * Each call runs in a coroutine on loop 0 or loop 1, in turn (so a layer
 * is always used from more than one loop), and returns what the backend
 * call returned.  The fixture loops must be running (fixture_loops_start
 * with at least 2).
 */
int t_pread(struct backend *be, void *buf, uint64_t len, uint64_t offset);
int t_pwrite(struct backend *be, const void *buf, uint64_t len, uint64_t offset,
             bool fua);
int t_flush(struct backend *be);
int t_trim(struct backend *be, uint64_t offset, uint64_t len, bool fua);
int t_zero(struct backend *be, uint64_t offset, uint64_t len, unsigned flags,
           bool fua);
int t_cache(struct backend *be, uint64_t offset, uint64_t len);
int t_extents(struct backend *be, uint64_t offset, uint64_t len,
              struct backend_extent *ext, unsigned max);
int t_is_hole(struct backend *be, uint64_t offset, uint64_t len);
/* Restarts the loop alternation at loop 0. */
void t_reset(void);

/* A byte pattern that is never zero, different for each seed. */
void fill_pattern(unsigned char *buf, size_t len, unsigned seed);
/* Asserts that the layer reads [offset, offset+len) as zeroes. */
void assert_reads_zero(struct backend *be, uint64_t offset, size_t len);

/*
 * One implementation under test: open returns a new layer of `size`
 * bytes that reads as zeroes, writable unless read_only (ck_abort on
 * failure), with no state shared with earlier layers.  `holes` says that
 * unwritten space of a fresh layer is reported as holes.
 */
struct backend_impl {
    const char *name;
    struct backend *(*open)(uint64_t size, bool read_only);
    bool holes;
};

/*
 * Adds the TCase "conformance" to s: every test of the shared suite,
 * once for each of the n implementations (impls must outlive the run).
 */
void fixture_backend_conformance(Suite *s, const struct backend_impl *impls,
                                 unsigned n);

/* In a test file: adds the conformance TCase for the array impls to the
 * file's Suite (fixture-main.h's UNIT_SUITE_EXTEND). */
#define FIXTURE_BACKEND_CONFORMANCE(impls)                                     \
    static void fixture_backend_add_conformance(Suite *s)                      \
    {                                                                          \
        fixture_backend_conformance(s, impls, ARRAY_SIZE(impls));              \
    }                                                                          \
    UNIT_SUITE_EXTEND(fixture_backend_add_conformance)

#endif
