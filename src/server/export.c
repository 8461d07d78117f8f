/* SPDX-License-Identifier: MIT */
/*
 * Exports: the name-to-image map and what each export advertises.
 *
 * A client names an export; the name is only ever looked up in this
 * list, never used as a path.  The first export also answers to "".
 */
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const struct export *server_find_export(const struct server *srv,
                                        const char *name, size_t len)
{
    if (len == 0 && srv->nr_exports > 0) {
        return &srv->exports[0];
    }
    for (unsigned i = 0; i < srv->nr_exports; i++) {
        const struct export *exp = &srv->exports[i];
        if (strlen(exp->name) == len && memcmp(exp->name, name, len) == 0) {
            return exp;
        }
    }
    return NULL;
}

uint16_t export_tx_flags(const struct export *exp, bool structured)
{
    const struct backend *be = exp->be;
    uint16_t flags = PROTO_FLAG_HAS_FLAGS | PROTO_FLAG_SEND_FLUSH |
                     PROTO_FLAG_SEND_FUA | PROTO_FLAG_CAN_MULTI_CONN;
    if (exp->read_only) {
        flags |= PROTO_FLAG_READ_ONLY;
    } else {
        if (backend_can_trim(be)) {
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
