/* SPDX-License-Identifier: MIT */
/* Scope-exit cleanups: CLEANUP_FREE, CLEANUP_CLOSE and LOCK_GUARD only. */
#ifndef NBDSRV_CLEANUP_H
#define NBDSRV_CLEANUP_H

#include <pthread.h>

void cleanup_free(void *ptr);
void cleanup_close(int *fd);
void cleanup_unlock(pthread_mutex_t **mutex);

#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))

#define LOCK_GUARD_CAT2(a, b) a##b
#define LOCK_GUARD_CAT(a, b) LOCK_GUARD_CAT2(a, b)
/* Holds a pthread mutex until the end of the scope.  Not for coroutines. */
#define LOCK_GUARD(m)                                                          \
    pthread_mutex_t *LOCK_GUARD_CAT(lock_guard_, __LINE__)                     \
        __attribute__((cleanup(cleanup_unlock))) = (m);                        \
    pthread_mutex_lock(LOCK_GUARD_CAT(lock_guard_, __LINE__))

#endif
