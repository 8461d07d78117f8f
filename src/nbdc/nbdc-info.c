/* SPDX-License-Identifier: MIT */
/*
 * nbdc info: what the handshake tells about an export (size, flags,
 * block sizes, description), the export list (--list) and the
 * allocation map (--map), as text or as JSON whose keys follow
 * nbdinfo's, so scripts can compare the two.
 */
#include "nbdc-int.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/tls-creds.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct info_ctx {
    const char *text;
    bool json, list, map;
    struct client_uri uri;
    int rc;
};

static void json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static const char *jbool(bool b)
{
    return b ? "true" : "false";
}

static void print_protocol(const struct client_info *info)
{
    if (info == NULL) {
        return;
    }
    printf("  \"protocol\": \"newstyle-fixed\",\n");
    printf("  \"TLS\": %s,\n", jbool(info->tls));
    if (info->tls) {
        printf("  \"TLS-version\": ");
        json_string(info->tls_version);
        printf(",\n  \"TLS-cipher\": ");
        json_string(info->tls_cipher);
        printf(",\n");
    }
    printf("  \"structured\": %s,\n", jbool(info->structured));
    printf("  \"extended\": %s,\n", jbool(info->extended));
}

/* "protocol: ..." of the text output, with TLS's version and cipher. */
static void print_protocol_text(const struct client_info *info)
{
    if (info->tls) {
        printf("protocol: newstyle-fixed with TLS (%s, %s)\n",
               info->tls_version, info->tls_cipher);
    } else {
        printf("protocol: newstyle-fixed without TLS\n");
    }
}

static void print_export_json(const struct client_info *info, bool last)
{
    uint16_t f = info->tx_flags;
    printf("    {\n");
    printf("      \"export-name\": ");
    json_string(info->name);
    printf(",\n");
    if (info->description != NULL) {
        printf("      \"description\": ");
        json_string(info->description);
        printf(",\n");
    }
    printf("      \"export-size\": %" PRIu64 ",\n", info->size);
    if (info->has_block_size) {
        printf("      \"block_size_minimum\": %" PRIu32 ",\n", info->block_min);
        printf("      \"block_size_preferred\": %" PRIu32 ",\n",
               info->block_pref);
        printf("      \"block_size_maximum\": %" PRIu32 ",\n", info->block_max);
    }
    printf("      \"is_rotational\": %s,\n", jbool(f & PROTO_FLAG_ROTATIONAL));
    printf("      \"is_read_only\": %s,\n", jbool(f & PROTO_FLAG_READ_ONLY));
    printf("      \"can_cache\": %s,\n", jbool(f & PROTO_FLAG_SEND_CACHE));
    printf("      \"can_df\": %s,\n",
           jbool(info->structured && (f & PROTO_FLAG_SEND_DF)));
    printf("      \"can_fast_zero\": %s,\n",
           jbool(f & PROTO_FLAG_SEND_FAST_ZERO));
    printf("      \"can_flush\": %s,\n", jbool(f & PROTO_FLAG_SEND_FLUSH));
    printf("      \"can_fua\": %s,\n", jbool(f & PROTO_FLAG_SEND_FUA));
    printf("      \"can_multi_conn\": %s,\n",
           jbool(f & PROTO_FLAG_CAN_MULTI_CONN));
    printf("      \"can_trim\": %s,\n", jbool(f & PROTO_FLAG_SEND_TRIM));
    printf("      \"can_zero\": %s,\n",
           jbool(f & PROTO_FLAG_SEND_WRITE_ZEROES));
    printf("      \"contexts\": [%s]\n",
           info->has_alloc ? "\"base:allocation\"" : "");
    printf("    }%s\n", last ? "" : ",");
}

static void print_export_text(const struct client_info *info)
{
    char flags[256];
    proto_format_flags(PROTO_FIELD_TX, info->tx_flags, flags, sizeof flags);
    printf("export=\"%s\":\n", info->name);
    if (info->description != NULL) {
        printf("\tdescription: %s\n", info->description);
    }
    printf("\texport-size: %" PRIu64 "\n", info->size);
    printf("\ttransmission flags: %s\n", flags);
    if (info->has_block_size) {
        printf("\tblock_size_minimum: %" PRIu32 "\n", info->block_min);
        printf("\tblock_size_preferred: %" PRIu32 "\n", info->block_pref);
        printf("\tblock_size_maximum: %" PRIu32 "\n", info->block_max);
    }
    printf("\tstructured replies: %s\n", info->structured ? "yes" : "no");
    printf("\textended headers: %s\n", info->extended ? "yes" : "no");
    printf("\tcontexts: %s\n", info->has_alloc ? "base:allocation" : "none");
    printf("\tnegotiated with: %s\n",
           info->used_go ? "NBD_OPT_GO" : "NBD_OPT_EXPORT_NAME");
}

static const char *extent_description(uint32_t flags)
{
    switch (flags & 3) {
    case 0:
        return "data";
    case 1:
        return "hole";
    case 2:
        return "zero";
    default:
        return "hole,zero";
    }
}

static int print_map(struct info_ctx *ctx, struct client_conn *c)
{
    const struct client_info *info = client_info(c);
    struct client_extent ext[1024];
    uint64_t off = 0;
    bool first = true;
    if (!info->has_alloc) {
        nbdc_error("%s: the server does not support base:allocation",
                   ctx->text);
        return NBDC_EXIT_FAIL;
    }
    if (ctx->json) {
        printf("[\n");
    }
    while (off < info->size) {
        int n = client_block_status(c, info->size - off, off, 0, ext,
                                    ARRAY_SIZE(ext));
        if (n < 0) {
            nbdc_error("%s: block status at %" PRIu64 ": %s", ctx->text, off,
                       strerror(-n));
            return NBDC_EXIT_FAIL;
        }
        for (int i = 0; i < n && off < info->size; i++) {
            uint64_t len = ext[i].length;
            if (len > info->size - off) {
                len = info->size - off;
            }
            if (ctx->json) {
                printf("%s{ \"offset\": %" PRIu64 ", \"length\": %" PRIu64
                       ", \"type\": %" PRIu32 ", \"description\": \"%s\" }",
                       first ? "" : ",\n", off, len, ext[i].flags & 3,
                       extent_description(ext[i].flags));
            } else {
                printf("%12" PRIu64 " %12" PRIu64 " %3" PRIu32 "  %s\n", off,
                       len, ext[i].flags & 3, extent_description(ext[i].flags));
            }
            first = false;
            off += len;
        }
    }
    if (ctx->json) {
        printf("\n]\n");
    }
    return NBDC_EXIT_OK;
}

static int do_list(struct info_ctx *ctx)
{
    char **names, **descs;
    size_t n;
    struct err err = {0};
    struct client_opts opts = {.handshake_timeout_ns =
                                   NBDC_HANDSHAKE_TIMEOUT_NS};
    if (ctx->uri.tls) {
        /* Loaded once for the listing and every export's connection. */
        opts.tls_creds = client_tls_creds_new(&ctx->uri, &err);
        if (opts.tls_creds == NULL) {
            nbdc_error("%s: %s", ctx->text, err.msg);
            return NBDC_EXIT_FAIL;
        }
    }
    if (client_list_exports(&ctx->uri, &opts, &names, &descs, &n, &err) < 0) {
        nbdc_error("%s: %s", ctx->text, err.msg);
        tls_creds_unref(opts.tls_creds);
        return NBDC_EXIT_FAIL;
    }
    int rc = NBDC_EXIT_OK;
    bool header = false;
    if (ctx->json) {
        printf("{\n");
    }
    for (size_t i = 0; i < n; i++) {
        struct client_uri u = ctx->uri;
        u.export_name = names[i];
        struct client_conn *c = client_connect(&u, &opts, &err);
        if (c == NULL) {
            nbdc_error("%s: export '%s': %s", ctx->text, names[i], err.msg);
            rc = NBDC_EXIT_FAIL;
            continue;
        }
        const struct client_info *info = client_info(c);
        if (ctx->json) {
            if (!header) {
                print_protocol(info);
                printf("  \"exports\": [\n");
                header = true;
            }
            print_export_json(info, i + 1 == n);
        } else {
            if (!header) {
                print_protocol_text(info);
                header = true;
            }
            print_export_text(info);
        }
        client_close(c);
    }
    if (ctx->json) {
        if (!header) {
            printf("  \"exports\": [\n");
        }
        printf("  ]\n}\n");
    }
    client_free_list(names, descs, n);
    tls_creds_unref(opts.tls_creds);
    return rc;
}

static void info_entry(void *arg)
{
    struct info_ctx *ctx = arg;
    if (ctx->list) {
        ctx->rc = do_list(ctx);
        return;
    }
    struct err err = {0};
    struct client_opts opts = {.handshake_timeout_ns =
                                   NBDC_HANDSHAKE_TIMEOUT_NS};
    struct client_conn *c = client_connect(&ctx->uri, &opts, &err);
    if (c == NULL) {
        nbdc_error("%s: %s", ctx->text, err.msg);
        ctx->rc = NBDC_EXIT_FAIL;
        return;
    }
    if (ctx->map) {
        ctx->rc = print_map(ctx, c);
    } else if (ctx->json) {
        printf("{\n");
        print_protocol(client_info(c));
        printf("  \"exports\": [\n");
        print_export_json(client_info(c), true);
        printf("  ]\n}\n");
        ctx->rc = NBDC_EXIT_OK;
    } else {
        print_protocol_text(client_info(c));
        print_export_text(client_info(c));
        ctx->rc = NBDC_EXIT_OK;
    }
    client_close(c);
}

int nbdc_info_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"list", no_argument, NULL, 'l'},
        {"map", no_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    struct info_ctx ctx = {.rc = NBDC_EXIT_FAIL};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            ctx.json = true;
            break;
        case 'l':
            ctx.list = true;
            break;
        case 'm':
            ctx.map = true;
            break;
        default:
            return NBDC_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        nbdc_error("info: expected one URI (try nbdc --help)");
        return NBDC_EXIT_USAGE;
    }
    if (ctx.list && ctx.map) {
        nbdc_error("info: --list and --map cannot be combined");
        return NBDC_EXIT_USAGE;
    }
    ctx.text = argv[optind];
    struct err err = {0};
    if (client_uri_parse(ctx.text, &ctx.uri, &err) < 0) {
        nbdc_error("bad URI '%s': %s", ctx.text, err.msg);
        return NBDC_EXIT_USAGE;
    }
    struct loop_group loops;
    nbdc_loops_start(&loops, 1);
    coro_run_sync(loops.loops[0], info_entry, &ctx);
    loop_group_stop(&loops);
    client_uri_fini(&ctx.uri);
    fflush(stdout);
    return ctx.rc;
}
