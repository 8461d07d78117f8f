/* SPDX-License-Identifier: MIT */
/*
 * What the control socket asks of a running server: the exports and
 * connections as they are now, a connection's soft disconnect, the
 * status, and the change of one export of the table.
 *
 * Every walk holds srv->lock, the lock that guards the connection list
 * and the current export table; the callbacks build their replies in
 * memory and never block.  A connection's negotiated fields (exp, tls,
 * tls_identity) are read only once its `transmitting` flag is seen set
 * (acquire, paired with the release in session.c); its counters are
 * relaxed atomics, written by the loops that run its requests.
 *
 * A soft disconnect reuses the drain of server_stop: the receive side,
 * woken by chan_wake, sees `disconnecting` at the top of its loop and
 * opens the shutdown window, during which new requests get ESHUTDOWN
 * while those in flight complete; when the window closes, the read side
 * is shut and the connection ends like any other.
 */
#include "nbdsrv/backend.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The counters of one connection, read relaxed (see struct conn). */
static void read_counters(struct conn *c, uint64_t *rd, uint64_t *wr,
                          unsigned *inflight)
{
    *rd = atomic_load_explicit(&c->bytes_read, memory_order_relaxed);
    *wr = atomic_load_explicit(&c->bytes_written, memory_order_relaxed);
    *inflight =
        atomic_load_explicit(&c->requests_inflight, memory_order_relaxed);
}

/* conn's export once it transmits, else NULL (acquire: see the top). */
static const struct export *conn_export(struct conn *c)
{
    if (!atomic_load_explicit(&c->transmitting, memory_order_acquire)) {
        return NULL;
    }
    return c->exp;
}

void server_list_exports(struct server *srv, server_export_info_fn *fn,
                         void *opaque)
{
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    const struct export_table *t = sh->table;
    for (unsigned i = 0; i < t->nr; i++) {
        const struct export *exp = t->exps[i];
        struct server_export_info info = {
            .name = exp->name,
            .backend = backend_name(exp->be),
            .path = exp->path,
            .overlay = exp->overlay,
            .size = backend_size(exp->be),
            .read_only = exp->read_only,
        };
        for (struct conn *c = sh->conns; c != NULL;
             c = conn_links(srv, c)->next) {
            const struct export *ce = conn_export(c);
            if (ce == NULL || strcmp(ce->name, exp->name) != 0) {
                continue;
            }
            uint64_t rd, wr;
            unsigned inflight;
            read_counters(c, &rd, &wr, &inflight);
            info.connections++;
            info.bytes_read += rd;
            info.bytes_written += wr;
            info.requests_inflight += inflight;
        }
        fn(opaque, &info);
    }
    mutex_unlock(&srv->lock);
}

void server_list_conns(struct server *srv, server_conn_info_fn *fn,
                       void *opaque)
{
    mutex_lock(&srv->lock);
    for (struct conn *c = server_locked(srv)->conns; c != NULL;
         c = conn_links(srv, c)->next) {
        const struct export *exp = conn_export(c);
        struct server_conn_info info = {
            .id = c->id,
            .peer = c->peer,
            .export_name = exp != NULL ? exp->name : NULL,
            .tls = exp != NULL && c->tls,
            .tls_identity = exp != NULL ? c->tls_identity : "",
            .tls_version = exp != NULL && c->tls ? c->tls_version : NULL,
            .tls_cipher = exp != NULL && c->tls ? c->tls_cipher : NULL,
            .started = c->started,
            .disconnecting = atomic_load(&c->disconnecting),
        };
        read_counters(c, &info.bytes_read, &info.bytes_written,
                      &info.requests_inflight);
        fn(opaque, &info);
    }
    mutex_unlock(&srv->lock);
}

int server_disconnect(struct server *srv, uint64_t id)
{
    int r = -ENOENT;
    mutex_lock(&srv->lock);
    for (struct conn *c = server_locked(srv)->conns; c != NULL;
         c = conn_links(srv, c)->next) {
        if (c->id != id) {
            continue;
        }
        /* seq_cst, before the wake: a receive side that is not parked
         * sees the flag at the top of its loop. */
        atomic_store(&c->disconnecting, true);
        if (atomic_load_explicit(&c->transmitting, memory_order_acquire)) {
            chan_wake(c->ch, CHAN_IN);
        } else {
            /* No request to finish yet: the handshake just ends. */
            chan_shutdown(c->ch, SHUT_RDWR);
        }
        log_info("%s: disconnecting (control socket)", c->peer);
        r = 0;
        break;
    }
    mutex_unlock(&srv->lock);
    return r;
}

void server_get_status(struct server *srv, struct server_status *st)
{
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    *st = (struct server_status){
        .started = srv->started,
        .threads = srv->loops != NULL ? srv->loops->count : 0,
        .connections = sh->nr_conns,
        .exports = sh->table->nr,
        .limits = sh->limits,
    };
    mutex_unlock(&srv->lock);
    st->buffer_memory_used = buffer_budget_used(&srv->budget);
}

int server_edit_export(struct server *srv, enum server_edit how,
                       const char *name, const struct export_config *config,
                       struct err *err)
{
    struct export_table *old = server_get_table(srv);
    struct export_config *all = calloc(old->nr + 1, sizeof *all);
    int r;
    if (all == NULL) {
        r = err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    unsigned nr = 0;
    bool found = false;
    for (unsigned i = 0; i < old->nr; i++) {
        if (strcmp(old->exps[i]->name, name) != 0) {
            all[nr++] = export_config_of(old->exps[i]);
            continue;
        }
        found = true;
        if (how == SERVER_EDIT_CHANGE) {
            all[nr++] = *config; /* in its place */
        }
    }
    if (how == SERVER_EDIT_ADD && found) {
        r = err_set(err, EEXIST, "export '%s' exists already", name);
        goto out;
    }
    if (how != SERVER_EDIT_ADD && !found) {
        r = err_set(err, ENOENT, "no export '%s'", name);
        goto out;
    }
    if (how == SERVER_EDIT_ADD) {
        all[nr++] = *config;
    }
    r = server_set_exports(srv, all, nr, err);
out:
    free(all);
    export_table_unref(old);
    return r;
}
