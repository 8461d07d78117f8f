/* SPDX-License-Identifier: MIT */
/*
 * NBD client on the runtime: one connection, requests from any loop.
 *
 * client_connect opens a socket, negotiates (fixed newstyle; NBD_OPT_GO,
 * or NBD_OPT_EXPORT_NAME for servers that do not know GO; extended
 * headers when the server offers them, else structured replies;
 * base:allocation) and starts one reply-receiver coroutine.  After that,
 * any coroutine on any loop may issue requests on the connection at the
 * same time: the request is sent under the connection's send co_mutex,
 * the coroutine parks, and the receiver, reading replies on its own loop,
 * matches the cookie, fills the request's buffer and wakes the coroutine
 * on the loop it parked on.
 *
 * A server error for one request becomes that request's negative errno;
 * the connection stays usable.  A broken connection (end of file, a
 * framing error, a failed send) fails every request in flight and every
 * later one with the same error: nothing hangs.
 */
#ifndef NBDSRV_CLIENT_H
#define NBDSRV_CLIENT_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/client-uri.h"
#include "nbdsrv/err.h"
#include "nbdsrv/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chan;
struct client_conn;
struct tls_creds;

/* What to negotiate.  Zero-initialised means the defaults noted. */
struct client_opts {
    bool no_structured; /* do not ask for structured replies */
    bool no_extended;   /* do not ask for extended headers */
    bool no_meta;       /* do not ask for base:allocation */
    /* Another metadata context to select beside base:allocation (e.g.
     * "qemu:dirty-bitmap:NAME"), read by client_block_status_extra; NULL:
     * none.  Borrowed for the call. */
    const char *meta_context;
    bool force_export_name; /* skip GO, use NBD_OPT_EXPORT_NAME (tests) */
    unsigned max_requests;  /* in flight per connection; 0 means 64 */
    struct loop *recv_loop; /* receiver's loop; NULL: the caller's */
    /*
     * The whole handshake (TLS included) must end within this many
     * nanoseconds after the connection is made, else the connect fails
     * with ETIMEDOUT.  0: no limit.
     */
    uint64_t handshake_timeout_ns;
    /*
     * Client TLS credentials for nbds URIs, borrowed for the call (the
     * connection keeps its own reference through its TLS channel).
     * NULL: each connection loads them from the URI.
     */
    struct tls_creds *tls_creds;
};

/*
 * What the handshake learned.  Immutable after client_connect returns;
 * owned by the connection (strings freed with it).
 */
struct client_info {
    uint64_t size;
    uint16_t tx_flags;   /* PROTO_FLAG_* transmission flags */
    uint16_t hs_flags;   /* the server's handshake flags */
    uint32_t block_min;  /* 1 when the server did not say */
    uint32_t block_pref; /* 4096 when the server did not say */
    uint32_t block_max;  /* 32 MiB when the server did not say */
    bool has_block_size; /* the server sent NBD_INFO_BLOCK_SIZE */
    bool used_go;        /* false: NBD_OPT_EXPORT_NAME */
    bool structured;     /* structured replies (also true when extended) */
    bool extended;       /* extended headers */
    bool tls;            /* the connection runs over TLS */
    bool has_alloc;      /* base:allocation was selected */
    uint32_t alloc_id;   /* its context id */
    bool has_extra;      /* client_opts.meta_context was selected */
    uint32_t extra_id;   /* its context id */
    char *name;          /* canonical export name (or the one asked for) */
    char *description;   /* or NULL */
    /* With TLS, what the handshake agreed, e.g. "TLS1.3" and "AES-128-GCM"
     * (GnuTLS's static strings, not freed); NULL without TLS. */
    const char *tls_version;
    const char *tls_cipher;
};

/* One extent of a block status reply. */
struct client_extent {
    uint64_t offset;
    uint64_t length;
    uint32_t flags; /* PROTO_STATE_HOLE, PROTO_STATE_ZERO */
};

/*
 * Connects to the server `uri` names and negotiates.  On success returns
 * the connection, whose receiver runs on opts->recv_loop (or the caller's
 * loop).  On failure returns NULL with err describing what went wrong
 * (refused, export unknown, TLS not available...).  CORO_FN.
 */
CORO_FN struct client_conn *client_connect(const struct client_uri *uri,
                                           const struct client_opts *opts,
                                           struct err *err);

/*
 * Negotiates over an already connected channel (for tests with a fake
 * server on a socketpair), taking the reference `ch`.  CORO_FN.
 */
CORO_FN struct client_conn *client_connect_chan(struct chan *ch,
                                                const struct client_uri *uri,
                                                const struct client_opts *opts,
                                                struct err *err);

/*
 * Loads the client TLS credentials an nbds URI names, following libnbd's
 * conventions: tls-psk-file=FILE for TLS-PSK, with the URI's user name
 * as the identity (the login name when it has none); otherwise
 * tls-certificates=DIR for X.509 (DIR/ca-cert.pem, and optionally
 * DIR/client-cert.pem and DIR/client-key.pem), the server's certificate
 * checked against tls-hostname= or the URI's host unless
 * tls-verify-peer=false.  Returns a new reference (tls_creds_unref), or
 * NULL with err naming what is missing or the file that is bad.
 * ANY_THREAD.
 */
ANY_THREAD struct tls_creds *client_tls_creds_new(const struct client_uri *uri,
                                                  struct err *err);

/*
 * Sends NBD_CMD_DISC (if the connection is still up), closes the socket,
 * waits for the receiver to end and frees the connection.  No request may
 * be in flight or issued afterwards.  NULL is allowed.  CORO_FN.
 */
CORO_FN void client_close(struct client_conn *conn);

/* The negotiated export and features.  ANY_THREAD. */
ANY_THREAD const struct client_info *client_info(const struct client_conn *c);

/*
 * Why the connection broke, or NULL while it is up.  ANY_THREAD; the
 * text stays valid until client_close.
 */
ANY_THREAD const char *client_error(struct client_conn *conn);

/*
 * Requests.  Each sends one command and waits for its reply; `flags` are
 * PROTO_CMD_FLAG_* bits (FUA, NO_HOLE, FAST_ZERO, REQ_ONE, DF).  Returns
 * 0 (block status: the number of extents stored) or a negative errno:
 * the server's error for this request, -EINVAL for arguments the export
 * does not allow (checked before sending: beyond the end, longer than the
 * maximum payload, a command the server did not advertise), or the
 * connection's error once it has broken.  CORO_FN, from any loop.
 */
CORO_FN int client_pread(struct client_conn *c, void *buf, size_t len,
                         uint64_t offset, uint16_t flags);
CORO_FN int client_pwrite(struct client_conn *c, const void *buf, size_t len,
                          uint64_t offset, uint16_t flags);
CORO_FN int client_flush(struct client_conn *c, uint16_t flags);
CORO_FN int client_trim(struct client_conn *c, uint64_t len, uint64_t offset,
                        uint16_t flags);
CORO_FN int client_write_zeroes(struct client_conn *c, uint64_t len,
                                uint64_t offset, uint16_t flags);
CORO_FN int client_cache(struct client_conn *c, uint64_t len, uint64_t offset,
                         uint16_t flags);

/*
 * NBD_CMD_BLOCK_STATUS for base:allocation over [offset, offset+len):
 * stores up to `cap` extents, in order and contiguous from `offset`, and
 * returns how many (at least 1), or a negative errno (-ENOTSUP when
 * base:allocation was not negotiated).  Extents beyond `cap` are dropped.
 * CORO_FN.
 */
CORO_FN int client_block_status(struct client_conn *c, uint64_t len,
                                uint64_t offset, uint16_t flags,
                                struct client_extent *ext, size_t cap);
/* The same for the context client_opts.meta_context named (-ENOTSUP when
 * the server did not select it); `flags` of each extent is its status
 * (for qemu:dirty-bitmap, 1: dirty).  CORO_FN. */
CORO_FN int client_block_status_extra(struct client_conn *c, uint64_t len,
                                      uint64_t offset, uint16_t flags,
                                      struct client_extent *ext, size_t cap);

/*
 * The export names and descriptions NBD_OPT_LIST returns, then
 * NBD_OPT_ABORT.  Of `opts` (may be NULL) only tls_creds is used.  On
 * success *names and *descs are arrays of *n heap strings (free each and
 * the arrays with client_free_list).  Returns 0 or -errno with err set.
 * CORO_FN.
 */
CORO_FN int client_list_exports(const struct client_uri *uri,
                                const struct client_opts *opts, char ***names,
                                char ***descs, size_t *n, struct err *err);

ANY_THREAD void client_free_list(char **names, char **descs, size_t n);

/*
 * Several connections to one export, for servers with CAN_MULTI_CONN.
 * Owned by whoever called client_pool_connect.
 */
struct client_pool {
    unsigned count;
    struct client_conn **conns;
};

/*
 * Opens `count` connections (1 if the server does not advertise
 * CAN_MULTI_CONN), loading the TLS credentials of an nbds URI once for
 * all of them unless opts gives some; the receivers are spread over
 * `loops` round robin (or all on the caller's loop when loops is NULL). Returns
 * 0 or -errno with err set.  CORO_FN.
 */
CORO_FN int client_pool_connect(struct client_pool *pool,
                                const struct client_uri *uri,
                                const struct client_opts *opts, unsigned count,
                                const struct loop_group *loops,
                                struct err *err);

/* The i-th connection, modulo count.  ANY_THREAD. */
ANY_THREAD struct client_conn *client_pool_get(const struct client_pool *pool,
                                               unsigned i);

/* Closes every connection.  CORO_FN. */
CORO_FN void client_pool_close(struct client_pool *pool);

#endif
