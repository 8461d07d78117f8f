/* SPDX-License-Identifier: MIT */
/*
 * Thread-affinity markers.  Every prototype carries one:
 *  - LOOP_FN: call only on a loop's own thread, outside coroutine context;
 *  - CORO_FN: call only from a coroutine (it may yield);
 *  - ANY_THREAD: safe from any thread, coroutine or not.
 * They expand to nothing; they document the contract that debug builds
 * check with coro_assert_in_coroutine() and loop_assert_owner().
 */
#ifndef NBDSRV_AFFINITY_H
#define NBDSRV_AFFINITY_H

#define LOOP_FN
#define CORO_FN
#define ANY_THREAD

#endif
