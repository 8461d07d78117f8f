/* SPDX-License-Identifier: MIT */
/*
 * nbd-serverd-ctl: sends one request to nbd-serverd's control socket and
 * prints the reply, as a table or (--json) as the JSON line the server
 * sent.  See man/nbd-serverd-ctl.8.  Exit status as nbdc's: 0 done, 1
 * the server reported an error, 2 bad usage or no connection.
 */
#include "nbdsrv/version.h"

#include <errno.h>
#include <json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_EXIT_OK 0
#define CTL_EXIT_SERVER 1
#define CTL_EXIT_USAGE 2

#define CTL_DEFAULT_SOCKET "/run/nbd-serverd/control"
/* Replies can be long (one line per connection); requests are short. */
#define CTL_MAX_REPLY (64u * 1024 * 1024)

static const char usage_text[] =
    "Usage: nbd-serverd-ctl [-s PATH] [--json] COMMAND\n"
    "Commands:\n"
    "  exports                    the exports offered, with counters\n"
    "  connections                the connections, with counters\n"
    "  status                     version, uptime, threads, limits\n"
    "  add NAME KEY=VALUE...      add an export ([export NAME] keys)\n"
    "  change NAME KEY=VALUE...   replace some keys of an export\n"
    "  remove NAME                stop offering an export\n"
    "  disconnect ID              disconnect a connection softly\n"
    "  reload                     reload the configuration (as SIGHUP)\n"
    "  bitmaps NAME               the export's dirty bitmaps\n"
    "  bitmap-add NAME BITMAP     a new dirty bitmap, clean\n"
    "  checkpoint NAME BITMAP NEW freeze BITMAP and start NEW, at once\n"
    "  bitmap-clear NAME BITMAP   make a bitmap all clean\n"
    "  bitmap-remove NAME BITMAP  drop a bitmap\n"
    "  bitmap-merge NAME BITMAP INTO\n"
    "                             mark BITMAP's dirty blocks in INTO\n"
    "Options:\n"
    "  -s, --socket PATH  the control socket (default " CTL_DEFAULT_SOCKET ",\n"
    "                     or $NBD_SERVERD_CONTROL)\n"
    "  --json             print the server's JSON reply\n"
    "  -h, --help, -V, --version\n"
    "Exit status: 0 success, 1 the server reported an error, 2 bad usage\n"
    "or no connection to the server.  See nbd-serverd-ctl(8).\n";

static int usage_error(const char *msg)
{
    fprintf(stderr, "nbd-serverd-ctl: %s\nTry 'nbd-serverd-ctl --help'.\n",
            msg);
    return CTL_EXIT_USAGE;
}

/* path= and overlay= are made absolute here, against our directory. */
static char *value_for(const char *key, const char *value)
{
    if ((strcmp(key, "path") == 0 || strcmp(key, "overlay") == 0) &&
        value[0] != '/' && value[0] != '\0') {
        char cwd[PATH_MAX];
        char *abs;
        if (getcwd(cwd, sizeof cwd) != NULL &&
            asprintf(&abs, "%s/%s", cwd, value) >= 0) {
            return abs;
        }
    }
    return strdup(value);
}

/* The request for argv (after the options); NULL with a message. */
static struct json_object *build_request(int argc, char **argv,
                                         const char **why)
{
    const char *cmd = argv[0];
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "command", json_object_new_string(cmd));
    bool simple = strcmp(cmd, "exports") == 0 ||
                  strcmp(cmd, "connections") == 0 ||
                  strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0;
    if (simple) {
        if (argc != 1) {
            *why = "this command takes no argument";
            goto fail;
        }
        return req;
    }
    if (strcmp(cmd, "remove") == 0) {
        if (argc != 2) {
            *why = "usage: remove NAME";
            goto fail;
        }
        json_object_object_add(req, "name", json_object_new_string(argv[1]));
        return req;
    }
    /* Bitmap commands: the export, the bitmap, and maybe one more. */
    static const struct {
        const char *cmd, *extra, *usage;
    } bitmap_cmds[] = {
        {"bitmaps", NULL, "usage: bitmaps NAME"},
        {"bitmap-add", "", "usage: bitmap-add NAME BITMAP"},
        {"bitmap-clear", "", "usage: bitmap-clear NAME BITMAP"},
        {"bitmap-remove", "", "usage: bitmap-remove NAME BITMAP"},
        {"checkpoint", "new", "usage: checkpoint NAME BITMAP NEW"},
        {"bitmap-merge", "into", "usage: bitmap-merge NAME BITMAP INTO"},
    };
    for (size_t k = 0; k < sizeof bitmap_cmds / sizeof bitmap_cmds[0]; k++) {
        const char *extra = bitmap_cmds[k].extra;
        if (strcmp(cmd, bitmap_cmds[k].cmd) != 0) {
            continue;
        }
        int want = extra == NULL ? 2 : extra[0] == '\0' ? 3 : 4;
        if (argc != want) {
            *why = bitmap_cmds[k].usage;
            goto fail;
        }
        json_object_object_add(req, "name", json_object_new_string(argv[1]));
        if (want >= 3) {
            json_object_object_add(req, "bitmap",
                                   json_object_new_string(argv[2]));
        }
        if (want == 4) {
            json_object_object_add(req, extra, json_object_new_string(argv[3]));
        }
        return req;
    }
    if (strcmp(cmd, "disconnect") == 0) {
        char *end;
        errno = 0;
        unsigned long long id = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
        if (argc != 2 || errno != 0 || *end != '\0' || id == 0 ||
            id > INT64_MAX) {
            *why = "usage: disconnect ID (a number from 'connections')";
            goto fail;
        }
        json_object_object_add(req, "id", json_object_new_int64((int64_t)id));
        return req;
    }
    if (strcmp(cmd, "add") == 0 || strcmp(cmd, "change") == 0) {
        if (argc < 3) {
            *why = "usage: add|change NAME KEY=VALUE...";
            goto fail;
        }
        json_object_object_add(req, "name", json_object_new_string(argv[1]));
        struct json_object *set = json_object_new_object();
        json_object_object_add(req, "settings", set);
        for (int i = 2; i < argc; i++) {
            char *eq = strchr(argv[i], '=');
            if (eq == NULL || eq == argv[i]) {
                *why = "settings are KEY=VALUE";
                goto fail;
            }
            char key[128];
            snprintf(key, sizeof key, "%.*s", (int)(eq - argv[i]), argv[i]);
            char *v = value_for(key, eq + 1);
            struct json_object *val = json_object_new_string(v);
            free(v);
            struct json_object *prev;
            if (!json_object_object_get_ex(set, key, &prev)) {
                json_object_object_add(set, key, val);
                continue;
            }
            /* A repeated key (allow, tls-identities): a list. */
            if (!json_object_is_type(prev, json_type_array)) {
                struct json_object *list = json_object_new_array();
                json_object_array_add(list, json_object_get(prev));
                json_object_object_add(set, key, list);
                prev = list;
            }
            json_object_array_add(prev, val);
        }
        return req;
    }
    *why = "unknown command";
fail:
    json_object_put(req);
    return NULL;
}

/* Sends the request and reads one line back; malloc'd, or NULL. */
static char *exchange(const char *path, const char *line)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        fprintf(stderr, "nbd-serverd-ctl: %s: path too long\n", path);
        return NULL;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        fprintf(stderr, "nbd-serverd-ctl: %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    size_t len = strlen(line);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "nbd-serverd-ctl: %s: %s\n", path, strerror(errno));
            close(fd);
            return NULL;
        }
        off += (size_t)n;
    }
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (got + 1 >= cap) {
            char *grown = cap < CTL_MAX_REPLY ? realloc(buf, cap * 2) : NULL;
            if (grown == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "nbd-serverd-ctl: %s: %s\n", path,
                    n == 0 ? "the server closed the connection"
                           : strerror(errno));
            free(buf);
            buf = NULL;
            break;
        }
        char *nl = memchr(buf + got, '\n', (size_t)n);
        got += (size_t)n;
        if (nl != NULL) {
            *nl = '\0';
            break;
        }
    }
    close(fd);
    return buf;
}

static const char *str(struct json_object *o, const char *k)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, k, &v) || v == NULL) {
        return "-";
    }
    return json_object_get_string(v);
}

static uint64_t num(struct json_object *o, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_uint64(v) : 0;
}

static void print_exports(struct json_object *reply)
{
    struct json_object *list;
    json_object_object_get_ex(reply, "exports", &list);
    printf("%-16s %-8s %14s %-3s %5s %7s %14s %14s\n", "NAME", "BACKEND",
           "SIZE", "RO", "CONNS", "FLIGHT", "READ", "WRITTEN");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *e = json_object_array_get_idx(list, i);
        struct json_object *ro;
        json_object_object_get_ex(e, "read-only", &ro);
        printf("%-16s %-8s %14llu %-3s %5llu %7llu %14llu %14llu\n",
               str(e, "name"), str(e, "backend"),
               (unsigned long long)num(e, "size"),
               json_object_get_boolean(ro) ? "yes" : "no",
               (unsigned long long)num(e, "connections"),
               (unsigned long long)num(e, "requests-in-flight"),
               (unsigned long long)num(e, "bytes-read"),
               (unsigned long long)num(e, "bytes-written"));
    }
}

static void print_connections(struct json_object *reply)
{
    struct json_object *list;
    json_object_object_get_ex(reply, "connections", &list);
    printf("%-5s %-24s %-12s %-14s %-18s %-20s %6s %12s %12s\n", "ID", "PEER",
           "EXPORT", "TLS", "CIPHER", "STARTED", "FLIGHT", "READ", "WRITTEN");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *c = json_object_array_get_idx(list, i);
        struct json_object *tls;
        json_object_object_get_ex(c, "tls", &tls);
        const char *id = str(c, "tls-identity");
        char tlsbuf[64];
        snprintf(tlsbuf, sizeof tlsbuf, "%s",
                 !json_object_get_boolean(tls) ? "no"
                 : strcmp(id, "-") == 0        ? "yes"
                                               : id);
        time_t t = (time_t)num(c, "started");
        char when[32];
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        printf("%-5llu %-24s %-12s %-14s %-18s %-20s %6llu %12llu %12llu\n",
               (unsigned long long)num(c, "id"), str(c, "peer"),
               str(c, "export"), tlsbuf, str(c, "tls-cipher"), when,
               (unsigned long long)num(c, "requests-in-flight"),
               (unsigned long long)num(c, "bytes-read"),
               (unsigned long long)num(c, "bytes-written"));
    }
}

static void print_bitmaps(struct json_object *reply)
{
    struct json_object *list;
    json_object_object_get_ex(reply, "bitmaps", &list);
    printf("%-24s %-6s %16s %12s\n", "BITMAP", "FROZEN", "DIRTY",
           "GRANULARITY");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *b = json_object_array_get_idx(list, i);
        struct json_object *frozen;
        json_object_object_get_ex(b, "frozen", &frozen);
        printf("%-24s %-6s %16llu %12llu\n", str(b, "name"),
               json_object_get_boolean(frozen) ? "yes" : "no",
               (unsigned long long)num(b, "dirty-bytes"),
               (unsigned long long)num(b, "granularity"));
    }
}

static void print_status(struct json_object *reply)
{
    printf("version             %s\n", str(reply, "version"));
    printf("uptime              %llu s\n",
           (unsigned long long)num(reply, "uptime"));
    printf("threads             %llu\n",
           (unsigned long long)num(reply, "threads"));
    printf("connections         %llu\n",
           (unsigned long long)num(reply, "connections"));
    printf("exports             %llu\n",
           (unsigned long long)num(reply, "exports"));
    printf("buffer memory used  %llu bytes\n",
           (unsigned long long)num(reply, "buffer-memory-used"));
    struct json_object *limits;
    if (json_object_object_get_ex(reply, "limits", &limits)) {
        json_object_object_foreach(limits, k, v)
        {
            printf("%-33s %s\n", k, json_object_get_string(v));
        }
    }
}

int main(int argc, char **argv)
{
    const char *path = getenv("NBD_SERVERD_CONTROL");
    if (path == NULL || path[0] == '\0') {
        path = CTL_DEFAULT_SOCKET;
    }
    bool json = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return CTL_EXIT_OK;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("nbd-serverd-ctl " NBDSRV_VERSION "\n");
            return CTL_EXIT_OK;
        }
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
            if (++i == argc) {
                return usage_error("-s needs a PATH");
            }
            path = argv[i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            path = a + 9;
        } else {
            return usage_error("unknown option");
        }
    }
    if (i == argc) {
        return usage_error("no command");
    }
    const char *why = NULL;
    struct json_object *req = build_request(argc - i, argv + i, &why);
    if (req == NULL) {
        fprintf(stderr, "nbd-serverd-ctl: %s: %s\n", argv[i], why);
        return CTL_EXIT_USAGE;
    }
    char *line = NULL;
    if (asprintf(&line, "%s\n",
                 json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN)) <
        0) {
        json_object_put(req);
        return CTL_EXIT_USAGE;
    }
    json_object_put(req);
    char *text = exchange(path, line);
    free(line);
    if (text == NULL) {
        return CTL_EXIT_USAGE;
    }
    struct json_object *reply = json_tokener_parse(text);
    int status = CTL_EXIT_OK;
    struct json_object *error;
    if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
        fprintf(stderr, "nbd-serverd-ctl: the server's reply is not JSON\n");
        status = CTL_EXIT_USAGE;
    } else if (json_object_object_get_ex(reply, "error", &error)) {
        fprintf(stderr, "nbd-serverd-ctl: %s\n", json_object_get_string(error));
        status = CTL_EXIT_SERVER;
    }
    if (json && reply != NULL) {
        printf("%s\n", text);
    } else if (status == CTL_EXIT_OK) {
        const char *cmd = argv[i];
        if (strcmp(cmd, "exports") == 0) {
            print_exports(reply);
        } else if (strcmp(cmd, "connections") == 0) {
            print_connections(reply);
        } else if (strcmp(cmd, "status") == 0) {
            print_status(reply);
        } else if (strcmp(cmd, "bitmaps") == 0) {
            print_bitmaps(reply);
        }
    }
    json_object_put(reply);
    free(text);
    return status;
}
