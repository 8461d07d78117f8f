/* SPDX-License-Identifier: MIT */
/*
 * The connection of --inetd: what fds 0 and 1 are, and the relay for
 * pipes.
 *
 * inetd, socketpair-style launchers (libnbd's nbd_connect_command) and
 * systemd's StandardInput=socket put one connected stream socket on
 * fds 0 and 1: the server serves that socket itself.  ssh and shell
 * pipelines give a pipe (or two different files) to read and another to
 * write; a channel polls one fd for both directions, so two threads copy
 * fd 0 into one end of a socketpair and that end back out to fd 1, and
 * the server serves the other end.  The relay threads use blocking I/O
 * and touch nothing else: the one that copies to the server half-closes
 * the socketpair at the client's end of file (the server sees end of
 * file), the one that copies to the client ends when the server closes
 * its end, and daemon_stdio_close waits for it so that the last reply
 * is written before the process exits.
 *
 * Either way fds 0 and 1 end up on /dev/null: nothing may be printed into
 * the protocol stream, and a copy of the connection left on fd 1 would
 * keep it open after the server closed it.  fd 2 too when it is the
 * connection (inetd gives the socket as all three); logging then goes to
 * syslog.
 */
#include "nbdsrv/daemon.h"
#include "nbdsrv/fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long daemon_stdio_close waits for the last bytes to reach fd 1. */
#define RELAY_DRAIN_SECONDS 10

#define RELAY_BUF_SIZE (128 * 1024)

/* Whether fds a and b are open on the same file. */
static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Copies `from` to `to` until end of file or an error. */
static void copy(int from, int to)
{
    char *buf = malloc(RELAY_BUF_SIZE);
    if (buf == NULL) {
        return;
    }
    for (;;) {
        ssize_t n = read(from, buf, RELAY_BUF_SIZE);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || fd_write_all(to, buf, (size_t)n, FDIO_POS) < 0) {
            break;
        }
    }
    free(buf);
}

/* The client's bytes (fd 0) to the server. */
static void *to_server_entry(void *opaque)
{
    struct daemon_stdio *st = opaque;
    copy(STDIN_FILENO, st->relay_fd);
    /* The server reads end of file: the client is done. */
    shutdown(st->relay_fd, SHUT_WR);
    return NULL;
}

/* The server's bytes to the client (fd 1). */
static void *to_client_entry(void *opaque)
{
    struct daemon_stdio *st = opaque;
    copy(st->relay_fd, STDOUT_FILENO);
    /* The server is gone: the client reads end of file. */
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDOUT_FILENO);
        close(null);
    }
    /* Unblock the other direction's write, if it waits. */
    shutdown(st->relay_fd, SHUT_RDWR);
    return NULL;
}

/* Points fd at /dev/null; false on failure. */
static bool to_null(int fd)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) {
        return false;
    }
    bool ok = dup2(null, fd) == fd;
    close(null);
    return ok;
}

/* Starts the relay between fds 0/1 and a new socketpair. */
static int start_relay(struct daemon_stdio *st, struct err *err)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        return err_set_errno(err, errno, "--inetd: socketpair");
    }
    st->fd = sp[0];
    st->relay_fd = sp[1];
    int r = pthread_create(&st->to_server, NULL, to_server_entry, st);
    if (r != 0) {
        goto out_close;
    }
    r = pthread_create(&st->to_client, NULL, to_client_entry, st);
    if (r != 0) {
        /* The first thread blocks in read(0) forever; it dies with us. */
        pthread_detach(st->to_server);
        goto out_close;
    }
    /* It may block in read(0) for as long as the client keeps its end
     * open: never joined. */
    pthread_detach(st->to_server);
    st->relay = true;
    return 0;

out_close:
    close(sp[0]);
    close(sp[1]);
    st->fd = -1;
    st->relay_fd = -1;
    return err_set_errno(err, r, "--inetd: starting the relay thread");
}

int daemon_stdio_open(struct daemon_stdio *st, struct err *err)
{
    memset(st, 0, sizeof *st);
    st->fd = -1;
    st->relay_fd = -1;
    int type = 0, accepting = 0;
    socklen_t len = sizeof type;
    bool is_socket =
        getsockopt(STDIN_FILENO, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    if (is_socket) {
        len = sizeof accepting;
        if (getsockopt(STDIN_FILENO, SOL_SOCKET, SO_ACCEPTCONN, &accepting,
                       &len) < 0) {
            accepting = 0;
        }
        if (type != SOCK_STREAM) {
            return err_set(err, EINVAL,
                           "--inetd: standard input is not a stream socket "
                           "(inetd: use a stream service)");
        }
        if (accepting) {
            return err_set(err, EINVAL,
                           "--inetd: standard input is a listening socket "
                           "(inetd \"wait\" mode): use \"nowait\", or run "
                           "without --inetd under socket activation");
        }
    } else if (fcntl(STDIN_FILENO, F_GETFL) < 0) {
        return err_set(err, EBADF, "--inetd: standard input is closed");
    }
    st->stderr_was_socket = is_socket && same_file(STDERR_FILENO, STDIN_FILENO);
    if (is_socket && (same_file(STDOUT_FILENO, STDIN_FILENO) ||
                      fcntl(STDOUT_FILENO, F_GETFL) < 0)) {
        st->fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        if (st->fd < 0) {
            return err_set_errno(err, errno, "--inetd: dup");
        }
    } else {
        if (fcntl(STDOUT_FILENO, F_GETFL) < 0) {
            return err_set(err, EBADF,
                           "--inetd: standard output is closed (it carries "
                           "the replies when standard input is not a "
                           "socket)");
        }
        int r = start_relay(st, err);
        if (r < 0) {
            return r;
        }
        /* The relay threads own fds 0 and 1 now. */
        if (st->stderr_was_socket && !to_null(STDERR_FILENO)) {
            return err_set_errno(err, errno, "--inetd: /dev/null");
        }
        return 0;
    }
    if (!to_null(STDIN_FILENO) || !to_null(STDOUT_FILENO) ||
        (st->stderr_was_socket && !to_null(STDERR_FILENO))) {
        int e = errno;
        close(st->fd);
        st->fd = -1;
        return err_set_errno(err, e, "--inetd: /dev/null");
    }
    return 0;
}

void daemon_stdio_close(struct daemon_stdio *st)
{
    if (st->fd >= 0) {
        close(st->fd);
        st->fd = -1;
    }
    if (!st->relay) {
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += RELAY_DRAIN_SECONDS;
    if (pthread_timedjoin_np(st->to_client, NULL, &deadline) != 0) {
        /* The client stopped reading: give up on it. */
        pthread_detach(st->to_client);
    }
    st->relay = false;
}
