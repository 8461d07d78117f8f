/* SPDX-License-Identifier: MIT */
/* Line-at-a-time logging to stderr. */
#include "nbdsrv/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Relaxed: the level is a filter, not a synchronisation point. */
static _Atomic int log_level = LOG_LEVEL_INFO;
/* Immutable after start-up. */
static const char *log_program = "nbd-serverd";
/* Immutable after start-up. */
static int log_syslog;
/* Immutable after start-up: stderr goes to systemd's journal. */
static int log_prefix;

void log_use_prefixes(void)
{
    log_prefix = 1;
}

void log_use_syslog(void)
{
    openlog(log_program, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog = 1;
}

void log_set_program(const char *name)
{
    log_program = name;
}

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "error";
    case LOG_LEVEL_WARNING:
        return "warning";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_DEBUG:
        return "debug";
    }
    return "?";
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if ((int)level > (int)log_get_level()) {
        return;
    }
    char line[1024];
    int n;
    if (log_syslog || log_prefix) {
        /* syslog and the journal record the program and the priority. */
        n = log_prefix ? snprintf(line, sizeof line, "<%d>", (int)level) : 0;
    } else {
        n = snprintf(line, sizeof line, "%s: %s: ", log_program,
                     log_level_name(level));
    }
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        n = m < 0 ? n : n + m;
    }
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof line - 1) {
        n = sizeof line - 2;
    }
    if (log_syslog) {
        line[n] = '\0';
        syslog((int)level, "%s", line);
        return;
    }
    line[n++] = '\n';
    /* One write() keeps lines from different threads whole. */
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}

bool log_ratelimit_pass_at(struct log_ratelimit *rl, uint64_t interval_ns,
                           uint64_t now_ns, unsigned *held)
{
    uint64_t next = atomic_load_explicit(&rl->next_ns, memory_order_relaxed);
    /*
     * Relaxed is enough: the count is a statistic and next_ns only
     * decides which caller logs; the CAS lets exactly one caller per
     * window through.
     */
    if (now_ns < next || !atomic_compare_exchange_strong_explicit(
                             &rl->next_ns, &next, now_ns + interval_ns,
                             memory_order_relaxed, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&rl->held, 1, memory_order_relaxed);
        return false;
    }
    *held = atomic_exchange_explicit(&rl->held, 0, memory_order_relaxed);
    return true;
}

bool log_ratelimit_pass(struct log_ratelimit *rl, uint64_t interval_ns,
                        unsigned *held)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return log_ratelimit_pass_at(rl, interval_ns, now, held);
}

void bug_at(const char *file, int line, const char *what)
{
    log_error("BUG at %s:%d: %s", file, line, what);
    abort();
}
