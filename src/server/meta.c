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
 *  - qemu:dirty-bitmap:NAME, one for each dirty bitmap of the export
 *    (dirty-bitmap.h), as qemu-nbd serves a bitmap: status 1 for a block
 *    written, trimmed or zeroed since the bitmap began, 0 for the rest.
 *
 * A context's id is its index plus one, the same for every connection;
 * LIST replies carry id 0 ("reserved and SHOULD be set to zero").
 */
#include "server-int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct meta_context {
    const char *name;
    size_t namespace_len; /* "base:" */
    enum backend_meta backend;
};

static const struct meta_context contexts[SERVER_META_FIXED] = {
    [SERVER_META_ALLOCATION] = {"base:allocation", 5, BACKEND_META_ALLOCATION},
    [SERVER_META_DEPTH] = {"qemu:allocation-depth", 5, BACKEND_META_DEPTH},
};

#define DIRTY_PREFIX "qemu:dirty-bitmap:"
#define DIRTY_PREFIX_LEN (sizeof DIRTY_PREFIX - 1)

unsigned server_meta_count(const struct dirty_list *dl)
{
    return SERVER_META_FIXED + (dl != NULL ? dirty_list_count(dl) : 0);
}

const char *server_meta_name(const struct dirty_list *dl, unsigned m,
                             char buf[SERVER_META_NAME_MAX])
{
    if (m < SERVER_META_FIXED) {
        return contexts[m].name;
    }
    snprintf(buf, SERVER_META_NAME_MAX, DIRTY_PREFIX "%s",
             dirty_list_name(dl, m - SERVER_META_FIXED));
    return buf;
}

uint32_t server_meta_id(unsigned m)
{
    return (uint32_t)m + 1;
}

unsigned server_meta_offered(const struct export *exp,
                             const struct dirty_list *dl)
{
    unsigned offered = SERVER_META_BIT(SERVER_META_ALLOCATION);
    if (exp->overlay != NULL) {
        offered |= SERVER_META_BIT(SERVER_META_DEPTH);
    }
    for (unsigned m = SERVER_META_FIXED; m < server_meta_count(dl); m++) {
        offered |= SERVER_META_BIT(m);
    }
    return offered;
}

static bool starts_with(struct proto_string q, const char *prefix, size_t len)
{
    return q.len == len && memcmp(q.ptr, prefix, len) == 0;
}

/*
 * A namespace-only query ("base:", "qemu:") is a wildcard in LIST, and
 * so is "qemu:dirty-bitmap:" for the bitmaps, as qemu-nbd has it; in SET
 * they select nothing ("the server MUST ignore this form during
 * NBD_OPT_SET_META_CONTEXT" for base:, and qemu-nbd treats qemu: alike).
 * Other names, and contexts the export does not offer, are ignored.
 */
unsigned server_meta_match(const struct dirty_list *dl, unsigned offered,
                           struct proto_string q, bool set)
{
    unsigned named = 0;
    char buf[SERVER_META_NAME_MAX];
    for (unsigned m = 0; m < server_meta_count(dl); m++) {
        const char *name = server_meta_name(dl, m, buf);
        bool whole = q.len == strlen(name) && memcmp(q.ptr, name, q.len) == 0;
        bool wildcard =
            !set && (starts_with(q, name, 5) ||
                     (m >= SERVER_META_FIXED &&
                      starts_with(q, DIRTY_PREFIX, DIRTY_PREFIX_LEN)));
        if (whole || wildcard) {
            named |= SERVER_META_BIT(m);
        }
    }
    return named & offered;
}

/* Bitmap `i`'s map: dirty is status 1, as qemu-nbd reports it. */
static int dirty_extents(const struct dirty_list *dl, unsigned i,
                         uint64_t offset, uint64_t len,
                         struct proto_extent *out, unsigned max)
{
    if (offset >= dirty_list_size(dl) || len == 0) {
        return -EINVAL;
    }
    struct dirty_run runs[64];
    unsigned n = 0;
    while (n < max && len > 0) {
        unsigned want = max - n < 64 ? max - n : 64;
        unsigned got = dirty_list_map(dl, i, offset, len, runs, want);
        for (unsigned k = 0; k < got; k++) {
            if (n > 0 && (out[n - 1].status != 0) == runs[k].dirty) {
                out[n - 1].length += runs[k].length;
            } else {
                out[n++] = (struct proto_extent){
                    .length = runs[k].length, .status = runs[k].dirty ? 1 : 0};
            }
            offset += runs[k].length;
            len -= runs[k].length;
        }
        if (got < want) {
            break; /* the end of the image */
        }
    }
    return (int)n;
}

int server_meta_extents(const struct export *exp, const struct dirty_list *dl,
                        unsigned m, uint64_t offset, uint64_t len,
                        struct backend_extent *scratch,
                        struct proto_extent *out, unsigned max)
{
    if (m >= SERVER_META_FIXED) {
        return dirty_extents(dl, m - SERVER_META_FIXED, offset, len, out, max);
    }
    int nr = backend_extents_meta(exp->be, contexts[m].backend, offset, len,
                                  scratch, max);
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
