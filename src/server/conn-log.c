/* SPDX-License-Identifier: MIT */
/*
 * Log lines a client can cause, rate-limited per connection.
 *
 * A client decides how often it is refused: 2,000 NBD_OPT_INFO options
 * naming a hidden export take it 20 ms, and each was one log line.  So
 * the lines a client's behaviour triggers (refused options, unknown or
 * hidden exports, failed TLS handshakes, protocol violations) go through
 * conn_log: at most CONN_LOG_BURST of them per connection in each window
 * of CONN_LOG_WINDOW_NS; past that they are counted, one line says that
 * more are being held back, and the count is reported when the window
 * ends (at the next line) or when the connection's haggling ends
 * (conn_log_flush).  Every line is thus either written or counted.
 * Debug lines (-v) are never held back: who turns them on wants them all.
 *
 * The counters live in the connection and are touched only by its
 * receive coroutine, which does all the haggling.
 */
#include "nbdsrv/log.h"
#include "server-int.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void conn_log_flush(struct conn *conn)
{
    struct conn_log_limit *l = &conn->log_limit;
    if (l->suppressed > 0) {
        log_info("%s: %u more message%s about this client %s held back",
                 conn->peer, l->suppressed, l->suppressed == 1 ? "" : "s",
                 l->suppressed == 1 ? "was" : "were");
        l->suppressed = 0;
    }
}

void conn_log(struct conn *conn, enum log_level level, const char *fmt, ...)
{
    if ((int)level > (int)log_get_level()) {
        return;
    }
    struct conn_log_limit *l = &conn->log_limit;
    if (level != LOG_LEVEL_DEBUG) {
        uint64_t now = now_ns();
        if (l->lines == 0 || now - l->window_start_ns >= CONN_LOG_WINDOW_NS) {
            conn_log_flush(conn);
            l->window_start_ns = now;
            l->lines = 0;
        }
        if (l->lines >= CONN_LOG_BURST) {
            if (l->suppressed++ == 0) {
                log_info("%s: too many messages about this client; holding "
                         "back more for up to %u s",
                         conn->peer,
                         (unsigned)(CONN_LOG_WINDOW_NS / 1000000000u));
            }
            return;
        }
        l->lines++;
    }
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_msg(level, "%s: %s", conn->peer, msg);
}
