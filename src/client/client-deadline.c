/* SPDX-License-Identifier: MIT */
/*
 * The client's handshake deadline: when it passes, the socket is shut
 * down, so that every wait of the handshake (greeting, TLS, options)
 * fails at once, and the caller reports a timeout instead of the read
 * error that follows.
 */
#include "client-int.h"

#include <errno.h>
#include <sys/socket.h>

static void deadline_passed(struct coro_timer *timer)
{
    struct client_deadline *d =
        container_of(timer, struct client_deadline, timer);
    chan_shutdown(d->ch, SHUT_RDWR);
}

void client_deadline_start(struct client_deadline *d, struct chan *ch,
                           uint64_t ns)
{
    d->ns = ns;
    d->ch = NULL;
    if (ns == 0) {
        return;
    }
    /* Our own reference: a failed handshake may drop the caller's. */
    d->ch = chan_ref(ch);
    coro_timer_start(&d->timer, ns, deadline_passed);
}

int client_deadline_stop(struct client_deadline *d, struct err *err)
{
    if (d->ns == 0) {
        return 0;
    }
    bool passed = coro_timer_stop(&d->timer);
    chan_unref(d->ch);
    d->ch = NULL;
    if (!passed) {
        return 0;
    }
    unsigned ms = (unsigned)(d->ns / 1000000);
    return err_set(err, ETIMEDOUT,
                   "the server did not complete the handshake within "
                   "%u.%03u s",
                   ms / 1000, ms % 1000);
}
