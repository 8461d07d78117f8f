/* SPDX-License-Identifier: MIT */
/*
 * Private to src/server: the counters behind /metrics (stats.c).
 *
 * Request counters live per loop: each loop has its own block of
 * counters for each export name, and only that loop's thread writes it
 * (relaxed atomic loads and stores, no read-modify-write, no lock), on
 * its own cache lines.  The HTTP thread reads every loop's block with
 * relaxed loads and sums at scrape time.  A sum may be a few requests
 * behind; no count is ever lost or counted twice.
 *
 * Counters per export name: a `struct export_stats` is shared by every
 * export object of that name (a reload makes new export objects; the
 * counters carry on).  The server keeps each block it ever made in its
 * list until it is freed, so an export that is removed and added back
 * continues its counters, and a removed export's series stay (frozen)
 * until the daemon restarts.
 */
#ifndef NBDSRV_STATS_INT_H
#define NBDSRV_STATS_INT_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/refcount.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct server;
struct conn;
struct proto_request;

/* Commands by their value (NBD_CMD_READ 0 .. NBD_CMD_RESIZE 8), then one
 * slot for any other. */
#define STATS_NR_CMDS 10u
/* NBD errors of replies (proto.def's PROTO_ERR), then one for others. */
#define STATS_NR_ERRS 9u
/* Latency bucket bounds (stats.c: stats_latency_bounds). */
#define STATS_NR_BOUNDS 19u
/* Loops counted; a loop with a higher index is not counted. */
#define STATS_MAX_LOOPS 256u

/* One command's counters in one loop's block. */
struct stats_cmd {
    atomic_uint_least64_t requests;
    atomic_uint_least64_t latency_ns; /* sum */
    atomic_uint_least64_t buckets[STATS_NR_BOUNDS + 1];
    atomic_uint_least64_t errors[STATS_NR_ERRS];
};

/* One loop's counters of one export name: written by that loop's
 * thread only, read by the scraper. */
struct stats_export_loop {
    struct stats_cmd cmd[STATS_NR_CMDS];
    atomic_uint_least64_t bytes_read;
    atomic_uint_least64_t bytes_written;
} __attribute__((aligned(64)));

/*
 * The counters of an export name.  Reference counted (atomic): the
 * server's list holds one, each export object of that name one.  name
 * is immutable; `next` is under srv->lock.  loops[i] is set once, by
 * loop i's thread on its first request (release), read with acquire.
 */
struct export_stats {
    struct refcount refs;
    struct export_stats *next;
    char *name;
    _Atomic(struct stats_export_loop *) loops[STATS_MAX_LOOPS];
};

/* Server-wide counters of one loop, on its own cache lines; written by
 * that loop's thread only. */
struct stats_loop {
    atomic_uint_least64_t received; /* requests read by home receive sides */
    atomic_uint_least64_t served;   /* requests finished on this loop */
    atomic_uint_least64_t reply_writes; /* socket writes of replies */
} __attribute__((aligned(64)));

/* Why a handshake ended without reaching the transmission phase. */
enum stats_handshake {
    STATS_HS_TLS,            /* TLS handshake failed, or TLS required */
    STATS_HS_TIMEOUT,        /* handshake-timeout */
    STATS_HS_UNKNOWN_EXPORT, /* the last export asked for does not exist */
    STATS_HS_ALLOW,          /* ...is hidden by allow or tls-identities */
    STATS_HS_OTHER,          /* the client went away mid-way or broke the
                                protocol (a polite end after only asking
                                does not count at all) */
    STATS_HS_NR,
};

/*
 * Rare, server-wide events: relaxed atomic increments (no ordering with
 * anything; a scrape may see them late).  Embedded in the server.
 */
struct stats_events {
    atomic_uint_least64_t accepted;
    atomic_uint_least64_t refused[8]; /* by enum server_admit */
    atomic_uint_least64_t handshake_failed[STATS_HS_NR];
};

/* The block for `name`, made and listed if new, with a reference for
 * the caller; NULL when out of memory.  Takes srv->lock. */
ANY_THREAD struct export_stats *server_export_stats(struct server *srv,
                                                    const char *name);
ANY_THREAD void export_stats_unref(struct export_stats *st); /* NULL ok */
/* Frees the server's list (server_free). */
ANY_THREAD void server_stats_fini(struct server *srv);

/* CLOCK_MONOTONIC in ns: a request's arrival_ns.  ANY_THREAD. */
ANY_THREAD uint64_t stats_clock_ns(void);
/* The receive side has read a request and dispatches it (home loop). */
CORO_FN void stats_request_received(struct server *srv);
/* One write of replies to a client's socket, by the calling coroutine's
 * loop. */
CORO_FN void stats_reply_write(struct server *srv);
/* Request `req` of `conn`, whose header was read at arrival_ns, has
 * finished with `err` (0 or the errno replied with); counted on the loop
 * the calling coroutine is on. */
CORO_FN void stats_request_done(const struct conn *conn,
                                const struct proto_request *req,
                                uint64_t arrival_ns, int err);

#endif
