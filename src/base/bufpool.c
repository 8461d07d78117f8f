/* SPDX-License-Identifier: MIT */
/*
 * Size-class buffer pools with per-thread caches.
 *
 * A free buffer stores the link to the next free buffer, and when it sits
 * in a global list the time it was put there, in its first bytes.  Thread
 * caches are reached through a noinline accessor because coroutines that
 * call in here move between threads.  A thread's cache is emptied into
 * the global lists when the thread exits.
 *
 * What the pools keep is bounded twice.  By count: small classes (up to
 * 32 KiB) are cached per thread, medium ones (64 KiB to 512 KiB) a few
 * per thread, large ones (1 MiB and up) only in the global lists, whose
 * length is bounded by bytes per class.  By age: bufpool_trim frees
 * global entries that nobody took for a while, so memory a burst of
 * large requests pulled in goes back to the system once the burst is
 * over.  Global lists are stacks, newest first, so their entries are in
 * order of age and trimming cuts each list at one point.
 */
#include "nbdsrv/bufpool.h"

#include "nbdsrv/compiler.h"
#include "nbdsrv/mutex.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define MIN_SHIFT 8  /* 256 bytes */
#define MAX_SHIFT 26 /* 64 MiB */
#define NR_CLASSES (MAX_SHIFT - MIN_SHIFT + 1)

/* Bytes of one class a global list may hold (at least two buffers). */
#define GLOBAL_CLASS_BYTES (32u * 1024 * 1024)

struct free_buf {
    struct free_buf *next;
    uint64_t freed_ns; /* global lists only: when it was put there */
};

struct class_list {
    struct free_buf *head;
    unsigned len;
};

static size_t class_size(unsigned cls)
{
    return (size_t)1 << (cls + MIN_SHIFT);
}

/* How many free buffers of a class one thread keeps. */
static unsigned thread_limit(unsigned cls)
{
    unsigned shift = cls + MIN_SHIFT;
    return shift <= 15 ? 64 : shift <= 19 ? 4 : 0;
}

/* How many the process keeps in the global list of a class. */
static unsigned global_limit(unsigned cls)
{
    size_t n = GLOBAL_CLASS_BYTES / class_size(cls);
    if (n < 2) {
        return 2;
    }
    return n > 512 ? 512 : (unsigned)n;
}

static struct mutex global_lock = {PTHREAD_MUTEX_INITIALIZER};
static struct class_list global_lists[NR_CLASSES] GUARDED_BY(global_lock);
/* Relaxed: statistics only, exact when the pools are quiet. */
static atomic_size_t cached_bytes;

/* Loop-local: one per thread. */
struct thread_pool {
    struct class_list lists[NR_CLASSES];
    int armed;
};
static __thread struct thread_pool thread_pool;
static pthread_key_t drain_key;
static pthread_once_t drain_once = PTHREAD_ONCE_INIT;

static unsigned class_of(size_t size)
{
    unsigned shift = MIN_SHIFT;
    while (((size_t)1 << shift) < size) {
        shift++;
    }
    return shift - MIN_SHIFT;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void global_put_or_free(unsigned cls, struct free_buf *b)
{
    uint64_t now = now_ns();
    mutex_lock(&global_lock);
    struct class_list *g = &global_lists[cls];
    if (g->len < global_limit(cls)) {
        b->next = g->head;
        b->freed_ns = now;
        g->head = b;
        g->len++;
        b = NULL;
    }
    mutex_unlock(&global_lock);
    if (b == NULL) {
        atomic_fetch_add_explicit(&cached_bytes, class_size(cls),
                                  memory_order_relaxed);
    }
    free(b);
}

static void drain_thread(void *opaque)
{
    struct thread_pool *tp = opaque;
    for (unsigned cls = 0; cls < NR_CLASSES; cls++) {
        while (tp->lists[cls].head != NULL) {
            struct free_buf *b = tp->lists[cls].head;
            tp->lists[cls].head = b->next;
            atomic_fetch_sub_explicit(&cached_bytes, class_size(cls),
                                      memory_order_relaxed);
            global_put_or_free(cls, b);
        }
        tp->lists[cls].len = 0;
    }
}

static void drain_key_create(void)
{
    pthread_key_create(&drain_key, drain_thread);
}

NOINLINE static struct thread_pool *my_pool(void)
{
    struct thread_pool *tp = &thread_pool;
    __asm__ volatile("" ::: "memory");
    if (!tp->armed) {
        pthread_once(&drain_once, drain_key_create);
        pthread_setspecific(drain_key, tp);
        tp->armed = 1;
    }
    return tp;
}

size_t bufpool_alloc_size(size_t size)
{
    if (size == 0 || size > BUFPOOL_MAX_SIZE) {
        return 0;
    }
    return class_size(class_of(size));
}

void *bufpool_get(size_t size)
{
    if (size > BUFPOOL_MAX_SIZE) {
        return NULL;
    }
    unsigned cls = class_of(size);
    struct thread_pool *tp = my_pool();
    struct class_list *l = &tp->lists[cls];
    struct free_buf *b = l->head;
    if (b != NULL) {
        l->head = b->next;
        l->len--;
        atomic_fetch_sub_explicit(&cached_bytes, class_size(cls),
                                  memory_order_relaxed);
        return b;
    }
    mutex_lock(&global_lock);
    struct class_list *g = &global_lists[cls];
    b = g->head;
    if (b != NULL) {
        g->head = b->next;
        g->len--;
    }
    mutex_unlock(&global_lock);
    if (b != NULL) {
        atomic_fetch_sub_explicit(&cached_bytes, class_size(cls),
                                  memory_order_relaxed);
        return b;
    }
    void *mem = NULL;
    size_t align = class_size(cls) >= 4096 ? 4096 : sizeof(void *) * 2;
    if (posix_memalign(&mem, align, class_size(cls)) != 0) {
        return NULL;
    }
    return mem;
}

void bufpool_put(void *buf, size_t size)
{
    if (buf == NULL) {
        return;
    }
    unsigned cls = class_of(size);
    struct thread_pool *tp = my_pool();
    struct class_list *l = &tp->lists[cls];
    struct free_buf *b = buf;
    if (l->len < thread_limit(cls)) {
        b->next = l->head;
        l->head = b;
        l->len++;
        atomic_fetch_add_explicit(&cached_bytes, class_size(cls),
                                  memory_order_relaxed);
        return;
    }
    global_put_or_free(cls, b);
}

size_t bufpool_trim(uint64_t idle_ns)
{
    uint64_t now = now_ns();
    uint64_t cutoff = now > idle_ns ? now - idle_ns : 0;
    struct free_buf *doomed[NR_CLASSES];
    size_t freed = 0;
    mutex_lock(&global_lock);
    for (unsigned cls = 0; cls < NR_CLASSES; cls++) {
        struct class_list *g = &global_lists[cls];
        struct free_buf **link = &g->head;
        unsigned kept = 0;
        while (*link != NULL && (*link)->freed_ns > cutoff) {
            link = &(*link)->next;
            kept++;
        }
        doomed[cls] = *link;
        *link = NULL;
        freed += (size_t)(g->len - kept) * class_size(cls);
        g->len = kept;
    }
    mutex_unlock(&global_lock);
    for (unsigned cls = 0; cls < NR_CLASSES; cls++) {
        while (doomed[cls] != NULL) {
            struct free_buf *b = doomed[cls];
            doomed[cls] = b->next;
            free(b);
        }
    }
    if (freed > 0) {
        atomic_fetch_sub_explicit(&cached_bytes, freed, memory_order_relaxed);
        /* free() keeps pages of the heap; hand them back as well. */
        malloc_trim(0);
    }
    return freed;
}

size_t bufpool_cached_bytes(void)
{
    return atomic_load_explicit(&cached_bytes, memory_order_relaxed);
}
