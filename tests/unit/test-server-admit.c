/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of admission (src/server/admit.c): client addresses as they
 * are counted (IPv4-mapped IPv6 is IPv4, every unix client is one), the
 * per-address table as it grows and empties, max-connections and
 * max-connections-per-client with limits changed on the way, and the
 * refusal log: one line per reason, however many refusals.
 */
#include "../../src/server/server-int.h"
#include "fixture-main.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* "unix:PATH", an IPv4 or an IPv6 address as a peer address. */
static struct sockaddr_storage peer(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        sun->sun_family = AF_UNIX;
        snprintf(sun->sun_path, sizeof sun->sun_path, "%s", text + 5);
        return ss;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(1234);
    } else {
        ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(5678);
    }
    return ss;
}

static struct client_key key_of(const char *text)
{
    struct sockaddr_storage ss = peer(text);
    struct client_key k;
    client_key_from(&k, &ss);
    return k;
}

static bool same(const char *a, const char *b)
{
    struct client_key ka = key_of(a), kb = key_of(b);
    return memcmp(&ka, &kb, sizeof ka) == 0;
}

UNIT_TEST("admit", test_server_admit_keys)
{
    ck_assert(same("192.0.2.1", "::ffff:192.0.2.1"));
    ck_assert(!same("192.0.2.1", "192.0.2.2"));
    ck_assert(!same("2001:db8::1", "2001:db8::2"));
    ck_assert(!same("::1", "127.0.0.1"));
    /* Every unix-socket client is the one address "unix". */
    ck_assert(same("unix:/run/a.sock", "unix:/run/b.sock"));
    ck_assert(same("unix:", "unix:/x"));
    ck_assert(!same("unix:", "0.0.0.0"));
}
END_TEST

UNIT_TEST("admit", test_server_admit_table_grows_and_empties)
{
    struct client_table t;
    client_table_init(&t);
    char text[64];
    /* Far more addresses than the first buckets, two connections each. */
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; i < 1000; i++) {
            snprintf(text, sizeof text, "2001:db8::%x", i);
            struct client_key k = key_of(text);
            ck_assert_int_eq(client_table_add(&t, &k, 0), 0);
        }
    }
    ck_assert_uint_eq(t.nr, 1000);
    ck_assert_uint_ge(t.nr_buckets, 1000);
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(text, sizeof text, "2001:db8::%x", i);
        struct client_key k = key_of(text);
        ck_assert_uint_eq(client_table_count(&t, &k), 2);
        /* At a limit of 2 the third is refused and not counted. */
        ck_assert_int_eq(client_table_add(&t, &k, 2), -EUSERS);
        ck_assert_uint_eq(client_table_count(&t, &k), 2);
    }
    struct client_key other = key_of("198.51.100.7");
    ck_assert_uint_eq(client_table_count(&t, &other), 0);
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(text, sizeof text, "2001:db8::%x", i);
        struct client_key k = key_of(text);
        client_table_remove(&t, &k);
        ck_assert_uint_eq(client_table_count(&t, &k), 1);
        client_table_remove(&t, &k);
        ck_assert_uint_eq(client_table_count(&t, &k), 0);
    }
    ck_assert_uint_eq(t.nr, 0);
    client_table_fini(&t);
}
END_TEST

static enum server_admit admit(struct server *srv, const char *who)
{
    struct sockaddr_storage ss = peer(who);
    unsigned count = 0;
    return server_admit(srv, &ss, &count);
}

static void release(struct server *srv, const char *who)
{
    struct sockaddr_storage ss = peer(who);
    server_admit_release(srv, &ss);
}

UNIT_TEST("admit", test_server_admit_limits)
{
    struct server_limits l = {
        .max_connections = 4,
        .max_connections_per_client = 2,
    };
    struct server *srv = server_new(&l);
    ck_assert_ptr_nonnull(srv);
    ck_assert_int_eq(admit(srv, "192.0.2.1"), SERVER_ADMIT_OK);
    ck_assert_int_eq(admit(srv, "::ffff:192.0.2.1"), SERVER_ADMIT_OK);
    struct sockaddr_storage a = peer("192.0.2.1");
    unsigned count = 0;
    ck_assert_int_eq(server_admit(srv, &a, &count), SERVER_ADMIT_PER_CLIENT);
    ck_assert_uint_eq(count, 2);
    /* Unix clients, whatever their path, share one count. */
    ck_assert_int_eq(admit(srv, "unix:/a"), SERVER_ADMIT_OK);
    ck_assert_int_eq(admit(srv, "unix:"), SERVER_ADMIT_OK);
    ck_assert_int_eq(admit(srv, "unix:/b"), SERVER_ADMIT_FULL);
    /* Four in all: the whole server is full, for a new address too. */
    struct sockaddr_storage c = peer("2001:db8::c");
    ck_assert_int_eq(server_admit(srv, &c, &count), SERVER_ADMIT_FULL);
    ck_assert_uint_eq(count, 4);
    /* A place frees: the next client is taken. */
    release(srv, "unix:/a");
    ck_assert_int_eq(admit(srv, "2001:db8::c"), SERVER_ADMIT_OK);

    /* New limits count the connections already there. */
    l.max_connections = 0;
    l.max_connections_per_client = 1;
    server_set_limits(srv, &l);
    ck_assert_int_eq(admit(srv, "2001:db8::c"), SERVER_ADMIT_PER_CLIENT);
    ck_assert_int_eq(admit(srv, "unix:/c"), SERVER_ADMIT_PER_CLIENT);
    ck_assert_int_eq(admit(srv, "192.0.2.9"), SERVER_ADMIT_OK);
    l.max_connections_per_client = 0;
    server_set_limits(srv, &l);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(admit(srv, "192.0.2.9"), SERVER_ADMIT_OK);
    }
    for (int i = 0; i < 101; i++) {
        release(srv, "192.0.2.9");
    }
    release(srv, "2001:db8::c");
    release(srv, "unix:/z");
    release(srv, "192.0.2.1");
    release(srv, "::ffff:192.0.2.1");
    ck_assert_uint_eq(server_unshared(srv)->nr_admitted, 0);
    ck_assert_uint_eq(server_unshared(srv)->clients.nr, 0);
    server_free(srv);
}
END_TEST

/* Runs fn with stderr going to a file; returns what was written. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(f), STDERR_FILENO), 0);
    fn(arg);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    static char buf[8192];
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void refuse_many(void *arg)
{
    struct server *srv = arg;
    for (int i = 0; i < 50; i++) {
        server_log_refusal(srv, SERVER_ADMIT_FULL, "192.0.2.1:1", 4);
        server_log_refusal(srv, SERVER_ADMIT_PER_CLIENT, "unix:", 2);
    }
}

static unsigned count_lines(const char *text, const char *needle)
{
    unsigned n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

UNIT_TEST("admit", test_server_admit_refusals_logged_once_per_reason)
{
    struct server_limits l = {0};
    struct server *srv = server_new(&l);
    ck_assert_ptr_nonnull(srv);
    const char *out = capture_stderr(refuse_many, srv);
    ck_assert_uint_eq(count_lines(out, "\n"), 2);
    ck_assert_uint_eq(count_lines(out, "192.0.2.1:1: refused: already 4 "
                                       "connections (max-connections)"),
                      1);
    ck_assert_uint_eq(count_lines(out, "unix:: refused: already 2 "
                                       "connections from this address "
                                       "(max-connections-per-client)"),
                      1);
    ck_assert_ptr_nonnull(strstr(out, "at most every 10 s"));
    server_free(srv);
}
END_TEST

UNIT_SUITE("server-admit");
UNIT_TCASE("admit", 30, NULL, NULL);
