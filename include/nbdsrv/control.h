/* SPDX-License-Identifier: MIT */
/*
 * The control socket: a unix socket on which nbd-serverd-ctl (or any
 * program) sends one JSON object per line and reads one back per line.
 *
 * Requests: {"command": "exports" | "connections" | "status" | "reload"},
 * {"command": "add" | "change", "name": NAME, "settings": {KEY: VALUE
 * or [VALUE, ...], ...}}, {"command": "remove", "name": NAME},
 * {"command": "disconnect", "id": ID}; dirty bitmaps of export NAME:
 * {"command": "bitmaps", "name": NAME}, {"command": "bitmap-add" |
 * "bitmap-clear" | "bitmap-remove", "name": NAME, "bitmap": B},
 * {"command": "checkpoint", "name": NAME, "bitmap": B, "new": N} (B
 * frozen, N created, in one step), {"command": "bitmap-merge", "name":
 * NAME, "bitmap": B, "into": I}.  Replies: {"ok": true, ...} with
 * what was asked for, or {"error": "message"} naming the bad field.
 *
 * The control socket is served by the daemon's main thread, in the poll
 * it waits in for signals (control_add_pollfds, control_process): it is
 * not a loop thread, it may open files (add, change, reload do), and it
 * is the thread that runs SIGHUP's reload, so every change of the
 * export table is serialised by running there.  Its sockets are
 * non-blocking: a client that stops reading only stalls itself.
 */
#ifndef NBDSRV_CONTROL_H
#define NBDSRV_CONTROL_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/config.h"
#include "nbdsrv/err.h"
#include "nbdsrv/server.h"

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The longest request line, newline excluded. */
#define CONTROL_MAX_LINE (64u * 1024)
/* Control clients at once; one more is told so and closed. */
#define CONTROL_MAX_CLIENTS 8u
/* Reply bytes a client may leave unread before it is dropped. */
#define CONTROL_MAX_PENDING (16u * 1024 * 1024)

enum control_cmd {
    CONTROL_EXPORTS,
    CONTROL_CONNECTIONS,
    CONTROL_STATUS,
    CONTROL_ADD,
    CONTROL_CHANGE,
    CONTROL_REMOVE,
    CONTROL_DISCONNECT,
    CONTROL_RELOAD,
    CONTROL_BITMAPS,
    CONTROL_BITMAP_ADD,
    CONTROL_CHECKPOINT,
    CONTROL_BITMAP_CLEAR,
    CONTROL_BITMAP_REMOVE,
    CONTROL_BITMAP_MERGE,
};

struct json_object;

/*
 * One parsed request.  Owned by its declarer; `name` and the settings'
 * strings point into `obj`, which it holds; control_request_fini ends it.
 */
struct control_request {
    enum control_cmd cmd;
    const char *name;                /* add, change, remove, bitmap* */
    const char *bitmap;              /* bitmap-*, checkpoint */
    const char *other;               /* checkpoint: new; bitmap-merge: into */
    uint64_t id;                     /* disconnect */
    struct config_setting *settings; /* add, change: owned array */
    unsigned nr_settings;
    struct json_object *obj;
};

/*
 * Parses one request line (`len` bytes, no newline; it need not be
 * NUL-terminated and may hold anything).  0, or -EINVAL with err naming
 * what is wrong ("command: ...", "settings.read-only: ...").  Pure: no
 * I/O.  ANY_THREAD.
 */
ANY_THREAD int control_parse_request(const char *line, size_t len,
                                     struct control_request *req,
                                     struct err *err);

/* Frees what control_parse_request kept.  ANY_THREAD. */
ANY_THREAD void control_request_fini(struct control_request *req);

/* The command's name on the wire. */
ANY_THREAD const char *control_cmd_name(enum control_cmd cmd);

/*
 * What the commands act on.  reload runs SIGHUP's reload and returns 0
 * or -errno with err set; *cfg is the daemon's current configuration
 * (the base of `change` for exports the control socket has not touched).
 * Owned by main; borrowed by the control socket for its life.
 */
struct control_env {
    struct server *srv;
    struct config **cfg;
    int (*reload)(void *opaque, struct err *err);
    void *opaque;
};

struct control;

/*
 * Creates the socket at `path`, mode 0600 (bound under umask 0177, then
 * checked), or 0660 with group `gid` when `group` is true.  A file left
 * at `path` is replaced only when it is a socket nobody listens on.
 * NULL with err set.  Main thread.
 */
ANY_THREAD struct control *control_open(const char *path, bool group, gid_t gid,
                                        const struct control_env *env,
                                        struct err *err);

/*
 * Appends the control socket's pollfds to fds[*n..max) and advances *n.
 * Main thread.
 */
ANY_THREAD void control_add_pollfds(struct control *ctl, struct pollfd *fds,
                                    unsigned *n, unsigned max);

/*
 * Serves what poll found on the pollfds control_add_pollfds added
 * (`fds`, `n` of them, in the same order).  Main thread.
 */
ANY_THREAD void control_process(struct control *ctl, const struct pollfd *fds,
                                unsigned n);

/*
 * The configuration changed by a reload: the exports the control socket
 * added or changed are forgotten (the file's stand).  Main thread.
 */
ANY_THREAD void control_reloaded(struct control *ctl);

/* Closes every client and removes the socket file.  NULL allowed. */
ANY_THREAD void control_close(struct control *ctl);

/* pollfds control_add_pollfds may add at most. */
#define CONTROL_MAX_POLLFDS (1u + CONTROL_MAX_CLIENTS)

#endif
