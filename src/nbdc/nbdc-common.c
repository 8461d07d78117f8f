/* SPDX-License-Identifier: MIT */
/*
 * nbdc helpers: messages, number parsing, loops, and the endpoint
 * abstraction that lets `nbdc copy` treat a local file and an NBD export
 * alike.  File endpoints use the server's file backend (io_uring on the
 * calling loop, plain copies on tmpfs); NBD endpoints use a client pool.
 */
#include "nbdc-int.h"
#include "nbdsrv/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Largest zeroing request sent at once (fits a compact header). */
#define ZERO_CHUNK (1024u * 1024 * 1024)

void nbdc_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nbdc: %s\n", line);
}

int nbdc_parse_size(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    if (text[0] < '0' || text[0] > '9') {
        return -EINVAL;
    }
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0) {
        return -EINVAL;
    }
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return -EINVAL;
    }
    if (shift > 0) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0) {
            end += strlen(end);
        }
    }
    if (*end != '\0' || (shift > 0 && v > (UINT64_MAX >> shift))) {
        return -EINVAL;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

int nbdc_parse_uint(const char *text, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    if (text[0] < '0' || text[0] > '9') {
        return -EINVAL;
    }
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

uint64_t nbdc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int nbdc_loops_start(struct loop_group *group, unsigned n)
{
    struct loop_config config = {.poll_ns = LOOP_POLL_NONE};
    struct err err = {0};
    if (loop_group_start(group, n, &config, &err) < 0) {
        nbdc_error("%s", err.msg);
        exit(NBDC_EXIT_FAIL);
    }
    return 0;
}

/* Creates `name` with `size` bytes unless it exists.  Sets *created. */
static int create_file(const char *name, uint64_t size, bool *created,
                       struct err *err)
{
    *created = false;
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return errno == EEXIST ? 0 : err_set_errno(err, errno, "%s", name);
    }
    int r = 0;
    if (ftruncate(fd, (off_t)size) < 0) {
        r = err_set_errno(err, errno, "%s: setting the size", name);
        unlink(name);
    } else {
        *created = true;
    }
    close(fd);
    return r;
}

/* Connects `end` (named `name`, an NBD URI) with `meta_context` as the
 * extra context (NULL: none). */
static int open_nbd(struct nbdc_end *end, const char *name, bool writable,
                    unsigned conns, unsigned requests,
                    const struct loop_group *loops, const char *meta_context,
                    struct err *err)
{
    end->is_nbd = true;
    int r = client_uri_parse(name, &end->uri, err);
    if (r < 0) {
        return r;
    }
    struct client_opts opts = {
        .max_requests = requests,
        .handshake_timeout_ns = NBDC_HANDSHAKE_TIMEOUT_NS,
        .meta_context = meta_context,
    };
    r = client_pool_connect(&end->pool, &end->uri, &opts, conns, loops, err);
    if (r < 0) {
        client_uri_fini(&end->uri);
        return r;
    }
    const struct client_info *info =
        client_info(client_pool_get(&end->pool, 0));
    if (writable && (info->tx_flags & PROTO_FLAG_READ_ONLY)) {
        nbdc_end_close(end);
        return err_set(err, EROFS, "%s: the export is read-only", name);
    }
    end->size = info->size;
    end->max_request = info->block_max;
    if (end->max_request > 32u * 1024 * 1024) {
        end->max_request = 32u * 1024 * 1024;
    }
    end->can_extents = info->has_alloc;
    end->can_zero = (info->tx_flags & PROTO_FLAG_SEND_WRITE_ZEROES) != 0;
    /* Every connection must have it: each is asked in turn. */
    end->can_dirty = meta_context != NULL;
    for (unsigned i = 0; i < end->pool.count; i++) {
        if (!client_info(client_pool_get(&end->pool, i))->has_extra) {
            end->can_dirty = false;
        }
    }
    return 0;
}

int nbdc_end_open_dirty(struct nbdc_end *end, const char *name,
                        const char *bitmap, unsigned conns, unsigned requests,
                        const struct loop_group *loops, struct err *err)
{
    memset(end, 0, sizeof *end);
    end->name = name;
    if (!client_uri_is_uri(name)) {
        return err_set(err, EINVAL,
                       "%s: a dirty bitmap is read from an NBD server: the "
                       "source must be an nbd:// or nbds:// URI",
                       name);
    }
    char context[128];
    if ((size_t)snprintf(context, sizeof context, "qemu:dirty-bitmap:%s",
                         bitmap) >= sizeof context) {
        return err_set(err, EINVAL, "dirty bitmap name too long: %s", bitmap);
    }
    int r = open_nbd(end, name, false, conns, requests, loops, context, err);
    if (r < 0) {
        return r;
    }
    if (!end->can_dirty) {
        nbdc_end_close(end);
        return err_set(err, ENOTSUP, "%s: the server does not offer %s", name,
                       context);
    }
    return 0;
}

int nbdc_end_open(struct nbdc_end *end, const char *name, bool writable,
                  unsigned conns, unsigned requests,
                  const struct loop_group *loops, uint64_t create_size,
                  struct err *err)
{
    memset(end, 0, sizeof *end);
    end->name = name;
    if (strcmp(name, NBDC_NULL_NAME) == 0) {
        if (!writable) {
            return err_set(err, EINVAL,
                           NBDC_NULL_NAME " is only a destination (it "
                                          "discards what is written)");
        }
        end->is_null = true;
        end->size = UINT64_MAX;
        end->max_request = 32u * 1024 * 1024;
        end->can_zero = true;
        return 0;
    }
    if (client_uri_is_uri(name)) {
        return open_nbd(end, name, writable, conns, requests, loops, NULL, err);
    }
    if (writable && create_size > 0) {
        int r = create_file(name, create_size, &end->fresh, err);
        if (r < 0) {
            return r;
        }
    }
    end->be = backend_file_open(name, !writable, err);
    if (end->be == NULL) {
        return -(err != NULL && err->errnum != 0 ? err->errnum : EIO);
    }
    end->size = backend_size(end->be);
    end->max_request = 32u * 1024 * 1024;
    end->can_extents = backend_can_extents(end->be);
    end->can_zero = true;
    return 0;
}

void nbdc_end_close(struct nbdc_end *end)
{
    if (end->is_nbd) {
        client_pool_close(&end->pool);
        client_uri_fini(&end->uri);
    }
    backend_unref(end->be);
    end->be = NULL;
}

int nbdc_end_read(struct nbdc_end *end, unsigned i, void *buf, uint32_t len,
                  uint64_t off)
{
    if (end->is_null) {
        return -EINVAL; /* never a source */
    }
    if (end->is_nbd) {
        return client_pread(client_pool_get(&end->pool, i), buf, len, off, 0);
    }
    return backend_pread(end->be, buf, len, off);
}

int nbdc_end_write(struct nbdc_end *end, unsigned i, const void *buf,
                   uint32_t len, uint64_t off)
{
    if (end->is_null) {
        return 0;
    }
    if (end->is_nbd) {
        return client_pwrite(client_pool_get(&end->pool, i), buf, len, off, 0);
    }
    return backend_pwrite(end->be, buf, len, off, false);
}

/* Writes zero buffers over the range: for targets that cannot zero. */
static int write_zero_buffers(struct nbdc_end *end, unsigned i, uint64_t len,
                              uint64_t off)
{
    uint32_t chunk = 1024u * 1024;
    void *zero = calloc(1, chunk);
    if (zero == NULL) {
        return -ENOMEM;
    }
    int r = 0;
    while (len > 0 && r == 0) {
        uint32_t n = len < chunk ? (uint32_t)len : chunk;
        r = nbdc_end_write(end, i, zero, n, off);
        off += n;
        len -= n;
    }
    free(zero);
    return r;
}

int nbdc_end_zero(struct nbdc_end *end, unsigned i, uint64_t len, uint64_t off)
{
    if (end->is_null || (!end->is_nbd && end->fresh)) {
        return 0; /* a file we created and never wrote there */
    }
    int r = 0;
    while (len > 0 && r == 0) {
        uint64_t n = len < ZERO_CHUNK ? len : ZERO_CHUNK;
        if (!end->can_zero) {
            r = write_zero_buffers(end, i, n, off);
        } else if (end->is_nbd) {
            r = client_write_zeroes(client_pool_get(&end->pool, i), n, off, 0);
            if (r == -ENOTSUP || r == -EINVAL) {
                r = write_zero_buffers(end, i, n, off);
            }
        } else {
            r = backend_zero(end->be, off, n, BACKEND_ZERO_MAY_TRIM, false);
        }
        off += n;
        len -= n;
    }
    return r;
}

int nbdc_end_flush(struct nbdc_end *end)
{
    if (end->is_null) {
        return 0;
    }
    if (!end->is_nbd) {
        return backend_flush(end->be);
    }
    for (unsigned i = 0; i < end->pool.count; i++) {
        struct client_conn *c = client_pool_get(&end->pool, i);
        if (!(client_info(c)->tx_flags & PROTO_FLAG_SEND_FLUSH)) {
            return 0;
        }
        int r = client_flush(c, 0);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

bool nbdc_all_zero(const uint8_t *p, size_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    size_t n = len / 8;
    for (size_t i = 0; i < n; i++) {
        if (w[i] != 0) {
            return false;
        }
    }
    for (size_t i = n * 8; i < len; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

/*
 * Block status of connection i over [off, off+len) into `out`, clipped to
 * len: from the dirty bitmap (`dirty`: clean extents are skipped) or from
 * base:allocation (zero extents marked).  The count or -errno.
 */
static int nbd_extents(struct nbdc_end *end, unsigned i, bool dirty,
                       uint64_t off, uint64_t len, struct nbdc_extent *out,
                       unsigned max)
{
    struct client_extent ext[256];
    unsigned cap = max < 256 ? max : 256;
    struct client_conn *c = client_pool_get(&end->pool, i);
    int n = dirty ? client_block_status_extra(c, len, off, 0, ext, cap)
                  : client_block_status(c, len, off, 0, ext, cap);
    if (n < 0) {
        return n;
    }
    uint64_t left = len;
    int k = 0;
    for (int j = 0; j < n && left > 0; j++) {
        uint64_t l = ext[j].length < left ? ext[j].length : left;
        out[k] = (struct nbdc_extent){
            .length = l,
            .zero = !dirty && (ext[j].flags & PROTO_STATE_ZERO) != 0,
            .skip = dirty && !(ext[j].flags & 1)};
        left -= l;
        k++;
    }
    return k;
}

int nbdc_end_dirty_extents(struct nbdc_end *end, unsigned i, uint64_t off,
                           uint64_t len, struct nbdc_extent *out, unsigned max)
{
    return nbd_extents(end, i, true, off, len, out, max);
}

int nbdc_end_extents(struct nbdc_end *end, unsigned i, uint64_t off,
                     uint64_t len, struct nbdc_extent *out, unsigned max)
{
    if (!end->can_extents) {
        out[0] = (struct nbdc_extent){.length = len};
        return 1;
    }
    if (end->is_nbd) {
        return nbd_extents(end, i, false, off, len, out, max);
    }
    struct backend_extent ext[256];
    unsigned cap = max < 256 ? max : 256;
    int n = backend_extents(end->be, off, len, ext, cap);
    if (n < 0) {
        return n;
    }
    for (int j = 0; j < n; j++) {
        out[j] =
            (struct nbdc_extent){.length = ext[j].length, .zero = ext[j].hole};
    }
    return n;
}
