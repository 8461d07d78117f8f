/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD URI parser (include/nbdsrv/client-uri.h):
 * table-driven good URIs from doc/uri.md with every field checked, and
 * bad URIs whose error message must name the bad part.
 */
#include "fixture-main.h"
#include "nbdsrv/client-uri.h"
#include "nbdsrv/compiler.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

struct good {
    const char *text;
    bool tls, unix_socket;
    const char *host, *port, *socket, *export_name, *user;
};

static const struct good goods[] = {
    {"nbd://h/disk", false, false, "h", "10809", NULL, "disk", NULL},
    {"nbd://h/", false, false, "h", "10809", NULL, "", NULL},
    {"nbd://h", false, false, "h", "10809", NULL, "", NULL},
    {"nbd://h//disk", false, false, "h", "10809", NULL, "/disk", NULL},
    {"nbd://h/hello%20world", false, false, "h", "10809", NULL, "hello world",
     NULL},
    {"nbd://127.0.0.1:1234/a", false, false, "127.0.0.1", "1234", NULL, "a",
     NULL},
    {"nbd://[::1]:99/x", false, false, "::1", "99", NULL, "x", NULL},
    {"nbd://[::1]/x", false, false, "::1", "10809", NULL, "x", NULL},
    {"nbds://alice@example.com/e", true, false, "example.com", "10809", NULL,
     "e", "alice"},
    {"nbd+unix:///disk?socket=/tmp/s.sock", false, true, NULL, NULL,
     "/tmp/s.sock", "disk", NULL},
    {"nbd+unix://?socket=/tmp/s", false, true, NULL, NULL, "/tmp/s", "", NULL},
    {"nbds+unix://bob@/e?socket=/s&tls-psk-file=/k.psk", true, true, NULL, NULL,
     "/s", "e", "bob"},
    {"nbd+unix:///e?socket=/a%20b&x-foo=1", false, true, NULL, NULL, "/a b",
     "e", NULL},
};

UNIT_TEST("parse", test_client_uri_good_uris_parse)
{
    for (size_t i = 0; i < ARRAY_SIZE(goods); i++) {
        const struct good *g = &goods[i];
        struct client_uri u;
        struct err err = {0};
        ck_assert_msg(client_uri_parse(g->text, &u, &err) == 0, "%s: %s",
                      g->text, err.msg);
        ck_assert_msg(u.tls == g->tls, "%s: tls", g->text);
        ck_assert_msg(u.unix_socket == g->unix_socket, "%s: unix", g->text);
#define CHECK_STR(field)                                                       \
    do {                                                                       \
        if (g->field == NULL) {                                                \
            ck_assert_msg(u.field == NULL, "%s: " #field " is '%s'", g->text,  \
                          u.field);                                            \
        } else {                                                               \
            ck_assert_msg(u.field != NULL && strcmp(u.field, g->field) == 0,   \
                          "%s: " #field " is '%s', want '%s'", g->text,        \
                          u.field ? u.field : "(null)", g->field);             \
        }                                                                      \
    } while (0)
        CHECK_STR(host);
        CHECK_STR(port);
        CHECK_STR(socket);
        CHECK_STR(export_name);
        CHECK_STR(user);
#undef CHECK_STR
        client_uri_fini(&u);
    }
}
END_TEST

UNIT_TEST("parse", test_client_uri_tls_parameters)
{
    struct client_uri u;
    struct err err = {0};
    ck_assert_int_eq(
        client_uri_parse("nbds://h/e?tls-certificates=/etc/pki&"
                         "tls-verify-peer=0&tls-hostname=srv&tls-type=x509",
                         &u, &err),
        0);
    ck_assert_str_eq(u.tls_certificates, "/etc/pki");
    ck_assert_str_eq(u.tls_hostname, "srv");
    ck_assert_str_eq(u.tls_type, "x509");
    ck_assert_int_eq(u.tls_verify_peer, 0);
    ck_assert_ptr_null(u.tls_psk_file);
    client_uri_fini(&u);

    ck_assert_int_eq(client_uri_parse("nbd://h/e", &u, &err), 0);
    ck_assert_int_eq(u.tls_verify_peer, -1);
    client_uri_fini(&u);
}
END_TEST

UNIT_TEST("parse", test_client_uri_abstract_socket)
{
    struct client_uri u;
    struct err err = {0};
    ck_assert_int_eq(
        client_uri_parse("nbd+unix:///e?socket=%00abstract", &u, &err), 0);
    ck_assert_uint_eq(u.socket_len, 9);
    ck_assert_int_eq(u.socket[0], '\0');
    ck_assert_int_eq(memcmp(u.socket + 1, "abstract", 8), 0);
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert_int_eq(client_uri_address(&u, &ss, &len, &err), 0);
    ck_assert_uint_eq(len, offsetof(struct sockaddr_un, sun_path) + 9);
    client_uri_fini(&u);
}
END_TEST

struct bad {
    const char *text;
    const char *why; /* must appear in the message */
};

static const struct bad bads[] = {
    {"http://h/e", "scheme 'http'"},
    {"nbd+vsock://2/e", "scheme 'nbd+vsock'"},
    {"/tmp/file", "not an NBD URI"},
    {"nbd:///e", "missing host"},
    {"nbd://h:0/e", "port '0'"},
    {"nbd://h:65536/e", "port '65536'"},
    {"nbd://h:12a/e", "port '12a'"},
    {"nbd://h:/e", "port ''"},
    {"nbd://[::1/e", "missing ']'"},
    {"nbd://[::1]x/e", "after ']'"},
    {"nbd://h/a%2", "bad percent escape"},
    {"nbd://h/a%zz", "bad percent escape"},
    {"nbd://h/a%00b", "export name"},
    {"nbd://h/e#frag", "fragment"},
    {"nbd://h/e?socket=/s", "'socket'"},
    {"nbd+unix:///e", "socket=PATH"},
    {"nbd+unix://host/e?socket=/s", "host 'host'"},
    {"nbd+unix:///e?socket=", "'socket' is empty"},
    {"nbd://h/e?bogus=1", "unknown query parameter 'bogus'"},
    {"nbd://h/e?tls-verify-peer=maybe", "tls-verify-peer=maybe"},
    {"nbd://h/e?tls-type=foo", "tls-type=foo"},
    {"nbd://h/e?tls-psk-file=a&tls-psk-file=b", "given twice"},
    {"nbd://h/e?noequals", "'noequals' has no '=VALUE'"},
    {"nbd://@h/e", "empty user name"},
};

UNIT_TEST("parse", test_client_uri_bad_uris_name_the_bad_part)
{
    for (size_t i = 0; i < ARRAY_SIZE(bads); i++) {
        struct client_uri u;
        struct err err = {0};
        int r = client_uri_parse(bads[i].text, &u, &err);
        ck_assert_msg(r == -EINVAL, "%s: parse returned %d", bads[i].text, r);
        ck_assert_msg(strstr(err.msg, bads[i].why) != NULL,
                      "%s: message '%s' lacks '%s'", bads[i].text, err.msg,
                      bads[i].why);
        /* Nothing to free after a failure: fini must be harmless. */
        client_uri_fini(&u);
    }
}
END_TEST

UNIT_TEST("parse", test_client_uri_is_uri_tells_files_from_uris)
{
    ck_assert(client_uri_is_uri("nbd://h/e"));
    ck_assert(client_uri_is_uri("nbds+unix:///e?socket=/s"));
    ck_assert(!client_uri_is_uri("disk.img"));
    ck_assert(!client_uri_is_uri("/dev/sda"));
    ck_assert(!client_uri_is_uri("nbd.img"));
}
END_TEST

UNIT_TEST("parse", test_client_uri_address_resolves_tcp)
{
    struct client_uri u;
    struct err err = {0};
    ck_assert_int_eq(client_uri_parse("nbd://127.0.0.1:4321/e", &u, &err), 0);
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert_int_eq(client_uri_address(&u, &ss, &len, &err), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET);
    client_uri_fini(&u);
}
END_TEST

UNIT_SUITE("client-uri");
UNIT_TCASE("parse", 30, NULL, NULL);
