/* SPDX-License-Identifier: MIT */
/* Private to src/control: the control socket and its clients. */
#ifndef NBDSRV_CONTROL_INT_H
#define NBDSRV_CONTROL_INT_H

#include "nbdsrv/control.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* One client.  Owned by its struct control; main thread only. */
struct control_client {
    int fd;         /* -1: the slot is free */
    char *in;       /* CONTROL_MAX_LINE + 1 bytes: the line being read */
    size_t in_len;  /* bytes of it */
    bool skipping;  /* an oversized line: drop bytes up to its newline */
    bool eof;       /* the client shut its side: close once all is sent */
    char *out;      /* replies not yet written */
    size_t out_len; /* bytes in out */
    size_t out_off; /* of which written */
};

/* The control socket.  Owned by main; main thread only. */
struct control {
    int fd;
    char *path;
    dev_t dev; /* of the socket file we made: removed only if still it */
    ino_t ino;
    struct control_env env;
    struct control_client clients[CONTROL_MAX_CLIENTS];
    /* Exports the control socket added or changed since the last
     * reload (owned): the base of a later `change`. */
    struct config_export **live;
    unsigned nr_live;
};

/*
 * Runs one request and returns its reply (a new JSON object: {"ok":
 * true, ...} or {"error": ...}).  control-cmd.c.
 */
ANY_THREAD struct json_object *control_exec(struct control *ctl,
                                            const struct control_request *req);

/* The bitmaps commands (CONTROL_BITMAPS and the bitmap changes), for
 * control_exec.  control-bitmap.c. */
ANY_THREAD struct json_object *
control_bitmap_exec(struct control *ctl, const struct control_request *req);

/* {"error": msg}.  control-cmd.c. */
ANY_THREAD struct json_object *control_error(const char *msg);

/* Forgets the live exports.  control-cmd.c. */
ANY_THREAD void control_live_clear(struct control *ctl);

#endif
