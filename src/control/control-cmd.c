/* SPDX-License-Identifier: MIT */
/*
 * The control socket's commands: each request becomes a server or
 * configuration call and its reply a JSON object.
 *
 * add and change build the export with config_export_parse, the
 * configuration file's own table and checks, then change the server's
 * export table with server_edit_export, as a reload would (a removed or
 * replaced export stops being offered; its clients finish).  change
 * starts from the export's current keys (as --check-config prints them)
 * and replaces those it is given.  The exports so made are kept here
 * (ctl->live) as the base of a later change, until a reload: a reload
 * reads the configuration file again, which is what stands then.
 */
#include "control-int.h"
#include "nbdsrv/log.h"
#include "nbdsrv/version.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct json_object *control_error(const char *msg)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

static struct json_object *ok(void)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, v != NULL ? json_object_new_string(v) : NULL);
}

static void add_u64(struct json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_uint64(v));
}

static void export_cb(void *opaque, const struct server_export_info *info)
{
    struct json_object *e = json_object_new_object();
    add_str(e, "name", info->name);
    add_str(e, "backend", info->backend);
    add_str(e, "path", info->path);
    add_str(e, "overlay", info->overlay);
    add_u64(e, "size", info->size);
    json_object_object_add(e, "read-only",
                           json_object_new_boolean(info->read_only));
    add_u64(e, "connections", info->connections);
    add_u64(e, "bytes-read", info->bytes_read);
    add_u64(e, "bytes-written", info->bytes_written);
    add_u64(e, "requests-in-flight", info->requests_inflight);
    json_object_array_add(opaque, e);
}

static void conn_cb(void *opaque, const struct server_conn_info *info)
{
    struct json_object *c = json_object_new_object();
    add_u64(c, "id", info->id);
    add_str(c, "peer", info->peer);
    add_str(c, "export", info->export_name);
    json_object_object_add(c, "tls", json_object_new_boolean(info->tls));
    add_str(c, "tls-identity",
            info->tls_identity[0] != '\0' ? info->tls_identity : NULL);
    add_str(c, "tls-version", info->tls_version);
    add_str(c, "tls-cipher", info->tls_cipher);
    json_object_object_add(c, "started", json_object_new_int64(info->started));
    add_u64(c, "requests-in-flight", info->requests_inflight);
    add_u64(c, "bytes-read", info->bytes_read);
    add_u64(c, "bytes-written", info->bytes_written);
    json_object_object_add(c, "disconnecting",
                           json_object_new_boolean(info->disconnecting));
    json_object_array_add(opaque, c);
}

static struct json_object *cmd_status(struct control *ctl)
{
    struct server_status st;
    server_get_status(ctl->env.srv, &st);
    struct json_object *o = ok();
    add_str(o, "version", NBDSRV_VERSION);
    int64_t now = (int64_t)time(NULL);
    json_object_object_add(o, "started", json_object_new_int64(st.started));
    json_object_object_add(
        o, "uptime",
        json_object_new_int64(now > st.started ? now - st.started : 0));
    add_u64(o, "threads", st.threads);
    add_u64(o, "connections", st.connections);
    add_u64(o, "exports", st.exports);
    add_u64(o, "buffer-memory-used", st.buffer_memory_used);
    struct json_object *l = json_object_new_object();
    add_u64(l, "max-connections", st.limits.max_connections);
    add_u64(l, "max-connections-per-client",
            st.limits.max_connections_per_client);
    add_u64(l, "max-requests-per-connection", st.limits.max_requests);
    add_u64(l, "max-payload", st.limits.max_payload);
    add_u64(l, "max-buffer-memory", st.limits.max_buffer_memory);
    add_u64(l, "max-buffer-memory-per-connection",
            st.limits.max_inflight_bytes);
    json_object_object_add(
        l, "handshake-timeout",
        json_object_new_double((double)st.limits.handshake_timeout_ns / 1e9));
    json_object_object_add(
        l, "request-timeout",
        json_object_new_double((double)st.limits.request_timeout_ns / 1e9));
    json_object_object_add(
        l, "shutdown-timeout",
        json_object_new_double((double)st.limits.shutdown_timeout_ns / 1e9));
    json_object_object_add(o, "limits", l);
    return o;
}

/* ---- Live exports ---- */

void control_live_clear(struct control *ctl)
{
    for (unsigned i = 0; i < ctl->nr_live; i++) {
        config_export_free(ctl->live[i]);
    }
    free(ctl->live);
    ctl->live = NULL;
    ctl->nr_live = 0;
}

static int live_find(const struct control *ctl, const char *name)
{
    for (unsigned i = 0; i < ctl->nr_live; i++) {
        if (strcmp(ctl->live[i]->name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void live_drop(struct control *ctl, const char *name)
{
    int i = live_find(ctl, name);
    if (i >= 0) {
        config_export_free(ctl->live[i]);
        ctl->live[i] = ctl->live[--ctl->nr_live];
    }
}

/* Keeps ce (taken) as the current form of its export. */
static void live_keep(struct control *ctl, struct config_export *ce)
{
    live_drop(ctl, ce->name);
    struct config_export **grown =
        realloc(ctl->live, (ctl->nr_live + 1) * sizeof *grown);
    if (grown == NULL) {
        config_export_free(ce);
        return;
    }
    ctl->live = grown;
    ctl->live[ctl->nr_live++] = ce;
}

/* The current keys of export `name`: live, else from the configuration. */
static const struct config_export *current(struct control *ctl,
                                           const char *name)
{
    int i = live_find(ctl, name);
    if (i >= 0) {
        return ctl->live[i];
    }
    const struct config *cfg = *ctl->env.cfg;
    for (unsigned j = 0; j < cfg->nr_exports; j++) {
        if (strcmp(cfg->exports[j].name, name) == 0) {
            return &cfg->exports[j];
        }
    }
    return NULL;
}

/*
 * The settings of `base` with those of `req` replacing each key it
 * names: written to *text (owned, holds the strings) and *out (owned).
 */
static int merge(const struct config_export *base,
                 const struct control_request *req, char **text,
                 struct config_setting **out, unsigned *nr)
{
    size_t size = 0;
    FILE *f = open_memstream(text, &size);
    if (f == NULL) {
        return -ENOMEM;
    }
    config_export_print(base, f);
    fclose(f);
    unsigned cap = req->nr_settings + 64, n = 0;
    struct config_setting *s = calloc(cap, sizeof *s);
    if (s == NULL) {
        free(*text);
        *text = NULL;
        return -ENOMEM;
    }
    char *save = NULL;
    for (char *line = strtok_r(*text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strstr(line, " =");
        if (line[0] == '#' || eq == NULL || n + req->nr_settings >= cap) {
            continue;
        }
        *eq = '\0';
        char *value = eq + 2;
        if (*value == ' ') {
            value++;
        }
        bool replaced = false;
        for (unsigned i = 0; i < req->nr_settings; i++) {
            replaced = replaced || strcmp(req->settings[i].key, line) == 0;
        }
        if (!replaced) {
            s[n++] = (struct config_setting){line, value};
        }
    }
    for (unsigned i = 0; i < req->nr_settings; i++) {
        s[n++] = req->settings[i];
    }
    *out = s;
    *nr = n;
    return 0;
}

static struct json_object *cmd_edit(struct control *ctl,
                                    const struct control_request *req)
{
    struct err err;
    err_clear(&err);
    char *text = NULL;
    struct config_setting *settings = NULL;
    unsigned nr = req->nr_settings;
    const struct config_setting *use = req->settings;
    enum server_edit how = SERVER_EDIT_ADD;
    if (req->cmd == CONTROL_CHANGE) {
        how = SERVER_EDIT_CHANGE;
        const struct config_export *base = current(ctl, req->name);
        if (base == NULL) {
            err_set(&err, ENOENT, "name: no export '%s'", req->name);
            goto fail;
        }
        if (merge(base, req, &text, &settings, &nr) < 0) {
            err_set(&err, ENOMEM, "out of memory");
            goto fail;
        }
        use = settings;
    }
    struct config_export *ce = config_export_parse(req->name, use, nr, &err);
    if (ce == NULL) {
        goto fail;
    }
    if (server_edit_export(ctl->env.srv, how, req->name, &ce->ec, &err) < 0) {
        config_export_free(ce);
        goto fail;
    }
    log_info("control socket: export '%s' %s", req->name,
             how == SERVER_EDIT_ADD ? "added" : "changed");
    live_keep(ctl, ce);
    free(settings);
    free(text);
    return ok();

fail:
    free(settings);
    free(text);
    return control_error(err.msg);
}

static struct json_object *cmd_remove(struct control *ctl,
                                      const struct control_request *req)
{
    struct err err;
    err_clear(&err);
    if (server_edit_export(ctl->env.srv, SERVER_EDIT_REMOVE, req->name, NULL,
                           &err) < 0) {
        return control_error(err.msg);
    }
    live_drop(ctl, req->name);
    return ok();
}

struct json_object *control_exec(struct control *ctl,
                                 const struct control_request *req)
{
    struct json_object *o, *list;
    struct err err;
    err_clear(&err);
    switch (req->cmd) {
    case CONTROL_EXPORTS:
        list = json_object_new_array();
        server_list_exports(ctl->env.srv, export_cb, list);
        o = ok();
        json_object_object_add(o, "exports", list);
        return o;
    case CONTROL_CONNECTIONS:
        list = json_object_new_array();
        server_list_conns(ctl->env.srv, conn_cb, list);
        o = ok();
        json_object_object_add(o, "connections", list);
        return o;
    case CONTROL_STATUS:
        return cmd_status(ctl);
    case CONTROL_ADD:
    case CONTROL_CHANGE:
        return cmd_edit(ctl, req);
    case CONTROL_REMOVE:
        return cmd_remove(ctl, req);
    case CONTROL_DISCONNECT:
        if (server_disconnect(ctl->env.srv, req->id) < 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "id: no connection %llu",
                     (unsigned long long)req->id);
            return control_error(msg);
        }
        return ok();
    case CONTROL_RELOAD:
        if (ctl->env.reload(ctl->env.opaque, &err) < 0) {
            return control_error(err.msg);
        }
        return ok();
    case CONTROL_BITMAPS:
    case CONTROL_BITMAP_ADD:
    case CONTROL_CHECKPOINT:
    case CONTROL_BITMAP_CLEAR:
    case CONTROL_BITMAP_REMOVE:
    case CONTROL_BITMAP_MERGE:
        return control_bitmap_exec(ctl, req);
    }
    return control_error("command: not handled");
}
