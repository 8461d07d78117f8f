/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the TLS module: PSK files (good ones, and every kind of
 * malformed line reported with its file and line number), credential
 * errors naming the file at fault, and the options that make no sense.
 * The default priority string for a CPU with and without the AES-GCM
 * instructions (both simulated: the choice is a pure function of that
 * answer), and the real CPU's answer against /proc/cpuinfo.
 */
#include "fixture-main.h"
#include "nbdsrv/tls-creds.h"
#include "nbdsrv/tls-priority.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void tmp_setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nbdsrv-test-tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmp_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Writes `text` to tmpdir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

UNIT_TEST("psk", test_tls_psk_good_file)
{
    const char *path =
        write_file("keys.psk", "# psktool keys\n"
                               "\n"
                               "alice:00112233445566778899aabbccddeeff\r\n"
                               "bob:DEADBEEF\n"
                               "carol with spaces:0a");
    struct tls_psk *psk = NULL;
    struct err err;
    err_clear(&err);
    ck_assert_int_eq(tls_psk_load(path, &psk, &err), 0);
    ck_assert_uint_eq(tls_psk_count(psk), 3);
    size_t len = 0;
    const unsigned char *k = tls_psk_find(psk, "alice", 5, &len);
    ck_assert_ptr_nonnull(k);
    ck_assert_uint_eq(len, 16);
    ck_assert_mem_eq(k,
                     "\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd"
                     "\xee\xff",
                     16);
    k = tls_psk_find(psk, "bob", 3, &len);
    ck_assert_ptr_nonnull(k);
    ck_assert_uint_eq(len, 4);
    ck_assert_mem_eq(k, "\xde\xad\xbe\xef", 4);
    k = tls_psk_find(psk, "carol with spaces", 17, &len);
    ck_assert_ptr_nonnull(k);
    ck_assert_uint_eq(len, 1);
    ck_assert_ptr_null(tls_psk_find(psk, "al", 2, &len));
    ck_assert_ptr_null(tls_psk_find(psk, "dave", 4, &len));
    ck_assert_int_eq(err.errnum, 0);
    tls_psk_free(psk);
}
END_TEST

/* Each malformed file and the "path:LINE: message" it must produce. */
static const struct {
    const char *text;
    const char *want; /* after "<path>:" */
} bad_psk[] = {
    {"alice:0011\nbob\n", "2: expected identity:hexkey"},
    {":0011\n", "1: empty identity"},
    {"# c\nalice:\n", "2: empty key"},
    {"alice:001\n", "1: key has an odd number of hex digits"},
    {"\n\nalice:00g1\n", "3: key is not hexadecimal"},
    {"alice:00\nbob:11\nalice:22\n", "3: identity 'alice' given twice"},
    {"al\tice:00\n", "1: control character in the identity"},
    {"alice:00\nb\0b:11\n", "2: NUL byte in the line"},
};

UNIT_LOOP_TEST("psk", test_tls_psk_malformed_lines_name_file_and_line, 0,
               (int)(sizeof bad_psk / sizeof bad_psk[0]))
{
    char name[32];
    snprintf(name, sizeof name, "bad%d.psk", _i);
    const char *text = bad_psk[_i].text;
    /* Write with the embedded NUL, if any: length from the table. */
    size_t len = strlen(text);
    if (strstr(bad_psk[_i].want, "NUL") != NULL) {
        len = strlen(text) + 1 + strlen(text + strlen(text) + 1);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);

    struct tls_psk *psk = NULL;
    struct err err;
    err_clear(&err);
    ck_assert_int_eq(tls_psk_load(path, &psk, &err), -EINVAL);
    ck_assert_ptr_null(psk);
    char want[256];
    snprintf(want, sizeof want, "%s:%s", path, bad_psk[_i].want);
    ck_assert_str_eq(err.msg, want);
}
END_TEST

UNIT_TEST("psk", test_tls_psk_missing_and_empty_files)
{
    struct tls_psk *psk = NULL;
    struct err err;
    char path[128];
    snprintf(path, sizeof path, "%s/nosuch.psk", tmpdir);
    ck_assert_int_eq(tls_psk_load(path, &psk, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_ptr_nonnull(strstr(err.msg, "No such file"));

    const char *empty = write_file("empty.psk", "# nothing\n\n");
    ck_assert_int_eq(tls_psk_load(empty, &psk, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, empty));
    ck_assert_ptr_nonnull(strstr(err.msg, "no identity:hexkey line"));

    ck_assert_int_eq(tls_psk_load(tmpdir, &psk, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
}
END_TEST

UNIT_TEST("creds", test_tls_creds_errors_name_the_file)
{
    struct err err;
    struct tls_config cfg = {.mode = TLS_MODE_REQUIRE};

    /* Nothing to authenticate with. */
    err_clear(&err);
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "--tls-certs"));

    /* A missing directory: the first file it looks for is named. */
    char dir[128], want[192];
    snprintf(dir, sizeof dir, "%s/nosuch", tmpdir);
    cfg.certs_dir = dir;
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    snprintf(want, sizeof want, "%s/ca-cert.pem: No such file or directory",
             dir);
    ck_assert_str_eq(err.msg, want);

    /* A CA file that holds no certificate. */
    write_file("ca-cert.pem", "this is not PEM\n");
    cfg.certs_dir = tmpdir;
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    snprintf(want, sizeof want, "%s/ca-cert.pem: ", tmpdir);
    ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "got '%s'",
                  err.msg);

    /* --tls-verify-peer needs a CA. */
    cfg.certs_dir = NULL;
    cfg.psk_file = write_file("k.psk", "alice:0011\n");
    cfg.verify_peer = true;
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "--tls-verify-peer"));

    /* PSK errors come with their line. */
    cfg.verify_peer = false;
    cfg.psk_file = write_file("k2.psk", "alice:0011\nbob:xyz1\n");
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    snprintf(want, sizeof want, "%s:2: key is not hexadecimal", cfg.psk_file);
    ck_assert_str_eq(err.msg, want);

    /* A bad priority string is named. */
    cfg.psk_file = write_file("k3.psk", "alice:0011\n");
    cfg.priority = "NORMAL:+NOT-A-THING";
    ck_assert_ptr_null(tls_creds_new_server(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "+NOT-A-THING"));
}
END_TEST

UNIT_TEST("creds", test_tls_creds_psk_server_and_client)
{
    struct err err;
    err_clear(&err);
    const char *path = write_file("keys.psk", "alice:0011223344556677\n"
                                              "bob:8899aabbccddeeff\n");
    struct tls_config cfg = {.mode = TLS_MODE_ON, .psk_file = path};
    struct tls_creds *srv = tls_creds_new_server(&cfg, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    ck_assert(tls_creds_is_server(srv));
    gnutls_session_t s;
    ck_assert_int_eq(tls_creds_session_new(srv, &s, &err), 0);
    gnutls_deinit(s);

    struct tls_client_config ccfg = {.psk_file = path, .psk_identity = "bob"};
    struct tls_creds *cli = tls_creds_new_client(&ccfg, &err);
    ck_assert_msg(cli != NULL, "%s", err.msg);
    ck_assert(!tls_creds_is_server(cli));
    ck_assert_int_eq(tls_creds_session_new(cli, &s, &err), 0);
    gnutls_deinit(s);

    /* References: the last unref frees (ASan would catch a leak). */
    tls_creds_ref(srv);
    tls_creds_unref(srv);
    tls_creds_unref(srv);
    tls_creds_unref(cli);
    tls_creds_unref(NULL);

    ccfg.psk_identity = "carol";
    ck_assert_ptr_null(tls_creds_new_client(&ccfg, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "no key for identity 'carol'"));

    struct tls_client_config neither = {0};
    ck_assert_ptr_null(tls_creds_new_client(&neither, &err));
    struct tls_client_config both = {.psk_file = path, .ca_dir = tmpdir};
    ck_assert_ptr_null(tls_creds_new_client(&both, &err));
}
END_TEST

UNIT_TEST("creds", test_tls_mode_names_round_trip)
{
    enum tls_mode m = TLS_MODE_OFF;
    ck_assert_int_eq(tls_mode_parse("require", &m), 0);
    ck_assert_int_eq(m, TLS_MODE_REQUIRE);
    ck_assert_int_eq(tls_mode_parse("on", &m), 0);
    ck_assert_int_eq(m, TLS_MODE_ON);
    ck_assert_int_eq(tls_mode_parse("yes", &m), -EINVAL);
    ck_assert_int_eq(m, TLS_MODE_ON);
    ck_assert_str_eq(tls_mode_name(TLS_MODE_OFF), "off");
}
END_TEST

/* The ciphers of a priority string, in its order, as GnuTLS builds it. */
static unsigned cipher_list(const char *prio, unsigned *out, unsigned max)
{
    gnutls_priority_t p;
    const char *where = NULL;
    int rc = gnutls_priority_init(&p, prio, &where);
    ck_assert_msg(rc == 0, "'%s' at '%s': %s", prio, where ? where : "",
                  gnutls_strerror(rc));
    const unsigned *list = NULL;
    int n = gnutls_priority_cipher_list(p, &list);
    ck_assert_int_gt(n, 0);
    ck_assert_int_le(n, (int)max);
    memcpy(out, list, (size_t)n * sizeof *out);
    gnutls_priority_deinit(p);
    return (unsigned)n;
}

static int index_of(const unsigned *list, unsigned n, unsigned cipher)
{
    for (unsigned i = 0; i < n; i++) {
        if (list[i] == cipher) {
            return (int)i;
        }
    }
    return -1;
}

static const enum tls_side sides[] = {TLS_SIDE_SERVER, TLS_SIDE_CLIENT};

/*
 * With AES-GCM instructions: ChaCha20-Poly1305 comes after both AES-GCM
 * ciphers (last of all), and the others keep NORMAL's order.  The server
 * side also asks for server precedence, the client side does not (it
 * means nothing there).
 */
UNIT_LOOP_TEST("priority", test_tls_priority_with_aes_puts_chacha20_last, 0, 2)
{
    unsigned normal[64], ours[64];
    unsigned nn = cipher_list("NORMAL", normal, 64);
    ck_assert_int_ge(index_of(normal, nn, GNUTLS_CIPHER_CHACHA20_POLY1305), 0);
    enum tls_side side = sides[_i];
    const char *prio = tls_priority_default(side, true);
    unsigned n = cipher_list(prio, ours, 64);
    ck_assert_uint_eq(n, nn);
    int chacha = index_of(ours, n, GNUTLS_CIPHER_CHACHA20_POLY1305);
    int aes256 = index_of(ours, n, GNUTLS_CIPHER_AES_256_GCM);
    int aes128 = index_of(ours, n, GNUTLS_CIPHER_AES_128_GCM);
    ck_assert_int_ge(aes256, 0);
    ck_assert_int_ge(aes128, 0);
    ck_assert_int_eq(chacha, (int)n - 1);
    /* Every other cipher in NORMAL's order. */
    unsigned j = 0;
    for (unsigned i = 0; i < nn; i++) {
        if (normal[i] != GNUTLS_CIPHER_CHACHA20_POLY1305) {
            ck_assert_uint_eq(ours[j], normal[i]);
            j++;
        }
    }
    bool precedence = strstr(prio, "%SERVER_PRECEDENCE") != NULL;
    ck_assert(precedence == (side == TLS_SIDE_SERVER));
    /* The string still parses with the PSK key exchanges appended. */
    char psk[256];
    snprintf(psk, sizeof psk, "%s:+ECDHE-PSK:+DHE-PSK:+PSK", prio);
    ck_assert_uint_eq(cipher_list(psk, ours, 64), nn);
}
END_TEST

/* Without them: GnuTLS's NORMAL, untouched (ChaCha20 is the fast one). */
UNIT_LOOP_TEST("priority", test_tls_priority_without_aes_keeps_gnutls_order, 0,
               2)
{
    ck_assert_str_eq(tls_priority_default(sides[_i], false), "NORMAL");
}
END_TEST

/* A string the user gives is used as given, whatever the CPU. */
UNIT_LOOP_TEST("priority", test_tls_priority_given_is_used_as_given, 0, 2)
{
    const char *given = "NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305";
    ck_assert_ptr_eq(tls_priority_choose(sides[_i], given), given);
    ck_assert_str_eq(tls_priority_reason(given), "as configured");
    bool aes = tls_cpu_has_aes_gcm();
    ck_assert_str_eq(tls_priority_choose(sides[_i], NULL),
                     tls_priority_default(sides[_i], aes));
    ck_assert_ptr_nonnull(
        strstr(tls_priority_reason(NULL), aes ? "AES-GCM preferred" : "lacks"));
}
END_TEST

/* True when the "flags" (x86) or "Features" (arm64) line lists `flag`. */
static bool cpuinfo_has(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL || (strncmp(line, "flags", 5) != 0 &&
                              strncmp(line, "Features", 8) != 0)) {
            continue;
        }
        for (char *tok = strtok(colon + 1, " \t\n"); tok != NULL;
             tok = strtok(NULL, " \t\n")) {
            if (strcmp(tok, flag) == 0) {
                found = true;
            }
        }
        break; /* the first CPU speaks for all */
    }
    fclose(f);
    return found;
}

/* The CPU's own answer agrees with what the kernel says it has. */
UNIT_TEST("priority", test_tls_cpu_has_aes_gcm_agrees_with_cpuinfo)
{
#if defined(__x86_64__) || defined(__i386__)
    bool want = cpuinfo_has("aes") && cpuinfo_has("pclmulqdq");
#elif defined(__aarch64__)
    bool want = cpuinfo_has("aes") && cpuinfo_has("pmull");
#else
    bool want = false;
#endif
    ck_assert(tls_cpu_has_aes_gcm() == want);
    /* Asked once: the same answer again. */
    ck_assert(tls_cpu_has_aes_gcm() == want);
}
END_TEST

UNIT_SUITE("tls");
UNIT_TCASE("psk", 30, tmp_setup, tmp_teardown);
UNIT_TCASE("creds", 30, tmp_setup, tmp_teardown);
UNIT_TCASE("priority", 30, NULL, NULL);
