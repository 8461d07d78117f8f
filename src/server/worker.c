/* SPDX-License-Identifier: MIT */
/*
 * Which loop serves what: a new connection's home loop (round robin) and
 * each request's worker loop, with the pending work counted per loop.
 */
#include "server-int.h"

struct loop *server_pick_loop(struct server *srv)
{
    unsigned i =
        atomic_fetch_add_explicit(&srv->next_loop, 1, memory_order_relaxed);
    return srv->loops->loops[i % srv->loops->count];
}

/*
 * A request leaves its connection's home loop only when the home loop has
 * at least SERVER_HOME_SLACK more units of work pending than another loop.
 * Serving it at home saves a cross-thread hop: an eventfd write, a
 * wake-up of the other loop's thread and contention for the connection's
 * send lock.  Clients send in bursts (one recvmsg here often brings
 * dozens of request headers), so a small slack moved part of every burst
 * and doubled the server CPU per 4K request.  Measured with fio and nbdc
 * against -t 2 on 2 cores, 4K random read QD 32 (IOPS):
 *   slack               8        32       64      128
 *   nbdc, 1 conn      74-99k  136-155k  173-182k  172k
 *   fio, 2 conns       80k     154k      151-155k  149-157k
 *   1M read QD 8     1.9-3.1  3.0-3.4    3.2-3.6   2.6-2.9  GiB/s
 * A home loop that really falls behind (large reads, many connections
 * homed on one loop) still hands work to the others.
 *
 * Work is counted in units of one small request; a READ counts one more
 * unit per REQUEST_COST_BYTES, so that large reads, whose copying costs
 * far more than the hop, spread sooner.  A WRITE's payload has already
 * been received (and is in this core's cache) on the home loop: moving
 * its copy elsewhere made 1 MiB writes slower (bench-threads, 1M QD32 at
 * -t 2: 3.5-3.9 GiB/s against 4.4-4.6 GiB/s at home).
 */
#define REQUEST_COST_BYTES (64u * 1024)

unsigned request_cost(const struct proto_request *req)
{
    if (req->type != PROTO_CMD_READ) {
        return 1;
    }
    return 1 + (unsigned)(req->length / REQUEST_COST_BYTES);
}

unsigned server_pick_worker(struct server *srv, const struct conn *conn,
                            unsigned cost)
{
    unsigned n = srv->loops->count;
    unsigned best = loop_index(conn->home);
    unsigned best_load =
        atomic_load_explicit(&srv->load[best].pending, memory_order_relaxed);
    for (unsigned i = 0; i < n && best_load > 0; i++) {
        unsigned load =
            atomic_load_explicit(&srv->load[i].pending, memory_order_relaxed);
        if (load + SERVER_HOME_SLACK < best_load) {
            best = i;
            best_load = load;
        }
    }
    atomic_fetch_add_explicit(&srv->load[best].pending, cost,
                              memory_order_relaxed);
    return best;
}

void server_worker_done(struct server *srv, unsigned worker, unsigned cost)
{
    atomic_fetch_sub_explicit(&srv->load[worker].pending, cost,
                              memory_order_relaxed);
}
