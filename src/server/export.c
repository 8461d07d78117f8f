/* SPDX-License-Identifier: MIT */
/*
 * Exports: the name-to-image map, who may see each export, and what each
 * export advertises.
 *
 * A client names an export; the name is only ever looked up in the
 * current export table, never used as a path.  The first export also
 * answers to "".  Tables are immutable snapshots replaced as a whole by
 * server_set_exports (a reload); an export is shared by the tables that
 * list it and the connections using it, and freed with its last
 * reference, so a removed export lives on until its last client leaves.
 *
 * Allow lists: a client whose address is outside an export's list does
 * not see it at all (LIST leaves it out, INFO and GO say
 * NBD_REP_ERR_UNKNOWN), so a refused client learns nothing about it.
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static char *strdup_or_null(const char *s, bool *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *failed = true;
    }
    return d;
}

static void export_free(struct export *exp)
{
    free(exp->name);
    free(exp->path);
    free(exp->rbd);
    free(exp->ceph_conf);
    free(exp->ceph_id);
    free(exp->ceph_keyring);
    free(exp->overlay);
    free(exp->description);
    free(exp->allow);
    for (unsigned i = 0; i < exp->nr_tls_identities; i++) {
        free(exp->tls_identities[i]);
    }
    free(exp->tls_identities);
    export_stats_unref(exp->stats);
    dirty_set_unref(exp->dirty);
    for (unsigned i = 0; i < exp->nr_dirty_bitmaps; i++) {
        free(exp->dirty_bitmaps[i]);
    }
    free(exp->dirty_bitmaps);
    free(exp->dirty_bitmap_file);
    backend_unref(exp->be);
    free(exp);
}

/* Puts the dirty-tracking filter of `config`'s bitmaps over `be_take`. */
static struct backend *track_dirty(const struct export_config *config,
                                   struct backend *be_take, struct err *err)
{
    struct err e;
    err_clear(&e);
    struct dirty_set *set = dirty_set_open(
        config->dirty_bitmap_file, backend_size(be_take),
        config->dirty_granularity > 0 ? config->dirty_granularity
                                      : DIRTY_DEFAULT_GRANULARITY,
        config->dirty_bitmaps, config->nr_dirty_bitmaps, &e);
    if (set == NULL) {
        backend_unref(be_take);
        err_set(err, e.errnum, "export %s: %s", config->name, e.msg);
        return NULL;
    }
    return backend_dirty_new(be_take, set, err);
}

/* A reload that keeps the chain: the bitmaps it names that the set lacks
 * (a new name, or one removed live) are created. */
static int add_missing_bitmaps(struct dirty_set *set,
                               const struct export_config *config,
                               struct err *err)
{
    struct dirty_list *l = dirty_set_list(set);
    int r = 0;
    for (unsigned i = 0; i < config->nr_dirty_bitmaps && r == 0; i++) {
        const char *name = config->dirty_bitmaps[i];
        if (dirty_list_find(l, name, strlen(name)) < 0) {
            r = dirty_set_create(set, name, err);
        }
    }
    dirty_list_unref(l);
    return r;
}

struct export *export_new(const struct export_config *config,
                          struct backend *reuse, struct err *err)
{
    struct export *exp = calloc(1, sizeof *exp);
    if (exp == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    refcount_init(&exp->refs);
    bool failed = false;
    exp->name = strdup_or_null(config->name, &failed);
    exp->path = strdup_or_null(config->path, &failed);
    exp->overlay = strdup_or_null(config->overlay, &failed);
    exp->description = strdup_or_null(config->description, &failed);
    exp->direct = config->direct;
    exp->memory = config->memory;
    exp->dirty_bitmap_file = strdup_or_null(config->dirty_bitmap_file, &failed);
    if (config->nr_dirty_bitmaps > 0) {
        exp->dirty_bitmaps =
            calloc(config->nr_dirty_bitmaps, sizeof *exp->dirty_bitmaps);
        if (exp->dirty_bitmaps == NULL) {
            failed = true;
        } else {
            exp->nr_dirty_bitmaps = config->nr_dirty_bitmaps;
            for (unsigned i = 0; i < config->nr_dirty_bitmaps; i++) {
                exp->dirty_bitmaps[i] =
                    strdup_or_null(config->dirty_bitmaps[i], &failed);
            }
        }
    }
    exp->rbd = strdup_or_null(config->rbd, &failed);
    exp->ceph_conf = strdup_or_null(config->ceph_conf, &failed);
    exp->ceph_id = strdup_or_null(config->ceph_id, &failed);
    exp->ceph_keyring = strdup_or_null(config->ceph_keyring, &failed);
    exp->memory_size = config->memory_size;
    exp->no_trim = config->no_trim;
    if (config->nr_allow > 0) {
        exp->allow = calloc(config->nr_allow, sizeof *exp->allow);
        if (exp->allow == NULL) {
            failed = true;
        } else {
            memcpy(exp->allow, config->allow,
                   config->nr_allow * sizeof *exp->allow);
            exp->nr_allow = config->nr_allow;
        }
    }
    if (config->nr_tls_identities > 0) {
        exp->tls_identities =
            calloc(config->nr_tls_identities, sizeof *exp->tls_identities);
        if (exp->tls_identities == NULL) {
            failed = true;
        } else {
            exp->nr_tls_identities = config->nr_tls_identities;
            for (unsigned i = 0; i < config->nr_tls_identities; i++) {
                exp->tls_identities[i] =
                    strdup_or_null(config->tls_identities[i], &failed);
            }
        }
    }
    if (failed) {
        err_set(err, ENOMEM, "out of memory");
        goto out_free;
    }
    /* Under an overlay the image is a base: read, never written. */
    bool base_ro = config->read_only || config->overlay != NULL;
    unsigned flags = (config->read_only ? BACKEND_OPEN_READ_ONLY : 0) |
                     (config->direct ? BACKEND_OPEN_DIRECT : 0);
    if (reuse != NULL) {
        exp->be = backend_ref(reuse);
    } else if (config->rbd != NULL) {
        /* Blocks on the network: this runs on the main thread. */
        struct rbd_backend_spec spec = {.image = config->rbd,
                                        .conf = config->ceph_conf,
                                        .id = config->ceph_id,
                                        .keyring = config->ceph_keyring};
        exp->be = backend_rbd_open(&spec, base_ro, err);
        if (exp->be == NULL) {
            goto out_free;
        }
    } else if (config->memory) {
        exp->be = backend_memory_new(config->memory_size, base_ro, err);
        if (exp->be == NULL) {
            goto out_free;
        }
    } else {
        exp->be = backend_file_open_flags(
            config->path, flags | (base_ro ? BACKEND_OPEN_READ_ONLY : 0), err);
        if (exp->be == NULL) {
            goto out_free;
        }
    }
    if (reuse == NULL && config->overlay != NULL) {
        exp->be = backend_overlay_open(exp->be, config->overlay, flags, err);
        if (exp->be == NULL) {
            goto out_free;
        }
    }
    if (reuse == NULL &&
        (config->nr_dirty_bitmaps > 0 || config->dirty_bitmap_file != NULL)) {
        exp->be = track_dirty(config, exp->be, err);
        if (exp->be == NULL) {
            goto out_free;
        }
    }
    if (backend_dirty_set(exp->be) != NULL) {
        exp->dirty = dirty_set_ref(backend_dirty_set(exp->be));
        if (reuse != NULL && add_missing_bitmaps(exp->dirty, config, err) < 0) {
            goto out_free;
        }
    }
    exp->dirty_granularity = config->dirty_granularity;
    if (reuse == NULL) {
        exp->be = server_export_test_hook(config, exp->be, err);
        if (exp->be == NULL) {
            goto out_free;
        }
    }
    exp->read_only = config->read_only || backend_read_only(exp->be);
    return exp;

out_free:
    export_free(exp);
    return NULL;
}

/* The daemon's: every chain is served as opened (see server.h). */
__attribute__((weak)) struct backend *
server_export_test_hook(const struct export_config *config, struct backend *be,
                        struct err *err)
{
    (void)config;
    (void)err;
    return be;
}

struct export *export_ref(struct export *exp)
{
    refcount_get(&exp->refs);
    return exp;
}

void export_unref(struct export *exp)
{
    if (exp == NULL) {
        return;
    }
    if (refcount_put(&exp->refs)) {
        export_free(exp);
    }
}

/* Whether the export keeps its bitmaps in the file `config` names, at
 * the same granularity (export_new creates the bitmaps it names that the
 * set lacks). */
/* Two optional strings: both NULL, or equal. */
static bool same_opt(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static bool same_dirty(const struct export *exp,
                       const struct export_config *config)
{
    bool wanted =
        config->nr_dirty_bitmaps > 0 || config->dirty_bitmap_file != NULL;
    if (exp->dirty == NULL || !wanted) {
        return exp->dirty == NULL && !wanted;
    }
    if (!dirty_set_same_file(exp->dirty, config->dirty_bitmap_file) ||
        exp->dirty_granularity != config->dirty_granularity) {
        return false;
    }
    return true;
}

bool export_same_image(const struct export *exp,
                       const struct export_config *config)
{
    if (!same_dirty(exp, config)) {
        return false;
    }
    /* An overlay is part of the image: the same one, or none. */
    if ((exp->overlay == NULL) != (config->overlay == NULL) ||
        (exp->overlay != NULL && strcmp(exp->overlay, config->overlay) != 0)) {
        return false;
    }
    /* An RBD export keeps its image while image and cluster stay. */
    if (exp->rbd != NULL || config->rbd != NULL) {
        return exp->rbd != NULL && config->rbd != NULL &&
               strcmp(exp->rbd, config->rbd) == 0 &&
               same_opt(exp->ceph_conf, config->ceph_conf) &&
               same_opt(exp->ceph_id, config->ceph_id) &&
               same_opt(exp->ceph_keyring, config->ceph_keyring) &&
               backend_read_only(exp->be) == config->read_only;
    }
    if (exp->memory || config->memory) {
        /* A memory export keeps its data while its shape stays. */
        return exp->memory && config->memory &&
               exp->memory_size == config->memory_size &&
               backend_read_only(exp->be) == config->read_only;
    }
    /* A file replaced under the same name (a new inode) is reopened. */
    return strcmp(exp->path, config->path) == 0 &&
           backend_read_only(exp->be) == config->read_only &&
           exp->direct == config->direct &&
           backend_same_file(exp->be, config->path);
}

struct export_table *export_table_new(unsigned nr)
{
    struct export_table *t = calloc(1, sizeof *t + nr * sizeof t->exps[0]);
    if (t != NULL) {
        refcount_init(&t->refs);
    }
    return t;
}

void export_table_unref(struct export_table *t)
{
    if (t == NULL) {
        return;
    }
    if (!refcount_put(&t->refs)) {
        return;
    }
    for (unsigned i = 0; i < t->nr; i++) {
        export_unref(t->exps[i]);
    }
    free(t);
}

struct export_table *server_get_table(struct server *srv)
{
    mutex_lock(&srv->lock);
    struct export_table *t = server_locked(srv)->table;
    /* Relaxed: srv->lock orders this against the swap's unref. */
    refcount_get(&t->refs);
    mutex_unlock(&srv->lock);
    return t;
}

/* Whether the first `bits` bits of a and b are equal. */
static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8;
    if (memcmp(a, b, bytes) != 0) {
        return false;
    }
    unsigned rest = bits % 8;
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool export_allows(const struct export *exp,
                   const struct sockaddr_storage *peer)
{
    if (exp->allow == NULL) {
        return true;
    }
    int family = peer->ss_family;
    uint8_t addr[16];
    if (family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)peer;
        memcpy(addr, &sin->sin_addr, 4);
    } else if (family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            family = AF_INET;
            memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            memcpy(addr, &sin6->sin6_addr, 16);
        }
    }
    for (unsigned i = 0; i < exp->nr_allow; i++) {
        const struct server_allow *a = &exp->allow[i];
        if (a->family != family) {
            continue;
        }
        if (family == AF_UNIX || prefix_match(addr, a->addr, a->prefix)) {
            return true;
        }
    }
    return false;
}

struct export *conn_find_export(const struct conn *conn, const char *name,
                                size_t len, bool *hidden)
{
    const struct export_table *t = conn->table;
    struct export *exp = NULL;
    if (len == 0 && t->nr > 0) {
        exp = t->exps[0];
    }
    for (unsigned i = 0; exp == NULL && i < t->nr; i++) {
        if (strlen(t->exps[i]->name) == len &&
            memcmp(t->exps[i]->name, name, len) == 0) {
            exp = t->exps[i];
        }
    }
    bool refused = exp != NULL && !conn_may_use_export(conn, exp);
    if (hidden != NULL) {
        *hidden = refused;
    }
    return refused ? NULL : exp;
}

bool export_allows_identity(const struct export *exp, const char *identity)
{
    if (exp->nr_tls_identities == 0) {
        return true;
    }
    if (identity == NULL || identity[0] == '\0') {
        return false;
    }
    for (unsigned i = 0; i < exp->nr_tls_identities; i++) {
        if (strcmp(exp->tls_identities[i], identity) == 0) {
            return true;
        }
    }
    return false;
}

bool conn_may_use_export(const struct conn *conn, const struct export *exp)
{
    return export_allows(exp, &conn->peer_addr) &&
           export_allows_identity(exp, conn->tls ? conn->tls_identity : NULL);
}

uint16_t export_tx_flags(const struct export *exp, bool structured)
{
    const struct backend *be = exp->be;
    uint16_t flags =
        PROTO_FLAG_HAS_FLAGS | PROTO_FLAG_SEND_FLUSH | PROTO_FLAG_SEND_FUA;
    if (backend_can_multi_conn(be)) {
        flags |= PROTO_FLAG_CAN_MULTI_CONN;
    }
    if (exp->read_only) {
        flags |= PROTO_FLAG_READ_ONLY;
    } else {
        if (backend_can_trim(be) && !exp->no_trim) {
            flags |= PROTO_FLAG_SEND_TRIM;
        }
        if (backend_can_zero(be)) {
            flags |= PROTO_FLAG_SEND_WRITE_ZEROES;
            if (backend_can_fast_zero(be)) {
                flags |= PROTO_FLAG_SEND_FAST_ZERO;
            }
        }
    }
    if (backend_can_cache(be)) {
        flags |= PROTO_FLAG_SEND_CACHE;
    }
    if (backend_is_rotational(be)) {
        flags |= PROTO_FLAG_ROTATIONAL;
    }
    if (structured) {
        flags |= PROTO_FLAG_SEND_DF;
    }
    return flags;
}

struct dirty_set *server_export_dirty(struct server *srv, const char *name)
{
    struct export_table *t = server_get_table(srv);
    struct dirty_set *set = NULL;
    for (unsigned i = 0; i < t->nr && set == NULL; i++) {
        if (strcmp(t->exps[i]->name, name) == 0 && t->exps[i]->dirty != NULL) {
            set = dirty_set_ref(t->exps[i]->dirty);
        }
    }
    export_table_unref(t);
    return set;
}

static void grace_task(void *arg)
{
    (void)arg; /* running at all is the point: no mark is in progress */
}

void server_dirty_reclaim(struct server *srv, struct dirty_set *set)
{
    for (unsigned i = 0; srv->loops != NULL && i < srv->loops->count; i++) {
        if (coro_run_sync(srv->loops->loops[i], grace_task, NULL) < 0) {
            /* Without a grace period the retired lists are kept; the
             * set frees them when it closes. */
            log_warning("dirty bitmaps: a loop did not answer: what the "
                        "change replaced is kept until the export closes");
            return;
        }
    }
    dirty_set_reclaim(set);
}

struct export_config export_config_of(const struct export *exp)
{
    return (struct export_config){
        .name = exp->name,
        .path = exp->path,
        .rbd = exp->rbd,
        .ceph_conf = exp->ceph_conf,
        .ceph_id = exp->ceph_id,
        .ceph_keyring = exp->ceph_keyring,
        .memory = exp->memory,
        .memory_size = exp->memory_size,
        .overlay = exp->overlay,
        .description = exp->description,
        .read_only = backend_read_only(exp->be),
        .direct = exp->direct,
        .no_trim = exp->no_trim,
        .allow = exp->allow,
        .nr_allow = exp->nr_allow,
        .tls_identities = (const char *const *)exp->tls_identities,
        .nr_tls_identities = exp->nr_tls_identities,
        .dirty_bitmaps = (const char *const *)exp->dirty_bitmaps,
        .nr_dirty_bitmaps = exp->nr_dirty_bitmaps,
        .dirty_bitmap_file = exp->dirty_bitmap_file,
        .dirty_granularity = exp->dirty_granularity,
    };
}
