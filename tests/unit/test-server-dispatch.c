/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the choice of a request's worker loop (src/server/worker.c,
 * server_pick_worker and request_cost): a client's burst of small
 * requests stays on the connection's home loop, a home loop that falls
 * far behind hands work to the least loaded loop, and large reads spread
 * sooner than small requests.
 */
#include "../../src/server/server-int.h"
#include "fixture-loops.h"
#include "fixture-main.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define NR_LOOPS 3

static struct server srv;
static struct loop_load loads[NR_LOOPS];
static struct loop_group group;
static struct loop *group_loops[NR_LOOPS];
static struct conn conn;

static void setup(void)
{
    fixture_loops_start(NR_LOOPS, 0);
    for (unsigned i = 0; i < NR_LOOPS; i++) {
        group_loops[i] = fixture_loop(i);
        atomic_init(&loads[i].pending, 0);
    }
    group.loops = group_loops;
    group.count = NR_LOOPS;
    memset(&srv, 0, sizeof srv);
    srv.loops = &group;
    srv.load = loads;
    memset(&conn, 0, sizeof conn);
    conn.srv = &srv;
    conn.home = fixture_loop(1);
}

static void teardown(void)
{
    fixture_loops_stop();
}

static unsigned pending(unsigned i)
{
    return atomic_load(&loads[i].pending);
}

static struct proto_request request(uint16_t type, uint64_t length)
{
    struct proto_request r;
    memset(&r, 0, sizeof r);
    r.type = type;
    r.length = length;
    return r;
}

UNIT_TEST("dispatch", test_dispatch_costs)
{
    struct proto_request r = request(PROTO_CMD_READ, 4096);
    ck_assert_uint_eq(request_cost(&r), 1);
    r = request(PROTO_CMD_READ, 1024 * 1024);
    ck_assert_uint_eq(request_cost(&r), 17);
    /* A write's payload is already here: it counts as one. */
    r = request(PROTO_CMD_WRITE, 1024 * 1024);
    ck_assert_uint_eq(request_cost(&r), 1);
    r = request(PROTO_CMD_FLUSH, 0);
    ck_assert_uint_eq(request_cost(&r), 1);
}
END_TEST

UNIT_TEST("dispatch", test_dispatch_burst_stays_home)
{
    /* One recvmsg brought 128 small requests (the per-connection cap):
     * the first SERVER_HOME_SLACK + 1 stay home, the rest go elsewhere. */
    unsigned home = 0, away = 0;
    for (unsigned i = 0; i < 128; i++) {
        unsigned w = server_pick_worker(&srv, &conn, 1);
        if (w == 1) {
            home++;
        } else {
            away++;
        }
        if (i < 32) {
            ck_assert_msg(w == 1, "request %u of a QD 32 burst left home", i);
        }
    }
    ck_assert_uint_eq(home, SERVER_HOME_SLACK + 1 +
                                (128 - SERVER_HOME_SLACK - 1) / NR_LOOPS);
    ck_assert_uint_eq(home + away, 128);
    ck_assert_uint_eq(pending(0) + pending(1) + pending(2), 128);
    /* The work that left went to both other loops, evenly. */
    ck_assert_uint_le(pending(0) > pending(2) ? pending(0) - pending(2)
                                              : pending(2) - pending(0),
                      1);
}
END_TEST

UNIT_TEST("dispatch", test_dispatch_done_returns_home)
{
    for (unsigned i = 0; i <= SERVER_HOME_SLACK; i++) {
        ck_assert_uint_eq(server_pick_worker(&srv, &conn, 1), 1);
    }
    ck_assert_uint_ne(server_pick_worker(&srv, &conn, 1), 1);
    /* The home loop catches up: requests stay home again. */
    for (unsigned i = 0; i < SERVER_HOME_SLACK; i++) {
        server_worker_done(&srv, 1, 1);
    }
    ck_assert_uint_eq(server_pick_worker(&srv, &conn, 1), 1);
}
END_TEST

UNIT_TEST("dispatch", test_dispatch_large_reads_spread)
{
    struct proto_request r = request(PROTO_CMD_READ, 1024 * 1024);
    unsigned cost = request_cost(&r);
    unsigned first_away = 0;
    for (unsigned i = 0; i < 8; i++) {
        if (server_pick_worker(&srv, &conn, cost) != 1 && first_away == 0) {
            first_away = i + 1;
        }
    }
    /* A queue of QD 8 large reads spreads; 8 small requests would not. */
    ck_assert_uint_ne(first_away, 0);
    ck_assert_uint_le(first_away, SERVER_HOME_SLACK / cost + 2);
    ck_assert_uint_gt(pending(0) + pending(2), 0);
}
END_TEST

UNIT_SUITE("server-dispatch");
UNIT_TCASE("dispatch", 10, setup, teardown);
