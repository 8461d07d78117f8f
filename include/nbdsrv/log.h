/* SPDX-License-Identifier: MIT */
/*
 * Logging.  One line per call, written atomically to stderr; the level
 * filter is a process-wide atomic.  The daemon issue adds syslog and
 * sd-daemon prefixes behind the same calls.
 */
#ifndef NBDSRV_LOG_H
#define NBDSRV_LOG_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/compiler.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level {
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

/* Messages above `level` are dropped.  ANY_THREAD. */
ANY_THREAD void log_set_level(enum log_level level);
ANY_THREAD enum log_level log_get_level(void);

/* Writes "nbd-serverd: <level>: msg\n" when level passes.  ANY_THREAD. */
ANY_THREAD void log_msg(enum log_level level, const char *fmt, ...)
    PRINTF_FMT(2, 3);

/* Sets the program name used as the line prefix.  Call once at start. */
void log_set_program(const char *name);

/* Sends messages to syslog (daemon facility) instead of stderr.  Call
 * once, before other threads start. */
void log_use_syslog(void);

/*
 * Writes stderr lines as "<N>message", N the syslog priority (the
 * sd-daemon convention: systemd's journal reads it).  Call once, before
 * other threads start.
 */
void log_use_prefixes(void);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * A rate limit for one recurring message, such as one reason for refusing
 * clients: at most one line per interval, and that line can say how many
 * were held back since the previous one.  Zero-initialised; embedded in
 * its owner.  ANY_THREAD.
 */
struct log_ratelimit {
    _Atomic uint64_t next_ns; /* relaxed: CLOCK_MONOTONIC time from which
                                 the next line may go out; a CAS decides
                                 which caller logs */
    atomic_uint held;         /* relaxed: lines held back since */
};

/*
 * Whether a line may go out now: true for the first call and then once
 * `interval_ns` has passed since the last line that went out.  On true,
 * *held is the number of calls that returned false since that line (the
 * count starts again).  One caller wins when several threads ask at
 * once.  ANY_THREAD.
 */
ANY_THREAD bool log_ratelimit_pass(struct log_ratelimit *rl,
                                   uint64_t interval_ns, unsigned *held);

/* log_ratelimit_pass at CLOCK_MONOTONIC time `now_ns` (for tests). */
ANY_THREAD bool log_ratelimit_pass_at(struct log_ratelimit *rl,
                                      uint64_t interval_ns, uint64_t now_ns,
                                      unsigned *held);

/* Logs file:line and the message, then aborts.  For impossible states. */
NORETURN void bug_at(const char *file, int line, const char *what);
#define BUG(what) bug_at(__FILE__, __LINE__, what)

/* "error", "warning", "info" or "debug".  ANY_THREAD. */
ANY_THREAD const char *log_level_name(enum log_level level);

#endif
