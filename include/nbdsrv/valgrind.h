/* SPDX-License-Identifier: MIT */
/*
 * Valgrind client requests where the headers are installed (Debian:
 * valgrind), no-ops elsewhere.  A request costs a few instructions when
 * not running under Valgrind.  Builds that need them (make check-valgrind)
 * define NBDSRV_REQUIRE_VALGRIND: a missing header is then an error, not
 * a build whose coroutine stacks Valgrind silently does not know.
 */
#ifndef NBDSRV_VALGRIND_H
#define NBDSRV_VALGRIND_H

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define NBDSRV_HAVE_VALGRIND 1
#else
#ifdef NBDSRV_REQUIRE_VALGRIND
#error "NBDSRV_REQUIRE_VALGRIND needs <valgrind/memcheck.h> (Debian: valgrind)"
#endif
#define NBDSRV_HAVE_VALGRIND 0
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

#endif
