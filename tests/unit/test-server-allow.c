/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the export allow lists (src/server/export.c): IPv4 and
 * IPv6 networks, IPv4-mapped IPv6 peers, unix-socket peers, and exports
 * without a list.
 */
#include "../../src/server/server-int.h"
#include "fixture-main.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static struct sockaddr_storage peer(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strcmp(text, "unix") == 0) {
        ss.ss_family = AF_UNIX;
        return ss;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
    }
    return ss;
}

static struct server_allow net(const char *addr, unsigned prefix)
{
    struct server_allow a;
    memset(&a, 0, sizeof a);
    a.prefix = prefix;
    if (inet_pton(AF_INET, addr, a.addr) == 1) {
        a.family = AF_INET;
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, addr, a.addr), 1);
        a.family = AF_INET6;
    }
    return a;
}

static bool allows(struct server_allow *list, unsigned n, const char *who)
{
    struct export exp;
    memset(&exp, 0, sizeof exp);
    exp.allow = list;
    exp.nr_allow = n;
    struct sockaddr_storage ss = peer(who);
    return export_allows(&exp, &ss);
}

UNIT_TEST("allow", test_server_allow_lists)
{
    struct server_allow list[] = {
        net("10.0.0.0", 8),
        net("192.168.1.128", 25),
        net("2001:db8::", 32),
        net("::1", 128),
    };
    unsigned n = sizeof list / sizeof list[0];
    ck_assert(allows(list, n, "10.1.2.3"));
    ck_assert(!allows(list, n, "11.0.0.1"));
    ck_assert(allows(list, n, "192.168.1.200"));
    ck_assert(!allows(list, n, "192.168.1.127"));
    ck_assert(allows(list, n, "2001:db8:1::5"));
    ck_assert(!allows(list, n, "2001:db9::5"));
    ck_assert(allows(list, n, "::1"));
    ck_assert(!allows(list, n, "::2"));
    /* An IPv4 client on an IPv6 listener matches as IPv4. */
    ck_assert(allows(list, n, "::ffff:10.9.9.9"));
    ck_assert(!allows(list, n, "::ffff:127.0.0.1"));
    /* Unix clients only with the "unix" entry. */
    ck_assert(!allows(list, n, "unix"));
    struct server_allow with_unix[] = {net("127.0.0.1", 32),
                                       {.family = AF_UNIX}};
    ck_assert(allows(with_unix, 2, "unix"));
    ck_assert(allows(with_unix, 2, "127.0.0.1"));
    ck_assert(!allows(with_unix, 2, "127.0.0.2"));
    /* 0.0.0.0/0 is every IPv4 client, and only those. */
    struct server_allow any4[] = {net("0.0.0.0", 0)};
    ck_assert(allows(any4, 1, "203.0.113.7"));
    ck_assert(!allows(any4, 1, "::1"));
    /* No list: everyone. */
    ck_assert(allows(NULL, 0, "203.0.113.7"));
    ck_assert(allows(NULL, 0, "unix"));
}
END_TEST

UNIT_SUITE("server-allow");
UNIT_TCASE("allow", 10, NULL, NULL);
