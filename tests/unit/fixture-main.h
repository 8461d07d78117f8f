/* SPDX-License-Identifier: MIT */
/* Test fixture: the main() of every unit test binary. */
#ifndef NBDSRV_FIXTURE_MAIN_H
#define NBDSRV_FIXTURE_MAIN_H

#include <check.h>

/*
 * Each tests/unit/test-*.c defines unit_suite(): its Suite, named after
 * the module, with its TCases, their timeouts and fixtures.  The main()
 * in fixture-main.c runs it in Check's default fork mode (CK_FORK=no
 * turns forking off, for gdb or valgrind) and prints Check's normal
 * output, whose "NN%: Checks: ..." summary tests/run-unit.sh reads; the
 * exit status is 0 when every test passed.
 */
Suite *unit_suite(void);

#endif
