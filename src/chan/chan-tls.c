/* SPDX-License-Identifier: MIT */
/*
 * TLS channels: GnuTLS over a socket channel.
 *
 * GnuTLS's transport functions (pull, vec_push) call the socket
 * channel's non-blocking readv/writev directly and report EAGAIN through
 * errno, which is thread-local, so the receiving and the sending thread
 * never share it (gnutls_transport_set_errno would store it in the
 * session).  gnutls_record_recv/send then return GNUTLS_E_AGAIN, which
 * readv/writev turn into -EAGAIN, and chan.c parks the coroutine with
 * chan_yield on this channel, whose fd is the socket's.
 *
 * Who touches what: `session` is used by the reader (record_recv and the
 * pull function) and the writer (record_send and vec_push) at once, as
 * GnuTLS permits for one receiving and one sending thread; the
 * handshake and the bye run while the other direction is idle.  Fields
 * marked writer-side are touched only by whoever holds the write
 * direction (chan.c asserts there is one at a time).
 *
 * Key updates (TLS 1.3 KeyUpdate, RFC 8446 4.6.3).  GnuTLS processes a
 * KeyUpdate inside gnutls_record_recv, on the reader, and it changes
 * state the writer uses: the epochs (copied with the write sequence
 * number, and switched for both directions), and, when the peer asks us
 * to update too, the send state, so that the next gnutls_record_send
 * first sends our KeyUpdate and updates our keys, which again copies and
 * switches the read side.  GnuTLS allows one sending and one receiving
 * thread only as long as neither does that, so the two are serialised
 * around key updates with `gate`, a co_mutex (lock order: before the
 * internal locks of co_mutex and co_queue; nothing else is taken with it
 * held):
 *  - a writer holds it inside each gnutls_record_send and gnutls_bye
 *    call (never across a wait, so an idle writer never blocks a reader);
 *  - a received KeyUpdate reaches `key_update_hook` (a GnuTLS handshake
 *    hook, called before the message is processed) on the reader, which
 *    takes the gate, waits until the writer has no record half sent
 *    (`record_pending`: gnutls_record_send said GNUTLS_E_AGAIN and must
 *    be called again with the same data; a send state changed in
 *    between made GnuTLS send that record twice), and keeps the gate
 *    until gnutls_record_recv returns; a writer about to start a record
 *    meanwhile waits on `rekey_done` (`rekey_wanted`);
 *  - after a KeyUpdate that asks us to update too, the reader also takes
 *    the gate around each gnutls_record_recv until the writer's next
 *    successful gnutls_record_send, which is the one that updates our
 *    keys (`update_pending`).
 * A writer in the middle of a record finishes it once the socket takes
 * it or fails; chan_shutdown also ends the reader's wait (`broken`).
 *
 * Writes: a reply is a small header followed by data.  Sending each iovec
 * as its own record would make a record of 16 bytes for every header, so
 * short leading pieces are gathered into `wbuf` (one record's worth) and
 * sent as one record.  After GNUTLS_E_AGAIN, GnuTLS holds the encrypted
 * record and the retry (chan.c repeats the call with the same vector)
 * only flushes it: we repeat the same pointer and length, as GnuTLS
 * requires, and report the bytes of the caller's vector once it is out.
 */
#include "nbdsrv/chan-tls.h"

#include "nbdsrv/coro-lock.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One TLS record's worth of plaintext. */
#define TLS_WBUF_SIZE (16u * 1024)
/* Read-ahead of ciphertext: a burst of small records in one recvmsg. */
#define TLS_RBUF_SIZE (32u * 1024)

/* Owned by its channel references. */
struct chan_tls {
    struct chan ch;
    struct chan *sock;        /* immutable; we hold a reference */
    struct tls_creds *creds;  /* immutable; we hold a reference */
    gnutls_session_t session; /* see the file comment */

    /* Reader side (and the handshake): ciphertext read ahead. */
    unsigned char *rbuf; /* TLS_RBUF_SIZE bytes */
    size_t rstart, rend; /* unread bytes are rbuf[rstart, rend) */

    /* Writer side. */
    unsigned char *wbuf;    /* TLS_WBUF_SIZE bytes, gathered pieces */
    const void *retry_data; /* a send that returned GNUTLS_E_AGAIN */
    size_t retry_len;       /* its length, 0 when none */

    /* Key updates (see the file comment). */
    struct co_mutex gate;       /* writer inside a send; reader rekeying */
    struct co_queue rekey_done; /* writers waiting for the reader */
    bool rekey_wanted;          /* under gate */
    bool reader_locked;         /* reader side: the reader holds gate */
    atomic_bool record_pending; /* seq_cst: retry_len > 0, for the reader;
                                   pairs with idle_waiter */
    _Atomic(struct coro *) idle_waiter; /* the reader waiting for
                                           record_pending to clear */
    atomic_bool update_pending; /* set (gate held) by the reader, cleared
                                   (gate held) by the writer */
    atomic_bool broken;         /* seq_cst: chan_shutdown was called */
    bool hook_set;              /* key_update_hook is installed */
};

static const struct chan_ops chan_tls_ops;

static struct chan_tls *to_tls(struct chan *ch)
{
    return container_of(ch, struct chan_tls, ch);
}

bool chan_is_tls(const struct chan *ch)
{
    return ch->ops == &chan_tls_ops;
}

/*
 * GnuTLS transport: read from the socket without blocking.  GnuTLS asks
 * for a record header, then for its body: two system calls a record.  So
 * we read as much as the socket has into rbuf and serve GnuTLS from it;
 * a burst of small records (requests) then costs one recvmsg.  EAGAIN
 * comes only once rbuf is empty, so a reader never waits on the socket
 * for bytes we hold already.
 */
static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    struct chan_tls *t = ptr;
    if (t->rstart == t->rend) {
        t->rstart = t->rend = 0;
        if (len >= TLS_RBUF_SIZE) {
            struct iovec iov = {.iov_base = buf, .iov_len = len};
            ssize_t n = t->sock->ops->readv(t->sock, &iov, 1);
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            return n;
        }
        struct iovec iov = {.iov_base = t->rbuf, .iov_len = TLS_RBUF_SIZE};
        ssize_t n = t->sock->ops->readv(t->sock, &iov, 1);
        if (n <= 0) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            return 0;
        }
        t->rend = (size_t)n;
    }
    size_t n = t->rend - t->rstart;
    if (n > len) {
        n = len;
    }
    memcpy(buf, t->rbuf + t->rstart, n);
    t->rstart += n;
    return (ssize_t)n;
}

/*
 * GnuTLS transport: write to the socket without blocking.  Records go
 * out as they are made, never with MSG_MORE (CHAN_WRITE_MORE is not
 * passed down): each is a whole 16 KiB send already, and holding them
 * back for TCP to coalesce measured slower, 1 MiB READs 0.86-0.93x and
 * about 10% more server CPU per request (docs/performance.md, "TLS").
 */
static ssize_t tls_vec_push(gnutls_transport_ptr_t ptr, const giovec_t *iov,
                            int iovcnt)
{
    struct chan_tls *t = ptr;
    ssize_t n = t->sock->ops->writev(t->sock, iov, iovcnt, 0);
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    return n;
}

/*
 * Only used by GnuTLS for handshake timeouts, which we turn off; say
 * "maybe ready" so that a read is tried (and returns EAGAIN if not).
 */
static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    (void)ptr;
    (void)ms;
    return 1;
}

/* Maps a GnuTLS error of an established session to -errno. */
static ssize_t map_error(struct chan_tls *t, ssize_t rc, const char *what)
{
    (void)t;
    switch (rc) {
    case GNUTLS_E_AGAIN:
    case GNUTLS_E_INTERRUPTED:
        return -EAGAIN;
    case GNUTLS_E_PUSH_ERROR:
    case GNUTLS_E_PULL_ERROR:
        return errno != 0 ? -errno : -EIO;
    case GNUTLS_E_PREMATURE_TERMINATION:
        return -ECONNRESET;
    default:
        log_debug("TLS %s: %s", what, gnutls_strerror((int)rc));
        return -EPROTO;
    }
}

/* Wakes the reader waiting for the writer's record, if it waits. */
static void wake_idle_waiter(struct chan_tls *t)
{
    struct coro *co = atomic_exchange(&t->idle_waiter, NULL);
    if (co != NULL) {
        coro_wake(co);
    }
}

/*
 * Reader, holding the gate: waits until no record is half sent.  The
 * gate is released meanwhile and held again on return.  Returns false
 * when the channel was shut down instead.
 */
static bool wait_record_done(struct chan_tls *t)
{
    while (atomic_load(&t->record_pending)) {
        struct coro *self = coro_self();
        atomic_store(&t->idle_waiter, self);
        co_mutex_unlock(&t->gate);
        /* Stored the slot, now look again (seq_cst): the writer stores
         * record_pending and then takes the slot, so one of us sees the
         * other.  If the slot is gone, its taker wakes us. */
        bool wait = atomic_load(&t->record_pending) && !atomic_load(&t->broken);
        if (wait || atomic_exchange(&t->idle_waiter, NULL) != self) {
            coro_yield();
        }
        co_mutex_lock(&t->gate);
        if (atomic_load(&t->broken)) {
            return false;
        }
    }
    return true;
}

/*
 * GnuTLS calls this on the reader before it processes a KeyUpdate from
 * the peer (and on the writer before it sends ours: nothing to do).  A
 * non-zero return fails gnutls_record_recv.
 */
static int key_update_hook(gnutls_session_t session, unsigned htype,
                           unsigned when, unsigned incoming,
                           const gnutls_datum_t *msg)
{
    (void)when;
    struct chan_tls *t = gnutls_transport_get_ptr(session);
    if (!incoming || htype != GNUTLS_HANDSHAKE_KEY_UPDATE) {
        return 0;
    }
    if (!t->reader_locked) {
        co_mutex_lock(&t->gate);
        t->reader_locked = true;
    }
    t->rekey_wanted = true;
    if (!wait_record_done(t)) {
        errno = EPIPE;
        return GNUTLS_E_PULL_ERROR;
    }
    bool asks = msg->size == 1 && msg->data[0] == 1;
    if (asks) {
        atomic_store(&t->update_pending, true);
    }
    log_debug("TLS: the peer updates its keys%s",
              asks ? " and asks us to update ours" : "");
    return 0;
}

/* Reader: lets writers go on after a gnutls_record_recv with the gate. */
static void reader_unlock(struct chan_tls *t)
{
    if (!t->reader_locked) {
        return;
    }
    t->reader_locked = false;
    if (t->rekey_wanted) {
        t->rekey_wanted = false;
        co_queue_restart_all(&t->rekey_done);
    }
    co_mutex_unlock(&t->gate);
}

static ssize_t tls_readv(struct chan *ch, const struct iovec *iov, int iovcnt)
{
    struct chan_tls *t = to_tls(ch);
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        char *base = iov[i].iov_base;
        size_t off = 0;
        while (off < iov[i].iov_len) {
            errno = 0;
            if (atomic_load(&t->update_pending)) {
                /* Our key update, which the writer makes, changes the
                 * read side too: not while we decrypt. */
                co_mutex_lock(&t->gate);
                t->reader_locked = true;
            }
            ssize_t n = gnutls_record_recv(t->session, base + off,
                                           iov[i].iov_len - off);
            int saved = errno;
            reader_unlock(t);
            errno = saved;
            if (n > 0) {
                off += (size_t)n;
                total += (size_t)n;
                if (t->rstart == t->rend &&
                    gnutls_record_check_pending(t->session) == 0) {
                    /* Nothing left on our side: asking the socket again
                     * would most likely cost an EAGAIN, and the caller
                     * asks again anyway if it needs more. */
                    return (ssize_t)total;
                }
                continue;
            }
            if (n == GNUTLS_E_INTERRUPTED) {
                continue;
            }
            if (total > 0) {
                /* Report what we have; the condition comes back on the
                 * next call (GnuTLS repeats fatal errors). */
                return (ssize_t)total;
            }
            if (n == 0) {
                return 0; /* close_notify */
            }
            if (n == GNUTLS_E_PREMATURE_TERMINATION) {
                /* The peer closed without close_notify.  NBD framing
                 * still tells a cut message from a clean end. */
                return 0;
            }
            return map_error(t, n, "receive");
        }
    }
    return (ssize_t)total;
}

/* Chooses what one record_send carries; returns its length. */
static size_t gather(struct chan_tls *t, const struct iovec *iov, int iovcnt,
                     const void **data)
{
    if (iovcnt == 1 || iov[0].iov_len >= TLS_WBUF_SIZE / 2) {
        *data = iov[0].iov_base;
        return iov[0].iov_len;
    }
    size_t len = 0;
    for (int i = 0; i < iovcnt && len < TLS_WBUF_SIZE; i++) {
        size_t n = iov[i].iov_len;
        if (n == 0) {
            continue; /* its base may be NULL, which memcpy must not get */
        }
        if (n > TLS_WBUF_SIZE - len) {
            n = TLS_WBUF_SIZE - len;
        }
        memcpy(t->wbuf + len, iov[i].iov_base, n);
        len += n;
    }
    *data = t->wbuf;
    return len;
}

static ssize_t tls_writev(struct chan *ch, const struct iovec *iov, int iovcnt,
                          int flags)
{
    struct chan_tls *t = to_tls(ch);
    (void)flags; /* see tls_vec_push */
    const void *data;
    size_t len;
    if (t->retry_len > 0) {
        data = t->retry_data;
        len = t->retry_len;
    } else {
        len = gather(t, iov, iovcnt, &data);
    }
    co_mutex_lock(&t->gate);
    /* A new record waits while the reader processes a key update (the
     * retry of a half-sent one is what the reader waits for). */
    while (t->retry_len == 0 && t->rekey_wanted) {
        co_queue_wait(&t->rekey_done, &t->gate);
    }
    ssize_t n;
    do {
        errno = 0;
        n = gnutls_record_send(t->session, data, len);
    } while (n == GNUTLS_E_INTERRUPTED);
    int saved = errno;
    if (n == GNUTLS_E_AGAIN) {
        t->retry_data = data;
        t->retry_len = len;
        atomic_store(&t->record_pending, true);
        co_mutex_unlock(&t->gate);
        return -EAGAIN;
    }
    t->retry_len = 0;
    t->retry_data = NULL;
    if (atomic_load(&t->record_pending)) {
        atomic_store(&t->record_pending, false);
        wake_idle_waiter(t);
    }
    if (n >= 0 && atomic_load(&t->update_pending)) {
        /* This send began with our own key update. */
        atomic_store(&t->update_pending, false);
    }
    co_mutex_unlock(&t->gate);
    errno = saved;
    if (n < 0) {
        return map_error(t, n, "send");
    }
    return n;
}

static int tls_push(struct chan *ch)
{
    struct chan_tls *t = to_tls(ch);
    return chan_push(t->sock);
}

static int tls_shutdown(struct chan *ch, int how)
{
    struct chan_tls *t = to_tls(ch);
    int r = chan_shutdown(t->sock, how);
    /* A reader waiting for a half-sent record stops waiting. */
    atomic_store(&t->broken, true);
    wake_idle_waiter(t);
    return r;
}

static void tls_free(struct chan *ch)
{
    struct chan_tls *t = to_tls(ch);
    co_queue_fini(&t->rekey_done);
    co_mutex_fini(&t->gate);
    gnutls_deinit(t->session);
    tls_creds_unref(t->creds);
    chan_unref(t->sock);
    free(t->rbuf);
    free(t->wbuf);
    free(t);
}

static const struct chan_ops chan_tls_ops = {
    .name = "tls",
    .readv = tls_readv,
    .writev = tls_writev,
    .push = tls_push,
    .shutdown = tls_shutdown,
    .free = tls_free,
};

struct chan *chan_tls_new(struct chan *sock_take, struct tls_creds *creds,
                          struct err *err)
{
    struct chan_tls *t = calloc(1, sizeof *t);
    if (t == NULL) {
        err_set(err, ENOMEM, "out of memory");
        goto out_unref;
    }
    t->wbuf = malloc(TLS_WBUF_SIZE);
    t->rbuf = malloc(TLS_RBUF_SIZE);
    if (t->wbuf == NULL || t->rbuf == NULL) {
        err_set(err, ENOMEM, "out of memory");
        goto out_free;
    }
    if (tls_creds_session_new(creds, &t->session, err) < 0) {
        goto out_free;
    }
    t->sock = sock_take;
    t->creds = tls_creds_ref(creds);
    co_mutex_init(&t->gate);
    co_queue_init(&t->rekey_done);
    atomic_init(&t->record_pending, false);
    atomic_init(&t->idle_waiter, NULL);
    atomic_init(&t->update_pending, false);
    atomic_init(&t->broken, false);
    gnutls_transport_set_ptr(t->session, t);
    gnutls_transport_set_pull_function(t->session, tls_pull);
    gnutls_transport_set_vec_push_function(t->session, tls_vec_push);
    gnutls_transport_set_pull_timeout_function(t->session, tls_pull_timeout);
    chan_init(&t->ch, &chan_tls_ops, sock_take->fd);
    return &t->ch;

out_free:
    free(t->rbuf);
    free(t->wbuf);
    free(t);
out_unref:
    chan_unref(sock_take);
    return NULL;
}

/* Why the handshake failed, in words for the log. */
static void handshake_reason(struct chan_tls *t, int rc, struct err *err)
{
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = {NULL, 0};
        unsigned status = gnutls_session_get_verify_cert_status(t->session);
        if (gnutls_certificate_verification_status_print(
                status, gnutls_certificate_type_get(t->session), &out, 0) ==
            0) {
            size_t len = strlen((const char *)out.data);
            while (len > 0 && out.data[len - 1] == ' ') {
                len--;
            }
            err_set(err, EACCES, "peer certificate not trusted: %.*s", (int)len,
                    (const char *)out.data);
            gnutls_free(out.data);
            return;
        }
    }
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED ||
        rc == GNUTLS_E_WARNING_ALERT_RECEIVED) {
        const char *alert = gnutls_alert_get_name(gnutls_alert_get(t->session));
        err_set(err, EPROTO, "%s: %s", gnutls_strerror(rc),
                alert != NULL ? alert : "unknown alert");
        return;
    }
    err_set(err, rc == GNUTLS_E_PREMATURE_TERMINATION ? ECONNRESET : EPROTO,
            "%s", gnutls_strerror(rc));
}

int chan_tls_handshake(struct chan *ch, struct err *err)
{
    struct chan_tls *t = to_tls(ch);
    for (;;) {
        errno = 0;
        int rc = gnutls_handshake(t->session);
        if (rc == 0) {
            if (!t->hook_set) {
                /* From now on both directions may be busy at once. */
                gnutls_handshake_set_hook_function(
                    t->session, GNUTLS_HANDSHAKE_KEY_UPDATE, GNUTLS_HOOK_PRE,
                    key_update_hook);
                t->hook_set = true;
            }
            return 0;
        }
        if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
            enum chan_dir dir =
                gnutls_record_get_direction(t->session) ? CHAN_OUT : CHAN_IN;
            int y = chan_yield(t->sock, dir);
            if (y < 0) {
                return err_set_errno(err, -y, "handshake interrupted");
            }
            continue;
        }
        if (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR) {
            int e = errno != 0 ? errno : EIO;
            return err_set_errno(err, e, "%s", gnutls_strerror(rc));
        }
        if (!gnutls_error_is_fatal(rc)) {
            continue;
        }
        handshake_reason(t, rc, err);
        /* Tell the peer why, if the socket takes it now (no waiting: the
         * peer may be the reason we failed). */
        gnutls_alert_send_appropriate(t->session, rc);
        return -(err != NULL && err->errnum != 0 ? err->errnum : EPROTO);
    }
}

int chan_tls_bye(struct chan *ch, bool wait)
{
    struct chan_tls *t = to_tls(ch);
    for (;;) {
        co_mutex_lock(&t->gate);
        int rc = gnutls_bye(t->session, GNUTLS_SHUT_WR);
        co_mutex_unlock(&t->gate);
        if (rc == 0) {
            return 0;
        }
        if (rc == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (rc != GNUTLS_E_AGAIN) {
            return -EPROTO;
        }
        if (!wait) {
            return -EAGAIN;
        }
        int y = chan_yield(ch, CHAN_OUT);
        if (y < 0) {
            return y;
        }
    }
}

void chan_tls_describe(struct chan *ch, char *buf, size_t size)
{
    struct chan_tls *t = to_tls(ch);
    char *desc = gnutls_session_get_desc(t->session);
    const char *user = NULL;
    if (gnutls_auth_get_type(t->session) == GNUTLS_CRD_PSK &&
        tls_creds_is_server(t->creds)) {
        user = gnutls_psk_server_get_username(t->session);
    }
    snprintf(buf, size, "%s%s%s", desc != NULL ? desc : "TLS",
             user != NULL ? ", PSK identity " : "", user != NULL ? user : "");
    gnutls_free(desc);
}

int chan_tls_peer_identity(struct chan *ch, char *buf, size_t size)
{
    struct chan_tls *t = to_tls(ch);
    if (size == 0) {
        return -EINVAL;
    }
    if (gnutls_auth_get_type(t->session) == GNUTLS_CRD_PSK) {
        const char *user = tls_creds_is_server(t->creds)
                               ? gnutls_psk_server_get_username(t->session)
                               : NULL;
        if (user == NULL || user[0] == '\0') {
            return -ENOENT;
        }
        snprintf(buf, size, "%s", user);
        return 0;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->session, &n);
    if (certs == NULL || n == 0) {
        return -ENOENT;
    }
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0) {
        return -ENOMEM;
    }
    int r = -EPROTO;
    gnutls_datum_t dn = {NULL, 0};
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        snprintf(buf, size, "%.*s", (int)dn.size, (const char *)dn.data);
        r = 0;
    }
    gnutls_free(dn.data);
    gnutls_x509_crt_deinit(crt);
    return r;
}

static const char *known(const char *name)
{
    return name != NULL ? name : "unknown";
}

void chan_tls_get_info(struct chan *ch, struct chan_tls_info *info)
{
    struct chan_tls *t = to_tls(ch);
    info->version = known(
        gnutls_protocol_get_name(gnutls_protocol_get_version(t->session)));
    info->cipher = known(gnutls_cipher_get_name(gnutls_cipher_get(t->session)));
    gnutls_group_t group = gnutls_group_get(t->session);
    info->group = group != 0 ? gnutls_group_get_name(group) : NULL;
    info->psk = gnutls_auth_get_type(t->session) == GNUTLS_CRD_PSK;
}
