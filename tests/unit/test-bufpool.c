/* SPDX-License-Identifier: MIT */
/* Unit tests of the payload buffer pools. */
#include "fixture-main.h"
#include "nbdsrv/bufpool.h"

#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

UNIT_TEST("pool", test_bufpool_sizes_and_alignment)
{
    static const size_t sizes[] = {
        1, 200, 256, 257, 4096, 4097, 65536, 100000, 1 << 20, BUFPOOL_MAX_SIZE};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *b = bufpool_get(sizes[i]);
        ck_assert_ptr_nonnull(b);
        /* The whole requested size is usable. */
        memset(b, 0xa5, sizes[i]);
        if (sizes[i] >= 4096) {
            ck_assert_uint_eq((uintptr_t)b % 4096, 0);
        }
        bufpool_put(b, sizes[i]);
    }
    ck_assert_ptr_null(bufpool_get(BUFPOOL_MAX_SIZE + 1));
}
END_TEST

UNIT_TEST("pool", test_bufpool_reuses_freed_buffer)
{
    void *a = bufpool_get(5000);
    bufpool_put(a, 5000);
    /* Same class (8 KiB): the buffer comes back from this thread's cache. */
    void *b = bufpool_get(8192);
    ck_assert_ptr_eq(a, b);
    bufpool_put(b, 8192);
    bufpool_put(NULL, 100);
}
END_TEST

struct handoff {
    void *bufs[200];
};

static void *put_all(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 200; i++) {
        bufpool_put(h->bufs[i], 4096);
    }
    return NULL;
}

UNIT_TEST("pool", test_bufpool_buffers_move_between_threads)
{
    /* Taken here, returned on another thread (which then exits): the
     * buffers travel through the global lists and are reused here. */
    struct handoff h;
    for (int i = 0; i < 200; i++) {
        h.bufs[i] = bufpool_get(4096);
        ck_assert_ptr_nonnull(h.bufs[i]);
    }
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, put_all, &h), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    int reused = 0;
    void *again[200];
    for (int i = 0; i < 200; i++) {
        again[i] = bufpool_get(4096);
        for (int j = 0; j < 200; j++) {
            reused += again[i] == h.bufs[j];
        }
    }
    for (int i = 0; i < 200; i++) {
        bufpool_put(again[i], 4096);
    }
    ck_assert_int_gt(reused, 100);
}
END_TEST

UNIT_TEST("pool", test_bufpool_alloc_size_is_the_class)
{
    ck_assert_uint_eq(bufpool_alloc_size(0), 0);
    ck_assert_uint_eq(bufpool_alloc_size(1), 256);
    ck_assert_uint_eq(bufpool_alloc_size(4097), 8192);
    ck_assert_uint_eq(bufpool_alloc_size(48u << 20), 64u << 20);
    ck_assert_uint_eq(bufpool_alloc_size(BUFPOOL_MAX_SIZE), BUFPOOL_MAX_SIZE);
    ck_assert_uint_eq(bufpool_alloc_size(BUFPOOL_MAX_SIZE + 1), 0);
}
END_TEST

UNIT_TEST("pool", test_bufpool_trim_frees_idle_large_buffers)
{
    /* Large buffers are never kept per thread: once put back they wait
     * in the global list, where a trim finds them. */
    enum { N = 8 };
    void *bufs[N];
    size_t before = bufpool_cached_bytes();
    for (int i = 0; i < N; i++) {
        bufs[i] = bufpool_get(4u << 20);
        ck_assert_ptr_nonnull(bufs[i]);
    }
    for (int i = 0; i < N; i++) {
        bufpool_put(bufs[i], 4u << 20);
    }
    ck_assert_uint_eq(bufpool_cached_bytes(), before + N * (4u << 20));
    /* Not idle for an hour yet: kept. */
    ck_assert_uint_eq(bufpool_trim(3600ull * 1000000000u), 0);
    ck_assert_uint_eq(bufpool_cached_bytes(), before + N * (4u << 20));
    ck_assert_uint_ge(bufpool_trim(0), N * (4u << 20));
    ck_assert_uint_le(bufpool_cached_bytes(), before);
}
END_TEST

UNIT_TEST("pool", test_bufpool_global_list_is_bounded)
{
    /* 64 buffers of 16 MiB put back at once: the pool keeps two. */
    enum { N = 64 };
    static void *bufs[N];
    bufpool_trim(0);
    for (int i = 0; i < N; i++) {
        bufs[i] = bufpool_get(16u << 20);
        ck_assert_ptr_nonnull(bufs[i]);
    }
    for (int i = 0; i < N; i++) {
        bufpool_put(bufs[i], 16u << 20);
    }
    ck_assert_uint_le(bufpool_cached_bytes(), 32u << 20);
    bufpool_trim(0);
}
END_TEST

UNIT_SUITE("bufpool");
UNIT_TCASE("pool", 30, NULL, NULL);
