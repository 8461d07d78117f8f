/* SPDX-License-Identifier: MIT */
/*
 * Client internals shared by the files of src/client/: the connection
 * (client-conn.c), the reply receiver (client-recv.c), request issue and
 * the commands (client-cmd.c), the pool (client-pool.c) and the
 * handshake (client-negotiate.c, client-tls.c, client-deadline.c).
 *
 * Cookies: a request takes a slot of the connection's table (waiting
 * for one when max_requests are in flight) and its cookie is the slot
 * number in the low CLIENT_SLOT_BITS bits and a generation count above,
 * so a stale or forged cookie from the server never matches.
 *
 * Hand-over between the issuer and the receiver (they may run on
 * different loops): the issuer registers the request (state SENDING)
 * under `lock`, sends it under `send_lock`, then moves the state from
 * SENDING to WAITING with a compare-and-swap and parks.  The receiver,
 * once the last chunk of the reply is in, unregisters it, stores the
 * result, and exchanges the state to DONE: if the old state was WAITING
 * it wakes the issuer on the issuer's loop; if it was SENDING the
 * issuer's compare-and-swap fails and it does not park.  The exchange
 * and the compare-and-swap are seq_cst (acquire-release would do): the
 * issuer sees every byte the receiver wrote into its buffer.  A wake
 * that arrives before the issuer has finished yielding only queues the
 * coroutine on its own loop, whose thread is the one yielding it, so it
 * runs after it parked (the coro-lock argument).
 *
 * Only the receiver completes requests.  A send that fails shuts the
 * socket down, which makes the receiver's read fail; the receiver then
 * marks the connection dead under `lock` and completes every registered
 * request with the error.  A request registered after that sees `dead`
 * and fails at once.  So every request ends, and none ends twice.
 */
#ifndef NBDSRV_CLIENT_INT_H
#define NBDSRV_CLIENT_INT_H

#include "nbdsrv/chan.h"
#include "nbdsrv/client.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/refcount.h"

#include <pthread.h>
#include <stdatomic.h>

/* A request's progress; see the hand-over protocol above. */
enum client_req_state {
    CLIENT_REQ_SENDING = 0, /* registered; the issuer has not parked */
    CLIENT_REQ_WAITING = 1, /* the issuer parked (or is about to) */
    CLIENT_REQ_DONE = 2,    /* the receiver finished with it */
};

/*
 * One request in flight.  Lives on the issuing coroutine's stack; the
 * receiver borrows it from the moment it is in the table until it sets
 * state to DONE, and touches it no more after that.
 */
struct client_req {
    uint64_t cookie;           /* immutable once registered */
    uint16_t type;             /* immutable */
    uint64_t offset;           /* immutable */
    uint64_t length;           /* immutable */
    uint8_t *buf;              /* READ: destination; receiver writes into it */
    struct client_extent *ext; /* BLOCK_STATUS: destination */
    uint32_t context_id;       /* BLOCK_STATUS: the context stored; immutable */
    size_t ext_cap;
    size_t ext_n;       /* receiver-owned until DONE */
    uint64_t data_seen; /* receiver-owned: READ bytes covered so far */
    int result;         /* receiver-owned until DONE: 0 or -errno */
    struct coro *co;    /* immutable: the issuer */
    atomic_int state;   /* enum client_req_state; acq_rel exchanges */
};

/* A coroutine waiting for a free request slot. */
struct client_slot_waiter {
    struct client_slot_waiter *next;
    struct coro *co;
    int slot; /* handed over by the releaser, or -1 when the conn died */
};

/*
 * A connection.  Owned jointly by the user (until client_close) and the
 * receiver coroutine (until it ends): refs.
 */
struct client_conn {
    struct chan *ch;         /* immutable after connect; one reference */
    struct client_info info; /* immutable after connect */
    struct refcount refs;

    /* Lock order: send_lock, then lock. */
    struct co_mutex send_lock;             /* serialises request writes */
    pthread_mutex_t lock;                  /* leaf; never held across a yield */
    struct client_req **slots;             /* under lock: cookie low bits */
    unsigned nr_slots;                     /* immutable */
    int *free_slots;                       /* under lock: stack of free slots */
    unsigned nr_free;                      /* under lock */
    uint64_t generation;                   /* under lock: cookie high bits */
    struct client_slot_waiter *slot_head;  /* under lock */
    struct client_slot_waiter **slot_tail; /* under lock */
    int dead;                              /* under lock: 0 or -errno */
    char dead_msg[256];                    /* written once before dead is set */
    bool recv_done;                        /* under lock */
    struct coro *closer; /* under lock: waits in client_close */

    /* Receiver-owned: its buffered input. */
    uint8_t *rbuf;
    size_t rpos, rlen;
    size_t read_hint; /* how much to ask for when refilling rbuf */
    bool went_direct; /* this reply's payload bypassed rbuf */
};

/* The receive buffer: replies coalesce into one read at high depth. */
#define CLIENT_RBUF_SIZE (64u * 1024)
/* Payload at least this long is read straight into the destination. */
#define CLIENT_DIRECT_MIN (16u * 1024)
/*
 * After a reply whose payload was read straight into its destination,
 * the next refill asks for only this much: a large READ reply then
 * leaves little of its data in rbuf to be copied a second time.
 */
#define CLIENT_HEADER_READ 64u
#define CLIENT_SLOT_BITS 16
#define CLIENT_MAX_SLOTS (1u << CLIENT_SLOT_BITS)

/*
 * Drops a reference to the connection; the last one frees it with its
 * channel reference and its info strings.  NULL is allowed.  ANY_THREAD.
 */
ANY_THREAD void client_conn_unref(struct client_conn *conn);

/*
 * The reply receiver: the entry of the coroutine client_connect_chan
 * starts with `arg` the connection, whose reference it takes.  It reads
 * replies until the connection breaks, then fails every request, wakes
 * the closer, and drops its reference.  CORO_FN.
 */
CORO_FN void client_recv_entry(void *arg);

/*
 * Runs the handshake on conn->ch for `uri`'s export and fills conn->info.
 * Returns 0 or -errno with err set.  CORO_FN.
 */
CORO_FN int client_negotiate(struct client_conn *conn,
                             const struct client_uri *uri,
                             const struct client_opts *opts, struct err *err);

/*
 * Upgrades the channel to TLS during option haggling (NBD_OPT_STARTTLS,
 * then the TLS handshake over the socket), as an nbds URI requires:
 * on success *ch is replaced by the TLS channel, which took the socket
 * channel's reference.  `creds` (borrowed) are the client credentials;
 * NULL loads them from the URI for this connection only.  On failure *ch
 * is unchanged and err says why (no TLS on the server, the handshake's
 * reason).  Returns 0 or -errno.  CORO_FN.
 */
CORO_FN int client_tls_upgrade(struct chan **ch, const struct client_uri *uri,
                               struct tls_creds *creds, struct err *err);

/*
 * A time limit on a handshake (client_opts.handshake_timeout_ns).  On the
 * stack of the coroutine that handshakes; start and stop on its loop.
 */
struct client_deadline {
    struct coro_timer timer;
    struct chan *ch; /* a reference to the socket channel while armed */
    uint64_t ns;     /* 0: no limit, nothing armed */
};
CORO_FN void client_deadline_start(struct client_deadline *d, struct chan *ch,
                                   uint64_t ns);
/* Disarms it: 0, or -ETIMEDOUT with err set when the time ran out. */
CORO_FN int client_deadline_stop(struct client_deadline *d, struct err *err);

/* The greeting and client flags on a connected channel.  CORO_FN. */
CORO_FN int client_greet(struct chan *ch, uint16_t *hs_flags, struct err *err);

/*
 * The start of every handshake on a connected socket channel: the
 * greeting, then, for an nbds URI, the upgrade to TLS (which replaces
 * *ch by the transport channel) with `creds` (borrowed; NULL: loaded
 * from the URI).  On failure *ch is still the caller's to release.
 * Returns 0 or -errno with err set.  CORO_FN.
 */
CORO_FN int client_start(struct chan **ch, const struct client_uri *uri,
                         struct tls_creds *creds, uint16_t *hs_flags,
                         struct err *err);

#endif
