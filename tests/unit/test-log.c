/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the logging helpers (src/base/log.c): the rate limit of a
 * recurring message, one line per interval with the count held back, also
 * when several threads ask at once.
 */
#include "fixture-main.h"
#include "nbdsrv/log.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>

#define SECOND 1000000000ull

UNIT_TEST("ratelimit", test_log_ratelimit_one_line_per_interval)
{
    struct log_ratelimit rl = {0};
    unsigned held = 99;
    /* The first line always goes out, with nothing held back. */
    ck_assert(log_ratelimit_pass_at(&rl, 10 * SECOND, 5 * SECOND, &held));
    ck_assert_uint_eq(held, 0);
    /* Within the interval every call is held back and counted. */
    for (unsigned i = 0; i < 7; i++) {
        held = 99;
        ck_assert(!log_ratelimit_pass_at(&rl, 10 * SECOND,
                                         5 * SECOND + i * SECOND, &held));
        ck_assert_uint_eq(held, 99); /* untouched */
    }
    ck_assert(!log_ratelimit_pass_at(&rl, 10 * SECOND, 15 * SECOND - 1, &held));
    /* Once it has passed, one line, which learns of the 8 held back. */
    ck_assert(log_ratelimit_pass_at(&rl, 10 * SECOND, 15 * SECOND, &held));
    ck_assert_uint_eq(held, 8);
    ck_assert(!log_ratelimit_pass_at(&rl, 10 * SECOND, 15 * SECOND, &held));
    /* A quiet spell longer than the interval: the next line goes out at
     * once and the count started again. */
    ck_assert(log_ratelimit_pass_at(&rl, 10 * SECOND, 100 * SECOND, &held));
    ck_assert_uint_eq(held, 1);
    /* The form that reads the clock: the first call passes, a second one
     * within the hour does not. */
    struct log_ratelimit real = {0};
    ck_assert(log_ratelimit_pass(&real, 3600 * SECOND, &held));
    ck_assert(!log_ratelimit_pass(&real, 3600 * SECOND, &held));
}
END_TEST

#define THREADS 4
#define CALLS 20000

struct race {
    struct log_ratelimit rl;
    atomic_uint passed;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    for (unsigned i = 0; i < CALLS; i++) {
        unsigned held;
        /* Everyone at the same instant: only one may log. */
        if (log_ratelimit_pass_at(&r->rl, SECOND, 7 * SECOND, &held)) {
            atomic_fetch_add(&r->passed, 1);
        }
    }
    return NULL;
}

UNIT_TEST("ratelimit", test_log_ratelimit_one_winner_across_threads)
{
    struct race r = {.rl = {0}};
    atomic_init(&r.passed, 0);
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, race_thread, &r), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    ck_assert_uint_eq(atomic_load(&r.passed), 1);
    unsigned held;
    ck_assert(log_ratelimit_pass_at(&r.rl, SECOND, 8 * SECOND, &held));
    ck_assert_uint_eq(held, THREADS * CALLS - 1);
}
END_TEST

UNIT_SUITE("log");
UNIT_TCASE("ratelimit", 30, NULL, NULL);
