/* SPDX-License-Identifier: MIT */
/*
 * The control socket: its file, its clients, their lines.
 *
 * The file: bound under umask 0177, so it is never reachable by others
 * for an instant, then checked with stat (a socket, mode 0600, ours);
 * with control-group, chown'ed to the group and widened to 0660.  A file
 * already at the path is removed only if it is a socket and connecting
 * to it is refused (a daemon that died left it); a socket someone
 * listens on, or any other file, is an error.  On exit the file is
 * removed if it is still the one we made.
 *
 * Clients: at most CONTROL_MAX_CLIENTS, each with a line buffer of
 * CONTROL_MAX_LINE + 1 bytes and an output buffer.  A line longer than
 * that gets an error reply and the rest of it, up to its newline, is
 * dropped.  While a client has replies unwritten, it is not read from
 * (it cannot make us buffer without bound); past CONTROL_MAX_PENDING it
 * is dropped.  Everything runs on the main thread, between its signal
 * waits (see control.h).
 */
#include "control-int.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A file at path: gone if it is a stale socket, else an error. */
static int clear_stale(const char *path, struct err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        return errno == ENOENT ? 0 : err_set_errno(err, errno, "%s", path);
    }
    if (!S_ISSOCK(st.st_mode)) {
        return err_set(err, EEXIST,
                       "control socket %s: a file that is not a socket is "
                       "in the way",
                       path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return err_set_errno(err, errno, "socket");
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    int e = errno;
    close(fd);
    if (r == 0) {
        return err_set(err, EADDRINUSE,
                       "control socket %s: another process listens on it "
                       "(another nbd-serverd?)",
                       path);
    }
    if (e != ECONNREFUSED) {
        return err_set_errno(err, e, "control socket %s", path);
    }
    log_info("control socket %s: removing the stale socket file", path);
    if (unlink(path) < 0 && errno != ENOENT) {
        return err_set_errno(err, errno, "control socket %s: unlink", path);
    }
    return 0;
}

/* Creates, binds and checks the socket; the fd, or -errno. */
static int bind_socket(struct control *ctl, bool group, gid_t gid,
                       struct err *err)
{
    const char *path = ctl->path;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        return err_set(err, ENAMETOOLONG,
                       "control socket %s: the path is longer than %zu bytes",
                       path, sizeof sun.sun_path - 1);
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int r = clear_stale(path, err);
    if (r < 0) {
        return r;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return err_set_errno(err, errno, "socket");
    }
    mode_t old = umask(0177);
    r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    int e = errno;
    umask(old);
    if (r < 0) {
        close(fd);
        return err_set_errno(err, e, "control socket %s: bind", path);
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode) ||
        st.st_uid != geteuid() || (st.st_mode & 0777) != 0600) {
        close(fd);
        unlink(path);
        return err_set(err, EPERM,
                       "control socket %s: not created with mode 0600", path);
    }
    if (group && (chown(path, (uid_t)-1, gid) < 0 || chmod(path, 0660) < 0)) {
        e = errno;
        close(fd);
        unlink(path);
        return err_set_errno(err, e, "control socket %s: control-group", path);
    }
    ctl->dev = st.st_dev;
    ctl->ino = st.st_ino;
    if (listen(fd, CONTROL_MAX_CLIENTS) < 0) {
        e = errno;
        close(fd);
        unlink(path);
        return err_set_errno(err, e, "control socket %s: listen", path);
    }
    return fd;
}

struct control *control_open(const char *path, bool group, gid_t gid,
                             const struct control_env *env, struct err *err)
{
    struct control *ctl = calloc(1, sizeof *ctl);
    if (ctl == NULL || (ctl->path = strdup(path)) == NULL) {
        free(ctl);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    ctl->env = *env;
    for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        ctl->clients[i].fd = -1;
    }
    ctl->fd = bind_socket(ctl, group, gid, err);
    if (ctl->fd < 0) {
        free(ctl->path);
        free(ctl);
        return NULL;
    }
    log_info("control socket on %s (mode %s)", path, group ? "0660" : "0600");
    return ctl;
}

static void client_close(struct control_client *c)
{
    if (c->fd < 0) {
        return;
    }
    close(c->fd);
    free(c->in);
    free(c->out);
    *c = (struct control_client){.fd = -1};
}

/* Queues `obj` (taken) as one line. */
static void client_reply(struct control_client *c, struct json_object *obj)
{
    size_t len;
    const char *s =
        json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
    size_t need = c->out_len + len + 1;
    if (s == NULL || need > CONTROL_MAX_PENDING) {
        log_warning("control socket: a client does not read its replies; "
                    "dropping it");
        json_object_put(obj);
        client_close(c);
        return;
    }
    char *grown = realloc(c->out, need);
    if (grown == NULL) {
        json_object_put(obj);
        client_close(c);
        return;
    }
    c->out = grown;
    memcpy(c->out + c->out_len, s, len);
    c->out[c->out_len + len] = '\n';
    c->out_len = need;
    json_object_put(obj);
}

/* Writes what it can of the pending replies. */
static void client_flush(struct control_client *c)
{
    while (c->fd >= 0 && c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            client_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->fd >= 0) {
        c->out_off = c->out_len = 0;
        if (c->eof) {
            client_close(c);
        }
    }
}

static void handle_line(struct control *ctl, struct control_client *c,
                        const char *line, size_t len)
{
    struct control_request req;
    struct err err;
    err_clear(&err);
    if (control_parse_request(line, len, &req, &err) < 0) {
        client_reply(c, control_error(err.msg));
        return;
    }
    client_reply(c, control_exec(ctl, &req));
    control_request_fini(&req);
}

/* Reads what is there and answers each complete line. */
static void client_read(struct control *ctl, struct control_client *c)
{
    size_t room = CONTROL_MAX_LINE + 1 - c->in_len;
    ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        c->eof = true;
        if (c->out_len == 0) {
            client_close(c);
        }
        return;
    }
    c->in_len += (size_t)n;
    size_t start = 0;
    for (size_t i = c->in_len - (size_t)n; i < c->in_len; i++) {
        if (c->in[i] != '\n') {
            continue;
        }
        if (!c->skipping) {
            handle_line(ctl, c, c->in + start, i - start);
            if (c->fd < 0) {
                return;
            }
        }
        c->skipping = false;
        start = i + 1;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len > CONTROL_MAX_LINE) {
        if (!c->skipping) {
            char msg[96];
            snprintf(msg, sizeof msg, "request: longer than %u bytes",
                     CONTROL_MAX_LINE);
            client_reply(c, control_error(msg));
        }
        c->skipping = true;
        c->in_len = 0;
    }
}

static void accept_client(struct control *ctl)
{
    int fd = accept4(ctl->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        return;
    }
    for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        struct control_client *c = &ctl->clients[i];
        if (c->fd >= 0) {
            continue;
        }
        c->in = malloc(CONTROL_MAX_LINE + 1);
        if (c->in == NULL) {
            break;
        }
        c->fd = fd;
        return;
    }
    static const char busy[] =
        "{\"error\":\"too many control clients; try again later\"}\n";
    if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        log_debug("control socket: %s", strerror(errno));
    }
    close(fd);
}

void control_add_pollfds(struct control *ctl, struct pollfd *fds, unsigned *n,
                         unsigned max)
{
    if (ctl == NULL || *n + CONTROL_MAX_POLLFDS > max) {
        return;
    }
    fds[(*n)++] = (struct pollfd){.fd = ctl->fd, .events = POLLIN};
    for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        const struct control_client *c = &ctl->clients[i];
        short ev = c->out_len > 0 ? POLLOUT : c->eof ? 0 : POLLIN;
        /* A free slot polls nothing (fd -1), keeping the order fixed. */
        fds[(*n)++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
}

void control_process(struct control *ctl, const struct pollfd *fds, unsigned n)
{
    if (ctl == NULL || n < CONTROL_MAX_POLLFDS) {
        return;
    }
    for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        struct control_client *c = &ctl->clients[i];
        short re = fds[1 + i].revents;
        if (c->fd < 0 || fds[1 + i].fd != c->fd || re == 0) {
            continue;
        }
        if (re & POLLOUT) {
            client_flush(c);
        } else if (re & (POLLIN | POLLHUP | POLLERR)) {
            client_read(ctl, c);
            client_flush(c);
        }
    }
    if (fds[0].revents & POLLIN) {
        accept_client(ctl);
    }
}

void control_reloaded(struct control *ctl)
{
    if (ctl != NULL) {
        control_live_clear(ctl);
    }
}

void control_close(struct control *ctl)
{
    if (ctl == NULL) {
        return;
    }
    for (unsigned i = 0; i < CONTROL_MAX_CLIENTS; i++) {
        client_close(&ctl->clients[i]);
    }
    close(ctl->fd);
    struct stat st;
    if (stat(ctl->path, &st) == 0 && st.st_dev == ctl->dev &&
        st.st_ino == ctl->ino) {
        unlink(ctl->path);
    }
    control_live_clear(ctl);
    free(ctl->path);
    free(ctl);
}
