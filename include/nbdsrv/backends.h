/* SPDX-License-Identifier: MIT */
/*
 * The layers this tree ships, and how to open each: one file per layer
 * under src/backend/.  What a layer is, and what every layer promises,
 * is in backend.h; this header only names the constructors and the few
 * facts that belong to one kind of layer.
 */
#ifndef NBDSRV_BACKENDS_H
#define NBDSRV_BACKENDS_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/backend.h"
#include "nbdsrv/dirty-bitmap.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- The file backend (backend-file.c): BACKEND_PARALLEL ---- */

/*
 * Opens a raw image file or a block device.  read_only opens it O_RDONLY.
 * The size comes from fstat (regular files) or BLKGETSIZE64 (block
 * devices); anything else is refused.  Returns NULL with err naming the
 * path and the cause.  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_file_open(const char *path, bool read_only,
                                             struct err *err);

/* Flags of backend_file_open_flags. */
#define BACKEND_OPEN_READ_ONLY 0x1u
#define BACKEND_OPEN_DIRECT 0x2u /* cache=none: aligned I/O uses O_DIRECT */

/*
 * backend_file_open with flags.  With BACKEND_OPEN_DIRECT, reads and
 * writes aligned to 4096 bytes (offset, length and buffer) bypass the
 * page cache; others stay buffered, so any request works.  A file system
 * that refuses O_DIRECT (tmpfs before Linux 6.6) fails the open with a
 * message saying so.
 * ANY_THREAD.
 */
ANY_THREAD struct backend *
backend_file_open_flags(const char *path, unsigned flags, struct err *err);

/* Whether `be`, a file backend, was opened for cache=none.  ANY_THREAD. */
ANY_THREAD bool backend_file_is_direct(const struct backend *be);

/* ---- The RBD backend (backend-rbd.c): BACKEND_PARALLEL ---- */

/* What names an RBD image and its cluster.  Borrowed for the call. */
struct rbd_backend_spec {
    const char *image;   /* POOL/IMAGE or POOL/NAMESPACE/IMAGE[@SNAP] */
    const char *conf;    /* ceph.conf; NULL: librados's search */
    const char *id;      /* cephx user without "client."; NULL: admin */
    const char *keyring; /* NULL: as the configuration says */
};

/*
 * Opens an RBD image (a snapshot, with @SNAP, is read-only), connecting
 * to its cluster unless an open image already shares the same (conf,
 * id, keyring).  Blocks on the network (up to about 10 s when the
 * cluster does not answer): main thread, never a loop.  NULL with err
 * naming the image, the cluster and the cause; -ENOTSUP in a build
 * without librbd.  ANY_THREAD but not a loop thread.
 */
ANY_THREAD struct backend *backend_rbd_open(const struct rbd_backend_spec *s,
                                            bool read_only, struct err *err);

/* Whether this build has the RBD backend.  ANY_THREAD. */
ANY_THREAD bool backend_rbd_available(void);

/*
 * Splits POOL/IMAGE, POOL/NAMESPACE/IMAGE, either with @SNAP, into the
 * four buffers of `cap` bytes each (an absent part is ""); -EINVAL with
 * err saying what is expected.  ANY_THREAD.
 */
ANY_THREAD int backend_rbd_parse(const char *spec, char *pool, char *ns,
                                 char *image, char *snap, size_t cap,
                                 struct err *err);

/* ---- The memory backend (backend-mem.c): BACKEND_PARALLEL ---- */

/* The largest memory export: 16 TiB. */
#define BACKEND_MEMORY_MAX_SIZE (16ull << 40)

/*
 * A sparse export of `size` bytes held in memory, empty (all zeroes) at
 * first: pages are allocated on first write and given back by trims and
 * zeroes, and extents report pages never written as holes.  read_only
 * makes an export of zeroes.  NULL with err set (-EFBIG beyond
 * BACKEND_MEMORY_MAX_SIZE, -ENOMEM).  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_memory_new(uint64_t size, bool read_only,
                                              struct err *err);

/* Bytes of data pages a memory backend holds now (0 for another kind of
 * layer).  ANY_THREAD. */
ANY_THREAD uint64_t backend_memory_allocated(const struct backend *be);

/*
 * ---- The copy-on-write overlay (backend-overlay.c): BACKEND_PARALLEL ----
 *
 * A filter over a read-only base (any layer) that keeps every write,
 * trim and zero in an overlay file, block by block, and reads the blocks
 * it never held from the base.  The file's format is in
 * man/nbd-serverd.conf.5 (OVERLAY FILES) and backend-overlay.c.
 */

/* The block size of overlays this build creates. */
#define BACKEND_OVERLAY_GRANULARITY (64u * 1024)

/*
 * Opens the overlay file `path` over `base_take` (its reference passes to
 * the filter, and is dropped on failure too), creating the file if it
 * does not exist (not with BACKEND_OPEN_READ_ONLY).  The base is only
 * read, so open it read-only.  flags: BACKEND_OPEN_READ_ONLY (serve the
 * overlay as it is, read-only), BACKEND_OPEN_DIRECT (cache=none for the
 * overlay file).  The file is locked (flock, exclusive, or shared when
 * read-only): a second open while the first lives fails with EBUSY.
 * NULL with err naming the file and the cause: not an overlay, made over
 * a base of another size, truncated, in use.  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_overlay_open(struct backend *base_take,
                                                const char *path,
                                                unsigned flags,
                                                struct err *err);

/*
 * What --check-config asks without opening anything for writing: 0 when
 * the overlay `path` is a valid overlay made over a base of `base_size`
 * bytes, or does not exist yet and could be created there (not when
 * read_only); else -errno with err saying why (err's text does not name
 * the path).  ANY_THREAD.
 */
ANY_THREAD int backend_overlay_check(const char *path, uint64_t base_size,
                                     bool read_only, struct err *err);

/*
 * ---- The dirty-tracking filter (backend-dirty.c): BACKEND_PARALLEL ----
 *
 * Marks every write, trim and zero in a set of dirty bitmaps
 * (dirty-bitmap.h) before passing it down; everything else passes
 * through unchanged.
 */

/*
 * Wraps `lower_take` in the filter, which takes over `set_take` (a set of
 * the same image size): both references pass to the filter, and are
 * dropped on failure too.  NULL with err set on ENOMEM.  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_dirty_new(struct backend *lower_take,
                                             struct dirty_set *set_take,
                                             struct err *err);

/* The set of the first dirty-tracking filter in the chain from `be` down
 * (borrowed: take a reference to keep it), or NULL.  ANY_THREAD. */
ANY_THREAD struct dirty_set *backend_dirty_set(struct backend *be);

/*
 * ---- The fault-injection filter (backend-fault.c): a test facility ----
 *
 * For the test suite only: the unit tests use it directly, the interop
 * tests through the test daemon (build/tests/nbd-serverd-test, see
 * tests/support/fault-hook.c).  The daemon users run cannot enable it,
 * and the manual does not describe it.
 */

/* Operations a rule applies to (a mask). */
#define BACKEND_FAULT_READ 0x01u
#define BACKEND_FAULT_WRITE 0x02u
#define BACKEND_FAULT_FLUSH 0x04u
#define BACKEND_FAULT_TRIM 0x08u
#define BACKEND_FAULT_ZERO 0x10u
#define BACKEND_FAULT_CACHE 0x20u
#define BACKEND_FAULT_EXTENTS 0x40u
#define BACKEND_FAULT_ALL 0x7fu

/*
 * One rule: a call of an operation in `ops` whose range overlaps
 * [start, end) (flush: any) sleeps delay_ns on its loop, then fails with
 * -error, or passes down when error is 0.  The first match wins.
 */
struct backend_fault_rule {
    unsigned ops;
    uint64_t start, end;
    int error;         /* positive errno, or 0 */
    uint64_t delay_ns; /* 0: none */
};

/*
 * Wraps `lower_take` (its reference passes to the filter, and is dropped
 * on failure too) in a fault filter with a copy of `rules`.  Same size
 * and capabilities as the layer below; BACKEND_PARALLEL.  NULL with err
 * set on ENOMEM.  ANY_THREAD.
 */
ANY_THREAD struct backend *
backend_fault_new(struct backend *lower_take,
                  const struct backend_fault_rule *rules, unsigned nr,
                  struct err *err);

/*
 * Parses rules written as RULE[,RULE]..., each OPS[@START-END]:ACTION
 * with OPS operation names joined by '+' (read, write, flush, trim,
 * zero, cache, extents, all), START and END byte offsets (K, M, G, T
 * suffixes; END may be left out for "to the end"), and ACTION an errno
 * name (EIO, ENOSPC, EPERM, EROFS, EDQUOT, EFBIG, ENOMEM, EINVAL,
 * ENOTSUP), delay=MS, or both joined by '/'.  Example:
 * "write@1M-2M:ENOSPC,read:delay=200/EIO".  On success *rules (malloc'd,
 * the caller frees it) and *nr; else -EINVAL with err naming the rule.
 * ANY_THREAD.
 */
ANY_THREAD int backend_fault_parse(const char *text,
                                   struct backend_fault_rule **rules,
                                   unsigned *nr, struct err *err);

#endif
