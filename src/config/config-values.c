/* SPDX-License-Identifier: MIT */
/*
 * Configuration values: booleans, numbers, durations, log levels, paths
 * made absolute, checks that images and TLS files exist, allow-list
 * entries, and the owned strings of the snapshot.  Each parser returns 0
 * or -EINVAL and leaves its output untouched on failure.
 */
#include "config-int.h"
#include "nbdsrv/chan-sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

char *config_trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                     s[n - 1] == '\n')) {
        s[--n] = '\0';
    }
    return s;
}

int config_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_uint(const char *v, unsigned min, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || errno != 0 || n < min ||
        n > max) {
        return -EINVAL;
    }
    *out = (unsigned)n;
    return 0;
}

int config_parse_size(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    static const char suffixes[] = "KMGT";
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || errno != 0) {
        return -EINVAL;
    }
    unsigned shift = 0;
    if (*end != '\0') {
        const char *s = strchr(suffixes, *end);
        if (s == NULL) {
            return -EINVAL;
        }
        shift = 10 * (unsigned)(s - suffixes + 1);
        end++;
        if (strcmp(end, "iB") == 0) {
            end += 2;
        }
        if (*end != '\0') {
            return -EINVAL;
        }
    }
    if (n > (UINT64_MAX >> shift)) {
        return -EINVAL;
    }
    uint64_t bytes = (uint64_t)n << shift;
    if (bytes < min || bytes > max) {
        return -EINVAL;
    }
    *out = bytes;
    return 0;
}

void config_format_size(uint64_t bytes, char *buf, size_t size)
{
    static const char suffixes[] = "KMGT";
    int i = -1;
    while (i < 3 && bytes != 0 && bytes % 1024 == 0) {
        bytes /= 1024;
        i++;
    }
    if (i < 0) {
        snprintf(buf, size, "%llu", (unsigned long long)bytes);
    } else {
        snprintf(buf, size, "%llu%c", (unsigned long long)bytes, suffixes[i]);
    }
}

int config_parse_seconds(const char *v, double *out)
{
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || errno != 0 || !(s >= 0) || s > 86400) {
        return -EINVAL;
    }
    *out = s;
    return 0;
}

int config_parse_log_level(const char *v, enum log_level *out)
{
    static const enum log_level levels[] = {LOG_LEVEL_ERROR, LOG_LEVEL_WARNING,
                                            LOG_LEVEL_INFO, LOG_LEVEL_DEBUG};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(v, log_level_name(levels[i])) == 0) {
            *out = levels[i];
            return 0;
        }
    }
    return -EINVAL;
}

/* An absolute path for `path`, taken relative to `base` if relative. */
char *config_make_absolute(const char *base, const char *path)
{
    char *out;
    if (path[0] == '/') {
        return strdup(path);
    }
    if (asprintf(&out, "%s/%s", base, path) < 0) {
        return NULL;
    }
    return out;
}

/*
 * Checks that `path` names an image the daemon can open: a regular file
 * or a block device, readable, and writable unless read_only.  0, or
 * -errno with `msg` (of `size` bytes) saying why.
 */
int config_check_image(const char *path, bool read_only, char *msg, size_t size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        snprintf(msg, size, "image %s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        snprintf(msg, size, "image %s: not a regular file or block device",
                 path);
        return -EINVAL;
    }
    if (access(path, read_only ? R_OK : R_OK | W_OK) != 0) {
        int e = errno;
        snprintf(msg, size, "image %s: %s%s", path, strerror(e),
                 read_only ? "" : " (read-write; or set read-only)");
        return -e;
    }
    return 0;
}

/* A readable regular file.  0, or -errno with msg set. */
int config_check_readable_file(const char *what, const char *path, char *msg,
                               size_t size)
{
    struct stat st;
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
        int e = errno;
        snprintf(msg, size, "%s %s: %s", what, path, strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, size, "%s %s: not a regular file", what, path);
        return -EINVAL;
    }
    return 0;
}

/* The certificate directory and the files the server needs in it. */
int config_check_certs_dir(const char *dir, char *msg, size_t size)
{
    struct stat st;
    if (stat(dir, &st) != 0 || access(dir, R_OK | X_OK) != 0) {
        int e = errno;
        snprintf(msg, size, "TLS certificate directory %s: %s", dir,
                 strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(msg, size, "TLS certificate directory %s: not a directory",
                 dir);
        return -ENOTDIR;
    }
    static const char *const files[] = {"server-cert.pem", "server-key.pem"};
    for (size_t i = 0; i < 2; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int r = config_check_readable_file("TLS file", path, msg, size);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

/*
 * Parses one allow-list entry: "unix", "ADDR" or "ADDR/PREFIX" (IPv4 or
 * IPv6, the latter optionally in brackets).  0 or -EINVAL.
 */
int config_parse_allow_entry(const char *text, struct server_allow *a)
{
    char buf[INET6_ADDRSTRLEN + 8];
    memset(a, 0, sizeof *a);
    if (strcmp(text, "unix") == 0) {
        a->family = AF_UNIX;
        return 0;
    }
    if (strlen(text) >= sizeof buf) {
        return -EINVAL;
    }
    strcpy(buf, text);
    char *slash = strchr(buf, '/');
    const char *prefix = NULL;
    if (slash != NULL) {
        *slash = '\0';
        prefix = slash + 1;
    }
    char *addr = buf;
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
        addr[n - 1] = '\0';
        addr++;
    }
    unsigned max;
    if (inet_pton(AF_INET, addr, a->addr) == 1) {
        a->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, a->addr) == 1) {
        a->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    a->prefix = max;
    if (prefix != NULL && config_parse_uint(prefix, 0, max, &a->prefix) < 0) {
        return -EINVAL;
    }
    /* Clear the host bits, so that printing shows the network. */
    for (unsigned bit = a->prefix; bit < max; bit++) {
        a->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    }
    return 0;
}

/*
 * Appends the entries of an allow value (separated by commas or
 * blanks).  0, or -EINVAL with the bad entry copied to `bad`.
 */
int config_add_allow(struct config_export *ce, const char *value, char *bad,
                     size_t bad_size)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        return -ENOMEM;
    }
    int r = 0;
    unsigned added = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok != NULL;
         tok = strtok_r(NULL, ", \t", &save)) {
        struct server_allow a;
        if (config_parse_allow_entry(tok, &a) < 0) {
            snprintf(bad, bad_size, "%s", tok);
            r = -EINVAL;
            break;
        }
        struct server_allow *grown =
            realloc(ce->allow, (ce->nr_allow + 1) * sizeof *grown);
        if (grown == NULL) {
            r = -ENOMEM;
            break;
        }
        ce->allow = grown;
        ce->allow[ce->nr_allow++] = a;
        added++;
    }
    if (r == 0 && added == 0) {
        snprintf(bad, bad_size, "(empty)");
        r = -EINVAL;
    }
    free(copy);
    return r;
}

/* Adds a string to a growable array of strings.  0 or -ENOMEM. */
int config_push_string(char ***array, unsigned *count, const char *s)
{
    char *copy = strdup(s);
    char **grown =
        copy != NULL ? realloc(*array, (*count + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(copy);
        return -ENOMEM;
    }
    *array = grown;
    grown[(*count)++] = copy;
    return 0;
}

/* Replaces an owned string. */
int config_set_string(char **field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        return -ENOMEM;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* Replaces an owned string in a const char * field of struct tls_config. */
int config_set_const_string(const char **field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        return -ENOMEM;
    }
    free((char *)*field);
    *field = copy;
    return 0;
}
