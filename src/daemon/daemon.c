/* SPDX-License-Identifier: MIT */
/*
 * systemd notification, socket activation and the pidfile.
 *
 * sd_notify is one datagram of "KEY=VALUE" lines sent to the unix socket
 * in $NOTIFY_SOCKET (sd_notify(3)); an '@' first character stands for an
 * abstract socket's leading NUL.  Socket activation follows
 * sd_listen_fds(3): the fds start at 3, and $LISTEN_PID must be ours, so
 * that variables inherited by a child are not mistaken for its own.
 *
 * The pidfile is locked with flock for as long as the daemon runs: a
 * second daemon finds it locked and refuses to start instead of
 * overwriting a live daemon's pid; a file left by a crashed daemon has
 * no lock and is reused.
 *
 * The open-file limit: the soft limit goes up to the hard one at start,
 * since every client costs a descriptor.
 */
#include "nbdsrv/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int daemon_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof sun.sun_path) {
        return -EINVAL;
    }
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@') {
        sun.sun_path[0] = '\0';
    }
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                     len + (path[0] == '@' ? 0 : 1));

    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg) {
        return -EINVAL;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    ssize_t sent = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL,
                          (struct sockaddr *)&sun, addr_len);
    int r = sent == n ? 1 : sent < 0 ? -errno : -EIO;
    close(fd);
    return r;
}

unsigned long long daemon_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull +
           (unsigned long long)ts.tv_nsec / 1000u;
}

static int parse_env_long(const char *name, long *out)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return -ENOENT;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*end != '\0' || errno != 0 || n < 0) {
        return -EINVAL;
    }
    *out = n;
    return 0;
}

int daemon_listen_fds(int *first, bool *connected, struct err *err)
{
    long pid, n;
    *connected = false;
    if (parse_env_long("LISTEN_PID", &pid) < 0 || pid != (long)getpid()) {
        return 0;
    }
    int r = parse_env_long("LISTEN_FDS", &n);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (r < 0 || n > 1024) {
        return err_set(err, EINVAL, "LISTEN_FDS is not a small number");
    }
    unsigned nr_connected = 0;
    for (long i = 0; i < n; i++) {
        int fd = DAEMON_LISTEN_FDS_START + (int)i;
        int accepting = 0, type = 0;
        socklen_t len = sizeof accepting;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0) {
            return err_set_errno(
                err, errno, "socket activation: fd %d is not a socket", fd);
        }
        len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
            type != SOCK_STREAM) {
            return err_set(err, EINVAL,
                           "socket activation: fd %d is not a stream socket "
                           "(use ListenStream=)",
                           fd);
        }
        if (!accepting) {
            nr_connected++;
        }
        int fl = fcntl(fd, F_GETFD);
        if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) {
            return err_set_errno(err, errno, "socket activation: fd %d", fd);
        }
    }
    if (nr_connected > 0 && n != 1) {
        return err_set(err, EINVAL,
                       "socket activation: %u of the %ld sockets passed are "
                       "connected (Accept=yes): pass either listening "
                       "sockets or exactly one connection",
                       nr_connected, n);
    }
    *connected = nr_connected == 1;
    *first = DAEMON_LISTEN_FDS_START;
    return (int)n;
}

int daemon_pidfile_open(const char *path, struct err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        return err_set_errno(err, errno, "pidfile %s", path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            return err_set(err, EEXIST,
                           "pidfile %s is locked by a running daemon (pid "
                           "%s); not starting a second one",
                           path, buf[0] != '\0' ? buf : "unknown");
        }
        return err_set_errno(err, e, "pidfile %s: flock", path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, EINVAL, "pidfile %s: not a regular file", path);
    }
    return fd;
}

int daemon_pidfile_write(int fd, struct err *err)
{
    char line[32];
    int len = snprintf(line, sizeof line, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)len, 0) != len) {
        return err_set_errno(err, errno, "writing the pidfile");
    }
    return 0;
}

void daemon_pidfile_remove(const char *path, int fd)
{
    if (fd < 0) {
        return;
    }
    /* Unlink while still holding the lock: a daemon starting now either
     * finds the lock taken or creates a fresh file. */
    unlink(path);
    close(fd);
}

bool daemon_stderr_is_journal(void)
{
    const char *v = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (v == NULL || sscanf(v, "%llu:%llu", &dev, &ino) != 2 ||
        fstat(STDERR_FILENO, &st) < 0) {
        return false;
    }
    return (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

int daemon_raise_nofile(uint64_t *limit, struct err *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return err_set_errno(err, errno, "getrlimit(RLIMIT_NOFILE)");
    }
    *limit = (uint64_t)rl.rlim_cur;
    if (rl.rlim_cur == RLIM_INFINITY ||
        (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur >= rl.rlim_max)) {
        return 0;
    }
    struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &raised) < 0) {
        return err_set_errno(
            err, errno, "raising the open file limit from %llu to %llu",
            (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    }
    *limit = (uint64_t)raised.rlim_cur;
    return 0;
}
