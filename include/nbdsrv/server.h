/* SPDX-License-Identifier: MIT */
/*
 * The NBD server: exports, listeners, connections.
 *
 * server_start binds nothing itself: the caller passes listening sockets
 * (so that errors surface before a daemon forks) and the loops to run on.
 * server_stop drains: it stops accepting, tells every connection to stop
 * reading, waits for requests in flight to be answered, flushes every
 * export and returns.
 */
#ifndef NBDSRV_SERVER_H
#define NBDSRV_SERVER_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"
#include "nbdsrv/loop.h"
#include "nbdsrv/tls-config.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct backend;
struct export_table;
struct tls_creds;

/*
 * One entry of an export's allow list: clients whose address lies in
 * addr/prefix.  family is AF_INET (addr[0..3]), AF_INET6 (addr[0..15])
 * or AF_UNIX (every unix-socket client; addr and prefix unused).  An
 * IPv4 client reaching an IPv6 listener (::ffff:a.b.c.d) matches as IPv4.
 */
struct server_allow {
    int family;
    uint8_t addr[16];
    unsigned prefix; /* bits: 0-32 (IPv4) or 0-128 (IPv6) */
};

/*
 * One export as configured.  Borrowed by server_set_exports, which copies
 * what it keeps.
 */
struct export_config {
    const char *name;
    const char *path; /* the image; NULL for a memory or RBD export */
    /* An RBD export: POOL[/NAMESPACE]/IMAGE[@SNAP], and its cluster's
     * ceph.conf, cephx user and keyring (NULL: librados's defaults). */
    const char *rbd;
    const char *ceph_conf, *ceph_id, *ceph_keyring;
    bool memory; /* a memory export of memory_size bytes */
    uint64_t memory_size;
    /* NULL, or an overlay file: the image (or memory) is then a base,
     * opened read-only, and writes go to the overlay. */
    const char *overlay;
    const char *description; /* may be NULL */
    bool read_only;
    bool direct;  /* cache=none: O_DIRECT for aligned I/O */
    bool no_trim; /* trim=off: NBD_CMD_TRIM is not advertised */
    const struct server_allow *allow; /* NULL: every client */
    unsigned nr_allow;
    /* Allowed TLS identities (PSK names or certificate DNs); none: any
     * client the allow list admits.  A client whose proved identity is
     * not listed does not see the export. */
    const char *const *tls_identities;
    unsigned nr_tls_identities;
    /* Dirty bitmaps (dirty-bitmap.h) that must exist, kept in
     * dirty_bitmap_file (NULL: in memory only), one bit per
     * dirty_granularity bytes.  None: the export tracks nothing. */
    const char *const *dirty_bitmaps;
    unsigned nr_dirty_bitmaps;
    const char *dirty_bitmap_file;
    uint64_t dirty_granularity;
};

/*
 * Limits.  A connection takes a copy of the limits current when it is
 * accepted: server_set_limits applies to new connections only.  The
 * connection counts are checked when a client is accepted; one over a
 * limit is closed at once, and lowering a limit closes nobody.
 */
struct server_limits {
    uint64_t handshake_timeout_ns; /* 0: no deadline */
    /* 0: none.  A started request's header, then its payload, must
     * arrive within it; a reply that moves no byte for this long (the
     * client stopped reading) closes the connection too. */
    uint64_t request_timeout_ns;
    uint64_t shutdown_timeout_ns; /* bound on the drain of server_stop */
    unsigned max_requests;        /* in flight per connection */
    /* Buffer bytes (as the pools allocate them) that the requests in
     * flight of one connection may hold: WRITE payloads, READ and
     * BLOCK_STATUS replies. */
    uint64_t max_inflight_bytes;
    unsigned max_connections;            /* 0: unlimited */
    unsigned max_connections_per_client; /* per address, every unix
                                            client one; 0: unlimited */
    /* Largest READ or WRITE of a client that did not ask for block
     * sizes; those that asked are held to what was advertised,
     * min(SERVER_ADVERTISED_MAX_PAYLOAD, max_payload). */
    uint32_t max_payload;
    /* The same buffer bytes over every connection: server-wide, so a
     * change applies at once, to every connection. */
    uint64_t max_buffer_memory;
};

#define SERVER_DEFAULT_HANDSHAKE_TIMEOUT_NS (10ull * 1000000000ull)
#define SERVER_DEFAULT_SHUTDOWN_TIMEOUT_NS (30ull * 1000000000ull)
#define SERVER_DEFAULT_REQUEST_TIMEOUT_NS (30ull * 1000000000ull)
#define SERVER_DEFAULT_MAX_REQUESTS 128u
#define SERVER_DEFAULT_MAX_INFLIGHT_BYTES (64ull * 1024 * 1024)
#define SERVER_ADVERTISED_MAX_PAYLOAD (32u * 1024 * 1024)
#define SERVER_DEFAULT_MAX_PAYLOAD (64u * 1024 * 1024)
#define SERVER_MIN_MAX_PAYLOAD (1u * 1024 * 1024)
#define SERVER_DEFAULT_MAX_BUFFER_MEMORY (1ull * 1024 * 1024 * 1024)

/* Creates an empty server.  ANY_THREAD (start-up). */
ANY_THREAD struct server *server_new(const struct server_limits *limits);

/*
 * Opens the export's image and adds it.  Fails (with err naming the file
 * or the duplicate name) if the name is taken or the image cannot be
 * opened.  Equivalent to server_set_exports with the current exports
 * plus this one.  ANY_THREAD (not a loop thread).
 */
ANY_THREAD int server_add_export(struct server *srv,
                                 const struct export_config *config,
                                 struct err *err);

/*
 * Replaces the whole export table, before or after server_start (a
 * reload).  An export whose name, path, read-only, cache and overlay
 * settings are unchanged keeps its open image (a memory export: whose
 * size and read-only setting are unchanged keeps its data); the others
 * are opened anew (an overlay that is still open for clients of the old
 * export then fails to open: it is locked).  Either
 * every export is in place or, on failure (err names the export), the
 * old table stays untouched.  Connections keep the export they entered
 * transmission with (a reference) until they end; a removed export only
 * stops being offered to new clients.  The first export also answers to
 * the empty name.  ANY_THREAD (not a loop thread: it opens files).
 */
ANY_THREAD int server_set_exports(struct server *srv,
                                  const struct export_config *configs,
                                  unsigned nr, struct err *err);

/* Replaces the limits for connections accepted from now on. */
ANY_THREAD void server_set_limits(struct server *srv,
                                  const struct server_limits *limits);

/*
 * A change of settings prepared in full before any of it takes effect,
 * so that a reload is all or nothing: stage each part with the
 * server_update_* calls below (those that can fail do all their work,
 * opening images and loading credentials, and on failure leave the
 * update as it was), then put everything staged in force at once with
 * server_update_commit, which cannot fail.  A part not staged keeps its
 * current value.  Owned by its creator: declare it zeroed
 * (struct server_update up = {0};) and end it with server_update_fini,
 * committed or not.  One thread at a time uses a given update.  Only the
 * server code reads the fields.
 */
struct server_update {
    struct export_table *table; /* staged exports (a reference) or NULL */
    bool set_tls;               /* tls_mode and tls_creds are staged */
    enum tls_mode tls_mode;
    struct tls_creds *tls_creds; /* a reference; NULL with mode off */
    bool set_limits;
    struct server_limits limits;
};

/*
 * Stages the export table for `configs`, as server_set_exports describes
 * (unchanged exports keep their open images).  0, or -errno with err
 * naming the export.  ANY_THREAD (not a loop thread: it opens files).
 */
ANY_THREAD int server_update_exports(struct server *srv,
                                     struct server_update *up,
                                     const struct export_config *configs,
                                     unsigned nr, struct err *err);

/*
 * Stages the TLS policy of `cfg` and loads its credentials (none for mode
 * off).  0, or -errno with err naming the file (and line) at fault.
 * ANY_THREAD (not a loop thread: it reads files).
 */
ANY_THREAD int server_update_tls(struct server_update *up,
                                 const struct tls_config *cfg, struct err *err);

/* Stages the limits for connections accepted after the commit. */
ANY_THREAD void server_update_limits(struct server_update *up,
                                     const struct server_limits *limits);

/*
 * Puts every staged part in force at once (one hold of the server's
 * lock: a connection accepted meanwhile copies all old or all new
 * settings) and logs what the export table changes.  The update is left
 * empty.  ANY_THREAD, not from a loop thread.
 */
ANY_THREAD void server_update_commit(struct server *srv,
                                     struct server_update *up);

/* Drops what is staged and not committed.  ANY_THREAD. */
ANY_THREAD void server_update_fini(struct server_update *up);

/*
 * Starts accepting on each listening fd (taken: closed by the server),
 * with connections spread over the loops of `loops`.  Returns 0 or
 * -errno.  ANY_THREAD, not from a loop of `loops`.
 */
ANY_THREAD int server_start(struct server *srv, struct loop_group *loops,
                            const int *listen_fds, unsigned nr_listen,
                            struct err *err);

/*
 * Serves one connected stream socket `fd` (taken: closed by the server)
 * instead of listening, for --inetd and systemd's Accept=yes: the
 * connection is counted like an accepted one and started on a loop of
 * `loops`.  *done_fd (owned by the server, valid until server_free)
 * becomes readable once the connection has ended and its socket is
 * closed; server_single_clean then says how it ended, and server_stop
 * flushes the exports.  Returns 0 or -errno.  ANY_THREAD, not from a
 * loop of `loops`.
 */
ANY_THREAD int server_start_single(struct server *srv, struct loop_group *loops,
                                   int fd, int *done_fd, struct err *err);

/*
 * After *done_fd of server_start_single became readable: whether the
 * client ended politely (NBD_CMD_DISC, NBD_OPT_ABORT, or end of file
 * between two messages) rather than by an error, a timeout or a
 * protocol violation.  ANY_THREAD.
 */
ANY_THREAD bool server_single_clean(struct server *srv);

/*
 * Serves `fd` (taken), a connected stream socket, as if a listener had
 * accepted it from `peer` (`len` bytes of address): the connection
 * limits are checked, then the connection runs on a home loop like any
 * other.  For sockets that do not come from a listener (the in-process
 * fuzz target tests/fuzz/fuzz-server-conn.c plays the client on a
 * socketpair).  Returns 0, or -EBUSY (over a connection limit) or
 * -ENOMEM, having closed fd.  ANY_THREAD, after server_start (which may
 * be given no listening socket) and before server_stop.
 */
ANY_THREAD int server_serve_fd(struct server *srv, int fd,
                               const struct sockaddr_storage *peer,
                               socklen_t len);

/*
 * Drains and stops, as described above; returns once no connection is
 * left and every export is flushed.  Returns 0, or -errno if a flush
 * failed.  ANY_THREAD, not from a loop thread.
 */
ANY_THREAD int server_stop(struct server *srv);

/*
 * Sets the TLS policy and loads the credentials `cfg` names (mode off
 * needs none and drops any).  Connections accepted from then on use the
 * new mode and credentials; established ones keep those they started with
 * (the credentials are reference-counted).  On failure nothing changes
 * and err names the file (and line) at fault.  Callable before
 * server_start and while serving (a configuration reload).  Returns 0 or
 * -errno.  ANY_THREAD, not from a loop thread (it reads files).
 */
ANY_THREAD int server_set_tls(struct server *srv, const struct tls_config *cfg,
                              struct err *err);

/*
 * Housekeeping, to be called about once a second: closes connections
 * whose replies have not moved for request_timeout_ns (a client that
 * stopped reading holds its buffers, and the server's budget, until
 * then).  ANY_THREAD, not from a loop thread.
 */
ANY_THREAD void server_tick(struct server *srv);

/*
 * A test seam: called with the storage chain of each export as it is
 * opened (not when a reload keeps it); returns the chain to serve,
 * taking `be`, or NULL with err set (having dropped `be`).  The daemon's
 * definition, a weak one in export.c, returns `be`.  The test daemon
 * (build/tests/nbd-serverd-test) links tests/support/fault-hook.c, whose
 * definition adds the fault-injection filter.  ANY_THREAD.
 */
ANY_THREAD struct backend *
server_export_test_hook(const struct export_config *config, struct backend *be,
                        struct err *err);

/*
 * Makes the server count what /metrics shows (per request: the command,
 * its latency, bytes and errors).  Before server_start only; without it
 * the request path reads no clock and touches no counter.  ANY_THREAD.
 */
ANY_THREAD void server_enable_metrics(struct server *srv);

struct metrics_text;
/*
 * Appends every metric of the server in the text exposition format: sums
 * over the loops of what each counted.  Lock-free for the loops; takes
 * srv->lock briefly for the list of exports and connection counts.
 * ANY_THREAD, after server_start, until server_free.
 */
ANY_THREAD void server_metrics_render(struct server *srv,
                                      struct metrics_text *out);

/*
 * The dirty bitmaps of the current export `name`, with a reference
 * (dirty_set_unref), for changing them (dirty_set_create and the like);
 * NULL when there is no such export or it keeps no bitmaps.  ANY_THREAD.
 */
struct dirty_set;
ANY_THREAD struct dirty_set *server_export_dirty(struct server *srv,
                                                 const char *name);

/*
 * After a change of `set` (dirty_set_create and the like): waits until
 * every loop of the started server has run a task queued now, a grace
 * period for the markers, then frees what the change retired
 * (dirty_set_reclaim).  ANY_THREAD but never from a loop thread.
 */
ANY_THREAD void server_dirty_reclaim(struct server *srv, struct dirty_set *set);
/* ---- Introspection and live changes, for the control socket ---- */

/* One export as the control socket's `exports` shows it.  Borrowed
 * strings, valid during the callback. */
struct server_export_info {
    const char *name;
    const char *backend; /* backend_name of its storage chain */
    const char *path;    /* NULL for a memory export */
    const char *overlay; /* NULL: none */
    uint64_t size;
    bool read_only;
    unsigned connections; /* current connections in transmission */
    /* Summed over those connections (their counters, as below). */
    uint64_t bytes_read, bytes_written;
    unsigned requests_inflight;
};

/* One connection.  Borrowed strings, valid during the callback. */
struct server_conn_info {
    uint64_t id;
    const char *peer;
    const char *export_name; /* NULL while the client still haggles */
    bool tls;
    const char *tls_identity; /* "" for none */
    /* What TLS agreed, e.g. "TLS1.3" and "AES-256-GCM"; NULL without. */
    const char *tls_version, *tls_cipher;
    int64_t started; /* CLOCK_REALTIME seconds */
    unsigned requests_inflight;
    uint64_t bytes_read, bytes_written; /* READ and WRITE data bytes */
    bool disconnecting;
};

typedef void server_export_info_fn(void *opaque,
                                   const struct server_export_info *info);
typedef void server_conn_info_fn(void *opaque,
                                 const struct server_conn_info *info);

/*
 * Calls fn for each export offered to new clients, in table order, then
 * returns.  fn runs with srv->lock held: it must not block or call into
 * the server.  ANY_THREAD.
 */
ANY_THREAD void server_list_exports(struct server *srv,
                                    server_export_info_fn *fn, void *opaque);

/* The same for each connection, newest first.  ANY_THREAD. */
ANY_THREAD void server_list_conns(struct server *srv, server_conn_info_fn *fn,
                                  void *opaque);

/*
 * Disconnects connection `id` softly: requests that arrive from now on
 * are answered with ESHUTDOWN, those in flight complete, then (after the
 * shutdown window, at most shutdown-timeout) the socket closes.  A
 * client still haggling is closed at once.  0, or -ENOENT.  ANY_THREAD.
 */
ANY_THREAD int server_disconnect(struct server *srv, uint64_t id);

/* What `status` reports. */
struct server_status {
    int64_t started; /* CLOCK_REALTIME seconds */
    unsigned threads;
    unsigned connections;
    unsigned exports;
    uint64_t buffer_memory_used; /* bytes, server-wide */
    struct server_limits limits; /* for new connections */
};

/* Fills `st`.  ANY_THREAD, after server_start. */
ANY_THREAD void server_get_status(struct server *srv, struct server_status *st);

/* What server_edit_export does. */
enum server_edit {
    SERVER_EDIT_ADD,    /* a new name; EEXIST if taken */
    SERVER_EDIT_CHANGE, /* an existing one; ENOENT if none */
    SERVER_EDIT_REMOVE, /* an existing one (config NULL); ENOENT if none */
};

/*
 * Adds, replaces or removes the export `name`, keeping every other one
 * as it is (with its open image), as a reload would: a removed or
 * replaced export stops being offered to new clients, and connected
 * ones keep the export they entered transmission with until they leave.
 * A replaced export with unchanged image settings keeps its open image.
 * All or nothing: on failure (err names the export) nothing changes.
 * The caller serialises this with other changes of the export table
 * (server_update_*).  ANY_THREAD, not from a loop thread.
 */
ANY_THREAD int server_edit_export(struct server *srv, enum server_edit how,
                                  const char *name,
                                  const struct export_config *config,
                                  struct err *err);

/* Frees a stopped (or never started) server.  NULL is allowed. */
ANY_THREAD void server_free(struct server *srv);

#endif
