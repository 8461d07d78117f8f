/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the client library against a scripted server. */
/*
 * The input is an options byte, a commands byte and the server's byte
 * stream.  The stream is written whole into one end of a socketpair,
 * whose write side is then shut; on the loop thread the client library
 * negotiates over the other end (client_connect_chan) with the options
 * of the first byte, issues the commands of the second (one by one or
 * all at once), each
 * ending with a reply or an error, and closes (client_close).  Nothing
 * may crash, leak (LeakSanitizer), or hang (libFuzzer's -timeout): once
 * the stream is used up, end of file must end every wait.  A negotiated
 * connection must report sane results: a read, write or other command
 * returns 0 or a negative errno, and block status returns between 1 and
 * the room given of contiguous extents from the offset asked for.  TLS
 * is not fuzzed (a scripted stream cannot complete a handshake).
 *
 * Options byte: bit 0 no structured replies, 1 no extended headers, 2 no
 * base:allocation, 3 NBD_OPT_EXPORT_NAME instead of GO, 4 at most 1
 * request in flight, 5 the commands at once, each in its own coroutine
 * (so that replies may answer them in any order).  Commands byte: bit 0 READ, 1
 * WRITE, 2 FLUSH, 3 TRIM, 4 WRITE_ZEROES, 5 CACHE, 6 BLOCK_STATUS, 7 a second
 * READ at the end of the export.
 */
#include "fuzz-loop.h"
#include "fuzz.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/client-uri.h"
#include "nbdsrv/client.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NR_EXTENTS 16
#define BUF_SIZE 4096u

static struct loop_group loops;

struct run {
    int fd; /* the client's end */
    uint8_t opts_byte, cmds;
};

static void init_once(void)
{
    static bool done;
    if (done) {
        return;
    }
    done = true;
    fuzz_start_one_loop(&loops);
}

static void check_result(int r)
{
    FUZZ_ASSERT(r <= 0 && r > -4096);
}

static void block_status(struct client_conn *c, uint64_t len)
{
    struct client_extent ext[NR_EXTENTS];
    int r = client_block_status(c, len, 0, 0, ext, NR_EXTENTS);
    if (r < 0) {
        check_result(r);
        return;
    }
    FUZZ_ASSERT(r >= 1 && r <= NR_EXTENTS);
    uint64_t next = 0;
    for (int i = 0; i < r; i++) {
        FUZZ_ASSERT(ext[i].offset == next && ext[i].length > 0);
        next = ext[i].offset + ext[i].length;
    }
}

/* Command `bit` of the commands byte, with `buf` (4096 bytes). */
static void command(struct client_conn *c, unsigned bit, uint8_t *buf)
{
    const struct client_info *info = client_info(c);
    uint64_t len = info->size < BUF_SIZE ? info->size : BUF_SIZE;
    switch (bit) {
    case 0:
        check_result(client_pread(c, buf, (size_t)len, 0, 0));
        break;
    case 1:
        memset(buf, 0x5a, BUF_SIZE);
        check_result(client_pwrite(c, buf, (size_t)len, 0, 0));
        break;
    case 2:
        check_result(client_flush(c, 0));
        break;
    case 3:
        check_result(client_trim(c, len, 0, 0));
        break;
    case 4:
        check_result(client_write_zeroes(c, len, 0, 0));
        break;
    case 5:
        check_result(client_cache(c, len, 0, 0));
        break;
    case 6:
        if (len > 0) {
            block_status(c, len);
        }
        break;
    default:
        if (len > 0) {
            check_result(
                client_pread(c, buf, (size_t)len, info->size - len, 0));
        }
        break;
    }
}

/* The commands running at once, and the wait for the last. */
struct parallel {
    struct client_conn *c;
    struct co_mutex lock;
    struct co_queue done;
    unsigned left; /* GUARDED_BY(lock) */
};

struct worker {
    struct parallel *par;
    unsigned bit;
    uint8_t buf[BUF_SIZE];
};

static void worker_entry(void *arg)
{
    struct worker *w = arg;
    struct parallel *par = w->par;
    command(par->c, w->bit, w->buf);
    co_mutex_lock(&par->lock);
    par->left--;
    co_queue_next(&par->done);
    co_mutex_unlock(&par->lock);
}

static void commands(struct client_conn *c, uint8_t cmds, bool at_once)
{
    static uint8_t buf[BUF_SIZE];
    static struct worker workers[8];
    const struct client_info *info = client_info(c);
    FUZZ_ASSERT(info != NULL && info->name != NULL);
    FUZZ_ASSERT(!info->extended || info->structured);
    if (!at_once) {
        for (unsigned bit = 0; bit < 8; bit++) {
            if (cmds & (1u << bit)) {
                command(c, bit, buf);
            }
        }
        return;
    }
    struct parallel par = {.c = c};
    co_mutex_init(&par.lock);
    co_queue_init(&par.done);
    struct loop *loop = loop_current();
    for (unsigned bit = 0; bit < 8; bit++) {
        if (!(cmds & (1u << bit))) {
            continue;
        }
        workers[bit] = (struct worker){.par = &par, .bit = bit};
        struct coro *co = coro_new(worker_entry, &workers[bit], loop);
        FUZZ_ASSERT(co != NULL);
        par.left++;
        coro_schedule(loop, co);
    }
    co_mutex_lock(&par.lock);
    while (par.left > 0) {
        co_queue_wait(&par.done, &par.lock);
    }
    co_mutex_unlock(&par.lock);
    co_queue_fini(&par.done);
    co_mutex_fini(&par.lock);
}

static void client_entry(void *arg)
{
    struct run *run = arg;
    struct client_uri uri = {.export_name = (char *)"disk"};
    struct client_opts opts = {
        .no_structured = (run->opts_byte & 1) != 0,
        .no_extended = (run->opts_byte & 2) != 0,
        .no_meta = (run->opts_byte & 4) != 0,
        .force_export_name = (run->opts_byte & 8) != 0,
        .max_requests = (run->opts_byte & 16) ? 1 : 0,
    };
    struct err err;
    err_clear(&err);
    struct chan *ch = chan_sock_new_take(run->fd);
    FUZZ_ASSERT(ch != NULL);
    struct client_conn *c = client_connect_chan(ch, &uri, &opts, &err);
    if (c == NULL) {
        FUZZ_ASSERT(err.msg[0] != '\0');
        if (getenv("FUZZ_DEBUG") != NULL) {
            fprintf(stderr, "fuzz-client-conn: connect: %s\n", err.msg);
        }
        return;
    }
    commands(c, run->cmds, (run->opts_byte & 32) != 0);
    if (getenv("FUZZ_DEBUG") != NULL) {
        const char *e = client_error(c);
        fprintf(stderr, "fuzz-client-conn: connected, then %s\n",
                e != NULL ? e : "no error");
    }
    client_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    init_once();
    int sv[2];
    FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    size_t off = 2;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        FUZZ_ASSERT(n > 0 || (n < 0 && errno == EINTR));
        off += n > 0 ? (size_t)n : 0;
    }
    FUZZ_ASSERT(shutdown(sv[1], SHUT_WR) == 0);
    struct run run = {.fd = sv[0], .opts_byte = data[0], .cmds = data[1]};
    FUZZ_ASSERT(coro_run_sync(loops.loops[0], client_entry, &run) == 0);
    close(sv[1]);
    return 0;
}
