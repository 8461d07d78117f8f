/* SPDX-License-Identifier: MIT */
/* The file backend: a raw image file or a block device behind io_uring. */

/*
 * Design.  A bottom layer of the storage interface (backend.h): one
 * struct file_backend per export, shared by every connection on every
 * loop.  The common code (backend.c) has checked ranges, read-only-ness
 * and empty requests before any operation here runs.  Everything learned
 * at open (fd, size, kind, capabilities) is immutable afterwards and read
 * without locks; the only mutable state is the reference count (in the
 * common part) and a few "this file system said EOPNOTSUPP" hints, all
 * C11 atomics.  Data moves through the ring of the loop the
 * calling coroutine is on (coro_read, coro_write, coro_fallocate, ...),
 * so requests from many loops run in parallel with no lock
 * (BACKEND_PARALLEL).  The allocation map is read with plain lseek
 * SEEK_DATA/SEEK_HOLE calls on the calling thread: io_uring has no such
 * operation, and they answer from the file system's extent tree without
 * I/O in the common case.
 *
 * Mapping of NBD commands (doc/proto.md, "Request types"):
 *  - NBD_CMD_TRIM is advisory: hole punch, and "unsupported" is success.
 *  - NBD_CMD_WRITE_ZEROES: without NBD_CMD_FLAG_NO_HOLE (MAY_TRIM) punch
 *    a hole, else FALLOC_FL_ZERO_RANGE; with NO_HOLE, ZERO_RANGE or, on
 *    file systems without it (tmpfs), punch then re-allocate, so that the
 *    blocks stay reserved.  Only when no fallocate mode works are zeroes
 *    written, and NBD_CMD_FLAG_FAST_ZERO turns that case into ENOTSUP.
 *  - Block devices take fallocate only in logical-block units: the
 *    unaligned head and tail of a zero request are written, and those of
 *    a trim skipped.
 *
 * cache=none (BACKEND_OPEN_DIRECT) opens the image a second time with
 * O_DIRECT.  A read or write whose offset, length and buffer are all
 * aligned to direct_align (4096, or a block device's larger logical block
 * size) goes through that descriptor and bypasses the page cache; any
 * other (the tail of an image whose size is not a multiple, a client that
 * ignores the preferred block size) goes through the buffered descriptor.
 * The kernel keeps the two coherent (a direct read first writes back
 * dirty cached pages of its range, a direct write drops them), so every
 * request is answered correctly, and the common aligned case uses no
 * bounce buffer (payload buffers of 4 KiB and up are page-aligned).
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

/* Zeroes written when no fallocate mode works: ZERO_IOVS x ZERO_CHUNK. */
#define ZERO_CHUNK (64u * 1024)
#define ZERO_IOVS 16

/* readahead hint size per IORING_OP_FADVISE (its length is 32-bit). */
#define CACHE_CHUNK (1u << 30)

/* Never written: the source of every zero-filling write. */
static const char zero_buf[ZERO_CHUNK];

static const struct backend_ops file_ops;

/*
 * A file backend: the common part (its references, size and capabilities)
 * and what it learned at open.  Freed by file_close with the last
 * reference.  Fields not marked otherwise are immutable after init.
 */
struct file_backend {
    struct backend be;     /* the common part; must stay first for calloc */
    int fd;                /* O_CLOEXEC, O_RDWR or O_RDONLY */
    int dfd;               /* the same with O_DIRECT (cache=none), or -1 */
    uint32_t direct_align; /* alignment of I/O through dfd */
    char *path;            /* as given to backend_file_open; owned */
    uint64_t size;         /* as be.size; set by the probe */
    uint32_t align; /* fallocate granularity: 1, or the logical block size
                       of a block device */
    bool read_only; /* as BACKEND_CAP_READ_ONLY in be.caps */
    bool is_block;
    bool rotational; /* block devices only; files say false */
    bool can_trim;
    bool can_fast_zero;
    /*
     * The file lives in memory (tmpfs, ramfs): reads and writes are memory
     * copies that never wait for a device, and io_uring would hand every
     * one of them to a worker thread (these file systems take no
     * non-blocking I/O), so they run as plain syscalls on the loop.
     */
    bool in_memory;

    /*
     * Hints learned at run time, atomic with relaxed ordering: each only
     * saves a doomed system call, and a stale value costs one more
     * EOPNOTSUPP, never a wrong result.
     */
    atomic_bool no_punch;      /* FALLOC_FL_PUNCH_HOLE unsupported */
    atomic_bool no_zero_range; /* FALLOC_FL_ZERO_RANGE unsupported */
    atomic_bool no_alloc;      /* plain fallocate (mode 0) unsupported */
    atomic_bool no_dsync;      /* RWF_DSYNC unsupported on the ring */
};

/*
 * Reads a small unsigned number from /sys/dev/block/MAJ:MIN/<rel>.
 * Returns false when the file does not exist or does not parse.
 */
static bool sysfs_read_u64(dev_t dev, const char *rel, uint64_t *out)
{
    char path[128];
    snprintf(path, sizeof path, "/sys/dev/block/%u:%u/%s", major(dev),
             minor(dev), rel);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return false;
    }
    unsigned long long v;
    bool ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    if (ok) {
        *out = v;
    }
    return ok;
}

/*
 * A queue attribute of the disk holding `dev`.  Partitions have no queue
 * directory of their own: theirs is their parent disk's.
 */
static bool sysfs_queue_u64(dev_t dev, const char *attr, uint64_t *out)
{
    char rel[64];
    snprintf(rel, sizeof rel, "queue/%s", attr);
    if (sysfs_read_u64(dev, rel, out)) {
        return true;
    }
    snprintf(rel, sizeof rel, "../queue/%s", attr);
    return sysfs_read_u64(dev, rel, out);
}

/*
 * Whether hole punching works on this writable regular file, asked
 * without touching data: a punch that starts at or beyond the end of
 * the file has nothing to free, yet file systems that lack the mode
 * still refuse it with EOPNOTSUPP.  (A ZERO_RANGE probe would not be
 * harmless: past EOF it preallocates blocks.)
 */
static bool probe_punch_hole(int fd, uint64_t size)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     (off_t)size, 1) == 0;
}

/* Fills in size, kind and capabilities from an open fd.  0 or -errno. */
static int backend_probe(struct file_backend *be, const struct stat *st,
                         struct err *err)
{
    uint64_t v;

    if (S_ISREG(st->st_mode)) {
        be->size = (uint64_t)st->st_size;
        be->align = 1;
        be->can_trim = !be->read_only;
        be->can_fast_zero =
            !be->read_only && probe_punch_hole(be->fd, be->size);
        return 0;
    }
    if (S_ISBLK(st->st_mode)) {
        uint64_t bytes;
        if (ioctl(be->fd, BLKGETSIZE64, &bytes) != 0) {
            return err_set_errno(err, errno, "%s: BLKGETSIZE64", be->path);
        }
        int lbs = 512;
        if (ioctl(be->fd, BLKSSZGET, &lbs) != 0 || lbs <= 0) {
            lbs = 512;
        }
        be->size = bytes;
        be->align = (uint32_t)lbs;
        be->is_block = true;
        be->rotational =
            sysfs_queue_u64(st->st_rdev, "rotational", &v) && v != 0;
        be->can_trim = !be->read_only;
        /*
         * The block layer's ZERO_RANGE falls back to writing zero pages
         * itself: zeroing is fast only when the device offloads it.
         */
        be->can_fast_zero =
            !be->read_only &&
            sysfs_queue_u64(st->st_rdev, "write_zeroes_max_bytes", &v) &&
            v != 0;
        return 0;
    }
    return err_set(err, EINVAL, "%s: not a regular file or block device",
                   be->path);
}

struct backend *backend_file_open(const char *path, bool read_only,
                                  struct err *err)
{
    return backend_file_open_flags(path, read_only ? BACKEND_OPEN_READ_ONLY : 0,
                                   err);
}

/* Opens the O_DIRECT descriptor of cache=none.  0 or -errno. */
static int open_direct(struct file_backend *be, struct err *err)
{
    int flags =
        (be->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_DIRECT;
    be->dfd = open(be->path, flags);
    if (be->dfd < 0) {
        int e = errno;
        if (e == EINVAL) {
            return err_set(err, e,
                           "%s: cache=none: the file system refuses O_DIRECT "
                           "(tmpfs before Linux 6.6 does); use "
                           "cache=writeback or put the image elsewhere",
                           be->path);
        }
        return err_set_errno(err, e, "%s: cache=none: open with O_DIRECT",
                             be->path);
    }
    be->direct_align = be->align > 4096 ? be->align : 4096;
    return 0;
}

struct backend *backend_file_open_flags(const char *path, unsigned open_flags,
                                        struct err *err)
{
    bool read_only = (open_flags & BACKEND_OPEN_READ_ONLY) != 0;
    struct file_backend *be = calloc(1, sizeof *be);
    if (be == NULL) {
        err_set_errno(err, ENOMEM, "%s", path);
        return NULL;
    }
    be->dfd = -1;
    atomic_init(&be->no_punch, false);
    atomic_init(&be->no_zero_range, false);
    atomic_init(&be->no_alloc, false);
    atomic_init(&be->no_dsync, false);
    be->read_only = read_only;
    be->path = strdup(path);
    if (be->path == NULL) {
        err_set_errno(err, ENOMEM, "%s", path);
        goto out_free;
    }

    /*
     * O_NONBLOCK keeps open() from hanging on a FIFO that is about to be
     * refused; it is dropped again below, because io_uring would turn it
     * into -EAGAIN on buffered file I/O.
     */
    int flags =
        (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    be->fd = open(path, flags);
    if (be->fd < 0) {
        err_set_errno(err, errno, "%s: open", path);
        goto out_free_path;
    }
    struct stat st;
    if (fstat(be->fd, &st) != 0) {
        err_set_errno(err, errno, "%s: fstat", path);
        goto out_close;
    }
    if (backend_probe(be, &st, err) != 0) {
        goto out_close;
    }
    struct statfs sfs;
    if (!be->is_block && fstatfs(be->fd, &sfs) == 0 &&
        (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC)) {
        be->in_memory = true;
    }
    int fl = fcntl(be->fd, F_GETFL);
    if (fl < 0 || fcntl(be->fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        err_set_errno(err, errno, "%s: fcntl", path);
        goto out_close;
    }
    if ((open_flags & BACKEND_OPEN_DIRECT) && open_direct(be, err) < 0) {
        goto out_close;
    }
    /* Writing zeroes always works on a writable file; the page cache
     * serves every connection alike, so a flush covers them all. */
    unsigned caps = BACKEND_CAP_CACHE | BACKEND_CAP_EXTENTS |
                    BACKEND_CAP_MULTI_CONN |
                    (be->read_only ? BACKEND_CAP_READ_ONLY : BACKEND_CAP_ZERO) |
                    (be->can_trim ? BACKEND_CAP_TRIM : 0) |
                    (be->can_fast_zero ? BACKEND_CAP_FAST_ZERO : 0) |
                    (be->rotational ? BACKEND_CAP_ROTATIONAL : 0);
    backend_init(&be->be, &file_ops, NULL, be->size, caps, BACKEND_PARALLEL);
    return &be->be;

out_close:
    close(be->fd);
out_free_path:
    free(be->path);
out_free:
    free(be);
    return NULL;
}

static struct file_backend *to_file(struct backend *b)
{
    return container_of(b, struct file_backend, be);
}

static const struct file_backend *to_file_const(const struct backend *b)
{
    return container_of(b, const struct file_backend, be);
}

static void file_close(struct backend *b)
{
    struct file_backend *be = to_file(b);
    close(be->fd);
    be->fd = -1;
    if (be->dfd >= 0) {
        close(be->dfd);
        be->dfd = -1;
    }
    free(be->path);
    be->path = NULL;
    free(be);
}

static bool file_same_file(const struct backend *b, const char *path)
{
    const struct file_backend *be = to_file_const(b);
    struct stat a, st;
    return stat(path, &a) == 0 && fstat(be->fd, &st) == 0 &&
           a.st_dev == st.st_dev && a.st_ino == st.st_ino;
}

bool backend_file_is_direct(const struct backend *b)
{
    return b->ops == &file_ops && to_file_const(b)->dfd >= 0;
}

/* The descriptor for this piece of I/O: O_DIRECT when all is aligned. */
static int io_fd(const struct file_backend *be, const void *p, uint32_t len,
                 uint64_t offset)
{
    if (be->dfd < 0) {
        return be->fd;
    }
    uint64_t a = be->direct_align;
    if (offset % a == 0 && len % a == 0 && (uintptr_t)p % a == 0) {
        return be->dfd;
    }
    return be->fd;
}

/*
 * The bytes one read or write of a loop that moves them all got done:
 * r, or 0 after -EINTR (try again), -EIO after 0 (the file shrank under
 * us: the export's size is a promise), -errno after an error.
 */
static ssize_t progress(ssize_t r)
{
    if (r == -EINTR) {
        return 0;
    }
    return r == 0 ? -EIO : r;
}

static int file_pread(struct backend *b, void *buf, uint32_t len,
                      uint64_t offset)
{
    struct file_backend *be = to_file(b);
    char *p = buf;
    uint32_t done = 0;
    while (done < len) {
        ssize_t r;
        if (be->in_memory) {
            r = pread(be->fd, p + done, len - done, (off_t)(offset + done));
            r = r < 0 ? -errno : r;
        } else {
            int fd = io_fd(be, p + done, len - done, offset + done);
            r = coro_read(fd, p + done, len - done, offset + done);
        }
        r = progress(r);
        if (r < 0) {
            return (int)r;
        }
        done += (uint32_t)r;
    }
    return 0;
}

/*
 * One write of the remaining bytes; with dsync it is durable on return.
 * Falls back to a plain write (the caller then syncs) when the ring does
 * not take RWF_DSYNC; *synced says which happened.
 */
static ssize_t write_some(struct file_backend *be, const char *p, uint32_t len,
                          uint64_t offset, bool dsync, bool *synced)
{
    int fd = io_fd(be, p, len, offset);
    /*
     * An O_DIRECT write with RWF_DSYNC to a regular file is not durable
     * on every file system: on FUSE (Linux 6.18) no fsync reaches the
     * daemon.  Such writes go plain and the caller syncs; block devices
     * and buffered writes honour RWF_DSYNC.
     */
    bool dsync_honoured = fd != be->dfd || be->is_block;
    if (dsync && dsync_honoured && !be->in_memory &&
        !atomic_load_explicit(&be->no_dsync, memory_order_relaxed)) {
        ssize_t r = coro_write_flags(fd, p, len, offset, RWF_DSYNC);
        if (r != -EOPNOTSUPP) {
            *synced = true;
            return r;
        }
        atomic_store_explicit(&be->no_dsync, true, memory_order_relaxed);
    }
    *synced = false;
    if (be->in_memory) {
        ssize_t r = pwrite(be->fd, p, len, (off_t)offset);
        return r < 0 ? -errno : r;
    }
    return coro_write(fd, p, len, offset);
}

static int file_pwrite(struct backend *b, const void *buf, uint32_t len,
                       uint64_t offset, bool fua)
{
    struct file_backend *be = to_file(b);
    const char *p = buf;
    uint32_t done = 0;
    bool need_sync = false;
    while (done < len) {
        bool synced;
        ssize_t r =
            write_some(be, p + done, len - done, offset + done, fua, &synced);
        r = progress(r);
        if (r < 0) {
            return (int)r;
        }
        need_sync |= fua && !synced;
        done += (uint32_t)r;
    }
    return need_sync ? coro_fdatasync(be->fd) : 0;
}

static int file_flush(struct backend *b)
{
    struct file_backend *be = to_file(b);
    return coro_fdatasync(be->fd);
}

/* Writes zeroes over [offset, offset+len) from the shared zero buffer. */
static int write_zeroes(struct file_backend *be, uint64_t offset, uint64_t len)
{
    struct iovec iov[ZERO_IOVS];
    while (len > 0) {
        int n = 0;
        uint64_t batch = 0;
        while (n < ZERO_IOVS && batch < len) {
            uint64_t chunk =
                len - batch < ZERO_CHUNK ? len - batch : ZERO_CHUNK;
            iov[n].iov_base = (void *)zero_buf;
            iov[n].iov_len = (size_t)chunk;
            batch += chunk;
            n++;
        }
        ssize_t r = progress(coro_writev(be->fd, iov, n, offset));
        if (r < 0) {
            return (int)r;
        }
        offset += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

/*
 * fallocate on the ring, remembering a mode the file system refuses in
 * `hint` so that later calls skip it.  Returns 0, -EOPNOTSUPP or -errno.
 */
static int try_fallocate(struct file_backend *be, atomic_bool *hint, int mode,
                         uint64_t offset, uint64_t len)
{
    if (atomic_load_explicit(hint, memory_order_relaxed)) {
        return -EOPNOTSUPP;
    }
    int r = coro_fallocate(be->fd, mode, offset, len);
    if (r == -EOPNOTSUPP) {
        atomic_store_explicit(hint, true, memory_order_relaxed);
    }
    return r;
}

/* Rounds [*offset, *offset+*len) inwards to be->align; false if empty. */
static bool align_inwards(const struct file_backend *be, uint64_t *offset,
                          uint64_t *len)
{
    uint64_t a = be->align;
    uint64_t start = (*offset + a - 1) / a * a;
    uint64_t end = (*offset + *len) / a * a;
    if (start >= end) {
        return false;
    }
    *offset = start;
    *len = end - start;
    return true;
}

static int file_trim(struct backend *b, uint64_t offset, uint64_t len, bool fua)
{
    struct file_backend *be = to_file(b);
    if (!align_inwards(be, &offset, &len)) {
        return 0;
    }
    int r =
        try_fallocate(be, &be->no_punch,
                      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    if (r == -EOPNOTSUPP) {
        /* A trim is a hint: nothing changed, so nothing to sync either. */
        return 0;
    }
    if (r < 0) {
        return r;
    }
    return fua ? coro_fdatasync(be->fd) : 0;
}

/*
 * Zeroes an aligned range with fallocate alone.  Returns 0, -EOPNOTSUPP
 * when no mode fits the flags on this file, or another -errno.
 */
static int zero_fallocate(struct file_backend *be, uint64_t offset,
                          uint64_t len, unsigned flags)
{
    int r;
    if (flags & BACKEND_ZERO_MAY_TRIM) {
        r = try_fallocate(be, &be->no_punch,
                          FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                          len);
        if (r != -EOPNOTSUPP) {
            return r;
        }
    }
    r = try_fallocate(be, &be->no_zero_range,
                      FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, len);
    if (r != -EOPNOTSUPP) {
        return r;
    }
    if ((flags & BACKEND_ZERO_MAY_TRIM) || be->is_block ||
        atomic_load_explicit(&be->no_alloc, memory_order_relaxed)) {
        return -EOPNOTSUPP;
    }
    /*
     * No ZERO_RANGE (tmpfs): punch, then allocate the blocks again, so
     * that the range reads as zeroes and later writes find their space
     * reserved, as NBD_CMD_FLAG_NO_HOLE asks.
     */
    r = try_fallocate(be, &be->no_punch,
                      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len);
    if (r != 0) {
        return r;
    }
    r = try_fallocate(be, &be->no_alloc, FALLOC_FL_KEEP_SIZE, offset, len);
    if (r == -EOPNOTSUPP) {
        /* Zeroed but a hole now: write zeroes to allocate it again. */
        return (flags & BACKEND_ZERO_FAST) ? r : write_zeroes(be, offset, len);
    }
    return r;
}

static int file_zero(struct backend *b, uint64_t offset, uint64_t len,
                     unsigned flags, bool fua)
{
    struct file_backend *be = to_file(b);
    if ((flags & BACKEND_ZERO_FAST) && be->is_block && !be->can_fast_zero) {
        return -ENOTSUP;
    }

    uint64_t mid = offset, mid_len = len;
    int r;
    if (!align_inwards(be, &mid, &mid_len)) {
        /* Within one or two device blocks: a write is as fast as it gets. */
        r = write_zeroes(be, offset, len);
    } else {
        r = zero_fallocate(be, mid, mid_len, flags);
        if (r == -EOPNOTSUPP) {
            if (flags & BACKEND_ZERO_FAST) {
                return -ENOTSUP;
            }
            r = write_zeroes(be, offset, len);
        } else if (r == 0) {
            /* The unaligned edges of a block device request. */
            r = write_zeroes(be, offset, mid - offset);
            if (r == 0) {
                r = write_zeroes(be, mid + mid_len,
                                 offset + len - (mid + mid_len));
            }
        }
    }
    if (r < 0) {
        return r;
    }
    return fua ? coro_fdatasync(be->fd) : 0;
}

static int file_cache(struct backend *b, uint64_t offset, uint64_t len)
{
    struct file_backend *be = to_file(b);
    /* Chunks never have length 0, which would mean "to the end". */
    while (len > 0) {
        uint32_t chunk = len < CACHE_CHUNK ? (uint32_t)len : CACHE_CHUNK;
        int r = coro_fadvise(be->fd, offset, chunk, POSIX_FADV_WILLNEED);
        if (r < 0) {
            return r;
        }
        offset += chunk;
        len -= chunk;
    }
    return 0;
}

/*
 * The end of the run that starts at pos: where the next hole begins
 * (want_hole) or the next data.  Returns the position, `end` for "none
 * before the end of the file", or -errno.
 */
static int64_t seek_next(const struct file_backend *be, uint64_t pos,
                         bool want_hole, uint64_t end)
{
    off_t r = lseek(be->fd, (off_t)pos, want_hole ? SEEK_HOLE : SEEK_DATA);
    if (r < 0) {
        /*
         * ENXIO: no data from pos on, or pos is past the real end of a
         * file that shrank; either way this run lasts to the end.
         */
        return errno == ENXIO ? (int64_t)end : -errno;
    }
    return (uint64_t)r < end ? (int64_t)r : (int64_t)end;
}

static int file_extents(struct backend *b, enum backend_meta meta,
                        uint64_t offset, uint64_t len,
                        struct backend_extent *out, unsigned max)
{
    struct file_backend *be = to_file(b);
    if (meta != BACKEND_META_ALLOCATION) {
        return -ENOTSUP;
    }
    /* The common code clipped len to the end of the export. */
    uint64_t end = offset + len;

    /*
     * Runs alternate, so each needs one lseek: from a hole, SEEK_DATA
     * finds its end; from data, SEEK_HOLE does.  The first run is assumed
     * to be a hole; if SEEK_DATA answers "here", it was data after all.
     * A second such flip in a row can only come from concurrent punches
     * and writes: the rest is then reported as data, which is always a
     * safe answer.
     */
    uint64_t pos = offset;
    bool hole = true;
    int flips = 0;
    unsigned n = 0;
    while (n < max && pos < end) {
        int64_t next = seek_next(be, pos, !hole, end);
        if (next < 0) {
            if (n > 0) {
                break;
            }
            if (next != -EINVAL && next != -EOPNOTSUPP) {
                return (int)next;
            }
            /* No SEEK_DATA/SEEK_HOLE here: all data. */
            hole = false;
            next = (int64_t)end;
        } else if ((uint64_t)next == pos) {
            if (++flips < 2) {
                hole = !hole;
                continue;
            }
            hole = false;
            next = (int64_t)end;
        }
        flips = 0;
        out[n] = (struct backend_extent){.length = (uint64_t)next - pos,
                                         .hole = hole};
        n++;
        pos = (uint64_t)next;
        hole = !hole;
    }
    return (int)n;
}

static int file_range_is_hole(struct backend *b, uint64_t offset, uint64_t len)
{
    struct file_backend *be = to_file(b);
    /* One SEEK_DATA: it answers at once when offset is data, the usual
     * case, where SEEK_HOLE could walk a whole fully written file. */
    int64_t next = seek_next(be, offset, false, offset + len);
    if (next < 0) {
        return next == -EINVAL || next == -EOPNOTSUPP ? 0 : (int)next;
    }
    return (uint64_t)next >= offset + len;
}

static const struct backend_ops file_ops = {
    .name = "file",
    .close = file_close,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .flush = file_flush,
    .trim = file_trim,
    .zero = file_zero,
    .cache = file_cache,
    .extents = file_extents,
    .range_is_hole = file_range_is_hole,
    .same_file = file_same_file,
};
