/* SPDX-License-Identifier: MIT */
/* libFuzzer target: one whole server connection, in process. */
/*
 * The input is a configuration byte, a byte that chooses where the
 * client's stream is cut into writes, and the client's byte stream.  Each
 * input gets a fresh server (server_new, a 1 MiB memory export, the TLS
 * policy of the configuration byte, server_start with no listener) whose
 * real negotiate and transmit code serves one end of a socketpair
 * (server_serve_fd) on a loop thread shared by every input; this thread
 * plays the client on the other end, writing the stream in pieces and
 * reading every byte the server sends until it closes, then stops and
 * frees the server, so LeakSanitizer sees everything gone.
 *
 * Configuration byte: bits 0-1 TLS mode (0 off, 1 on, 2 and 3 require,
 * with a test PSK; a fuzzed stream cannot complete a TLS handshake, so
 * after a STARTTLS that is acknowledged the rest is only drained), bit 2
 * read-only, bit 3 trim off, bit 4 max-requests 2 (flow control), bit 5
 * max-payload at its minimum (1 MiB).
 *
 * The server's stream is parsed with the codec as it arrives and checked
 * against a model built from the client's stream: the greeting; each
 * option answered in order, by replies naming it, of a type that option
 * may get, ending with an ACK or an error (in TLS-require mode only
 * NBD_REP_ERR_TLS_REQD before STARTTLS; STARTTLS refused when TLS is
 * off), the export's size and read-only flag as configured, EXPORT_NAME
 * answered only for an export that exists; nothing after ABORT.  In
 * transmission every reply names a request that was read (sent before
 * any DISC, bad magic or truncation) and is not finished yet, has the
 * negotiated form (simple; structured, never simple for READ and
 * BLOCK_STATUS; extended), READ data lies inside the request, and
 * success is never reported for a write beyond the export's end or to
 * a read-only export, nor for a request with bad flags or an unknown
 * command; a successful structured READ is covered by its data and hole
 * chunks, and a successful BLOCK_STATUS has a status chunk for the
 * context id SET_META_CONTEXT selected (LIST replies carry id 0).  When the
 * server closes, every request it read has been answered and no frame is cut
 * short.  A hang is libFuzzer's -timeout.
 */
#include "fuzz-loop.h"
#include "fuzz.h"
#include "nbdsrv/loop.h"
#include "nbdsrv/server.h"
#include "nbdsrv/tls-config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXPORT_NAME "disk"
#define EXPORT_SIZE (1u << 20)
#define MAX_REQUESTS 8192u

/* A failed check with its details, then the abort libFuzzer reports. */
#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "fuzz-server-conn: " __VA_ARGS__);                     \
        fputc('\n', stderr);                                                   \
        BUG("fuzz check failed");                                              \
    } while (0)

enum state {
    ST_GREETING,
    ST_OPTION, /* replies to the current option */
    ST_TRANSMISSION,
    ST_DRAIN,  /* after STARTTLS, or lost track: drained, not parsed */
    ST_CLOSED, /* the server must send nothing more */
};

struct rq {
    struct proto_request req;
    bool bad;         /* bad flags or an unknown command: must fail */
    bool optional;    /* truncated payload: a reply may or may not come */
    bool started;     /* a chunk came, not the last */
    uint64_t covered; /* READ: bytes of data and hole chunks */
    bool got_status;  /* BLOCK_STATUS: a status chunk came */
    bool done;
    bool failed; /* an error chunk came */
};

struct model {
    /* configuration */
    enum tls_mode tls_mode;
    bool read_only;
    /* the client's stream */
    const uint8_t *c;
    size_t c_len, cpos;
    /* negotiated */
    bool no_zeroes, structured, extended;
    bool meta_set;     /* base:allocation selected (SET_META_CONTEXT) */
    uint32_t meta_id;  /* its id */
    bool meta_pending; /* the SET being answered named it */
    enum state state;
    /* the option being answered */
    uint32_t opt;
    bool opt_too_big;
    const uint8_t *opt_data;
    uint32_t opt_len;
    /* transmission */
    struct rq *rqs;
    unsigned nr_rqs;
    /* the server's stream, waiting to be parsed */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint64_t skip; /* READ data bytes to pass over */
};

static struct loop_group loops;
static char psk_path[64];

static void init_once(void)
{
    static bool done;
    if (done) {
        return;
    }
    done = true;
    fuzz_start_one_loop(&loops);
    snprintf(psk_path, sizeof psk_path, "/tmp/fuzz-server-conn.XXXXXX");
    int fd = mkstemp(psk_path);
    static const char key[] = "alice:00112233445566778899aabbccddeeff\n";
    FUZZ_ASSERT(fd >= 0 &&
                write(fd, key, sizeof key - 1) == (ssize_t)(sizeof key - 1));
    close(fd);
}

/* ---- The client's stream, as the server reads it ---- */

static bool option_may_pass_tls(uint32_t option)
{
    return option == PROTO_OPT_STARTTLS || option == PROTO_OPT_ABORT;
}

/* The next option of the client's stream becomes the current one. */
static void next_option(struct model *m)
{
    struct proto_option_header h;
    size_t left = m->c_len - m->cpos;
    if (left < PROTO_OPTION_HEADER_SIZE) {
        m->state = ST_CLOSED;
        return;
    }
    int r = proto_decode_option_header(m->c + m->cpos, left, &h);
    if ((r < 0 && r != -E2BIG) || (r == -E2BIG && h.length > (1u << 20)) ||
        left - PROTO_OPTION_HEADER_SIZE < h.length) {
        m->state = ST_CLOSED; /* framing lost, too big, or truncated */
        return;
    }
    m->opt = h.option;
    m->opt_too_big = r == -E2BIG;
    if (h.option == PROTO_OPT_SET_META_CONTEXT) {
        /* It replaces the selection, whatever its outcome. */
        m->meta_set = m->meta_pending = false;
    }
    m->opt_data = m->c + m->cpos + PROTO_OPTION_HEADER_SIZE;
    m->opt_len = h.length;
    m->cpos += PROTO_OPTION_HEADER_SIZE + h.length;
    m->state = ST_OPTION;
}

/* The requests the server will read, from the client's stream. */
static void enter_transmission(struct model *m)
{
    size_t hdr = m->extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;
    m->state = ST_TRANSMISSION;
    m->rqs = calloc(MAX_REQUESTS, sizeof *m->rqs);
    FUZZ_ASSERT(m->rqs != NULL);
    while (m->nr_rqs < MAX_REQUESTS && m->c_len - m->cpos >= hdr) {
        struct rq *q = &m->rqs[m->nr_rqs];
        int r = proto_decode_request(m->c + m->cpos, hdr, m->extended, &q->req);
        if (r == -EBADMSG) {
            break;
        }
        m->cpos += hdr;
        if (r == 0 && q->req.type == PROTO_CMD_DISC) {
            break;
        }
        uint64_t payload = proto_request_payload_len(&q->req, m->extended);
        q->bad = r < 0 || q->req.type > PROTO_CMD_BLOCK_STATUS ||
                 q->req.type == PROTO_CMD_RESIZE ||
                 (payload > 0 && q->req.type != PROTO_CMD_WRITE);
        m->nr_rqs++;
        if (payload > m->c_len - m->cpos) {
            /* Cut short: refused at once if over the maximum payload,
             * or the server waits for the rest until end of file. */
            q->optional = true;
            break;
        }
        m->cpos += payload;
    }
}

/* ---- The server's stream ---- */

/* Whether `len` bytes of the server's stream are there. */
static bool have(const struct model *m, size_t len)
{
    return m->rx_len >= len;
}

static void consume(struct model *m, size_t len)
{
    memmove(m->rx, m->rx + len, m->rx_len - len);
    m->rx_len -= len;
}

static bool is_export(const uint8_t *name, size_t len)
{
    return len == 0 ||
           (len == strlen(EXPORT_NAME) && memcmp(name, EXPORT_NAME, len) == 0);
}

static void check_tx_flags(const struct model *m, uint16_t flags)
{
    FUZZ_ASSERT(flags & PROTO_FLAG_HAS_FLAGS);
    FUZZ_ASSERT(((flags & PROTO_FLAG_READ_ONLY) != 0) == m->read_only);
}

/* One option reply (header and data in m->rx); false: need more. */
static bool option_reply(struct model *m)
{
    if (m->opt == PROTO_OPT_EXPORT_NAME) {
        size_t n = m->no_zeroes ? 10 : PROTO_EXPORT_NAME_REPLY_SIZE;
        uint64_t size;
        uint16_t flags;
        if (!have(m, n)) {
            return false;
        }
        FUZZ_ASSERT(proto_decode_export_name_reply(m->rx, n, &size, &flags) ==
                    0);
        FUZZ_ASSERT(!m->opt_too_big && is_export(m->opt_data, m->opt_len));
        FUZZ_ASSERT(m->tls_mode != TLS_MODE_REQUIRE);
        FUZZ_ASSERT(size == EXPORT_SIZE);
        check_tx_flags(m, flags);
        consume(m, n);
        enter_transmission(m);
        return true;
    }
    struct proto_option_reply rep;
    if (!have(m, PROTO_OPTION_REPLY_SIZE)) {
        return false;
    }
    FUZZ_ASSERT(
        proto_decode_option_reply(m->rx, PROTO_OPTION_REPLY_SIZE, &rep) == 0);
    FUZZ_ASSERT(rep.option == m->opt);
    if (!have(m, PROTO_OPTION_REPLY_SIZE + rep.length)) {
        return false;
    }
    const uint8_t *data = m->rx + PROTO_OPTION_REPLY_SIZE;
    bool final = true;
    if (m->tls_mode == TLS_MODE_REQUIRE && !option_may_pass_tls(m->opt)) {
        FUZZ_ASSERT(rep.type == PROTO_REP_ERR_TLS_REQD);
    }
    if (m->opt_too_big && m->opt != PROTO_OPT_ABORT &&
        rep.type != PROTO_REP_ERR_TLS_REQD) {
        FUZZ_ASSERT(rep.type == PROTO_REP_ERR_TOO_BIG);
    }
    switch (rep.type) {
    case PROTO_REP_ACK:
        FUZZ_ASSERT(rep.length == 0);
        break;
    case PROTO_REP_SERVER: {
        struct proto_string name, desc;
        FUZZ_ASSERT(m->opt == PROTO_OPT_LIST);
        FUZZ_ASSERT(proto_parse_rep_server(data, rep.length, &name, &desc) ==
                    0);
        FUZZ_ASSERT(is_export((const uint8_t *)name.ptr, name.len) &&
                    name.len > 0);
        final = false;
        break;
    }
    case PROTO_REP_INFO: {
        struct proto_info_reply info;
        FUZZ_ASSERT(m->opt == PROTO_OPT_INFO || m->opt == PROTO_OPT_GO);
        FUZZ_ASSERT(proto_parse_rep_info(data, rep.length, &info) == 0);
        if (info.type == PROTO_INFO_EXPORT) {
            FUZZ_ASSERT(info.u.export_info.size == EXPORT_SIZE);
            check_tx_flags(m, info.u.export_info.tx_flags);
        }
        final = false;
        break;
    }
    case PROTO_REP_META_CONTEXT: {
        uint32_t id;
        struct proto_string name;
        FUZZ_ASSERT(m->opt == PROTO_OPT_LIST_META_CONTEXT ||
                    m->opt == PROTO_OPT_SET_META_CONTEXT);
        FUZZ_ASSERT(
            proto_parse_rep_meta_context(data, rep.length, &id, &name) == 0);
        if (m->opt == PROTO_OPT_SET_META_CONTEXT) {
            FUZZ_ASSERT(!m->meta_pending);
            m->meta_pending = true;
            m->meta_id = id;
        } else {
            FUZZ_ASSERT(id == 0); /* reserved in LIST replies */
        }
        final = false;
        break;
    }
    default: {
        struct proto_string msg;
        FUZZ_ASSERT(rep.type & 0x80000000u);
        FUZZ_ASSERT(proto_parse_rep_error(data, rep.length, &msg) == 0);
        FUZZ_ASSERT(m->opt != PROTO_OPT_ABORT);
        break;
    }
    }
    consume(m, PROTO_OPTION_REPLY_SIZE + rep.length);
    if (!final) {
        return true;
    }
    if (rep.type != PROTO_REP_ACK) {
        next_option(m);
        return true;
    }
    switch (m->opt) {
    case PROTO_OPT_ABORT:
        m->state = ST_CLOSED;
        break;
    case PROTO_OPT_GO:
        enter_transmission(m);
        break;
    case PROTO_OPT_STARTTLS:
        FUZZ_ASSERT(m->tls_mode != TLS_MODE_OFF && !m->opt_too_big);
        m->state = ST_DRAIN;
        break;
    case PROTO_OPT_STRUCTURED_REPLY:
        FUZZ_ASSERT(!m->extended);
        m->structured = true;
        next_option(m);
        break;
    case PROTO_OPT_EXTENDED_HEADERS:
        m->structured = m->extended = true;
        next_option(m);
        break;
    case PROTO_OPT_SET_META_CONTEXT:
        m->meta_set = m->meta_pending;
        next_option(m);
        break;
    case PROTO_OPT_INFO:
    case PROTO_OPT_LIST:
    case PROTO_OPT_LIST_META_CONTEXT:
        next_option(m);
        break;
    default:
        FAIL("option %u acknowledged", m->opt);
    }
    return true;
}

/*
 * The request a reply with `cookie` answers: the unfinished one with that
 * cookie, preferring one whose chunks have started.  When several
 * requests share the cookie (the client may reuse one), their replies,
 * which may come in any order, cannot be told apart: *shared is set and
 * only the count of replies is checked.
 */
static struct rq *find_request(struct model *m, uint64_t cookie, bool *shared)
{
    struct rq *found = NULL;
    unsigned n = 0;
    for (unsigned i = 0; i < m->nr_rqs; i++) {
        struct rq *q = &m->rqs[i];
        if (q->req.cookie != cookie) {
            continue;
        }
        n++;
        if (!q->done && (found == NULL || (q->started && !found->started))) {
            found = q;
        }
    }
    if (found == NULL) {
        FAIL("reply with cookie %llu to no request waiting for one",
             (unsigned long long)cookie);
    }
    *shared = n > 1;
    return found;
}

/* A request is finished; `ok`: reported as a success. */
static void request_done(const struct model *m, struct rq *q, bool ok,
                         bool shared)
{
    const struct proto_request *r = &q->req;
    q->done = true;
    if (!ok || shared) {
        return;
    }
    if (q->bad || q->optional) {
        FAIL("success for request %u (cmd %u flags 0x%x at %llu+%llu), "
             "which must fail (bad %d, cut short %d)",
             (unsigned)(q - m->rqs), r->type, r->flags,
             (unsigned long long)r->offset, (unsigned long long)r->length,
             q->bad, q->optional);
    }
    if (r->type == PROTO_CMD_WRITE || r->type == PROTO_CMD_WRITE_ZEROES ||
        r->type == PROTO_CMD_TRIM) {
        FUZZ_ASSERT(!m->read_only);
    }
    if (r->type == PROTO_CMD_READ && m->structured) {
        if (q->covered != r->length) {
            FAIL("READ of %llu bytes answered with %llu",
                 (unsigned long long)r->length, (unsigned long long)q->covered);
        }
    }
    if (r->type == PROTO_CMD_BLOCK_STATUS) {
        FUZZ_ASSERT(m->meta_set && q->got_status);
    }
    if (r->type != PROTO_CMD_FLUSH) {
        if (r->offset > EXPORT_SIZE || r->length > EXPORT_SIZE - r->offset) {
            FAIL("success for cmd %u at %llu+%llu, beyond the export", r->type,
                 (unsigned long long)r->offset, (unsigned long long)r->length);
        }
    }
}

/* One transmission reply; false: need more. */
static bool tx_reply(struct model *m)
{
    if (!have(m, 4)) {
        return false;
    }
    int kind = proto_peek_reply_kind(m->rx, m->rx_len, m->extended);
    FUZZ_ASSERT(kind >= 0);
    size_t hsize = proto_reply_header_size((enum proto_reply_kind)kind);
    if (!have(m, hsize)) {
        return false;
    }
    struct proto_reply rep;
    FUZZ_ASSERT(proto_decode_reply(m->rx, hsize, m->extended, &rep) == 0);
    bool shared;
    struct rq *q = find_request(m, rep.cookie, &shared);
    if (rep.kind == PROTO_REPLY_SIMPLE) {
        FUZZ_ASSERT(!m->extended);
        if (shared && !m->structured) {
            /* Whether data follows depends on which request this is. */
            m->state = ST_DRAIN;
            return true;
        }
        FUZZ_ASSERT(!m->structured || (q->req.type != PROTO_CMD_READ &&
                                       q->req.type != PROTO_CMD_BLOCK_STATUS));
        FUZZ_ASSERT(q->req.type != PROTO_CMD_BLOCK_STATUS || rep.error != 0);
        uint64_t data = 0;
        if (q->req.type == PROTO_CMD_READ && rep.error == 0) {
            data = q->req.length;
        }
        consume(m, hsize);
        m->skip = data;
        request_done(m, q, rep.error == 0, shared);
        return true;
    }
    FUZZ_ASSERT(m->structured);
    FUZZ_ASSERT((rep.kind == PROTO_REPLY_EXTENDED) == m->extended);
    FUZZ_ASSERT(proto_check_chunk(&rep) == 0);
    size_t fixed = rep.length; /* payload bytes to parse here */
    if (rep.type == PROTO_REPLY_TYPE_OFFSET_DATA) {
        fixed = 8;
    }
    FUZZ_ASSERT(fixed <= 65536 + 64);
    if (!have(m, hsize + fixed)) {
        return false;
    }
    const uint8_t *p = m->rx + hsize;
    uint64_t skip = 0;
    switch (rep.type) {
    case PROTO_REPLY_TYPE_NONE:
        break;
    case PROTO_REPLY_TYPE_OFFSET_DATA:
    case PROTO_REPLY_TYPE_OFFSET_HOLE: {
        uint64_t off, len;
        FUZZ_ASSERT(shared || (q->req.type == PROTO_CMD_READ && !q->bad));
        if (rep.type == PROTO_REPLY_TYPE_OFFSET_DATA) {
            FUZZ_ASSERT(proto_decode_chunk_offset_data(p, 8, rep.length, &off,
                                                       &len) == 0);
            skip = len;
        } else {
            uint32_t size;
            FUZZ_ASSERT(proto_decode_chunk_offset_hole(p, fixed, &off, &size) ==
                        0);
            len = size;
        }
        FUZZ_ASSERT(shared || (off >= q->req.offset &&
                               off - q->req.offset <= q->req.length &&
                               len <= q->req.length - (off - q->req.offset)));
        FUZZ_ASSERT(off + len <= EXPORT_SIZE);
        q->covered += len;
        break;
    }
    case PROTO_REPLY_TYPE_BLOCK_STATUS:
    case PROTO_REPLY_TYPE_BLOCK_STATUS_EXT: {
        struct proto_block_status bs;
        bool ext = rep.type == PROTO_REPLY_TYPE_BLOCK_STATUS_EXT;
        FUZZ_ASSERT(shared ||
                    (q->req.type == PROTO_CMD_BLOCK_STATUS && !q->bad));
        FUZZ_ASSERT(ext == m->extended);
        FUZZ_ASSERT(proto_decode_chunk_block_status(p, fixed, ext, &bs) == 0);
        FUZZ_ASSERT(shared || (m->meta_set && bs.context_id == m->meta_id));
        q->got_status = true;
        break;
    }
    default: {
        struct proto_chunk_error err;
        FUZZ_ASSERT(proto_decode_chunk_error(p, fixed, rep.type, &err) == 0);
        q->failed = true;
        break;
    }
    }
    consume(m, hsize + fixed);
    m->skip = skip;
    q->started = true;
    if (rep.flags & PROTO_REPLY_FLAG_DONE) {
        request_done(m, q, !q->failed, shared);
    }
    return true;
}

static void parse(struct model *m)
{
    for (;;) {
        if (m->skip > 0) {
            size_t n = m->rx_len < m->skip ? m->rx_len : (size_t)m->skip;
            consume(m, n);
            m->skip -= n;
            if (m->skip > 0) {
                return;
            }
        }
        bool more = false;
        switch (m->state) {
        case ST_GREETING: {
            uint16_t hs_flags;
            uint32_t cflags;
            if (!have(m, PROTO_GREETING_SIZE)) {
                return;
            }
            FUZZ_ASSERT(proto_decode_greeting(m->rx, PROTO_GREETING_SIZE,
                                              &hs_flags) == 0);
            consume(m, PROTO_GREETING_SIZE);
            if (m->c_len < PROTO_CLIENT_FLAGS_SIZE ||
                proto_decode_client_flags(m->c, m->c_len, hs_flags, &cflags) <
                    0 ||
                !(cflags & PROTO_FLAG_C_FIXED_NEWSTYLE)) {
                m->state = ST_CLOSED;
                more = true;
                break;
            }
            m->no_zeroes = (cflags & PROTO_FLAG_C_NO_ZEROES) != 0;
            m->cpos = PROTO_CLIENT_FLAGS_SIZE;
            next_option(m);
            more = true;
            break;
        }
        case ST_OPTION:
            more = option_reply(m);
            break;
        case ST_TRANSMISSION:
            more = tx_reply(m);
            break;
        case ST_DRAIN:
            m->rx_len = 0;
            return;
        case ST_CLOSED:
            FUZZ_ASSERT(m->rx_len == 0);
            return;
        }
        if (!more) {
            return;
        }
    }
}

static void feed(struct model *m, const uint8_t *buf, size_t n)
{
    if (m->rx_len + n > m->rx_cap) {
        m->rx_cap = (m->rx_len + n) * 2;
        m->rx = realloc(m->rx, m->rx_cap);
        FUZZ_ASSERT(m->rx != NULL);
    }
    memcpy(m->rx + m->rx_len, buf, n);
    m->rx_len += n;
    parse(m);
}

/* The server closed: nothing cut short, every request it read answered. */
static void check_end(const struct model *m)
{
    if (getenv("FUZZ_DEBUG") != NULL) {
        unsigned done = 0;
        for (unsigned i = 0; i < m->nr_rqs; i++) {
            done += m->rqs[i].done;
        }
        fprintf(stderr,
                "fuzz-server-conn: end in state %d, structured %d, "
                "extended %d, %u of %u requests answered\n",
                (int)m->state, m->structured, m->extended, done, m->nr_rqs);
    }
    if (m->state == ST_DRAIN) {
        return;
    }
    FUZZ_ASSERT(m->rx_len == 0 && m->skip == 0);
    FUZZ_ASSERT(m->state != ST_GREETING);
    for (unsigned i = 0; i < m->nr_rqs; i++) {
        FUZZ_ASSERT(m->rqs[i].done || m->rqs[i].optional);
    }
}

/* ---- The client's side of the socket ---- */

/* The size of the next write: from a tiny generator seeded by the input. */
static size_t next_cut(uint32_t *state, size_t left)
{
    if (*state == 0) {
        return left;
    }
    *state = *state * 1103515245u + 12345u;
    size_t n = 1 + ((*state >> 16) % 64);
    return n < left ? n : left;
}

static void play_client(int fd, struct model *m, uint32_t cut_seed)
{
    static uint8_t buf[256 * 1024];
    size_t off = 0;
    bool wr_open = true;
    FUZZ_ASSERT(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    if (m->c_len == 0) {
        shutdown(fd, SHUT_WR);
        wr_open = false;
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd,
                             .events = POLLIN | (wr_open ? POLLOUT : 0)};
        if (poll(&pfd, 1, -1) < 0) {
            /* libFuzzer's -timeout ticks with SIGALRM. */
            FUZZ_ASSERT(errno == EINTR);
            continue;
        }
        if (wr_open && (pfd.revents & (POLLOUT | POLLERR))) {
            size_t n = next_cut(&cut_seed, m->c_len - off);
            ssize_t w = send(fd, m->c + off, n, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            }
            if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                off == m->c_len) {
                shutdown(fd, SHUT_WR);
                wr_open = false;
            }
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno == ECONNRESET)) {
                break;
            }
            if (r > 0) {
                feed(m, buf, (size_t)r);
            }
        }
    }
    check_end(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    init_once();
    uint8_t cfg = data[0];
    struct model m = {
        .tls_mode = (cfg & 3) == 0   ? TLS_MODE_OFF
                    : (cfg & 3) == 1 ? TLS_MODE_ON
                                     : TLS_MODE_REQUIRE,
        .read_only = (cfg & 4) != 0,
        .c = data + 2,
        .c_len = size - 2,
        .state = ST_GREETING,
    };
    struct server_limits limits = {
        .shutdown_timeout_ns = SERVER_DEFAULT_SHUTDOWN_TIMEOUT_NS,
        .max_requests = (cfg & 16) ? 2 : 0,
        .max_payload = (cfg & 32) ? SERVER_MIN_MAX_PAYLOAD : 0,
    };
    struct err err;
    err_clear(&err);
    struct server *srv = server_new(&limits);
    FUZZ_ASSERT(srv != NULL);
    struct export_config exp = {
        .name = EXPORT_NAME,
        .memory = true,
        .memory_size = EXPORT_SIZE,
        .description = "fuzz",
        .read_only = m.read_only,
        .no_trim = (cfg & 8) != 0,
    };
    if (server_add_export(srv, &exp, &err) < 0) {
        FAIL("server_add_export: %s", err.msg);
    }
    if (m.tls_mode != TLS_MODE_OFF) {
        struct tls_config tls = {.mode = m.tls_mode, .psk_file = psk_path};
        if (server_set_tls(srv, &tls, &err) < 0) {
            FAIL("server_set_tls: %s", err.msg);
        }
    }
    if (server_start(srv, &loops, NULL, 0, &err) < 0) {
        FAIL("server_start: %s", err.msg);
    }
    int sv[2];
    FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    struct sockaddr_storage peer = {.ss_family = AF_UNIX};
    FUZZ_ASSERT(server_serve_fd(srv, sv[0], &peer, sizeof(sa_family_t)) == 0);
    play_client(sv[1], &m, data[1] < 128 ? 0 : data[1]);
    close(sv[1]);
    FUZZ_ASSERT(server_stop(srv) == 0);
    server_free(srv);
    free(m.rqs);
    free(m.rx);
    return 0;
}
