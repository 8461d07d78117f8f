/* SPDX-License-Identifier: MIT */
/*
 * The error object of control paths (configuration, start-up, option
 * haggling): an errno plus a human-readable message.  Hot paths return a
 * negative errno instead.  A callee sets the error once on failure and
 * leaves it alone on success; `err` may be NULL when the caller does not
 * care about the text.
 */
#ifndef NBDSRV_ERR_H
#define NBDSRV_ERR_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/compiler.h"

#define ERR_MSG_MAX 512

/* Owned by whoever declared it, usually on the stack. */
struct err {
    int errnum;            /* positive errno, 0 when unset */
    char msg[ERR_MSG_MAX]; /* NUL-terminated */
};

/* Sets err (if non-NULL) and returns -errnum.  ANY_THREAD. */
ANY_THREAD int err_set(struct err *err, int errnum, const char *fmt, ...)
    PRINTF_FMT(3, 4);

/*
 * Like err_set, with ": strerror(errnum)" appended.  Returns -errnum.
 * ANY_THREAD.
 */
ANY_THREAD int err_set_errno(struct err *err, int errnum, const char *fmt, ...)
    PRINTF_FMT(3, 4);

/* Clears err.  ANY_THREAD. */
ANY_THREAD void err_clear(struct err *err);

#endif
