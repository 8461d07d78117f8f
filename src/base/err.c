/* SPDX-License-Identifier: MIT */
/* The error object of control paths. */
#include "nbdsrv/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

PRINTF_FMT(3, 0)
static void err_vset(struct err *err, int errnum, const char *fmt, va_list ap,
                     int with_strerror)
{
    if (err == NULL) {
        return;
    }
    err->errnum = errnum;
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    if (with_strerror && n >= 0 && (size_t)n < sizeof err->msg) {
        snprintf(err->msg + n, sizeof err->msg - n, ": %s", strerror(errnum));
    }
}

int err_set(struct err *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, errnum, fmt, ap, 0);
    va_end(ap);
    return -errnum;
}

int err_set_errno(struct err *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, errnum, fmt, ap, 1);
    va_end(ap);
    return -errnum;
}

void err_clear(struct err *err)
{
    if (err != NULL) {
        err->errnum = 0;
        err->msg[0] = '\0';
    }
}
