/* SPDX-License-Identifier: MIT */
/*
 * Admission: whether the server takes one more connection.
 *
 * The acceptor counts each accepted socket against limits.max_connections
 * (the whole server) and limits.max_connections_per_client (one client
 * address) before it spends anything on it, and closes it at once when
 * either is reached.  The count drops when the connection is freed,
 * before its socket is closed: a client that sees its connection end
 * (after NBD_CMD_DISC, say) finds the place free when it connects again.
 *
 * Per-client counts live in a chained hash table under srv->lock, one
 * entry per address that has connections.  Addresses are counted even
 * while max_connections_per_client is 0 (no limit), so that a reload that
 * sets a limit counts the connections already there.  IPv4 clients of an
 * IPv6 listener (::ffff:a.b.c.d) count as their IPv4 address, as for the
 * allow lists, and every unix-socket client is the one address "unix".
 * The hash is seeded at start so that a client cannot choose addresses
 * that all fall into one chain.
 *
 * A refusal is logged at most once per SERVER_REFUSAL_LOG_NS per reason;
 * the next line says how many were held back.
 */
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Connections from one address.  Owned by its table. */
struct client_count {
    struct client_count *next; /* in its bucket */
    struct client_key key;
    unsigned count; /* > 0 */
};

#define CLIENT_TABLE_MIN_BUCKETS 64u

void client_key_from(struct client_key *key,
                     const struct sockaddr_storage *peer)
{
    memset(key, 0, sizeof *key);
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)peer;
        key->family = AF_INET;
        memcpy(key->addr, &sin->sin_addr, 4);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            key->family = AF_INET;
            memcpy(key->addr, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            key->family = AF_INET6;
            memcpy(key->addr, &sin6->sin6_addr, 16);
        }
    } else {
        /* Unix sockets, and anything else: one address. */
        key->family = AF_UNIX;
    }
}

void client_table_init(struct client_table *t)
{
    memset(t, 0, sizeof *t);
    if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) !=
        (ssize_t)sizeof t->seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^
                  (uint64_t)(uintptr_t)t;
    }
}

void client_table_fini(struct client_table *t)
{
    for (unsigned i = 0; i < t->nr_buckets; i++) {
        struct client_count *c = t->buckets[i];
        while (c != NULL) {
            struct client_count *next = c->next;
            free(c);
            c = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nr_buckets = 0;
    t->nr = 0;
}

/* FNV-1a over the seed and the key, then a final mix. */
static uint64_t key_hash(const struct client_table *t,
                         const struct client_key *key)
{
    uint64_t h = 0xcbf29ce484222325ull ^ t->seed;
    const uint8_t *p = (const uint8_t *)key;
    for (size_t i = 0; i < sizeof *key; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static bool same_key(const struct client_key *a, const struct client_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* The entry of `key` in t, with the link pointing at it, or NULL. */
static struct client_count **find(const struct client_table *t,
                                  const struct client_key *key)
{
    if (t->nr_buckets == 0) {
        return NULL;
    }
    struct client_count **link =
        &t->buckets[key_hash(t, key) & (t->nr_buckets - 1)];
    while (*link != NULL && !same_key(&(*link)->key, key)) {
        link = &(*link)->next;
    }
    return *link != NULL ? link : NULL;
}

/* Doubles the buckets (or makes the first ones); -ENOMEM leaves t as is. */
static int grow(struct client_table *t)
{
    unsigned n =
        t->nr_buckets == 0 ? CLIENT_TABLE_MIN_BUCKETS : t->nr_buckets * 2;
    struct client_count **b = calloc(n, sizeof *b);
    if (b == NULL) {
        return -ENOMEM;
    }
    for (unsigned i = 0; i < t->nr_buckets; i++) {
        struct client_count *c = t->buckets[i];
        while (c != NULL) {
            struct client_count *next = c->next;
            struct client_count **head = &b[key_hash(t, &c->key) & (n - 1)];
            c->next = *head;
            *head = c;
            c = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nr_buckets = n;
    return 0;
}

unsigned client_table_count(const struct client_table *t,
                            const struct client_key *key)
{
    struct client_count **link = find(t, key);
    return link != NULL ? (*link)->count : 0;
}

int client_table_add(struct client_table *t, const struct client_key *key,
                     unsigned limit)
{
    struct client_count **link = find(t, key);
    if (link != NULL) {
        if (limit != 0 && (*link)->count >= limit) {
            return -EUSERS;
        }
        (*link)->count++;
        return 0;
    }
    /* At one entry a bucket, grow; if that fails, chains grow longer. */
    if (t->nr >= t->nr_buckets && grow(t) < 0 && t->nr_buckets == 0) {
        return -ENOMEM;
    }
    struct client_count *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -ENOMEM;
    }
    c->key = *key;
    c->count = 1;
    struct client_count **head =
        &t->buckets[key_hash(t, key) & (t->nr_buckets - 1)];
    c->next = *head;
    *head = c;
    t->nr++;
    return 0;
}

void client_table_remove(struct client_table *t, const struct client_key *key)
{
    struct client_count **link = find(t, key);
    if (link == NULL) {
        BUG("a connection that was never counted left");
    }
    struct client_count *c = *link;
    if (--c->count == 0) {
        *link = c->next;
        free(c);
        t->nr--;
    }
}

enum server_admit server_admit(struct server *srv,
                               const struct sockaddr_storage *peer,
                               unsigned *count)
{
    struct client_key key;
    client_key_from(&key, peer);
    enum server_admit r = SERVER_ADMIT_OK;
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    const struct server_limits *l = &sh->limits;
    if (l->max_connections != 0 && sh->nr_admitted >= l->max_connections) {
        *count = sh->nr_admitted;
        r = SERVER_ADMIT_FULL;
    } else {
        int a =
            client_table_add(&sh->clients, &key, l->max_connections_per_client);
        if (a == -EUSERS) {
            *count = client_table_count(&sh->clients, &key);
            r = SERVER_ADMIT_PER_CLIENT;
        } else if (a < 0) {
            *count = sh->nr_admitted;
            r = SERVER_ADMIT_NO_MEMORY;
        } else {
            sh->nr_admitted++;
        }
    }
    mutex_unlock(&srv->lock);
    return r;
}

void server_admit_release(struct server *srv,
                          const struct sockaddr_storage *peer)
{
    struct client_key key;
    client_key_from(&key, peer);
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    client_table_remove(&sh->clients, &key);
    sh->nr_admitted--;
    mutex_unlock(&srv->lock);
}

void server_log_refusal(struct server *srv, enum server_admit why,
                        const char *peer, unsigned count)
{
    unsigned held;
    if (why <= SERVER_ADMIT_OK || why >= SERVER_ADMIT_NR ||
        !log_ratelimit_pass(&srv->refusal_log[why], SERVER_REFUSAL_LOG_NS,
                            &held)) {
        return;
    }
    char more[96] = "";
    if (held > 0) {
        snprintf(more, sizeof more,
                 "; %u more refused for this reason since the last message",
                 held);
    }
    unsigned every = (unsigned)(SERVER_REFUSAL_LOG_NS / 1000000000u);
    switch (why) {
    case SERVER_ADMIT_FULL:
        log_warning("%s: refused: already %u connections (max-connections)"
                    "%s; such refusals are logged at most every %u s",
                    peer, count, more, every);
        break;
    case SERVER_ADMIT_PER_CLIENT:
        log_warning("%s: refused: already %u connections from this address "
                    "(max-connections-per-client)%s; such refusals are "
                    "logged at most every %u s",
                    peer, count, more, every);
        break;
    default:
        log_error("%s: refused: out of memory%s; such refusals are logged "
                  "at most every %u s",
                  peer, more, every);
        break;
    }
}
