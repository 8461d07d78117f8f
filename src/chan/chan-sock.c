/* SPDX-License-Identifier: MIT */
/*
 * Socket channels and the address syntax HOST:PORT, [V6]:PORT, unix:PATH.
 *
 * Reads and writes are plain non-blocking recvmsg/sendmsg on the calling
 * thread; only the waits go through io_uring (chan_yield).  sendmsg uses
 * MSG_NOSIGNAL so a closed peer is -EPIPE, never SIGPIPE.
 */
#include "nbdsrv/chan-sock.h"

#include "nbdsrv/coro-io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Owned by its channel references. */
struct chan_sock {
    struct chan ch;
    bool tcp; /* immutable: TCP, where MSG_MORE can hold data back */
};

static ssize_t sock_readv(struct chan *ch, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov,
                         .msg_iovlen = (size_t)iovcnt};
    ssize_t n;
    do {
        n = recvmsg(ch->fd, &msg, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    return n;
}

static ssize_t sock_writev(struct chan *ch, const struct iovec *iov, int iovcnt,
                           int flags)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov,
                         .msg_iovlen = (size_t)iovcnt};
    ssize_t n;
    do {
        n = sendmsg(ch->fd, &msg,
                    MSG_DONTWAIT | MSG_NOSIGNAL |
                        ((flags & CHAN_WRITE_MORE) ? MSG_MORE : 0));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    return n;
}

/* Re-setting TCP_NODELAY sends what MSG_MORE held back (tcp(7)). */
static int sock_push(struct chan *ch)
{
    struct chan_sock *s = container_of(ch, struct chan_sock, ch);
    if (!s->tcp) {
        return 0;
    }
    int one = 1;
    if (setsockopt(ch->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        return -errno;
    }
    return 0;
}

static int sock_shutdown(struct chan *ch, int how)
{
    return shutdown(ch->fd, how) < 0 ? -errno : 0;
}

static void sock_free(struct chan *ch)
{
    struct chan_sock *s = container_of(ch, struct chan_sock, ch);
    close(ch->fd);
    free(s);
}

static const struct chan_ops chan_sock_ops = {
    .name = "socket",
    .readv = sock_readv,
    .writev = sock_writev,
    .push = sock_push,
    .shutdown = sock_shutdown,
    .free = sock_free,
};

struct chan *chan_sock_new_take(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        goto out_close;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    bool tcp = getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
               (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    if (tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct chan_sock *s = calloc(1, sizeof *s);
    if (s == NULL) {
        goto out_close;
    }
    s->tcp = tcp;
    chan_init(&s->ch, &chan_sock_ops, fd);
    return &s->ch;

out_close : {
    int saved = errno;
    close(fd);
    errno = saved;
}
    return NULL;
}

static int parse_port(const char *text, const char *whole, struct err *err)
{
    char *end;
    errno = 0;
    long port = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || port < 0 ||
        port > 65535) {
        return err_set(err, EINVAL, "%s: bad port '%s' (want 0-65535)", whole,
                       text);
    }
    return (int)port;
}

static int parse_unix(const char *path, const char *whole,
                      struct sock_addr *addr, struct err *err)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&addr->ss;
    size_t len = strlen(path);
    if (len == 0) {
        return err_set(err, EINVAL, "%s: empty unix socket path", whole);
    }
    if (len >= sizeof sun->sun_path) {
        return err_set(err, ENAMETOOLONG,
                       "%s: unix socket path is %zu bytes, the limit is %zu",
                       whole, len, sizeof sun->sun_path - 1);
    }
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len + 1);
    addr->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

static int resolve(const char *host, int port, const char *whole,
                   struct sock_addr *addr, struct err *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int r = getaddrinfo(host, service, &hints, &res);
    if (r != 0) {
        return err_set(err, EINVAL, "%s: cannot resolve host '%s': %s", whole,
                       host, gai_strerror(r));
    }
    memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
    addr->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int sock_addr_parse(const char *text, struct sock_addr *addr, struct err *err)
{
    memset(addr, 0, sizeof *addr);
    if (strncmp(text, "unix:", 5) == 0) {
        return parse_unix(text + 5, text, addr, err);
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL) {
            return err_set(err, EINVAL, "%s: missing ']' after IPv6 address",
                           text);
        }
        if (close[1] != ':') {
            return err_set(err, EINVAL, "%s: missing ':PORT' after ']'", text);
        }
        char host[INET6_ADDRSTRLEN];
        size_t hlen = (size_t)(close - text - 1);
        if (hlen == 0 || hlen >= sizeof host) {
            return err_set(err, EINVAL, "%s: bad IPv6 address", text);
        }
        memcpy(host, text + 1, hlen);
        host[hlen] = '\0';
        int port = parse_port(close + 2, text, err);
        if (port < 0) {
            return port;
        }
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            return err_set(err, EINVAL, "%s: bad IPv6 address '%s'", text,
                           host);
        }
        addr->len = sizeof *sin6;
        return 0;
    }
    const char *colon = strrchr(text, ':');
    if (colon == NULL) {
        return err_set(err, EINVAL,
                       "%s: expected HOST:PORT, [V6ADDR]:PORT or unix:PATH",
                       text);
    }
    if (colon == text) {
        return err_set(err, EINVAL, "%s: missing host before ':'", text);
    }
    if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
        return err_set(err, EINVAL,
                       "%s: an IPv6 address must be written [ADDR]:PORT", text);
    }
    int port = parse_port(colon + 1, text, err);
    if (port < 0) {
        return port;
    }
    char host[256];
    size_t hlen = (size_t)(colon - text);
    if (hlen >= sizeof host) {
        return err_set(err, EINVAL, "%s: host name too long", text);
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr->ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        addr->len = sizeof *sin;
        return 0;
    }
    return resolve(host, port, text, addr, err);
}

void sock_addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                      size_t size)
{
    char host[INET6_ADDRSTRLEN];
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        snprintf(buf, size, "%s:%u", host, ntohs(sin->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        snprintf(buf, size, "[%s]:%u", host, ntohs(sin6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        snprintf(buf, size, "unix:%.*s", (int)strnlen(sun->sun_path, n),
                 sun->sun_path);
        break;
    }
    default:
        snprintf(buf, size, "(address family %d)", sa->sa_family);
        break;
    }
}

/*
 * A unix socket path is in use.  If nobody accepts on it (a daemon that
 * died without cleaning up), removes the file and returns 0; otherwise
 * returns EADDRINUSE, EEXIST when the path is not a socket, or the errno
 * of a failed check.  Abstract sockets have no file and are never stale.
 */
static int remove_stale_unix_socket(const struct sock_addr *addr)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&addr->ss;
    if (sun->sun_path[0] == '\0') {
        return EADDRINUSE;
    }
    struct stat st;
    if (lstat(sun->sun_path, &st) < 0) {
        return errno == ENOENT ? 0 : errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return EEXIST;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        return errno;
    }
    int r = connect(probe, (const struct sockaddr *)&addr->ss, addr->len);
    int e = r < 0 ? errno : 0;
    close(probe);
    if (e != ECONNREFUSED) {
        return EADDRINUSE;
    }
    if (unlink(sun->sun_path) < 0 && errno != ENOENT) {
        return errno;
    }
    return 0;
}

int sock_listen(const struct sock_addr *addr, int backlog, struct err *err)
{
    char name[128];
    sock_addr_format((const struct sockaddr *)&addr->ss, addr->len, name,
                     sizeof name);
    int family = addr->ss.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return err_set_errno(err, errno, "%s: socket", name);
    }
    int one = 1;
    if (family != AF_UNIX) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
        int e = errno;
        if (e == EADDRINUSE && family == AF_UNIX) {
            e = remove_stale_unix_socket(addr);
            if (e == 0 &&
                bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
                e = errno;
            }
        }
        if (e != 0) {
            close(fd);
            if (e == EADDRINUSE && family == AF_UNIX) {
                return err_set(err, e,
                               "%s: bind: another server is listening there",
                               name);
            }
            if (e == EEXIST) {
                return err_set(err, EADDRINUSE,
                               "%s: bind: the path exists and is not a socket",
                               name);
            }
            return err_set_errno(err, e, "%s: bind", name);
        }
    }
    if (listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return err_set_errno(err, e, "%s: listen", name);
    }
    return fd;
}

struct chan *chan_sock_connect(const struct sock_addr *addr, struct err *err)
{
    char name[128];
    sock_addr_format((const struct sockaddr *)&addr->ss, addr->len, name,
                     sizeof name);
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set_errno(err, errno, "%s: socket", name);
        return NULL;
    }
    int r = coro_connect(fd, (const struct sockaddr *)&addr->ss, addr->len);
    if (r < 0) {
        close(fd);
        err_set_errno(err, -r, "%s: connect", name);
        return NULL;
    }
    struct chan *ch = chan_sock_new_take(fd);
    if (ch == NULL) {
        err_set_errno(err, errno, "%s: channel", name);
    }
    return ch;
}
