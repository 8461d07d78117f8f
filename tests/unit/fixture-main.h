/* SPDX-License-Identifier: MIT */
/* Test fixture: the main() of every unit test binary, and the registry
 * its tests join where they are defined. */
#ifndef NBDSRV_FIXTURE_MAIN_H
#define NBDSRV_FIXTURE_MAIN_H

#include <check.h>

/*
 * Each tests/unit/test-*.c is one binary with one Suite.  The file names
 * it once with UNIT_SUITE("module"), declares each of its TCases once
 * with UNIT_TCASE(name, timeout, setup, teardown), and defines each test
 * with one of the UNIT_*TEST macros in place of Check's START_TEST:
 *
 *     UNIT_SUITE("chan-tls");
 *     UNIT_TCASE("tls", 120, setup, teardown);
 *     UNIT_TEST("tls", test_chan_tls_handshake)
 *     {
 *         ...
 *     }
 *     END_TEST
 *
 * A constructor adds each test and TCase to a per-binary registry; the
 * main() in fixture-main.c builds the Suite from it: the TCases in the
 * order of their first test in the file, each with its tests in file
 * order (by line, since constructors run in no promised order).  A test
 * that names a TCase with no UNIT_TCASE, or a UNIT_TCASE no test uses,
 * fails the binary before any test runs.  A timeout of 0 keeps Check's
 * default; setup and teardown may be NULL (no checked fixture).
 *
 * Tests that need more than the registry (the shared backend
 * conformance TCase, whose loop count is known only at run time) add
 * them from a function given to UNIT_SUITE_EXTEND, called after the
 * registered TCases are in the Suite.
 *
 * main() runs the Suite in Check's default fork mode (CK_FORK=no turns
 * forking off, for gdb or valgrind) and prints Check's normal output,
 * whose "NN%: Checks: ..." summary tests/run-unit.sh reads; the exit
 * status is 0 when every test passed.
 */

/* One test: the TCase it belongs to, and what Check's
 * tcase_add_loop_test_raise_signal() takes.  Owned by its test file
 * (static storage); the registry links it. */
struct unit_test {
    const char *tcase;
    const TTest *const *test; /* the variable START_TEST defines */
    int signal;               /* 0, or the signal the test must raise */
    int start, end;           /* the loop: _i runs over [start, end) */
    struct unit_test *next;
};

/* One TCase's options, declared once per TCase. */
struct unit_tcase {
    const char *name;
    int timeout; /* seconds; 0 keeps Check's default */
    SFun setup, teardown;
    int line; /* where it was declared, for the error message */
    struct unit_tcase *next;
};

typedef void unit_extend_fn(Suite *s);

/* Called from the constructors the macros below define. */
void unit_register_test(struct unit_test *t);
void unit_register_tcase(struct unit_tcase *tc);
void unit_register_extend(unit_extend_fn *fn);

/* The test file's Suite name (defined by UNIT_SUITE). */
extern const char unit_suite_name[];

#define UNIT_CAT_(a, b) a##b
#define UNIT_CAT(a, b) UNIT_CAT_(a, b)

#define UNIT_SUITE(name) const char unit_suite_name[] = name

#define UNIT_TCASE(name, timeout, setup, teardown)                             \
    static struct unit_tcase UNIT_CAT(unit_tcase_, __LINE__) = {               \
        name, timeout, setup, teardown, __LINE__, NULL};                       \
    __attribute__((constructor)) static void UNIT_CAT(unit_tcase_reg_,         \
                                                      __LINE__)(void)          \
    {                                                                          \
        unit_register_tcase(&UNIT_CAT(unit_tcase_, __LINE__));                 \
    }                                                                          \
    extern int unit_semicolon_

#define UNIT_SUITE_EXTEND(fn)                                                  \
    __attribute__((constructor)) static void UNIT_CAT(unit_extend_reg_,        \
                                                      __LINE__)(void)          \
    {                                                                          \
        unit_register_extend(fn);                                              \
    }                                                                          \
    extern int unit_semicolon_

/*
 * The general form: test fn in TCase tcase, expected to raise signal
 * (0: none), run for _i in [start, end).  The tentative definition of
 * fn lets the registry entry point at the variable START_TEST defines
 * just after it.
 */
#define UNIT_TEST_FULL(tcase, fn, signal, start, end)                          \
    static const TTest *fn;                                                    \
    static struct unit_test fn##_unit = {                                      \
        tcase, &fn, signal, start, end, NULL};                                 \
    __attribute__((constructor)) static void fn##_register(void)               \
    {                                                                          \
        unit_register_test(&fn##_unit);                                        \
    }                                                                          \
    START_TEST(fn)

#define UNIT_TEST(tcase, fn) UNIT_TEST_FULL(tcase, fn, 0, 0, 1)
#define UNIT_LOOP_TEST(tcase, fn, start, end)                                  \
    UNIT_TEST_FULL(tcase, fn, 0, start, end)
#define UNIT_SIGNAL_TEST(tcase, fn, signal)                                    \
    UNIT_TEST_FULL(tcase, fn, signal, 0, 1)

#endif
