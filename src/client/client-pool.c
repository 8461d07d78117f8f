/* SPDX-License-Identifier: MIT */
/*
 * The connection pool: several connections to one export, for servers
 * that advertise CAN_MULTI_CONN, with their receivers spread over a
 * loop group.
 *
 * A pool is owned by whoever called client_pool_connect and is not
 * changed after it returns, so client_pool_get may be called from any
 * thread; the connections themselves are shared as client.h says.
 * Client TLS credentials are loaded once for the pool and shared
 * read-only by its connections.
 */
#include "client-int.h"
#include "nbdsrv/tls-creds.h"

#include <errno.h>
#include <stdlib.h>

int client_pool_connect(struct client_pool *pool, const struct client_uri *uri,
                        const struct client_opts *opts, unsigned count,
                        const struct loop_group *loops, struct err *err)
{
    struct client_opts o = {0};
    struct tls_creds *own = NULL;
    int r = 0;
    if (opts != NULL) {
        o = *opts;
    }
    if (count == 0) {
        count = 1;
    }
    pool->count = 0;
    pool->conns = calloc(count, sizeof *pool->conns);
    if (pool->conns == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    if (uri->tls && o.tls_creds == NULL) {
        /* Once for the pool: every connection shares them read-only. */
        struct err e = {0};
        own = client_tls_creds_new(uri, &e);
        if (own == NULL) {
            r = err_set(err, e.errnum, "%s", e.msg);
            goto out_close;
        }
        o.tls_creds = own;
    }
    for (unsigned i = 0; i < count; i++) {
        if (loops != NULL) {
            o.recv_loop = loops->loops[i % loops->count];
        }
        struct client_conn *c = client_connect(uri, &o, err);
        if (c == NULL) {
            r = -(err != NULL && err->errnum != 0 ? err->errnum : EIO);
            goto out_close;
        }
        pool->conns[pool->count++] = c;
        if (i == 0 && !(c->info.tx_flags & PROTO_FLAG_CAN_MULTI_CONN)) {
            break;
        }
    }
    tls_creds_unref(own);
    return 0;

out_close:
    tls_creds_unref(own);
    client_pool_close(pool);
    return r;
}

struct client_conn *client_pool_get(const struct client_pool *pool, unsigned i)
{
    return pool->conns[i % pool->count];
}

void client_pool_close(struct client_pool *pool)
{
    for (unsigned i = 0; i < pool->count; i++) {
        client_close(pool->conns[i]);
    }
    free(pool->conns);
    pool->conns = NULL;
    pool->count = 0;
}
