/* SPDX-License-Identifier: MIT */
/* nbdc internals: subcommands, endpoints (a file or an NBD export). */
#ifndef NBDSRV_NBDC_INT_H
#define NBDSRV_NBDC_INT_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/client.h"
#include "nbdsrv/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes (man/nbdc.1, EXIT STATUS). */
#define NBDC_EXIT_OK 0
#define NBDC_EXIT_FAIL 1  /* the operation failed: I/O, connection, server */
#define NBDC_EXIT_USAGE 2 /* bad command line or URI */

/* A server that has not finished the handshake by then is given up on. */
#define NBDC_HANDSHAKE_TIMEOUT_NS (30ull * 1000 * 1000 * 1000)

/*
 * Subcommands; each returns an exit code.  They start and stop their own
 * loops, so they run on a thread that is not a loop's (main).
 * ANY_THREAD but never from a loop thread.
 */
ANY_THREAD int nbdc_info_main(int argc, char **argv);
ANY_THREAD int nbdc_copy_main(int argc, char **argv);
ANY_THREAD int nbdc_bench_main(int argc, char **argv);

/* The copy endpoint that discards what it is given (a destination). */
#define NBDC_NULL_NAME "null:"
/* The copy endpoint for standard input (source) or output (destination). */
#define NBDC_STDIO_NAME "-"

/*
 * nbdc copy when SRC or DST is "-": a sequential stream from standard
 * input or to standard output (nbdc-stream.c).  Returns an exit code.
 * ANY_THREAD but never from a loop thread (it starts its own loops).
 */
ANY_THREAD int nbdc_copy_stream(const char *src, const char *dst,
                                unsigned threads);

/* Whether all `len` bytes at p are zero.  ANY_THREAD. */
ANY_THREAD bool nbdc_all_zero(const uint8_t *p, size_t len);

/* Prints "nbdc: " and the message to stderr.  ANY_THREAD. */
ANY_THREAD void nbdc_error(const char *fmt, ...) PRINTF_FMT(1, 2);

/*
 * Parses a size with an optional K, M, G or T suffix (powers of 1024,
 * optionally followed by "iB" or "B").  Returns 0 or -EINVAL.
 * ANY_THREAD.
 */
ANY_THREAD int nbdc_parse_size(const char *text, uint64_t *out);

/* Parses a positive integer in [min, max].  Returns 0 or -EINVAL. */
ANY_THREAD int nbdc_parse_uint(const char *text, unsigned min, unsigned max,
                               unsigned *out);

/* Monotonic time in nanoseconds.  ANY_THREAD. */
ANY_THREAD uint64_t nbdc_now_ns(void);

/*
 * Starts `n` loops (polling off: nbdc shares the machine with its
 * server).  Returns 0 or exits with a message.  ANY_THREAD but never
 * from a loop thread.
 */
ANY_THREAD int nbdc_loops_start(struct loop_group *group, unsigned n);

/*
 * One side of a copy: a local file or block device, or an NBD export
 * reached through a pool of connections.  Owned by the subcommand.
 */
struct nbdc_end {
    const char *name; /* as given on the command line */
    bool is_nbd;
    bool is_null;            /* "null:": writes are discarded */
    struct client_uri uri;   /* NBD */
    struct client_pool pool; /* NBD: immutable after open */
    struct backend *be;      /* file */
    bool fresh;              /* file created by us: reads as zeroes */
    uint64_t size;           /* immutable after open */
    uint32_t max_request;    /* largest read/write */
    bool can_extents;
    bool can_zero;
    bool can_dirty; /* NBD: the server selected the dirty bitmap asked */
};

/*
 * Opens an endpoint.  For NBD, `conns` connections with receivers on
 * `loops`; for a file, `create_size` non-zero creates a missing file of
 * that size; "null:" (writable only) takes any size and discards every
 * write.  Returns 0 or -errno with err set.  CORO_FN.
 */
CORO_FN int nbdc_end_open(struct nbdc_end *end, const char *name, bool writable,
                          unsigned conns, unsigned requests,
                          const struct loop_group *loops, uint64_t create_size,
                          struct err *err);
/* nbdc_end_open of an NBD source that also selects the dirty bitmap
 * `bitmap` (qemu:dirty-bitmap:BITMAP); -ENOTSUP with err set when the
 * server does not offer it, -EINVAL when `name` is not an NBD URI. */
CORO_FN int nbdc_end_open_dirty(struct nbdc_end *end, const char *name,
                                const char *bitmap, unsigned conns,
                                unsigned requests,
                                const struct loop_group *loops,
                                struct err *err);
CORO_FN void nbdc_end_close(struct nbdc_end *end);

/* I/O on an endpoint from any loop; `i` picks the connection. */
CORO_FN int nbdc_end_read(struct nbdc_end *end, unsigned i, void *buf,
                          uint32_t len, uint64_t off);
CORO_FN int nbdc_end_write(struct nbdc_end *end, unsigned i, const void *buf,
                           uint32_t len, uint64_t off);
/* Makes the range read as zeroes, punching holes where possible. */
CORO_FN int nbdc_end_zero(struct nbdc_end *end, unsigned i, uint64_t len,
                          uint64_t off);
CORO_FN int nbdc_end_flush(struct nbdc_end *end);

/*
 * Allocation from `off`: fills up to `max` extents (at least one) that
 * cover [off, off+len) contiguously from off or less of it; `zero` says
 * whether an extent reads as zeroes.  Returns the count or -errno.
 */
struct nbdc_extent {
    uint64_t length;
    bool zero;
    bool skip; /* clean in the dirty bitmap: nothing to copy */
};
CORO_FN int nbdc_end_extents(struct nbdc_end *end, unsigned i, uint64_t off,
                             uint64_t len, struct nbdc_extent *out,
                             unsigned max);
/* The same from the dirty bitmap of nbdc_end_open_dirty: dirty extents
 * are data to copy, clean ones are marked skip. */
CORO_FN int nbdc_end_dirty_extents(struct nbdc_end *end, unsigned i,
                                   uint64_t off, uint64_t len,
                                   struct nbdc_extent *out, unsigned max);

#endif
