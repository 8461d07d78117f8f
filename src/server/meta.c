/* SPDX-License-Identifier: MIT */
/*
 * The metadata contexts the server serves (NBD protocol, "Metadata
 * querying" and "Metadata contexts"): their names, which exports offer
 * them, how a LIST or SET query names them, and their maps in NBD form.
 *
 *  - base:allocation, on every export: NBD_STATE_HOLE | NBD_STATE_ZERO
 *    for a hole, 0 for data.
 *  - qemu:allocation-depth, on exports with an overlay, as qemu-nbd
 *    serves it: the status is the depth, 1 for what the overlay holds, 2
 *    for what it reads from the base (0, held by no layer, does not occur:
 *    the base holds every byte, as a raw image does in qemu).
 *
 * A context's id is its index plus one, the same for every connection;
 * LIST replies carry id 0 ("reserved and SHOULD be set to zero").
 */
#include "server-int.h"

#include <string.h>

struct meta_context {
    const char *name;
    size_t namespace_len; /* "base:" */
    enum backend_meta backend;
};

static const struct meta_context contexts[SERVER_META_COUNT] = {
    [SERVER_META_ALLOCATION] = {"base:allocation", 5, BACKEND_META_ALLOCATION},
    [SERVER_META_DEPTH] = {"qemu:allocation-depth", 5, BACKEND_META_DEPTH},
};

const char *server_meta_name(enum server_meta m)
{
    return contexts[m].name;
}

uint32_t server_meta_id(enum server_meta m)
{
    return (uint32_t)m + 1;
}

unsigned server_meta_offered(const struct export *exp)
{
    unsigned offered = SERVER_META_BIT(SERVER_META_ALLOCATION);
    if (exp->overlay != NULL) {
        offered |= SERVER_META_BIT(SERVER_META_DEPTH);
    }
    return offered;
}

/*
 * A namespace-only query ("base:", "qemu:") is a wildcard in LIST; in
 * SET it selects nothing ("the server MUST ignore this form during
 * NBD_OPT_SET_META_CONTEXT" for base:, and qemu-nbd treats qemu: alike).
 * Other names, and contexts the export does not offer, are ignored.
 */
unsigned server_meta_match(unsigned offered, struct proto_string q, bool set)
{
    unsigned named = 0;
    for (unsigned m = 0; m < SERVER_META_COUNT; m++) {
        const struct meta_context *c = &contexts[m];
        bool whole =
            q.len == strlen(c->name) && memcmp(q.ptr, c->name, q.len) == 0;
        bool wildcard = !set && q.len == c->namespace_len &&
                        memcmp(q.ptr, c->name, q.len) == 0;
        if (whole || wildcard) {
            named |= SERVER_META_BIT(m);
        }
    }
    return named & offered;
}

int server_meta_extents(struct backend *be, enum server_meta m, uint64_t offset,
                        uint64_t len, struct backend_extent *scratch,
                        struct proto_extent *out, unsigned max)
{
    int nr = backend_extents_meta(be, contexts[m].backend, offset, len, scratch,
                                  max);
    for (int i = 0; i < nr; i++) {
        out[i].length = scratch[i].length;
        if (m == SERVER_META_DEPTH) {
            out[i].status = scratch[i].depth;
        } else {
            out[i].status =
                scratch[i].hole ? (PROTO_STATE_HOLE | PROTO_STATE_ZERO) : 0;
        }
    }
    return nr;
}
