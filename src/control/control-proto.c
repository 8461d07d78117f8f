/* SPDX-License-Identifier: MIT */
/*
 * The control socket's requests: one JSON object per line, parsed with
 * json-c into a struct control_request.  Pure and fuzzed
 * (tests/fuzz/fuzz-control-request.c): any bytes give a request or an
 * error naming the field at fault, never a crash.
 *
 * json-c's tokener takes the line with its length, so a NUL inside is
 * just a parse error; the depth is bounded (CONTROL_JSON_DEPTH), so a
 * deeply nested line cannot exhaust the stack; and the whole line must
 * be one object with nothing after it.
 */
#include "nbdsrv/control.h"

#include <errno.h>
#include <inttypes.h>
#include <json.h>
#include <stdlib.h>
#include <string.h>

/* Nesting a request needs: the object, settings, a list of values. */
#define CONTROL_JSON_DEPTH 8

static const char *const cmd_names[] = {
    [CONTROL_EXPORTS] = "exports",
    [CONTROL_CONNECTIONS] = "connections",
    [CONTROL_STATUS] = "status",
    [CONTROL_ADD] = "add",
    [CONTROL_CHANGE] = "change",
    [CONTROL_REMOVE] = "remove",
    [CONTROL_DISCONNECT] = "disconnect",
    [CONTROL_RELOAD] = "reload",
    [CONTROL_BITMAPS] = "bitmaps",
    [CONTROL_BITMAP_ADD] = "bitmap-add",
    [CONTROL_CHECKPOINT] = "checkpoint",
    [CONTROL_BITMAP_CLEAR] = "bitmap-clear",
    [CONTROL_BITMAP_REMOVE] = "bitmap-remove",
    [CONTROL_BITMAP_MERGE] = "bitmap-merge",
};

const char *control_cmd_name(enum control_cmd cmd)
{
    return cmd_names[cmd];
}

void control_request_fini(struct control_request *req)
{
    free(req->settings);
    req->settings = NULL;
    req->nr_settings = 0;
    json_object_put(req->obj);
    req->obj = NULL;
}

/* A string member `key` of obj: 0, or -EINVAL with err naming it. */
static int get_string(struct json_object *obj, const char *key,
                      const char **out, struct err *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v)) {
        return err_set(err, EINVAL, "%s: missing", key);
    }
    if (!json_object_is_type(v, json_type_string)) {
        return err_set(err, EINVAL, "%s: expected a string", key);
    }
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v)) {
        return err_set(err, EINVAL, "%s: contains a NUL character", key);
    }
    *out = s;
    return 0;
}

/* Appends key = value to req's settings. */
static int push_setting(struct control_request *req, const char *key,
                        struct json_object *v, struct err *err)
{
    if (!json_object_is_type(v, json_type_string)) {
        return err_set(err, EINVAL,
                       "settings.%s: expected a string or a list of strings",
                       key);
    }
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v)) {
        return err_set(err, EINVAL, "settings.%s: contains a NUL character",
                       key);
    }
    struct config_setting *grown =
        realloc(req->settings, (req->nr_settings + 1) * sizeof *grown);
    if (grown == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    req->settings = grown;
    req->settings[req->nr_settings++] = (struct config_setting){key, s};
    return 0;
}

/* "settings": {KEY: VALUE or [VALUE...]}. */
static int get_settings(struct control_request *req, struct err *err)
{
    struct json_object *set;
    if (!json_object_object_get_ex(req->obj, "settings", &set)) {
        return err_set(err, EINVAL, "settings: missing");
    }
    if (!json_object_is_type(set, json_type_object)) {
        return err_set(err, EINVAL, "settings: expected an object");
    }
    if (json_object_object_length(set) == 0) {
        return err_set(err, EINVAL, "settings: no key given");
    }
    json_object_object_foreach(set, key, v)
    {
        if (strlen(key) == 0) {
            return err_set(err, EINVAL, "settings: a key is empty");
        }
        if (!json_object_is_type(v, json_type_array)) {
            int r = push_setting(req, key, v, err);
            if (r < 0) {
                return r;
            }
            continue;
        }
        size_t n = json_object_array_length(v);
        if (n == 0) {
            return err_set(err, EINVAL, "settings.%s: the list is empty", key);
        }
        for (size_t i = 0; i < n; i++) {
            int r =
                push_setting(req, key, json_object_array_get_idx(v, i), err);
            if (r < 0) {
                return r;
            }
        }
    }
    return 0;
}

/* "id": a positive integer. */
static int get_id(struct control_request *req, struct err *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(req->obj, "id", &v)) {
        return err_set(err, EINVAL, "id: missing");
    }
    if (!json_object_is_type(v, json_type_int)) {
        return err_set(err, EINVAL, "id: expected a connection number");
    }
    errno = 0;
    int64_t id = json_object_get_int64(v);
    if (id <= 0 || errno != 0) {
        return err_set(err, EINVAL, "id: expected a connection number");
    }
    req->id = (uint64_t)id;
    return 0;
}

/* Every member of the request must be one its command takes. */
static int check_members(const struct control_request *req, struct err *err)
{
    json_object_object_foreach(req->obj, key, v)
    {
        (void)v;
        bool ok = strcmp(key, "command") == 0;
        switch (req->cmd) {
        case CONTROL_ADD:
        case CONTROL_CHANGE:
            ok = ok || strcmp(key, "name") == 0 || strcmp(key, "settings") == 0;
            break;
        case CONTROL_REMOVE:
        case CONTROL_BITMAPS:
            ok = ok || strcmp(key, "name") == 0;
            break;
        case CONTROL_BITMAP_ADD:
        case CONTROL_BITMAP_CLEAR:
        case CONTROL_BITMAP_REMOVE:
            ok = ok || strcmp(key, "name") == 0 || strcmp(key, "bitmap") == 0;
            break;
        case CONTROL_CHECKPOINT:
            ok = ok || strcmp(key, "name") == 0 || strcmp(key, "bitmap") == 0 ||
                 strcmp(key, "new") == 0;
            break;
        case CONTROL_BITMAP_MERGE:
            ok = ok || strcmp(key, "name") == 0 || strcmp(key, "bitmap") == 0 ||
                 strcmp(key, "into") == 0;
            break;
        case CONTROL_DISCONNECT:
            ok = ok || strcmp(key, "id") == 0;
            break;
        default:
            break;
        }
        if (!ok) {
            return err_set(err, EINVAL, "%.100s: not a field of command %s",
                           key, control_cmd_name(req->cmd));
        }
    }
    return 0;
}

int control_parse_request(const char *line, size_t len,
                          struct control_request *req, struct err *err)
{
    *req = (struct control_request){0};
    if (len > CONTROL_MAX_LINE) {
        return err_set(err, EINVAL, "request: longer than %u bytes",
                       CONTROL_MAX_LINE);
    }
    struct json_tokener *tok = json_tokener_new_ex(CONTROL_JSON_DEPTH);
    if (tok == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    req->obj = json_tokener_parse_ex(tok, line, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int r;
    if (req->obj == NULL || jerr != json_tokener_success) {
        r = err_set(err, EINVAL, "request: not JSON (%s)",
                    jerr == json_tokener_continue
                        ? "unexpected end of line"
                        : json_tokener_error_desc(jerr));
        goto fail;
    }
    for (; used < len; used++) {
        if (line[used] != ' ' && line[used] != '\t' && line[used] != '\r') {
            r = err_set(err, EINVAL, "request: text after the JSON object");
            goto fail;
        }
    }
    if (!json_object_is_type(req->obj, json_type_object)) {
        r = err_set(err, EINVAL, "request: expected a JSON object");
        goto fail;
    }
    const char *cmd;
    r = get_string(req->obj, "command", &cmd, err);
    if (r < 0) {
        goto fail;
    }
    bool known = false;
    for (unsigned i = 0; i < sizeof cmd_names / sizeof cmd_names[0]; i++) {
        if (strcmp(cmd, cmd_names[i]) == 0) {
            req->cmd = (enum control_cmd)i;
            known = true;
        }
    }
    if (!known) {
        r = err_set(err, EINVAL, "command: unknown command '%.100s'", cmd);
        goto fail;
    }
    r = check_members(req, err);
    if (r < 0) {
        goto fail;
    }
    switch (req->cmd) {
    case CONTROL_ADD:
    case CONTROL_CHANGE:
        r = get_string(req->obj, "name", &req->name, err);
        if (r == 0) {
            r = get_settings(req, err);
        }
        break;
    case CONTROL_REMOVE:
    case CONTROL_BITMAPS:
        r = get_string(req->obj, "name", &req->name, err);
        break;
    case CONTROL_BITMAP_ADD:
    case CONTROL_BITMAP_CLEAR:
    case CONTROL_BITMAP_REMOVE:
    case CONTROL_CHECKPOINT:
    case CONTROL_BITMAP_MERGE:
        r = get_string(req->obj, "name", &req->name, err);
        if (r == 0) {
            r = get_string(req->obj, "bitmap", &req->bitmap, err);
        }
        if (r == 0 && req->cmd == CONTROL_CHECKPOINT) {
            r = get_string(req->obj, "new", &req->other, err);
        }
        if (r == 0 && req->cmd == CONTROL_BITMAP_MERGE) {
            r = get_string(req->obj, "into", &req->other, err);
        }
        break;
    case CONTROL_DISCONNECT:
        r = get_id(req, err);
        break;
    default:
        break;
    }
    if (r < 0) {
        goto fail;
    }
    return 0;

fail:
    control_request_fini(req);
    return r;
}
