/* SPDX-License-Identifier: MIT */
/*
 * The control socket's dirty-bitmap commands: list the bitmaps of an
 * export, and create, checkpoint, clear, remove and merge them
 * (dirty-bitmap.h).  Each change writes the export's bitmap file before
 * it is answered; then, after a grace period over the loops
 * (server_dirty_reclaim), what it replaced is freed.  Changes are made
 * on the export's live set: a reload that keeps the export keeps them;
 * bitmaps its configuration names come back (empty) if removed.
 */
#include "control-int.h"
#include "nbdsrv/dirty-bitmap.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>

static struct json_object *list_bitmaps(struct dirty_set *set)
{
    struct dirty_list *l = dirty_set_list(set);
    struct json_object *arr = json_object_new_array();
    for (unsigned i = 0; i < dirty_list_count(l); i++) {
        struct json_object *b = json_object_new_object();
        json_object_object_add(b, "name",
                               json_object_new_string(dirty_list_name(l, i)));
        json_object_object_add(
            b, "frozen", json_object_new_boolean(dirty_list_frozen(l, i)));
        json_object_object_add(
            b, "dirty-bytes",
            json_object_new_uint64(dirty_list_dirty_bytes(l, i)));
        json_object_object_add(
            b, "granularity",
            json_object_new_uint64(dirty_set_granularity(set)));
        json_object_array_add(arr, b);
    }
    dirty_list_unref(l);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    json_object_object_add(o, "bitmaps", arr);
    return o;
}

struct json_object *control_bitmap_exec(struct control *ctl,
                                        const struct control_request *req)
{
    struct dirty_set *set = server_export_dirty(ctl->env.srv, req->name);
    if (set == NULL) {
        char msg[256];
        snprintf(msg, sizeof msg, "name: no export %.100s keeps dirty bitmaps",
                 req->name);
        return control_error(msg);
    }
    if (req->cmd == CONTROL_BITMAPS) {
        struct json_object *o = list_bitmaps(set);
        dirty_set_unref(set);
        return o;
    }
    struct err err;
    err_clear(&err);
    int r = -EINVAL;
    switch (req->cmd) {
    case CONTROL_BITMAP_ADD:
        r = dirty_set_create(set, req->bitmap, &err);
        break;
    case CONTROL_CHECKPOINT:
        r = dirty_set_checkpoint(set, req->bitmap, req->other, &err);
        break;
    case CONTROL_BITMAP_CLEAR:
        r = dirty_set_clear(set, req->bitmap, &err);
        break;
    case CONTROL_BITMAP_REMOVE:
        r = dirty_set_remove(set, req->bitmap, &err);
        break;
    case CONTROL_BITMAP_MERGE:
        r = dirty_set_merge(set, req->bitmap, req->other, &err);
        break;
    default:
        err_set(&err, EINVAL, "command: not a bitmap command");
        break;
    }
    if (r == 0) {
        server_dirty_reclaim(ctl->env.srv, set);
    }
    dirty_set_unref(set);
    if (r < 0) {
        return control_error(err.msg);
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}
