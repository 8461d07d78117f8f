/* SPDX-License-Identifier: MIT */
/*
 * TLS channels: a GnuTLS session over a socket channel, itself a channel
 * (struct chan_ops), for the server's STARTTLS and for clients.
 *
 * Use, server or client alike:
 *
 *     struct chan *tls = chan_tls_new(chan_ref(sock), creds, &err);
 *     if (tls == NULL || chan_tls_handshake(tls, &err) < 0) -> refuse
 *     ... chan_read_all(tls, ...), chan_write_all(tls, ...) ...
 *     chan_tls_bye(tls, true);    (from the writing side; optional)
 *     chan_unref(tls);            (closes the socket with the last ref)
 *
 * The side (server or client) and the authentication (X.509, PSK) come
 * from the credentials (tls-creds.h).  Nothing may be read from or written
 * to the socket channel once it is wrapped: bytes the peer sent before
 * the handshake would be lost to GnuTLS.
 *
 * Threads.  The channel follows the waiting coroutine like every channel:
 * readv/writev never block, GnuTLS's transport functions return EAGAIN,
 * and chan.c parks the coroutine with chan_yield in its current loop.
 * One coroutine may read while another writes, each on any loop, as
 * GnuTLS allows one receiving and one sending thread on a session when
 * nothing re-handshakes: sessions are made without false start, session
 * tickets or automatic rekeying, and a TLS 1.2 renegotiation request from
 * the peer is a read error (-EPROTO) that ends the connection.  A TLS 1.3
 * KeyUpdate from the peer (a GnuTLS peer sends one by itself after 2^24
 * records) changes the sending side's state too, so the channel
 * serialises it with the writer: the reader waits until no record is
 * half sent and holds writers off while GnuTLS processes it, and when
 * the peer asks us to update as well, the writer's next send (which does
 * that) and the reader's receives do not overlap (see chan-tls.c).  The
 * handshake and chan_tls_bye need the other direction idle.  Data GnuTLS has
 * already decrypted, and ciphertext the channel has read ahead, are consumed
 * before the socket is polled again, so a reader never waits for bytes that are
 * already here.
 *
 * chan_shutdown and chan_push act on the socket underneath (no alert is
 * sent); chan_wake interrupts waits on the TLS channel.  CHAN_WRITE_MORE
 * is accepted and ignored: every record is sent as it is made.
 */
#ifndef NBDSRV_CHAN_TLS_H
#define NBDSRV_CHAN_TLS_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/chan.h"
#include "nbdsrv/err.h"
#include "nbdsrv/tls-creds.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Wraps the socket channel `sock` (the reference is taken: released with
 * the TLS channel, or at once on failure) in a TLS session using `creds`
 * (a reference is taken).  No I/O yet.  Returns the channel (refcount 1)
 * or NULL with err set.  ANY_THREAD.
 */
ANY_THREAD struct chan *chan_tls_new(struct chan *sock_take,
                                     struct tls_creds *creds, struct err *err);

/*
 * Runs the TLS handshake, waiting on the socket channel underneath (so a
 * chan_wake or chan_shutdown of that channel interrupts it).  Returns 0,
 * or -errno with err giving the reason (GnuTLS's error, the alert, or
 * why the peer's certificate was not trusted).  Both directions must be
 * idle.  CORO_FN.
 */
CORO_FN int chan_tls_handshake(struct chan *ch, struct err *err);

/*
 * Sends the close_notify alert (GNUTLS_SHUT_WR) from the writing side.
 * With `wait` false it gives up instead of waiting for room in the
 * socket (for peers that may have stopped reading).  Returns 0 or -errno.
 * CORO_FN.
 */
CORO_FN int chan_tls_bye(struct chan *ch, bool wait);

/*
 * Describes the session for logs after the handshake: protocol, key
 * exchange, cipher, and the PSK identity when there is one, e.g.
 * "(TLS1.3)-(ECDHE-SECP256R1)-(RSA-PSS-RSAE-SHA256)-(AES-256-GCM)".
 * ANY_THREAD.
 */
ANY_THREAD void chan_tls_describe(struct chan *ch, char *buf, size_t size);

/* What the handshake agreed, as GnuTLS names it. */
struct chan_tls_info {
    const char *version; /* protocol version, e.g. "TLS1.3" */
    const char *cipher;  /* e.g. "AES-128-GCM", "CHACHA20-POLY1305" */
    const char *group;   /* (EC)DH group, e.g. "SECP256R1"; NULL if none */
    bool psk;            /* authenticated by a pre-shared key */
};

/*
 * Fills `info` with static strings that GnuTLS owns ("unknown" for a
 * version or cipher GnuTLS gives no name).  ANY_THREAD, after the
 * handshake.
 */
ANY_THREAD void chan_tls_get_info(struct chan *ch, struct chan_tls_info *info);

/*
 * The identity the peer proved in the handshake: its PSK identity, or the
 * distinguished name of its certificate (RFC 4514, e.g. "CN=client,O=x").
 * Writes it to buf (truncated to size).  Returns 0, -ENOENT when the peer
 * proved none (no client certificate), or -errno.  ANY_THREAD, after
 * the handshake.
 */
ANY_THREAD int chan_tls_peer_identity(struct chan *ch, char *buf, size_t size);

/* True when ch is a TLS channel.  ANY_THREAD. */
ANY_THREAD bool chan_is_tls(const struct chan *ch);

#endif
