/* SPDX-License-Identifier: MIT */
/*
 * Size-class buffer pools with per-thread caches.
 *
 * A free buffer stores the link to the next free buffer in its first
 * bytes.  Thread caches are reached through a noinline accessor because
 * coroutines that call in here move between threads.  A thread's cache is
 * emptied into the global lists when the thread exits.
 */
#include "nbdsrv/bufpool.h"

#include "nbdsrv/compiler.h"

#include <pthread.h>
#include <stdlib.h>

#define MIN_SHIFT 8  /* 256 bytes */
#define MAX_SHIFT 25 /* 32 MiB */
#define NR_CLASSES (MAX_SHIFT - MIN_SHIFT + 1)

struct free_buf {
    struct free_buf *next;
};

struct class_list {
    struct free_buf *head;
    unsigned len;
};

/* How many free buffers of a class one thread, and the process, keep. */
static unsigned thread_limit(unsigned cls)
{
    unsigned shift = cls + MIN_SHIFT;
    return shift <= 18 ? 64 : shift <= 22 ? 8 : 2;
}

static unsigned global_limit(unsigned cls)
{
    return thread_limit(cls) * 8;
}

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;
static struct class_list global_lists[NR_CLASSES]; /* GUARDED_BY(global_lock) */

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

static size_t class_size(unsigned cls)
{
    return (size_t)1 << (cls + MIN_SHIFT);
}

static void global_put_or_free(unsigned cls, struct free_buf *b)
{
    pthread_mutex_lock(&global_lock);
    struct class_list *g = &global_lists[cls];
    if (g->len < global_limit(cls)) {
        b->next = g->head;
        g->head = b;
        g->len++;
        b = NULL;
    }
    pthread_mutex_unlock(&global_lock);
    free(b);
}

static void drain_thread(void *opaque)
{
    struct thread_pool *tp = opaque;
    for (unsigned cls = 0; cls < NR_CLASSES; cls++) {
        while (tp->lists[cls].head != NULL) {
            struct free_buf *b = tp->lists[cls].head;
            tp->lists[cls].head = b->next;
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
        return b;
    }
    pthread_mutex_lock(&global_lock);
    struct class_list *g = &global_lists[cls];
    b = g->head;
    if (b != NULL) {
        g->head = b->next;
        g->len--;
    }
    pthread_mutex_unlock(&global_lock);
    if (b != NULL) {
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
        return;
    }
    global_put_or_free(cls, b);
}
