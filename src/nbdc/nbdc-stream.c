/* SPDX-License-Identifier: MIT */
/*
 * nbdc copy with "-" on one side: standard input or output, streamed.
 *
 * A pipe cannot seek and has no allocation map, so the copy runs in
 * order, one request at a time: the main thread reads or writes the pipe
 * (blocking, which no loop thread may do), and each request on the other
 * side (an NBD export or a file) runs as a coroutine on a loop
 * (coro_run_sync).  From a pipe, the length is what arrives before end
 * of file: it must fit the destination, which therefore must exist
 * already (an export, a device or a file); blocks of zero bytes become
 * zeroing requests, as in the parallel copy.  To a pipe, the source's
 * holes and zero ranges (from its allocation map) are written as zero
 * bytes without being read.  The progress bar is drawn on stderr only
 * when it is a terminal, and the pipe side may not be one.
 */
#include "nbdc-int.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/fdio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STREAM_CHUNK (1024u * 1024)
#define PROGRESS_NS (200ull * 1000 * 1000)

/* One request on the endpoint, run on a loop by coro_run_sync. */
struct stream_op {
    struct nbdc_end *end;
    enum {
        OP_OPEN_SRC,
        OP_OPEN_DST,
        OP_READ,
        OP_WRITE,
        OP_ZERO,
        OP_EXTENTS,
        OP_FLUSH,
        OP_CLOSE
    } kind;
    const char *name;
    const struct loop_group *loops;
    void *buf;
    uint64_t len, off;
    struct nbdc_extent *ext;
    unsigned max_ext;
    int r;
    struct err err;
};

static void op_entry(void *arg)
{
    struct stream_op *op = arg;
    struct nbdc_end *end = op->end;
    switch (op->kind) {
    case OP_OPEN_SRC:
    case OP_OPEN_DST:
        op->r = nbdc_end_open(end, op->name, op->kind == OP_OPEN_DST, 1, 1,
                              op->loops, 0, &op->err);
        break;
    case OP_READ:
        op->r = nbdc_end_read(end, 0, op->buf, (uint32_t)op->len, op->off);
        break;
    case OP_WRITE:
        op->r = nbdc_end_write(end, 0, op->buf, (uint32_t)op->len, op->off);
        break;
    case OP_ZERO:
        op->r = nbdc_end_zero(end, 0, op->len, op->off);
        break;
    case OP_EXTENTS:
        op->r =
            nbdc_end_extents(end, 0, op->off, op->len, op->ext, op->max_ext);
        break;
    case OP_FLUSH:
        op->r = nbdc_end_flush(end);
        break;
    case OP_CLOSE:
        nbdc_end_close(end);
        op->r = 0;
        break;
    }
}

static int run(struct loop_group *loops, struct stream_op *op)
{
    coro_run_sync(loops->loops[0], op_entry, op);
    return op->r;
}

/* The progress line: bytes so far, of `total` when known (0: not). */
static void progress(bool show, uint64_t done, uint64_t total, bool last,
                     uint64_t *next_ns)
{
    uint64_t now = nbdc_now_ns();
    if (!show || (!last && now < *next_ns)) {
        return;
    }
    *next_ns = now + PROGRESS_NS;
    if (total > 0) {
        fprintf(stderr, "\r%3u%% %" PRIu64 "/%" PRIu64 " MiB%s",
                (unsigned)(done * 100 / total), done >> 20, total >> 20,
                last ? "\n" : "");
    } else {
        fprintf(stderr, "\r%" PRIu64 " MiB%s", done >> 20, last ? "\n" : "");
    }
}

/* An I/O error on `end` as a message, then the failure status. */
static int io_error(struct nbdc_end *end, const char *what, uint64_t off, int r)
{
    const char *why =
        end->is_nbd ? client_error(client_pool_get(&end->pool, 0)) : NULL;
    nbdc_error("copy failed: %s %s at offset %" PRIu64 ": %s", what, end->name,
               off, why != NULL ? why : strerror(-r));
    return NBDC_EXIT_FAIL;
}

/* Standard input to `end`, opened for writing. */
static int stream_in(struct loop_group *loops, struct nbdc_end *end,
                     uint8_t *buf, uint32_t chunk, bool show)
{
    uint64_t off = 0, next_ns = 0;
    for (;;) {
        ssize_t n = fd_read_full(STDIN_FILENO, buf, chunk, FDIO_POS);
        if (n < 0) {
            nbdc_error("copy failed: reading standard input: %s",
                       strerror((int)-n));
            return NBDC_EXIT_FAIL;
        }
        if (n == 0) {
            break;
        }
        if ((uint64_t)n > end->size - off) {
            nbdc_error("copy failed: standard input is longer than the "
                       "destination %s (%" PRIu64 " bytes)",
                       end->name, end->size);
            return NBDC_EXIT_FAIL;
        }
        struct stream_op op = {
            .end = end, .buf = buf, .len = (uint64_t)n, .off = off};
        op.kind = nbdc_all_zero(buf, (size_t)n) ? OP_ZERO : OP_WRITE;
        int r = run(loops, &op);
        if (r < 0) {
            return io_error(end, "writing", off, r);
        }
        off += (uint64_t)n;
        progress(show, off, 0, false, &next_ns);
    }
    struct stream_op op = {.end = end, .kind = OP_FLUSH};
    int r = run(loops, &op);
    if (r < 0) {
        return io_error(end, "flushing", 0, r);
    }
    progress(show, off, 0, true, &next_ns);
    return NBDC_EXIT_OK;
}

/* `end`, opened for reading, to standard output. */
static int stream_out(struct loop_group *loops, struct nbdc_end *end,
                      uint8_t *buf, uint32_t chunk, bool show)
{
    uint64_t off = 0, next_ns = 0;
    struct nbdc_extent ext[64];
    while (off < end->size) {
        uint64_t left = end->size - off;
        struct stream_op op = {.end = end,
                               .kind = OP_EXTENTS,
                               .off = off,
                               .len = left < (1ull << 30) ? left : 1ull << 30,
                               .ext = ext,
                               .max_ext = 64};
        int n = run(loops, &op);
        if (n < 0) {
            return io_error(end, "mapping", off, n);
        }
        for (int i = 0; i < n && off < end->size; i++) {
            uint64_t elen = ext[i].length;
            while (elen > 0) {
                uint32_t len = elen < chunk ? (uint32_t)elen : chunk;
                if (ext[i].zero) {
                    memset(buf, 0, len);
                } else {
                    struct stream_op rd = {.end = end,
                                           .kind = OP_READ,
                                           .buf = buf,
                                           .len = len,
                                           .off = off};
                    int r = run(loops, &rd);
                    if (r < 0) {
                        return io_error(end, "reading", off, r);
                    }
                }
                int r = fd_write_all(STDOUT_FILENO, buf, len, FDIO_POS);
                if (r < 0) {
                    nbdc_error("copy failed: writing standard output: %s",
                               strerror(-r));
                    return NBDC_EXIT_FAIL;
                }
                off += len;
                elen -= len;
                progress(show, off, end->size, false, &next_ns);
            }
        }
    }
    progress(show, off, end->size, true, &next_ns);
    return NBDC_EXIT_OK;
}

int nbdc_copy_stream(const char *src, const char *dst, unsigned threads)
{
    bool in = strcmp(src, "-") == 0;
    if (in && strcmp(dst, "-") == 0) {
        nbdc_error("copy: '-' cannot be both source and destination");
        return NBDC_EXIT_USAGE;
    }
    const char *other = in ? dst : src;
    if (!in && strcmp(src, NBDC_NULL_NAME) == 0) {
        nbdc_error("copy: " NBDC_NULL_NAME " is only a destination");
        return NBDC_EXIT_USAGE;
    }
    if (isatty(in ? STDIN_FILENO : STDOUT_FILENO)) {
        nbdc_error("copy: standard %s is a terminal: %s",
                   in ? "input" : "output",
                   in ? "redirect it from a file or pipe"
                      : "refusing to write binary data to it");
        return NBDC_EXIT_USAGE;
    }
    struct stat st;
    if (in && !client_uri_is_uri(dst) && strcmp(dst, NBDC_NULL_NAME) != 0 &&
        stat(dst, &st) < 0) {
        nbdc_error("copy: destination %s: %s; the length of standard input "
                   "is not known in advance, so the destination must exist "
                   "(an NBD export, a block device or a file of the right "
                   "size)",
                   dst, strerror(errno));
        return NBDC_EXIT_FAIL;
    }
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, STREAM_CHUNK) != 0) {
        nbdc_error("out of memory");
        return NBDC_EXIT_FAIL;
    }
    struct loop_group loops;
    nbdc_loops_start(&loops, threads < 2 ? threads : 2);
    struct nbdc_end end;
    struct stream_op op = {.end = &end,
                           .kind = in ? OP_OPEN_DST : OP_OPEN_SRC,
                           .name = other,
                           .loops = &loops};
    int rc = NBDC_EXIT_FAIL;
    if (run(&loops, &op) < 0) {
        nbdc_error("copy: %s %s: %s", in ? "destination" : "source", other,
                   op.err.msg);
        goto out;
    }
    uint32_t chunk = STREAM_CHUNK;
    if (chunk > end.max_request) {
        chunk = end.max_request;
    }
    bool show = isatty(STDERR_FILENO);
    rc = in ? stream_in(&loops, &end, buf, chunk, show)
            : stream_out(&loops, &end, buf, chunk, show);
    struct stream_op close_op = {.end = &end, .kind = OP_CLOSE};
    run(&loops, &close_op);
out:
    loop_group_stop(&loops);
    free(buf);
    return rc;
}
