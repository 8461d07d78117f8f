/* SPDX-License-Identifier: MIT */
/*
 * Private to src/server: the server, its exports, connections and
 * requests.
 *
 * Threads: a connection has a home loop, where its receive coroutine
 * runs: the handshake, then reading request headers and WRITE payloads.
 * Each request becomes a coroutine scheduled onto a worker loop (the home
 * loop unless it is SERVER_HOME_SLACK units of work behind the least loaded
 * loop; see server_pick_worker), which does the backend I/O on that loop's ring
 * and writes the reply from there, holding the connection's send_lock.
 */
#ifndef NBDSRV_SERVER_INT_H
#define NBDSRV_SERVER_INT_H

#include "nbdsrv/backend.h"
#include "nbdsrv/chan.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/dirty-bitmap.h"
#include "nbdsrv/log.h"
#include "nbdsrv/mutex.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/refcount.h"
#include "nbdsrv/server.h"
#include "nbdsrv/tls-creds.h"
#include "stats-int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Block sizes advertised with NBD_INFO_BLOCK_SIZE (the maximum is
 * min(SERVER_ADVERTISED_MAX_PAYLOAD, max-payload)). */
#define SERVER_BLOCK_MIN 1u
#define SERVER_BLOCK_PREFERRED 4096u

/* Size of a connection's receive buffer. */
#define CONN_RBUF_SIZE (64u * 1024)

/*
 * The metadata contexts we serve (meta.c); a selection is a bit mask.
 * The fixed ones come first, then an export's dirty bitmaps: context
 * SERVER_META_FIXED + i is qemu:dirty-bitmap:NAME of its bitmap i.
 */
enum server_meta {
    SERVER_META_ALLOCATION, /* base:allocation */
    SERVER_META_DEPTH,      /* qemu:allocation-depth */
    SERVER_META_FIXED
};
#define SERVER_META_MAX (SERVER_META_FIXED + DIRTY_MAX_BITMAPS)
#define SERVER_META_BIT(m) (1u << (m))
/* Room for a context's name: "qemu:dirty-bitmap:" and a bitmap name. */
#define SERVER_META_NAME_MAX (24 + DIRTY_NAME_MAX)

/*
 * An export.  Reference-counted (atomic): each export table that lists it
 * holds one reference and each connection in transmission with it one
 * more; the last export_unref frees it.  Every other field is immutable
 * after export_new.
 */
struct export
{
    struct refcount refs;
    char *name;
    char *path;
    char *description;  /* NULL when none */
    struct backend *be; /* we hold one reference */
    bool read_only;
    bool memory; /* a memory export (path NULL) */
    /* An RBD export (path NULL): its image and cluster settings, as in
     * struct export_config; rbd NULL otherwise. */
    char *rbd, *ceph_conf, *ceph_id, *ceph_keyring;
    uint64_t memory_size; /* its size */
    char *overlay;        /* the overlay file, or NULL */
    bool direct;
    bool no_trim;
    struct server_allow *allow; /* NULL: every client */
    unsigned nr_allow;
    struct export_stats *stats; /* the name's counters (a reference), or
                                   NULL (metrics off, or out of memory:
                                   not counted) */
    char **tls_identities;      /* export_allows_identity */
    unsigned nr_tls_identities;
    /* The dirty bitmaps the chain's tracking filter marks, served as
     * qemu:dirty-bitmap contexts; we hold one reference.  NULL: none. */
    struct dirty_set *dirty;
    uint64_t dirty_granularity; /* as configured (export_same_image) */
    char **dirty_bitmaps;       /* the names configured, and the file */
    unsigned nr_dirty_bitmaps;
    char *dirty_bitmap_file;
};

/*
 * The exports offered to new clients: an immutable snapshot, reference
 * counted (atomic).  The server holds one reference to the current table
 * (srv->table, swapped under srv->lock); a connection holds one while it
 * haggles, so that LIST, INFO and GO see one consistent set.
 */
struct export_table {
    struct refcount refs;
    unsigned nr;
    struct export *exps[]; /* each holds an export reference */
};

struct listener;

/* Client-triggered log lines let through per connection in a window. */
#define CONN_LOG_BURST 10u
#define CONN_LOG_WINDOW_NS (60ull * 1000 * 1000 * 1000)

/* A connection's log budget (conn-log.c).  Receive coroutine only. */
struct conn_log_limit {
    uint64_t window_start_ns; /* CLOCK_MONOTONIC start of the window */
    unsigned lines;           /* let through in this window */
    unsigned suppressed;      /* held back, not reported yet */
};

/*
 * A client address as admission counts it (admit.c): an IPv4 address
 * (also when it reaches an IPv6 listener as ::ffff:a.b.c.d), an IPv6
 * address, or AF_UNIX for every unix-socket client.  Unused bytes are
 * zero, so keys compare with memcmp.
 */
struct client_key {
    uint8_t family; /* AF_INET, AF_INET6 or AF_UNIX */
    uint8_t addr[16];
};

/*
 * Connections per client address: a chained hash table holding an entry
 * for each address that has connections.  Embedded in the server,
 * under srv->lock (server_locked).
 */
struct client_count;
struct client_table {
    struct client_count **buckets; /* nr_buckets (a power of two), or NULL */
    unsigned nr_buckets;
    unsigned nr;   /* entries */
    uint64_t seed; /* immutable after init: hash seed */
};

/* Why server_admit took or refused a connection. */
enum server_admit {
    SERVER_ADMIT_OK,
    SERVER_ADMIT_FULL,       /* limits.max_connections reached */
    SERVER_ADMIT_PER_CLIENT, /* limits.max_connections_per_client reached */
    SERVER_ADMIT_NO_MEMORY,  /* no memory to count the address */
    SERVER_ADMIT_NR,
};

/* What the acceptor logs, one rate limit each (server.c). */
enum accept_log {
    ACCEPT_LOG_NOFILE, /* EMFILE, ENFILE */
    ACCEPT_LOG_NOMEM,  /* ENOBUFS, ENOMEM, a broken listening socket */
    ACCEPT_LOG_OTHER,  /* an error of one connection, passed on */
    ACCEPT_LOG_NR,
};

/* At most one log line per refusal reason in this time. */
#define SERVER_REFUSAL_LOG_NS (10ull * 1000000000u)

/*
 * Requests dispatched to a loop and not finished yet.  One per loop, each
 * on its own cache line.  Relaxed atomics: a stale count only makes a
 * less even choice.
 */
struct loop_load {
    atomic_uint pending;
    char pad[64 - sizeof(atomic_uint)];
};

/*
 * The server-wide budget of buffer memory (buffer-budget.c).  Embedded
 * in the server; shared by every loop.
 */
struct buffer_budget {
    atomic_uint_least64_t used;  /* seq_cst: bytes taken */
    atomic_uint_least64_t limit; /* relaxed: max-buffer-memory */
    atomic_uint waiters;         /* seq_cst: receive sides asleep */
    struct co_mutex lock;        /* leaf; guards the sleep on `wait` */
    struct co_queue wait;
};

ANY_THREAD void buffer_budget_init(struct buffer_budget *b, uint64_t limit);
ANY_THREAD void buffer_budget_fini(struct buffer_budget *b);
/* Takes `bytes`, waiting while they do not fit (a request is admitted
 * alone even when larger than the limit).  CORO_FN. */
CORO_FN void buffer_budget_take(struct buffer_budget *b, uint64_t bytes);
/* Gives back what buffer_budget_take took.  CORO_FN. */
CORO_FN void buffer_budget_give(struct buffer_budget *b, uint64_t bytes);
ANY_THREAD void buffer_budget_set_limit(struct buffer_budget *b,
                                        uint64_t limit);
ANY_THREAD uint64_t buffer_budget_used(const struct buffer_budget *b);

/*
 * What a server shares between threads under its lock (srv->lock).  The
 * fields are reached only through server_locked(srv), which clang's
 * thread-safety analysis lets a function call only with srv->lock held
 * (make check-clang fails otherwise).
 */
struct server_shared {
    struct server_limits limits;
    struct export_table *table;  /* we hold a ref */
    struct conn *conns;          /* doubly linked (conn_links) */
    unsigned nr_conns;           /* until sockets close */
    unsigned nr_admitted;        /* server_admit's count */
    struct client_table clients; /* per address */
    struct export_stats *stats;  /* every name's counters (stats-int.h) */
    unsigned nr_acceptors;
    enum tls_mode tls_mode;
    struct tls_creds *tls_creds; /* a reference, NULL when mode is off */
};

/* The server.  Owned by its creator. */
struct server {
    struct loop_group *loops;       /* immutable after start */
    atomic_uint next_loop;          /* relaxed: round-robin cursor for homes */
    struct loop_load *load;         /* one per loop; immutable pointer */
    atomic_bool stopping;           /* seq_cst: set once by server_stop */
    bool stats_on;                  /* immutable after start: count for
                                       /metrics (server_enable_metrics) */
    struct stats_loop *stats_loops; /* one per loop (when stats_on);
                                       immutable pointer */
    struct stats_events events;     /* atomic */
    struct buffer_budget budget;    /* max-buffer-memory; thread-safe */

    struct listener *listeners; /* immutable after start */
    unsigned nr_listeners;
    /* Acceptors pausing for want of descriptors (server.c): how many
     * (seq_cst, see server_conn_closed), and the main-loop task that
     * ends their pause when a connection closes. */
    atomic_uint nr_paused;
    atomic_bool resume_queued; /* resume_task is posted */
    struct loop_task resume_task;

    atomic_uint_least64_t next_conn_id; /* relaxed: ids for conn_new */
    int64_t started;                    /* immutable: CLOCK_REALTIME s */

    struct mutex lock;      /* protects `shared`; leaf */
    pthread_cond_t changed; /* signalled when nr_conns or nr_acceptors
                               drops */
    /* Only through server_locked() (or server_unshared()). */
    struct server_shared shared_;

    /* server_start_single: an eventfd written when its connection is
     * gone (-1 otherwise; immutable after start), and how it ended
     * (release by conn_free before the write, acquire by the reader). */
    int done_fd;
    atomic_bool single_clean;

    /* One rate limit per refusal reason (enum server_admit), and per
     * kind of accept failure (server.c); atomic. */
    struct log_ratelimit refusal_log[SERVER_ADMIT_NR];
    struct log_ratelimit accept_log[ACCEPT_LOG_NR];
};

/* A connection's place in its server's list, under srv->lock. */
struct conn_links {
    struct conn *prev, *next;
    bool stall_dropped; /* server_tick */
};

/*
 * A connection.  Reference-counted: the receive coroutine holds one
 * reference and each request coroutine one more; the last unref frees it.
 * Fields negotiated during the handshake are written by the receive
 * coroutine before the first request coroutine exists and are immutable
 * afterwards.
 */
struct conn {
    struct server *srv; /* immutable */
    struct chan *ch;    /* we hold a reference; replaced once, by the TLS
                           channel after STARTTLS, by the receive coroutine
                           under srv->lock before any request coroutine
                           exists; read by others under srv->lock or after
                           negotiation */
    struct loop *home;  /* immutable: receive side's loop */
    char peer[96];      /* immutable: for logs */
    struct sockaddr_storage peer_addr; /* immutable: for allow lists */
    struct server_limits limits;       /* immutable: copied at accept */
    struct refcount refs;

    /* TLS policy and credentials (a reference) from when the connection
     * was accepted: immutable. */
    enum tls_mode tls_mode;
    struct tls_creds *tls_creds;

    /* Negotiated (see above). */
    bool tls;               /* STARTTLS succeeded: ch is the TLS channel */
    char tls_identity[256]; /* PSK identity or certificate DN the client
                               proved, "" for none */
    /* What the TLS handshake agreed (GnuTLS's static names), NULL
     * without TLS. */
    const char *tls_version, *tls_cipher;
    bool tls_reqd_logged; /* a TLS_REQD refusal was logged */
    /* Receive coroutine only: why the handshake would count as failed
     * if it ended now (enum stats_handshake). */
    unsigned hs_failure;
    struct conn_log_limit log_limit; /* receive coroutine only */
    bool no_zeroes;
    /* Receive coroutine: the client ended politely (NBD_CMD_DISC,
     * NBD_OPT_ABORT, end of file between messages). */
    bool clean_end;
    bool structured;
    bool extended;
    unsigned meta;     /* contexts selected: SERVER_META_BIT()s */
    char *meta_export; /* export name SET_META_CONTEXT named */
    /* The export's bitmaps when SET_META_CONTEXT ran: the ids of the
     * qemu:dirty-bitmap contexts index it.  A reference, or NULL. */
    struct dirty_list *meta_dirty;
    struct export_table *table; /* while haggling: the exports offered
                                   (a reference); NULL afterwards */
    struct export *exp;         /* the export in use (a reference) */
    uint16_t tx_flags;
    uint32_t max_payload; /* largest READ or WRITE this client may send */

    /* Receive buffer: bytes read ahead of the request being parsed.
     * Touched only by the receive coroutine. */
    uint8_t *rbuf;
    size_t rbuf_start, rbuf_end;

    /* The request timeout (receive.c, "Request timeout").  Loop-local to
     * the home loop: the receive coroutine and the timer's callback. */
    bool rx_partial;           /* waiting for the rest of a message... */
    uint64_t rx_partial_since; /* ...since (CLOCK_MONOTONIC ns) */
    bool rx_timed_out;         /* the timeout shut the socket */
    bool rq_timer_armed;
    struct coro_timer rq_timer;

    struct co_mutex send_lock; /* serialises replies; before flow_lock */
    struct conn_push *push;    /* one per loop; immutable pointer */

    struct co_mutex flow_lock; /* leaf */
    struct co_queue flow_wait; /* receive side waits here at the cap, and
                                  for the last reply when it ends */
    unsigned inflight;         /* under flow_lock */
    uint64_t inflight_bytes;   /* under flow_lock: buffer bytes */
    /* conn_push buffers holding replies not yet written (one count per
     * buffer, not per reply: one atomic per batch); seq_cst, paired with
     * the receive side's last check (flow.c, flow_wait_idle). */
    atomic_uint unsent_batches;

    /* Only through conn_links(srv, conn), under srv->lock. */
    struct conn_links links_;

    /*
     * What the control socket's `connections` shows (server-info.c).
     * id and started are immutable after conn_new.  The counters are
     * written with relaxed atomics by whichever loop runs the request
     * (the worker loop in transmit.c, the home loop in receive.c) and
     * read, relaxed, by the control thread: each is a statistic on its
     * own, ordered against nothing else.
     */
    uint64_t id;                         /* immutable: unique per server */
    int64_t started;                     /* immutable: CLOCK_REALTIME s */
    atomic_uint_least64_t bytes_read;    /* relaxed: READ reply data */
    atomic_uint_least64_t bytes_written; /* relaxed: WRITE payload data */
    atomic_uint requests_inflight;       /* relaxed: dispatched, unfinished */
    /* Release by the receive coroutine once exp, tls and tls_identity are
     * final (before the transmission phase); acquire by readers on other
     * threads, which may then read those fields. */
    atomic_bool transmitting;
    /* seq_cst: set by server_disconnect before it wakes the read side;
     * the receive side then answers new requests with ESHUTDOWN and
     * closes, as when the server stops. */
    atomic_bool disconnecting;
};

/* The fields under srv->lock, for a caller that holds it. */
static inline struct server_shared *server_locked(struct server *srv)
    REQUIRES(srv->lock)
{
    return &srv->shared_;
}

/* The same without the lock: only while no other thread can reach the
 * server (server_new, server_free, tests of a stopped server). */
static inline struct server_shared *server_unshared(struct server *srv)
{
    return &srv->shared_;
}

/* conn's links in srv's list (conn->srv == srv), under srv->lock. */
static inline struct conn_links *conn_links(struct server *srv,
                                            struct conn *conn)
    REQUIRES(srv->lock)
{
    (void)srv;
    return &conn->links_;
}

/*
 * A parked request coroutine whose reply is in a reply_batch: the flush
 * stores the send's result and wakes it.  On that coroutine's stack.
 */
struct reply_waiter {
    struct coro *co;
    int result;
};

/* Bounds of one reply_batch (one writev: at most CHAN_IOV_MAX pieces). */
#define REPLY_BATCH_IOV 64
#define REPLY_BATCH_HDR 2048u
#define REPLY_BATCH_BYTES (256u * 1024)

/*
 * Replies of one loop's batch of tasks waiting to leave in one send.
 * Headers and data-less replies are copied into hdr; payloads are
 * referenced, their coroutines parked in wait[] until the send is done.
 * From the buffer pool; owned by its conn_push until a flush takes it.
 */
struct reply_batch {
    int niov;
    int nwait;
    size_t hlen;  /* bytes of hdr in use */
    size_t bytes; /* bytes the iovecs hold */
    struct iovec iov[REPLY_BATCH_IOV];
    struct reply_waiter *wait[REPLY_BATCH_IOV];
    uint8_t hdr[REPLY_BATCH_HDR];
};

/*
 * A deferred push of the replies one loop held back (a reply_batch, or
 * data sent with CHAN_WRITE_MORE).  One per loop per connection;
 * loop-local to that loop.
 */
struct conn_push {
    struct loop_task task;
    struct conn *conn;         /* set with task by reply.c when it queues it */
    bool queued;               /* the task is in the loop's deferred list */
    struct reply_batch *batch; /* replies waiting for the push, or NULL */
};

/* Replies up to this size are copied into a batch and do not wait. */
#define CONN_SMALL_REPLY_MAX 64u
/* Replies up to this size may wait in a batch; larger ones (where the
 * send's fixed cost is small next to the copy) go out directly. */
#define CONN_BATCH_REPLY_MAX (64u * 1024)

/* One request in flight.  Owned by its request coroutine; from a pool. */
struct request {
    struct conn *conn; /* holds a conn reference */
    struct proto_request req;
    void *buf;           /* payload (WRITE) or read buffer */
    size_t buf_size;     /* size given to bufpool_get */
    uint64_t held;       /* buffer bytes counted for it (request_memory) */
    int early_error;     /* errno found by the receiver, or 0 */
    unsigned worker;     /* index of the loop it was sent to */
    unsigned cost;       /* request_cost, counted on that loop */
    uint64_t arrival_ns; /* CLOCK_MONOTONIC when its header was read (only
                            when the server counts, stats_on) */
};

/* session.c: serves a connection accepted on `fd` (taken), counted by
 * server_admit, until it ends.  Returns false when the connection could
 * not be set up (its fd closed, its admission released) and true once it
 * was registered: conn_free will run for it. */
CORO_FN bool conn_run(struct server *srv, int fd, const char *peer,
                      const struct sockaddr_storage *peer_addr);
/* server.c: the connection of server_start_single is gone. */
ANY_THREAD void server_single_over(struct server *srv, bool clean);

/* conn.c: the connection object */
/*
 * A new connection on `fd` (taken), registered in the server's list with
 * one reference; NULL (fd closed, admission released, logged) when it
 * cannot be set up, or when the server is stopping (then *registered is
 * true: it was registered and conn_free has run).
 */
CORO_FN struct conn *conn_new(struct server *srv, int fd, const char *peer,
                              const struct sockaddr_storage *peer_addr,
                              bool *registered);
ANY_THREAD void conn_unref(struct conn *conn);

/* receive.c: reads and dispatches requests until the client is done. */
CORO_FN void receive_requests(struct conn *conn);

/* flow.c: a connection's requests and buffer bytes in flight. */
ANY_THREAD void flow_init(struct conn *conn);
ANY_THREAD void flow_fini(struct conn *conn);
/* Takes a place in flight and `bytes` of buffer memory, the connection's
 * share first, then the server's; waits for either. */
CORO_FN void flow_acquire(struct conn *conn, uint64_t bytes);
/* A request finished: frees its place (and buffer bytes) in flight. */
CORO_FN void flow_release(struct conn *conn, uint64_t bytes);
/* A batch of small replies waits to be written / has been written. */
CORO_FN void flow_batch_queued(struct conn *conn);
CORO_FN void flow_batch_sent(struct conn *conn);
/* Waits until every request has finished and every reply is written,
 * including those in another loop's batch: what follows (an error reply
 * and a close, a TLS close_notify) must come after them. */
CORO_FN void flow_wait_idle(struct conn *conn);
/*
 * The buffer bytes a request of `conn` may hold until its reply is sent,
 * as the pools allocate them: its WRITE payload, its READ data or its
 * BLOCK_STATUS reply, and the request itself.  ANY_THREAD.
 */
ANY_THREAD uint64_t request_memory(const struct conn *conn,
                                   const struct proto_request *req,
                                   uint64_t payload);
/* server.c: a connection's socket has closed; an acceptor that paused for
 * want of descriptors may try again. */
ANY_THREAD void server_conn_closed(struct server *srv);

/* worker.c: the home loop of a new connection (round robin). */
ANY_THREAD struct loop *server_pick_loop(struct server *srv);
/* Units of work by which the home loop must lead another loop before a
 * request leaves it (why this value: worker.c). */
#define SERVER_HOME_SLACK 64u
/* The work a request stands for, in units of one small request. */
ANY_THREAD unsigned request_cost(const struct proto_request *req);
/* Chooses the loop for a request of `conn` and counts its cost there. */
ANY_THREAD unsigned server_pick_worker(struct server *srv,
                                       const struct conn *conn, unsigned cost);
/* A request of that cost sent to loop `worker` has finished. */
ANY_THREAD void server_worker_done(struct server *srv, unsigned worker,
                                   unsigned cost);

/* reply.c: sending replies */
/*
 * Sends a reply under the send lock, or queues it (small, and more tasks
 * are ready on this loop) to leave with this loop's batch.  A failure
 * shuts the socket down so the receive side stops too.  Returns 0 or
 * -errno.
 */
CORO_FN int reply_send(struct conn *conn, const struct iovec *iov, int n);

/*
 * Once the server stops, a connection may go on sending for a short
 * window (at most shutdown-timeout) so that what it sends is answered
 * with a shutdown error; then its read side is shut.  Owned by the
 * connection's receive coroutine, on its stack.
 */
struct shutdown_window {
    struct coro_timer timer;
    struct conn *conn;
    bool started;
};
/* Starts the window (once; later calls do nothing). */
CORO_FN void conn_shutdown_window_start(struct conn *conn,
                                        struct shutdown_window *w);
CORO_FN void conn_shutdown_window_stop(struct shutdown_window *w);

/* admit.c (see there) */
ANY_THREAD void client_key_from(struct client_key *key,
                                const struct sockaddr_storage *peer);
ANY_THREAD void client_table_init(struct client_table *t);
ANY_THREAD void client_table_fini(struct client_table *t);
/*
 * Counts one more connection of `key`, unless it already has `limit` (0:
 * no limit).  Returns 0, -EUSERS at the limit, or -ENOMEM.
 */
ANY_THREAD int client_table_add(struct client_table *t,
                                const struct client_key *key, unsigned limit);
/* One connection of `key` is gone (it must have been counted). */
ANY_THREAD void client_table_remove(struct client_table *t,
                                    const struct client_key *key);
ANY_THREAD unsigned client_table_count(const struct client_table *t,
                                       const struct client_key *key);
/*
 * Counts a new connection from `peer` against the current limits
 * (srv->limits) and returns SERVER_ADMIT_OK, or the reason it is refused;
 * then nothing is counted, and *count is the count that is at its limit.
 * Takes srv->lock.  ANY_THREAD.
 */
ANY_THREAD enum server_admit server_admit(struct server *srv,
                                          const struct sockaddr_storage *peer,
                                          unsigned *count);
/* A connection server_admit counted is gone.  Takes srv->lock. */
ANY_THREAD void server_admit_release(struct server *srv,
                                     const struct sockaddr_storage *peer);
/* Logs a refusal of `peer`, rate-limited per reason.  ANY_THREAD. */
ANY_THREAD void server_log_refusal(struct server *srv, enum server_admit why,
                                   const char *peer, unsigned count);

/*
 * conn-log.c: logs a line the client's behaviour caused, "PEER: " and
 * the message, within the connection's budget (CONN_LOG_BURST lines per
 * CONN_LOG_WINDOW_NS; debug lines always pass); the rest are counted.
 * From the connection's receive coroutine only.
 */
CORO_FN void conn_log(struct conn *conn, enum log_level level, const char *fmt,
                      ...) PRINTF_FMT(3, 4);
/* Reports the lines held back and not reported yet, if any. */
CORO_FN void conn_log_flush(struct conn *conn);

/* negotiate.c: option haggling; 0 to enter transmission, or -errno to
 * close the connection. */
CORO_FN int negotiate(struct conn *conn);

/* conn.c: makes `tls` (taken) the connection's channel after STARTTLS. */
CORO_FN void conn_set_chan_take(struct conn *conn, struct chan *tls);

/* transmit.c */
/* Runs one request and sends its reply; the caller frees what it held.
 * Returns 0, or the errno of the error reply (for the metrics): a reply
 * that could not be written still counts as what it said. */
CORO_FN int transmit_request(struct conn *conn, struct request *rq);
CORO_FN int transmit_send_error(struct conn *conn,
                                const struct proto_request *req, int errnum);

/* export.c */
/*
 * Opens an export's image (or shares `reuse`'s open backend when not
 * NULL) and copies the configuration.  NULL with err set on failure.
 */
ANY_THREAD struct export *export_new(const struct export_config *config,
                                     struct backend *reuse, struct err *err);
ANY_THREAD struct export *export_ref(struct export *exp);
ANY_THREAD void export_unref(struct export *exp); /* NULL allowed */
/* Whether the export's image settings match and its file is still the one
 * at that path, or both are memory exports of one size and read-only
 * setting, with the same overlay file or none (its backend can be
 * kept). */
ANY_THREAD bool export_same_image(const struct export *exp,
                                  const struct export_config *config);
ANY_THREAD struct export_table *export_table_new(unsigned nr);
ANY_THREAD void export_table_unref(struct export_table *t); /* NULL ok */
/* The current table, with a reference for the caller. */
ANY_THREAD struct export_table *server_get_table(struct server *srv);
/* The configuration `exp` was made from, borrowing its strings: what a
 * table edit passes again for the exports it keeps (export.c). */
ANY_THREAD struct export_config export_config_of(const struct export *exp);
/*
 * Looks `name` up among the exports `conn` is offered, as this client
 * may see them: an export whose allow list or TLS identities exclude the
 * client is not found (NULL), exactly like an unknown name; *hidden
 * (when not NULL) then tells the two apart, for the log.
 */
ANY_THREAD struct export *conn_find_export(const struct conn *conn,
                                           const char *name, size_t len,
                                           bool *hidden);
/* Whether the client of `conn` may use `exp` (its allow list). */
ANY_THREAD bool export_allows(const struct export *exp,
                              const struct sockaddr_storage *peer);
/* Whether `identity` (a TLS identity, "" or NULL for none) is among the
 * export's tls-identities; true when the export lists none. */
ANY_THREAD bool export_allows_identity(const struct export *exp,
                                       const char *identity);
/* Both checks for the client of `conn`: may it see and use `exp`? */
ANY_THREAD bool conn_may_use_export(const struct conn *conn,
                                    const struct export *exp);
ANY_THREAD uint16_t export_tx_flags(const struct export *exp, bool structured);

/*
 * meta.c: the metadata contexts.  `dl` is the export's list of dirty
 * bitmaps at the time (dirty_set_list; NULL: none): context
 * SERVER_META_FIXED + i is its bitmap i.
 */
ANY_THREAD unsigned server_meta_count(const struct dirty_list *dl);
/* The name of context m; `buf` holds it when it is a bitmap's. */
ANY_THREAD const char *server_meta_name(const struct dirty_list *dl, unsigned m,
                                        char buf[SERVER_META_NAME_MAX]);
/* Its id in SET replies and BLOCK_STATUS chunks (never 0). */
ANY_THREAD uint32_t server_meta_id(unsigned m);
/* The contexts `exp` with the bitmaps `dl` offers (a mask). */
ANY_THREAD unsigned server_meta_offered(const struct export *exp,
                                        const struct dirty_list *dl);
/* The contexts among `offered` that the query `q` of a LIST (set false)
 * or SET (set true) names. */
ANY_THREAD unsigned server_meta_match(const struct dirty_list *dl,
                                      unsigned offered, struct proto_string q,
                                      bool set);
/* Up to `max` extents of context `m` from offset, len bytes at most, in
 * NBD form in `out` (scratch: `max` backend extents).  The count or
 * -errno (backend_extents_meta). */
CORO_FN int server_meta_extents(const struct export *exp,
                                const struct dirty_list *dl, unsigned m,
                                uint64_t offset, uint64_t len,
                                struct backend_extent *scratch,
                                struct proto_extent *out, unsigned max);

#endif
