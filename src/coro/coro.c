/* SPDX-License-Identifier: MIT */
/*
 * Coroutine creation, the stack pool, and placing coroutines on loops.
 *
 * Pool: finished coroutines keep their stack and their started context.
 * Each thread keeps a small cache (no lock); past it they go to a global
 * list under a mutex, and past that their stacks are unmapped.  A
 * coroutine may finish on another thread than the one that created it,
 * so caches only ever trade through the global list.
 *
 * Placing: a coroutine is a loop task.  Running that task enters the
 * coroutine; when it yields with a pending coro_move_to, the task runner
 * (back on the loop's own stack, so the coroutine is fully switched out)
 * re-posts it to the target loop.  Posting a coroutine that might still be
 * running on another thread is what this avoids.
 */
#include "coro-int.h"
#include "nbdsrv/log.h"
#include "nbdsrv/mutex.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREAD_CACHE_MAX 64
#define GLOBAL_POOL_MAX 1024

/* Relaxed: read when a coroutine is created; no data hangs off it. */
static _Atomic size_t stack_size_setting = CORO_STACK_DEFAULT;
static atomic_ulong stacks_created;

static struct mutex pool_lock = {PTHREAD_MUTEX_INITIALIZER};
static struct coro *global_pool GUARDED_BY(pool_lock);
static unsigned global_pool_len GUARDED_BY(pool_lock);

/* Thread cache: loop-local; emptied into the global pool at thread exit. */
struct thread_cache {
    struct coro *head;
    unsigned len;
};
static __thread struct thread_cache cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

static size_t page_size(void)
{
    static size_t page;
    if (page == 0) {
        page = (size_t)sysconf(_SC_PAGESIZE);
    }
    return page;
}

int coro_set_stack_size(size_t size)
{
    if (size < CORO_STACK_MIN) {
        return -EINVAL;
    }
    size_t page = page_size();
    size = (size + page - 1) / page * page;
    atomic_store_explicit(&stack_size_setting, size, memory_order_relaxed);
    return 0;
}

size_t coro_stack_size(void)
{
    return atomic_load_explicit(&stack_size_setting, memory_order_relaxed);
}

unsigned long coro_stacks_created(void)
{
    return atomic_load(&stacks_created);
}

void *coro_stack_base(const struct coro *co)
{
    return co->stack;
}

struct loop *coro_loop(const struct coro *co)
{
    return co->loop;
}

static void destroy(struct coro *co)
{
    coro_switch_fini(co);
    munmap(co->map, co->map_size);
    free(co);
}

static void global_pool_put_or_destroy(struct coro *co)
{
    mutex_lock(&pool_lock);
    if (global_pool_len < GLOBAL_POOL_MAX) {
        co->pool_next = global_pool;
        global_pool = co;
        global_pool_len++;
        co = NULL;
    }
    mutex_unlock(&pool_lock);
    if (co != NULL) {
        destroy(co);
    }
}

static void cache_drain(void *unused)
{
    (void)unused;
    while (cache.head != NULL) {
        struct coro *co = cache.head;
        cache.head = co->pool_next;
        global_pool_put_or_destroy(co);
    }
    cache.len = 0;
}

static void cache_key_create(void)
{
    if (pthread_key_create(&cache_key, cache_drain) != 0) {
        BUG("pthread_key_create");
    }
}

/* Noinline: callers may be coroutines that run on several threads. */
NOINLINE static struct thread_cache *thread_cache(void)
{
    __asm__ volatile("" ::: "memory");
    return &cache;
}

static struct coro *pool_get(size_t stack_size)
{
    struct thread_cache *tc = thread_cache();
    struct coro *co = tc->head;
    if (co != NULL && co->stack_size == stack_size) {
        tc->head = co->pool_next;
        tc->len--;
        return co;
    }
    mutex_lock(&pool_lock);
    co = global_pool;
    if (co != NULL && co->stack_size == stack_size) {
        global_pool = co->pool_next;
        global_pool_len--;
    } else {
        co = NULL;
    }
    mutex_unlock(&pool_lock);
    return co;
}

void coro_release(struct coro *co)
{
    co->entry = NULL;
    co->arg = NULL;
    co->loop = NULL;
    if (co->stack_size != coro_stack_size()) {
        destroy(co);
        return;
    }
    struct thread_cache *tc = thread_cache();
    if (tc->len < THREAD_CACHE_MAX) {
        pthread_once(&cache_key_once, cache_key_create);
        if (tc->len == 0) {
            /* Any non-NULL value arms the destructor for this thread. */
            pthread_setspecific(cache_key, tc);
        }
        co->pool_next = tc->head;
        tc->head = co;
        tc->len++;
        return;
    }
    global_pool_put_or_destroy(co);
}

static struct coro *create(size_t stack_size)
{
    size_t guard = page_size();
    struct coro *co = calloc(1, sizeof *co);
    if (co == NULL) {
        return NULL;
    }
    co->map_size = stack_size + guard;
    co->map =
        mmap(NULL, co->map_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (co->map == MAP_FAILED) {
        goto out_free;
    }
    if (mprotect(co->map, guard, PROT_NONE) < 0) {
        goto out_unmap;
    }
    co->stack = co->map + guard;
    co->stack_size = stack_size;
    int r = coro_switch_init(co);
    if (r < 0) {
        errno = -r;
        goto out_unmap;
    }
    atomic_fetch_add(&stacks_created, 1);
    return co;

out_unmap : {
    int saved = errno;
    munmap(co->map, co->map_size);
    errno = saved;
}
out_free : {
    int saved = errno;
    free(co);
    errno = saved;
}
    return NULL;
}

static void coro_task_run(struct loop_task *task);

struct coro *coro_new(coro_entry_fn *fn, void *arg, struct loop *loop)
{
    size_t stack_size = coro_stack_size();
    struct coro *co = pool_get(stack_size);
    if (co == NULL) {
        co = create(stack_size);
        if (co == NULL) {
            return NULL;
        }
    }
    co->entry = fn;
    co->arg = arg;
    co->loop = loop;
    co->move_to = NULL;
    co->task.next = NULL;
    co->task.fn = coro_task_run;
    return co;
}

void coro_free(struct coro *co)
{
    if (co == NULL) {
        return;
    }
    if (co->running) {
        BUG("coro_free of a running coroutine");
    }
    coro_release(co);
}

static void coro_task_run(struct loop_task *task)
{
    struct coro *co = container_of(task, struct coro, task);
    if (coro_enter(co) == CORO_YIELDED && co->move_to != NULL) {
        struct loop *to = co->move_to;
        co->move_to = NULL;
        co->loop = to;
        loop_post(to, &co->task);
    }
}

void coro_wake(struct coro *co)
{
    if (co->loop == NULL) {
        BUG("coro_wake of a coroutine that is on no loop");
    }
    loop_post(co->loop, &co->task);
}

void coro_schedule(struct loop *loop, struct coro *co)
{
    co->loop = loop;
    loop_post(loop, &co->task);
}

void coro_move_to(struct loop *loop)
{
    struct coro *co = coro_self();
    if (co->loop == loop) {
        return;
    }
    co->move_to = loop;
    coro_yield();
}

struct run_sync {
    coro_entry_fn *fn;
    void *arg;
    sem_t done;
};

static void run_sync_entry(void *opaque)
{
    struct run_sync *rs = opaque;
    rs->fn(rs->arg);
    /* rs lives on the waiter's stack: the last touch is the post. */
    sem_post(&rs->done);
}

int coro_run_sync(struct loop *loop, coro_entry_fn *fn, void *arg)
{
    struct run_sync rs = {.fn = fn, .arg = arg};
    if (sem_init(&rs.done, 0, 0) < 0) {
        return -errno;
    }
    struct coro *co = coro_new(run_sync_entry, &rs, loop);
    if (co == NULL) {
        int r = -errno;
        sem_destroy(&rs.done);
        return r;
    }
    coro_schedule(loop, co);
    while (sem_wait(&rs.done) < 0 && errno == EINTR) {
    }
    sem_destroy(&rs.done);
    return 0;
}
