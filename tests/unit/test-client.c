/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the client (include/nbdsrv/client.h) against a scripted
 * fake server: a plain thread on the other end of a socketpair that
 * speaks the handshake and serves a memory disk with the proto codec.
 * Script knobs make it refuse GO or extended headers, answer a batch of
 * reads in reverse order, fail one offset, or hang up after N requests.
 */
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/client.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/tls-creds.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DISK_SIZE (4u * 1024 * 1024)
#define BAD_OFFSET (3u * 1024 * 1024)
#define MAX_BATCH 64

struct fake {
    int fd;
    pthread_t thread;
    /* Script, set before start. */
    bool go_unsup;        /* NBD_REP_ERR_UNSUP to GO: EXPORT_NAME follows */
    bool extended_ok;     /* accept NBD_OPT_EXTENDED_HEADERS */
    unsigned reverse;     /* answer reads in batches of this, reversed */
    unsigned close_after; /* hang up after this many requests (0: never) */
    bool silent;          /* never send the greeting; wait for a hang-up */
    /* State of the fake's thread. */
    bool extended, structured, no_zeroes;
    uint8_t *disk;
    atomic_uint requests; /* requests received */
};

static void xwrite(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return; /* the client went away: the test will tell */
        }
        p += n;
        len -= (size_t)n;
    }
}

static bool xread(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Option haggling; returns true when transmission starts. */
static bool fake_handshake(struct fake *f)
{
    uint8_t buf[8192];
    ssize_t n = proto_encode_greeting(
        buf, sizeof buf, PROTO_FLAG_FIXED_NEWSTYLE | PROTO_FLAG_NO_ZEROES);
    xwrite(f->fd, buf, (size_t)n);
    uint32_t cflags;
    if (!xread(f->fd, buf, 4) ||
        proto_decode_client_flags(buf, 4, PROTO_HS_FLAGS_ALL, &cflags) < 0) {
        return false;
    }
    f->no_zeroes = cflags & PROTO_FLAG_C_NO_ZEROES;
    uint16_t txf = PROTO_FLAG_HAS_FLAGS | PROTO_FLAG_SEND_FLUSH |
                   PROTO_FLAG_SEND_FUA | PROTO_FLAG_SEND_WRITE_ZEROES |
                   PROTO_FLAG_SEND_TRIM | PROTO_FLAG_CAN_MULTI_CONN;
    for (;;) {
        struct proto_option_header oh;
        if (!xread(f->fd, buf, PROTO_OPTION_HEADER_SIZE) ||
            proto_decode_option_header(buf, PROTO_OPTION_HEADER_SIZE, &oh) <
                0 ||
            oh.length > sizeof buf || !xread(f->fd, buf, oh.length)) {
            return false;
        }
        uint8_t out[512];
        switch (oh.option) {
        case PROTO_OPT_EXTENDED_HEADERS:
            if (f->extended_ok) {
                f->extended = f->structured = true;
                n = proto_build_rep_ack(out, sizeof out, oh.option);
            } else {
                n = proto_build_rep_error(out, sizeof out, oh.option,
                                          PROTO_REP_ERR_UNSUP, NULL, 0);
            }
            xwrite(f->fd, out, (size_t)n);
            break;
        case PROTO_OPT_STRUCTURED_REPLY:
            f->structured = true;
            n = proto_build_rep_ack(out, sizeof out, oh.option);
            xwrite(f->fd, out, (size_t)n);
            break;
        case PROTO_OPT_SET_META_CONTEXT:
            n = proto_build_rep_meta_context(out, sizeof out, oh.option, 7,
                                             "base:allocation", 15);
            xwrite(f->fd, out, (size_t)n);
            n = proto_build_rep_ack(out, sizeof out, oh.option);
            xwrite(f->fd, out, (size_t)n);
            break;
        case PROTO_OPT_GO:
            if (f->go_unsup) {
                n = proto_build_rep_error(out, sizeof out, oh.option,
                                          PROTO_REP_ERR_UNSUP, NULL, 0);
                xwrite(f->fd, out, (size_t)n);
                break;
            }
            n = proto_build_rep_info_export(out, sizeof out, oh.option,
                                            DISK_SIZE, txf);
            xwrite(f->fd, out, (size_t)n);
            n = proto_build_rep_info_block_size(out, sizeof out, oh.option, 1,
                                                4096, 1u << 20);
            xwrite(f->fd, out, (size_t)n);
            n = proto_build_rep_ack(out, sizeof out, oh.option);
            xwrite(f->fd, out, (size_t)n);
            return true;
        case PROTO_OPT_EXPORT_NAME:
            n = proto_encode_export_name_reply(out, sizeof out, DISK_SIZE, txf,
                                               f->no_zeroes);
            xwrite(f->fd, out, (size_t)n);
            return true;
        default:
            n = proto_build_rep_error(out, sizeof out, oh.option,
                                      PROTO_REP_ERR_UNSUP, NULL, 0);
            xwrite(f->fd, out, (size_t)n);
            break;
        }
    }
}

static struct proto_reply chunk_hdr(const struct fake *f,
                                    const struct proto_request *req, bool done)
{
    struct proto_reply h = {
        .kind = f->extended ? PROTO_REPLY_EXTENDED : PROTO_REPLY_STRUCTURED,
        .flags = done ? PROTO_REPLY_FLAG_DONE : 0,
        .cookie = req->cookie,
        .offset = req->offset,
    };
    return h;
}

/* Sends the reply to one request. */
static void fake_reply(struct fake *f, const struct proto_request *req)
{
    uint8_t out[4096];
    ssize_t n;
    if (!f->structured) {
        bool bad = req->type == PROTO_CMD_READ && req->offset == BAD_OFFSET;
        n = proto_encode_simple_reply(out, sizeof out, req->cookie,
                                      bad ? PROTO_EIO : 0);
        xwrite(f->fd, out, (size_t)n);
        if (req->type == PROTO_CMD_READ && !bad) {
            xwrite(f->fd, f->disk + req->offset, req->length);
        }
        return;
    }
    if (req->type == PROTO_CMD_READ && req->offset == BAD_OFFSET) {
        struct proto_reply h = chunk_hdr(f, req, true);
        n = proto_build_chunk_error(out, sizeof out, &h, PROTO_EIO, "bad", 3);
        xwrite(f->fd, out, (size_t)n);
        return;
    }
    if (req->type == PROTO_CMD_READ) {
        /* Two chunks: the second half first, then the first half. */
        uint64_t half = req->length / 2;
        struct proto_reply h = chunk_hdr(f, req, half == 0);
        if (half > 0) {
            n = proto_build_chunk_offset_data(
                out, sizeof out, &h, req->offset + half, req->length - half);
            xwrite(f->fd, out, (size_t)n);
            xwrite(f->fd, f->disk + req->offset + half, req->length - half);
            h = chunk_hdr(f, req, true);
        }
        n = proto_build_chunk_offset_data(out, sizeof out, &h, req->offset,
                                          half > 0 ? half : req->length);
        xwrite(f->fd, out, (size_t)n);
        xwrite(f->fd, f->disk + req->offset, half > 0 ? half : req->length);
        return;
    }
    if (req->type == PROTO_CMD_BLOCK_STATUS) {
        struct proto_extent ext[2] = {
            {.length = req->length / 2, .status = 0},
            {.length = req->length - req->length / 2,
             .status = PROTO_STATE_HOLE | PROTO_STATE_ZERO},
        };
        struct proto_reply h = chunk_hdr(f, req, true);
        if (f->extended) {
            n = proto_build_chunk_block_status_ext(out, sizeof out, &h, 7, ext,
                                                   2);
        } else {
            n = proto_build_chunk_block_status(out, sizeof out, &h, 7, ext, 2);
        }
        xwrite(f->fd, out, (size_t)n);
        return;
    }
    struct proto_reply h = chunk_hdr(f, req, true);
    n = proto_build_chunk_none(out, sizeof out, &h);
    xwrite(f->fd, out, (size_t)n);
}

static void *fake_thread(void *arg)
{
    struct fake *f = arg;
    struct proto_request batch[MAX_BATCH];
    unsigned nbatch = 0;
    if (f->silent) {
        char c;
        while (recv(f->fd, &c, 1, 0) > 0) {
        }
        goto out;
    }
    if (!fake_handshake(f)) {
        goto out;
    }
    size_t hsize =
        f->extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;
    for (;;) {
        uint8_t hdr[PROTO_EXTENDED_REQUEST_SIZE];
        struct proto_request req;
        if (!xread(f->fd, hdr, hsize) ||
            proto_decode_request(hdr, hsize, f->extended, &req) < 0) {
            break;
        }
        if (req.type == PROTO_CMD_DISC) {
            break;
        }
        unsigned count = atomic_fetch_add(&f->requests, 1) + 1;
        if (req.type == PROTO_CMD_WRITE &&
            !xread(f->fd, f->disk + req.offset, req.length)) {
            break;
        }
        if (f->close_after != 0 && count >= f->close_after) {
            break;
        }
        if (f->reverse > 0 && req.type == PROTO_CMD_READ) {
            batch[nbatch++] = req;
            if (nbatch == f->reverse) {
                while (nbatch > 0) {
                    fake_reply(f, &batch[--nbatch]);
                }
            }
            continue;
        }
        fake_reply(f, &req);
    }
out:
    shutdown(f->fd, SHUT_RDWR);
    return NULL;
}

/* Starts the fake; returns the client's end as a channel. */
static struct chan *fake_start(struct fake *f)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    f->fd = sv[1];
    f->disk = malloc(DISK_SIZE);
    ck_assert_ptr_nonnull(f->disk);
    for (size_t i = 0; i < DISK_SIZE; i++) {
        f->disk[i] = (uint8_t)(i * 7 + i / 4096);
    }
    atomic_init(&f->requests, 0);
    ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_thread, f), 0);
    struct chan *ch = chan_sock_new_take(sv[0]);
    ck_assert_ptr_nonnull(ch);
    return ch;
}

static void fake_stop(struct fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->fd);
    free(f->disk);
}

/* ---- Test bodies run in coroutines ---- */

struct tctx {
    struct fake fake;
    struct client_opts opts;
    struct client_conn *conn;
    struct err err;
    atomic_uint done;
    atomic_uint bad;
    unsigned per_worker;
};

static void connect_entry(void *arg)
{
    struct tctx *t = arg;
    struct client_uri uri = {.export_name = (char *)"disk"};
    t->conn =
        client_connect_chan(fake_start(&t->fake), &uri, &t->opts, &t->err);
}

static void close_entry(void *arg)
{
    struct tctx *t = arg;
    client_close(t->conn);
    t->conn = NULL;
}

static void connect_or_fail(struct tctx *t)
{
    fixture_run_on(0, connect_entry, t);
    ck_assert_msg(t->conn != NULL, "connect: %s", t->err.msg);
}

static void close_and_stop(struct tctx *t)
{
    fixture_run_on(0, close_entry, t);
    fake_stop(&t->fake);
}

static bool read_matches(struct tctx *t, uint64_t off, uint32_t len)
{
    uint8_t *buf = malloc(len);
    int r = client_pread(t->conn, buf, len, off, 0);
    bool ok = r == 0 && memcmp(buf, t->fake.disk + off, len) == 0;
    free(buf);
    return ok;
}

static void read_one_entry(void *arg)
{
    struct tctx *t = arg;
    /*
     * Small, large (read straight into the buffer), large again, then
     * small: the receive buffer's refill size changes after each large
     * one.
     */
    if (!read_matches(t, 8192, 4096) || !read_matches(t, 0, 1) ||
        !read_matches(t, 12345, 100000) || !read_matches(t, 777, 65536) ||
        !read_matches(t, 3, 10) || !read_matches(t, 40960, 4096)) {
        atomic_fetch_add(&t->bad, 1);
    }
}

UNIT_TEST("negotiate", test_client_negotiates_go_structured_and_meta)
{
    struct tctx t = {0};
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    const struct client_info *info = client_info(t.conn);
    ck_assert_uint_eq(info->size, DISK_SIZE);
    ck_assert(info->used_go);
    ck_assert(info->structured);
    ck_assert(!info->extended);
    ck_assert(info->has_alloc);
    ck_assert_uint_eq(info->alloc_id, 7);
    ck_assert_uint_eq(info->block_max, 1u << 20);
    ck_assert(info->tx_flags & PROTO_FLAG_CAN_MULTI_CONN);
    fixture_run_on(0, read_one_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("negotiate", test_client_falls_back_to_export_name)
{
    struct tctx t = {0};
    t.fake.go_unsup = true;
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    const struct client_info *info = client_info(t.conn);
    ck_assert(!info->used_go);
    ck_assert_uint_eq(info->size, DISK_SIZE);
    ck_assert_str_eq(info->name, "disk");
    fixture_run_on(0, read_one_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("negotiate", test_client_simple_replies_without_structured)
{
    struct tctx t = {0};
    t.opts.no_structured = true;
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    ck_assert(!client_info(t.conn)->structured);
    ck_assert(!client_info(t.conn)->has_alloc);
    fixture_run_on(0, read_one_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

static void write_read_entry(void *arg)
{
    struct tctx *t = arg;
    uint8_t buf[8192], back[8192];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)(0xa5 ^ i);
    }
    if (client_pwrite(t->conn, buf, sizeof buf, 65536, PROTO_CMD_FLAG_FUA) !=
            0 ||
        client_pread(t->conn, back, sizeof back, 65536, 0) != 0 ||
        memcmp(buf, back, sizeof buf) != 0 || client_flush(t->conn, 0) != 0 ||
        client_trim(t->conn, 4096, 0, 0) != 0 ||
        client_write_zeroes(t->conn, 4096, 0, 0) != 0) {
        atomic_fetch_add(&t->bad, 1);
    }
    struct client_extent ext[4];
    int n = client_block_status(t->conn, 8192, 4096, 0, ext, 4);
    if (n != 2 || ext[0].offset != 4096 || ext[0].length != 4096 ||
        ext[0].flags != 0 || ext[1].offset != 8192 ||
        ext[1].flags != (PROTO_STATE_HOLE | PROTO_STATE_ZERO)) {
        atomic_fetch_add(&t->bad, 1);
    }
    /* Checked before sending: beyond the end, unadvertised command. */
    if (client_pread(t->conn, buf, 4096, DISK_SIZE, 0) != -EINVAL ||
        client_cache(t->conn, 4096, 0, 0) != -ENOTSUP) {
        atomic_fetch_add(&t->bad, 1);
    }
}

UNIT_TEST("requests", test_client_extended_headers_carry_every_command)
{
    struct tctx t = {0};
    t.fake.extended_ok = true;
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    ck_assert(client_info(t.conn)->extended);
    fixture_run_on(0, write_read_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("requests", test_client_compact_headers_carry_every_command)
{
    struct tctx t = {0};
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    ck_assert(!client_info(t.conn)->extended);
    fixture_run_on(0, write_read_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

/* Reads its own 4 KiB block, `per_worker` times; counts mismatches. */
struct reader {
    struct tctx *t;
    unsigned index;
};

static void reader_entry(void *arg)
{
    struct reader *rd = arg;
    struct tctx *t = rd->t;
    for (unsigned i = 0; i < t->per_worker; i++) {
        /* Below BAD_OFFSET, which the fake always fails. */
        uint64_t off = ((uint64_t)rd->index * 32 + i % 32) * 4096;
        if (!read_matches(t, off, 4096)) {
            atomic_fetch_add(&t->bad, 1);
        }
    }
    atomic_fetch_add(&t->done, 1);
}

static bool all_done_16(void *arg)
{
    return atomic_load(&((struct tctx *)arg)->done) == 16;
}

UNIT_TEST("requests", test_client_out_of_order_replies_reach_their_requests)
{
    struct tctx t = {0};
    struct reader rd[16];
    t.fake.reverse = 16;
    t.per_worker = 1;
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    for (unsigned i = 0; i < 16; i++) {
        rd[i].t = &t;
        rd[i].index = i;
        fixture_spawn_on(0, reader_entry, &rd[i]);
    }
    ck_assert(fixture_wait_until(all_done_16, &t, 10000));
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("requests", test_client_one_connection_from_two_loops)
{
    struct tctx t = {0};
    struct reader rd[16];
    t.per_worker = 300;
    t.opts.max_requests = 8; /* fewer slots than coroutines: some wait */
    fixture_loops_start(2, 0);
    connect_or_fail(&t);
    for (unsigned i = 0; i < 16; i++) {
        rd[i].t = &t;
        rd[i].index = i;
        fixture_spawn_on(i % 2, reader_entry, &rd[i]);
    }
    ck_assert(fixture_wait_until(all_done_16, &t, 30000));
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    ck_assert_uint_ge(atomic_load(&t.fake.requests), 16 * 300);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

static void error_entry(void *arg)
{
    struct tctx *t = arg;
    uint8_t buf[4096];
    if (client_pread(t->conn, buf, sizeof buf, BAD_OFFSET, 0) != -EIO) {
        atomic_fetch_add(&t->bad, 1);
    }
    /* The connection stays usable for the next request. */
    if (!read_matches(t, 4096, 4096) || client_error(t->conn) != NULL) {
        atomic_fetch_add(&t->bad, 1);
    }
}

UNIT_TEST("requests", test_client_server_error_fails_only_that_request)
{
    struct tctx t = {0};
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    fixture_run_on(0, error_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);

    struct tctx s = {0};
    s.opts.no_structured = true; /* the simple reply's error too */
    connect_or_fail(&s);
    fixture_run_on(0, error_entry, &s);
    ck_assert_uint_eq(atomic_load(&s.bad), 0);
    close_and_stop(&s);
    fixture_loops_stop();
}
END_TEST

static void failing_reader_entry(void *arg)
{
    struct reader *rd = arg;
    struct tctx *t = rd->t;
    uint8_t buf[4096];
    int r = client_pread(t->conn, buf, sizeof buf, rd->index * 4096, 0);
    if (r >= 0) {
        atomic_fetch_add(&t->bad, 1);
    }
    atomic_fetch_add(&t->done, 1);
}

static void after_break_entry(void *arg)
{
    struct tctx *t = arg;
    uint8_t buf[512];
    if (client_pread(t->conn, buf, sizeof buf, 0, 0) >= 0 ||
        client_error(t->conn) == NULL) {
        atomic_fetch_add(&t->bad, 1);
    }
}

UNIT_TEST("requests", test_client_broken_connection_fails_every_waiter)
{
    struct tctx t = {0};
    struct reader rd[16];
    t.fake.close_after = 16; /* receives all 16, answers none */
    t.fake.reverse = 32;
    fixture_loops_start(2, 0);
    connect_or_fail(&t);
    for (unsigned i = 0; i < 16; i++) {
        rd[i].t = &t;
        rd[i].index = i;
        fixture_spawn_on(i % 2, failing_reader_entry, &rd[i]);
    }
    ck_assert(fixture_wait_until(all_done_16, &t, 10000));
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    fixture_run_on(1, after_break_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    ck_assert_ptr_nonnull(strstr(client_error(t.conn), "closed"));
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("requests", test_client_broken_connection_fails_slot_waiters)
{
    struct tctx t = {0};
    struct reader rd[16];
    t.opts.max_requests = 4; /* 12 of the 16 wait for a slot */
    t.fake.close_after = 4;
    t.fake.reverse = 32;
    fixture_loops_start(2, 0);
    connect_or_fail(&t);
    for (unsigned i = 0; i < 16; i++) {
        rd[i].t = &t;
        rd[i].index = i;
        fixture_spawn_on(i % 2, failing_reader_entry, &rd[i]);
    }
    ck_assert(fixture_wait_until(all_done_16, &t, 10000));
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    ck_assert_uint_eq(atomic_load(&t.fake.requests), 4);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

/* A psktool file with one key for alice; the caller unlinks it. */
static void write_psk(char *path, size_t size)
{
    snprintf(path, size, "/tmp/test-client-psk.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    static const char line[] = "alice:00112233445566778899aabbccddeeff\n";
    ck_assert_int_eq(write(fd, line, sizeof line - 1), (int)sizeof line - 1);
    close(fd);
}

UNIT_TEST("requests", test_client_handshake_timeout_ends_a_silent_server)
{
    struct tctx t = {
        .fake = {.silent = true},
        .opts = {.handshake_timeout_ns = 200u * 1000 * 1000},
    };
    fixture_loops_start(1, 0);
    fixture_run_on(0, connect_entry, &t);
    ck_assert_ptr_null(t.conn);
    ck_assert_int_eq(t.err.errnum, ETIMEDOUT);
    ck_assert_msg(strstr(t.err.msg, "within 0.200 s") != NULL, "%s", t.err.msg);
    fake_stop(&t.fake); /* returns once the client has hung up */
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("requests", test_client_handshake_timeout_spares_a_prompt_server)
{
    struct tctx t = {.opts = {.handshake_timeout_ns = 5ull * 1000000000}};
    fixture_loops_start(1, 0);
    connect_or_fail(&t);
    fixture_run_on(0, read_one_entry, &t);
    ck_assert_uint_eq(atomic_load(&t.bad), 0);
    close_and_stop(&t);
    fixture_loops_stop();
}
END_TEST

struct tls_tctx {
    struct tctx t;
    struct client_uri uri;
};

static void tls_entry(void *arg)
{
    struct tls_tctx *tt = arg;
    struct tctx *t = &tt->t;
    t->conn =
        client_connect_chan(fake_start(&t->fake), &tt->uri, NULL, &t->err);
}

UNIT_TEST("negotiate", test_client_nbds_against_a_server_without_tls)
{
    char psk[64];
    write_psk(psk, sizeof psk);
    struct tls_tctx tt = {
        .uri = {.tls = true,
                .export_name = (char *)"disk",
                .user = (char *)"alice",
                .tls_psk_file = psk,
                .tls_verify_peer = -1},
    };
    fixture_loops_start(1, 0);
    fixture_run_on(0, tls_entry, &tt);
    unlink(psk);
    ck_assert_ptr_null(tt.t.conn);
    ck_assert_int_eq(tt.t.err.errnum, ENOTSUP);
    ck_assert_msg(strstr(tt.t.err.msg, "does not offer TLS") != NULL, "%s",
                  tt.t.err.msg);
    ck_assert_ptr_nonnull(strstr(tt.t.err.msg, "NBD_OPT_STARTTLS"));
    fake_stop(&tt.t.fake); /* it answered STARTTLS, then saw a hang-up */
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("negotiate", test_client_nbds_without_credentials_says_what_to_give)
{
    struct tls_tctx tt = {
        .uri = {.tls = true,
                .export_name = (char *)"disk",
                .tls_verify_peer = -1},
    };
    fixture_loops_start(1, 0);
    fixture_run_on(0, tls_entry, &tt);
    ck_assert_ptr_null(tt.t.conn);
    ck_assert_int_eq(tt.t.err.errnum, EINVAL);
    ck_assert_msg(strstr(tt.t.err.msg, "tls-certificates=DIR") != NULL &&
                      strstr(tt.t.err.msg, "tls-psk-file=FILE") != NULL,
                  "%s", tt.t.err.msg);
    fake_stop(&tt.t.fake);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("negotiate", test_client_tls_creds_from_uri)
{
    char psk[64];
    write_psk(psk, sizeof psk);
    struct err err = {0};
    struct client_uri uri = {.tls = true,
                             .user = (char *)"alice",
                             .tls_psk_file = psk,
                             .tls_verify_peer = -1};
    struct tls_creds *creds = client_tls_creds_new(&uri, &err);
    ck_assert_msg(creds != NULL, "%s", err.msg);
    ck_assert(!tls_creds_is_server(creds));
    tls_creds_unref(creds);

    uri.user = (char *)"carol";
    ck_assert_ptr_null(client_tls_creds_new(&uri, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "no key for identity 'carol'"));

    uri.user = (char *)"alice";
    uri.tls_type = (char *)"anon";
    ck_assert_ptr_null(client_tls_creds_new(&uri, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "tls-type=anon"));
    unlink(psk);
}
END_TEST

UNIT_SUITE("client");
UNIT_TCASE("negotiate", 60, NULL, NULL);
UNIT_TCASE("requests", 60, NULL, NULL);
