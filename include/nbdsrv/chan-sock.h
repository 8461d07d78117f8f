/* SPDX-License-Identifier: MIT */
/*
 * Socket channels (TCP over IPv4 or IPv6, unix stream sockets) and the
 * address syntax of the command line: HOST:PORT, [V6ADDR]:PORT,
 * unix:PATH.
 */
#ifndef NBDSRV_CHAN_SOCK_H
#define NBDSRV_CHAN_SOCK_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/chan.h"
#include "nbdsrv/err.h"

#include <sys/socket.h>

/* A parsed listen or connect address. */
struct sock_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/*
 * Parses "HOST:PORT", "[V6ADDR]:PORT" or "unix:PATH".  HOST must be a
 * numeric address or a name that resolves (first result wins).  Returns
 * 0 or -errno with err naming the bad part.  ANY_THREAD.
 */
ANY_THREAD int sock_addr_parse(const char *text, struct sock_addr *addr,
                               struct err *err);

/* Formats an address for logs ("127.0.0.1:10809", "[::1]:1", "unix:p"). */
ANY_THREAD void sock_addr_format(const struct sockaddr *sa, socklen_t len,
                                 char *buf, size_t size);

/*
 * Creates a listening socket (non-blocking, close-on-exec, SO_REUSEADDR).
 * A unix socket file that nobody accepts on any more (left by a process
 * that died) is removed and bound again; one with a live listener fails
 * with EADDRINUSE.  Returns the fd or -errno with err set.  ANY_THREAD.
 */
ANY_THREAD int sock_listen(const struct sock_addr *addr, int backlog,
                           struct err *err);

/*
 * Wraps a connected stream socket in a channel, taking the fd (it is
 * closed with the channel, even on failure).  Sets O_NONBLOCK and, for
 * TCP, TCP_NODELAY.  Returns NULL with errno set on failure.  ANY_THREAD.
 */
ANY_THREAD struct chan *chan_sock_new_take(int fd);

/*
 * Connects to `addr` from a coroutine (the connect runs on io_uring) and
 * returns a socket channel, or NULL with err set.  CORO_FN.
 */
CORO_FN struct chan *chan_sock_connect(const struct sock_addr *addr,
                                       struct err *err);

#endif
