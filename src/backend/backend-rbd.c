/* SPDX-License-Identifier: MIT */
/* The RBD backend: a Ceph RBD image (or snapshot) through librbd. */

/*
 * Design.  A bottom layer of the storage interface (backend.h): one
 * struct rbd_backend per export, shared by every connection on every
 * loop (BACKEND_PARALLEL).
 *
 * Threads.  Opening and closing (rbd_backend_open, rbd_close, the
 * cluster connection) block on the network: they run on the main thread
 * when exports are opened, at start and at reload (export.c), never on a
 * loop; the last unref of an export also comes from there or from a loop
 * that drops the last connection of a removed export (then rbd_close
 * waits for librbd to let the image go, as a file close would).  The I/O
 * calls run on the calling coroutine's loop thread and only submit:
 * every data operation is an rbd_aio_* call with a completion whose
 * callback librbd runs on one of its own threads (the image's "finisher"
 * thread).  That callback touches only the waiter (struct rbd_wait, on
 * the request coroutine's stack): it stores the result and calls
 * coro_wake, which posts the coroutine to the loop it is parked on, so
 * the request resumes on its own loop.  A wake that comes before the
 * coroutine has finished yielding is harmless: it only queues the
 * coroutine on the loop that is busy yielding it (see coro-lock.c).
 * coro_wake still touches the loop after the coroutine may already run
 * again, so the callback sets `woken` (release) once coro_wake has
 * returned, and the resumed coroutine waits for it (a spin of at most
 * the rest of one loop_post) before it goes on: otherwise the request,
 * its connection and, at shutdown, the loop itself could be gone while
 * a librbd thread is still inside coro_wake.  The callback releases the
 * completion before the wake: librbd holds its own reference until it
 * has finished with it, so the release only gives up ours.
 *
 * (librbd can also signal completions through an eventfd,
 * rbd_set_image_notification, to be drained with rbd_poll_io_events by
 * one poller; the callback path needs no poller coroutine bound to one
 * loop and wakes each request on its own loop directly, which is what a
 * poller would have had to do too.)
 *
 * The allocation map comes from rbd_diff_iterate2, which is synchronous
 * and may wait for the cluster: it runs on a short-lived thread started
 * per extents call, which wakes the request coroutine the same way.
 *
 * Everything in struct rbd_backend is immutable after open; librbd's
 * image handle is safe for concurrent aio calls.  The cluster handles
 * (struct rbd_cluster) are shared by the exports that name the same
 * (ceph-conf, ceph-id, ceph-keyring), under clusters_lock, and are shut
 * down with their last export.
 *
 * Per request librbd allocates its completion (and its own state); this
 * backend allocates nothing more.
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef NBDSRV_HAVE_RBD

#include <rados/librados.h>
#include <rbd/librbd.h>

/*
 * Timeouts, in seconds, that replace librados's defaults when the
 * configuration leaves them at those defaults (a ceph.conf that sets one
 * keeps its value): an unreachable cluster fails the open within
 * client_mount_timeout instead of five minutes, and a cluster lost while
 * serving fails requests with an error after rados_osd_op_timeout
 * instead of waiting for ever.
 */
static const struct {
    const char *name, *librados_default, *ours;
} rbd_timeouts[] = {
    {"client_mount_timeout", "300", "10"},
    {"rados_mon_op_timeout", "0", "10"},
    {"rados_osd_op_timeout", "0", "30"},
};

/* One connection to a cluster, shared by the exports naming the same
 * settings.  Listed in `clusters` while it has users; fields immutable
 * but `users` and `next`, which clusters_lock guards. */
struct rbd_cluster {
    struct rbd_cluster *next;
    unsigned users;
    char *conf, *id, *keyring; /* as configured; NULL: librados default */
    rados_t rados;
};

static pthread_mutex_t clusters_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rbd_cluster *clusters;

struct rbd_backend {
    struct backend be;
    struct rbd_cluster *cluster; /* one user of it */
    rados_ioctx_t io;
    rbd_image_t image;
    char *spec; /* "POOL[/NS]/IMAGE[@SNAP]", for messages; owned */
    /* rbd_update_watch of a writable image: librbd calls image_updated
     * on one of its threads; `logged_size` (that thread only) is the
     * size last reported. */
    bool watching;
    uint64_t watch_handle;
    uint64_t logged_size;
};

static const struct backend_ops rbd_ops;

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *failed = true;
    }
    return d;
}

static void cluster_free(struct rbd_cluster *c)
{
    free(c->conf);
    free(c->id);
    free(c->keyring);
    free(c);
}

/* Names a cluster in messages: its ceph.conf (or librados's search). */
static const char *cluster_name(const struct rbd_backend_spec *s)
{
    return s->conf != NULL ? s->conf : "the default ceph.conf";
}

/* A new connection, or NULL with err naming the cluster and cause.
 * Blocks up to RBD_MOUNT_TIMEOUT.  Main thread. */
static struct rbd_cluster *cluster_connect(const struct rbd_backend_spec *s,
                                           struct err *err)
{
    struct rbd_cluster *c = calloc(1, sizeof *c);
    bool failed = c == NULL;
    if (c != NULL) {
        c->conf = dup_or_null(s->conf, &failed);
        c->id = dup_or_null(s->id, &failed);
        c->keyring = dup_or_null(s->keyring, &failed);
    }
    if (failed) {
        if (c != NULL) {
            cluster_free(c);
        }
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    int r = rados_create(&c->rados, s->id);
    if (r < 0) {
        err_set_errno(err, -r, "ceph cluster (%s): rados_create",
                      cluster_name(s));
        cluster_free(c);
        return NULL;
    }
    const char *what = "reading the configuration";
    r = rados_conf_read_file(c->rados, s->conf);
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(rbd_timeouts); i++) {
        char v[64];
        what = rbd_timeouts[i].name;
        r = rados_conf_get(c->rados, what, v, sizeof v);
        if (r == 0 && strcmp(v, rbd_timeouts[i].librados_default) == 0) {
            r = rados_conf_set(c->rados, what, rbd_timeouts[i].ours);
        }
    }
    if (r == 0 && s->keyring != NULL) {
        what = "keyring";
        r = rados_conf_set(c->rados, "keyring", s->keyring);
    }
    if (r == 0) {
        what = "connecting";
        r = rados_connect(c->rados);
    }
    if (r < 0) {
        err_set_errno(err, -r, "ceph cluster (%s, client.%s): %s",
                      cluster_name(s), s->id != NULL ? s->id : "admin", what);
        rados_shutdown(c->rados);
        cluster_free(c);
        return NULL;
    }
    return c;
}

/* A user of the cluster `s` names: shared, or connected now. */
static struct rbd_cluster *cluster_get(const struct rbd_backend_spec *s,
                                       struct err *err)
{
    pthread_mutex_lock(&clusters_lock);
    for (struct rbd_cluster *c = clusters; c != NULL; c = c->next) {
        if (same_str(c->conf, s->conf) && same_str(c->id, s->id) &&
            same_str(c->keyring, s->keyring)) {
            c->users++;
            pthread_mutex_unlock(&clusters_lock);
            return c;
        }
    }
    /* Connecting under the lock keeps two opens from racing to connect
     * twice; opens happen on the main thread only anyway. */
    struct rbd_cluster *c = cluster_connect(s, err);
    if (c != NULL) {
        c->users = 1;
        c->next = clusters;
        clusters = c;
    }
    pthread_mutex_unlock(&clusters_lock);
    return c;
}

static void cluster_put(struct rbd_cluster *c)
{
    pthread_mutex_lock(&clusters_lock);
    bool last = --c->users == 0;
    if (last) {
        for (struct rbd_cluster **p = &clusters; *p != NULL; p = &(*p)->next) {
            if (*p == c) {
                *p = c->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&clusters_lock);
    if (last) {
        rados_shutdown(c->rados);
        cluster_free(c);
    }
}

static struct rbd_backend *to_rbd(struct backend *be)
{
    return container_of(be, struct rbd_backend, be);
}

/* ---- Waiting for librbd ---- */

/* One request waiting for its completion: on the coroutine's stack. */
struct rbd_wait {
    struct coro *co;
    ssize_t ret;
    atomic_bool woken; /* set by the waker once coro_wake has returned */
};

/* The waker's side: wake, then say so (its last touch of `woken`'s
 * owner).  ANY_THREAD. */
static void wake_waiter(struct coro *co, atomic_bool *woken)
{
    coro_wake(co);
    atomic_store_explicit(woken, true, memory_order_release);
}

/* The waiter's side, after it resumed: the waker is out of coro_wake
 * within a few instructions.  CORO_FN. */
static void wait_waker(atomic_bool *woken)
{
    while (!atomic_load_explicit(woken, memory_order_acquire)) {
        sched_yield();
    }
}

/* librbd's thread. */
static void rbd_done(rbd_completion_t c, void *arg)
{
    struct rbd_wait *w = arg;
    w->ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    wake_waiter(w->co, &w->woken);
}

/* The kinds of aio request. */
enum rbd_req { REQ_READ, REQ_WRITE, REQ_FLUSH, REQ_DISCARD, REQ_ZEROES };

/*
 * Submits one aio request and parks until librbd completes it.  0, or
 * -errno.  CORO_FN.
 */
static int rbd_submit(struct rbd_backend *rb, enum rbd_req req, void *buf,
                      uint64_t len, uint64_t offset, int zero_flags)
{
    struct rbd_wait w = {.co = coro_self(), .ret = 0};
    rbd_completion_t c;
    int r = rbd_aio_create_completion(&w, rbd_done, &c);
    if (r < 0) {
        return r;
    }
    switch (req) {
    case REQ_READ:
        r = rbd_aio_read(rb->image, offset, len, buf, c);
        break;
    case REQ_WRITE:
        r = rbd_aio_write(rb->image, offset, len, buf, c);
        break;
    case REQ_FLUSH:
        r = rbd_aio_flush(rb->image, c);
        break;
    case REQ_DISCARD:
        r = rbd_aio_discard(rb->image, offset, len, c);
        break;
    case REQ_ZEROES:
        r = rbd_aio_write_zeroes(rb->image, offset, len, c, zero_flags, 0);
        break;
    }
    if (r < 0) {
        /* Not queued: the callback will not run. */
        rbd_aio_release(c);
        return r;
    }
    coro_yield();
    wait_waker(&w.woken);
    if (w.ret < 0) {
        return (int)w.ret;
    }
    if (req == REQ_READ && (uint64_t)w.ret != len) {
        return -EIO; /* reads inside the image are whole */
    }
    return 0;
}

/* ---- Operations (CORO_FN, on the caller's loop) ---- */

static int rbd_pread(struct backend *be, void *buf, uint32_t len,
                     uint64_t offset)
{
    return rbd_submit(to_rbd(be), REQ_READ, buf, len, offset, 0);
}

static int rbd_flush_op(struct backend *be)
{
    return rbd_submit(to_rbd(be), REQ_FLUSH, NULL, 0, 0, 0);
}

/* FUA: the write, then a flush (librbd has no per-write FUA). */
static int after(struct backend *be, int r, bool fua)
{
    return r == 0 && fua ? rbd_flush_op(be) : r;
}

static int rbd_pwrite(struct backend *be, const void *buf, uint32_t len,
                      uint64_t offset, bool fua)
{
    int r = rbd_submit(to_rbd(be), REQ_WRITE, (void *)buf, len, offset, 0);
    return after(be, r, fua);
}

static int rbd_trim(struct backend *be, uint64_t offset, uint64_t len, bool fua)
{
    int r = rbd_submit(to_rbd(be), REQ_DISCARD, NULL, len, offset, 0);
    return after(be, r, fua);
}

/*
 * rbd_aio_write_zeroes frees whole objects and zeroes the rest; with
 * THICK_PROVISION (NBD_CMD_FLAG_NO_HOLE) it writes zeroes, keeping the
 * space.  Neither is promised to be fast, so FAST_ZERO is refused.
 */
static int rbd_zero(struct backend *be, uint64_t offset, uint64_t len,
                    unsigned flags, bool fua)
{
    if ((flags & BACKEND_ZERO_FAST) != 0) {
        return -ENOTSUP;
    }
    int zf = (flags & BACKEND_ZERO_MAY_TRIM) != 0
                 ? 0
                 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
    int r = rbd_submit(to_rbd(be), REQ_ZEROES, NULL, len, offset, zf);
    return after(be, r, fua);
}

/* ---- Block status ---- */

/* An extents call, handed to its thread; on the coroutine's stack. */
struct rbd_diff {
    struct rbd_backend *rb;
    uint64_t offset, len, pos; /* pos: the end of what is described */
    struct backend_extent *out;
    unsigned max, nr;
    int ret;
    struct coro *co;
    atomic_bool woken;
};

/* Appends a run, merging with the last one of its kind. */
static bool diff_add(struct rbd_diff *d, uint64_t length, bool hole)
{
    if (d->nr > 0 && d->out[d->nr - 1].hole == hole) {
        d->out[d->nr - 1].length += length;
    } else if (d->nr == d->max) {
        return false;
    } else {
        d->out[d->nr++] =
            (struct backend_extent){.length = length, .hole = hole};
    }
    d->pos += length;
    return true;
}

/*
 * librbd's callback for each changed (written, or discarded when exists
 * is 0) range, in order, whole objects: the ranges between are holes.
 */
static int diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
    struct rbd_diff *d = arg;
    uint64_t end = off + len;
    if (end > d->offset + d->len) {
        end = d->offset + d->len;
    }
    if (off < d->pos) {
        off = d->pos;
    }
    if (off >= end) {
        return 0;
    }
    if (off > d->pos && !diff_add(d, off - d->pos, true)) {
        return -ECANCELED;
    }
    if (!diff_add(d, end - off, exists == 0)) {
        return -ECANCELED;
    }
    return 0;
}

/* The extents thread: the synchronous diff, then the wake. */
static void *diff_thread(void *arg)
{
    struct rbd_diff *d = arg;
    int r = rbd_diff_iterate2(d->rb->image, NULL, d->offset, d->len, 1, 1,
                              diff_cb, d);
    d->ret = r == -ECANCELED ? 0 : r;
    wake_waiter(d->co, &d->woken);
    return NULL;
}

static int rbd_extents(struct backend *be, enum backend_meta meta,
                       uint64_t offset, uint64_t len,
                       struct backend_extent *out, unsigned max)
{
    if (meta != BACKEND_META_ALLOCATION) {
        return -ENOTSUP;
    }
    struct rbd_diff d = {.rb = to_rbd(be),
                         .offset = offset,
                         .len = len,
                         .pos = offset,
                         .out = out,
                         .max = max,
                         .co = coro_self()};
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &attr, diff_thread, &d);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        return -r;
    }
    coro_yield();
    wait_waker(&d.woken);
    if (d.ret < 0) {
        return d.ret;
    }
    /* The rest of the range, after the last changed object: a hole. */
    if (d.pos < offset + len && !diff_add(&d, offset + len - d.pos, true) &&
        d.nr == 0) {
        return -EIO;
    }
    return d.nr > 0 ? (int)d.nr : -EIO;
}

/* ---- Open and close (main thread) ---- */

/*
 * librbd's thread, when the image's header changed (a resize, a
 * snapshot, a lock): a resize is logged once per new size.  The export
 * keeps the size it advertised (a client's idea of it cannot change
 * under it); the image is reopened at its new size by a reload that
 * changes the export, or a restart.  An image with an export open has a
 * watcher, so Ceph refuses to remove it (`rbd rm` says so).
 */
static void image_updated(void *arg)
{
    struct rbd_backend *rb = arg;
    uint64_t now;
    if (rbd_get_size(rb->image, &now) < 0 || now == rb->logged_size) {
        return;
    }
    rb->logged_size = now;
    log_warning("rbd %s: the image was resized from %llu to %llu bytes; "
                "the export goes on serving %llu bytes until it is "
                "opened again (a restart, or a reload that changes it)",
                rb->spec, (unsigned long long)rb->be.size,
                (unsigned long long)now, (unsigned long long)rb->be.size);
}

static void rbd_close_op(struct backend *be)
{
    struct rbd_backend *rb = to_rbd(be);
    if (rb->watching) {
        rbd_update_unwatch(rb->image, rb->watch_handle);
    }
    rbd_close(rb->image);
    rados_ioctx_destroy(rb->io);
    cluster_put(rb->cluster);
    free(rb->spec);
    free(rb);
}

static const struct backend_ops rbd_ops = {
    .name = "rbd",
    .close = rbd_close_op,
    .pread = rbd_pread,
    .pwrite = rbd_pwrite,
    .flush = rbd_flush_op,
    .trim = rbd_trim,
    .zero = rbd_zero,
    .extents = rbd_extents,
};

struct backend *backend_rbd_open(const struct rbd_backend_spec *s,
                                 bool read_only, struct err *err)
{
    char pool[256], ns[256], image[256], snap[256];
    if (backend_rbd_parse(s->image, pool, ns, image, snap, sizeof pool, err) <
        0) {
        return NULL;
    }
    struct rbd_backend *rb = calloc(1, sizeof *rb);
    if (rb == NULL || (rb->spec = strdup(s->image)) == NULL) {
        free(rb);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    rb->cluster = cluster_get(s, err);
    if (rb->cluster == NULL) {
        goto fail_free;
    }
    int r = rados_ioctx_create(rb->cluster->rados, pool, &rb->io);
    if (r < 0) {
        err_set_errno(err, -r, "rbd %s: pool %s (cluster %s)", s->image, pool,
                      cluster_name(s));
        goto fail_cluster;
    }
    rados_ioctx_set_namespace(rb->io, ns);
    bool ro = read_only || snap[0] != '\0';
    const char *sn = snap[0] != '\0' ? snap : NULL;
    r = ro ? rbd_open_read_only(rb->io, image, &rb->image, sn)
           : rbd_open(rb->io, image, &rb->image, NULL);
    if (r < 0) {
        err_set_errno(err, -r, "rbd %s: opening the image (cluster %s)",
                      s->image, cluster_name(s));
        goto fail_io;
    }
    uint64_t size;
    r = rbd_get_size(rb->image, &size);
    if (r < 0) {
        err_set_errno(err, -r, "rbd %s: size", s->image);
        rbd_close(rb->image);
        goto fail_io;
    }
    unsigned caps = BACKEND_CAP_EXTENTS | BACKEND_CAP_MULTI_CONN;
    caps |= ro ? BACKEND_CAP_READ_ONLY : BACKEND_CAP_TRIM | BACKEND_CAP_ZERO;
    backend_init(&rb->be, &rbd_ops, NULL, size, caps, BACKEND_PARALLEL);
    rb->logged_size = size;
    if (sn == NULL) {
        /* Without it a resize goes unnoticed, which is no reason to
         * refuse the export. */
        rb->watching = rbd_update_watch(rb->image, &rb->watch_handle,
                                        image_updated, rb) == 0;
    }
    return &rb->be;

fail_io:
    rados_ioctx_destroy(rb->io);
fail_cluster:
    cluster_put(rb->cluster);
fail_free:
    free(rb->spec);
    free(rb);
    return NULL;
}

bool backend_rbd_available(void)
{
    return true;
}

#else /* !NBDSRV_HAVE_RBD */

struct backend *backend_rbd_open(const struct rbd_backend_spec *s,
                                 bool read_only, struct err *err)
{
    (void)read_only;
    err_set(err, ENOTSUP,
            "rbd %s: this build of nbd-serverd has no RBD support (built "
            "without librbd-dev)",
            s->image);
    return NULL;
}

bool backend_rbd_available(void)
{
    return false;
}

#endif

/* Copies [s, s+n) to out (size cap) as a string; false if too long. */
static bool take(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

int backend_rbd_parse(const char *spec, char *pool, char *ns, char *image,
                      char *snap, size_t cap, struct err *err)
{
    const char *at = strchr(spec, '@');
    size_t body = at != NULL ? (size_t)(at - spec) : strlen(spec);
    const char *s1 = memchr(spec, '/', body);
    const char *s2 =
        s1 != NULL ? memchr(s1 + 1, '/', body - (size_t)(s1 + 1 - spec)) : NULL;
    const char *s3 =
        s2 != NULL ? memchr(s2 + 1, '/', body - (size_t)(s2 + 1 - spec)) : NULL;
    const char *img = s2 != NULL ? s2 + 1 : s1 != NULL ? s1 + 1 : NULL;
    bool ok = s1 != NULL && s3 == NULL && s1 > spec && img < spec + body &&
              (s2 == NULL || s2 > s1 + 1) && (at == NULL || at[1] != '\0') &&
              (at == NULL || strchr(at + 1, '@') == NULL);
    ok = ok && take(pool, cap, spec, (size_t)(s1 - spec)) &&
         take(ns, cap, s2 != NULL ? s1 + 1 : "",
              s2 != NULL ? (size_t)(s2 - s1 - 1) : 0) &&
         take(image, cap, img, (size_t)(spec + body - img)) &&
         take(snap, cap, at != NULL ? at + 1 : "",
              at != NULL ? strlen(at + 1) : 0);
    if (!ok) {
        return err_set(err, EINVAL,
                       "rbd = %s: expected POOL/IMAGE or POOL/NAMESPACE/IMAGE, "
                       "optionally followed by @SNAPSHOT",
                       spec);
    }
    return 0;
}
