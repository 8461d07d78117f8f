/* SPDX-License-Identifier: MIT */
/*
 * Service plumbing for the daemon: systemd's notification protocol
 * (sd_notify, spoken directly, without libsystemd), socket activation
 * (LISTEN_FDS / LISTEN_PID), and a locked pidfile.
 */
#ifndef NBDSRV_DAEMON_H
#define NBDSRV_DAEMON_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/err.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* The first descriptor systemd passes (SD_LISTEN_FDS_START). */
#define DAEMON_LISTEN_FDS_START 3

/*
 * Sends one state message ("READY=1", "RELOADING=1\nMONOTONIC_USEC=...")
 * to the socket named by $NOTIFY_SOCKET (a path, or an abstract name
 * starting with '@').  Returns 1 if sent, 0 when $NOTIFY_SOCKET is unset,
 * or -errno.  ANY_THREAD.
 */
ANY_THREAD int daemon_notify(const char *fmt, ...) PRINTF_FMT(1, 2);

/* CLOCK_MONOTONIC in microseconds, for MONOTONIC_USEC.  ANY_THREAD. */
ANY_THREAD unsigned long long daemon_monotonic_usec(void);

/*
 * Socket activation: when $LISTEN_PID is our pid and $LISTEN_FDS is N >
 * 0, checks that fds 3..3+N-1 are stream sockets, either all listening
 * (*connected false) or one connected socket (N is 1, *connected true:
 * systemd's Accept=yes, one daemon per connection), sets close-on-exec
 * on them, unsets the variables, and returns N with *first = 3.  Returns
 * 0 when the daemon was not socket-activated, or -errno with err set (a
 * connected socket among others, a datagram socket, not a socket).  Call
 * before any other fd is opened.  ANY_THREAD.
 */
ANY_THREAD int daemon_listen_fds(int *first, bool *connected, struct err *err);

/*
 * The one connection of --inetd: fd 0, when it is a connected stream
 * socket that fd 1 is too (inetd, socketpairs); otherwise fd 0 is read
 * and fd 1 written (pipes, under ssh), relayed by two threads through a
 * socketpair whose other end is what the server serves.  Owned by main.
 */
struct daemon_stdio {
    int fd;     /* the socket to serve; taken by whoever serves it */
    bool relay; /* the relay threads run */
    bool stderr_was_socket; /* fd 2 was the connection (inetd): log to
                               syslog */
    int relay_fd;           /* the relay's end of the socketpair */
    pthread_t to_server, to_client;
};

/*
 * Sets up `st` from fds 0 and 1, then points fds 0 and 1 (and fd 2 when
 * it is the connection too) at /dev/null, so that nothing but the
 * protocol reaches the client and the connection closes when the server
 * closes it.  A listening socket on fd 0 (inetd "wait") and a datagram
 * socket are refused.  0 or -errno with err set.  Main thread, before
 * the loops start.
 */
ANY_THREAD int daemon_stdio_open(struct daemon_stdio *st, struct err *err);

/*
 * Ends the relay, if any: waits (at most a few seconds) until what the
 * server wrote has reached fd 1.  Call once the server has closed the
 * connection.  ANY_THREAD (main).
 */
ANY_THREAD void daemon_stdio_close(struct daemon_stdio *st);

/*
 * Opens and locks (flock, exclusive, non-blocking) the pidfile at
 * `path`.  A file locked by a running daemon is left alone: -EEXIST, err
 * naming the pid written in it.  A stale file (no lock: its daemon died)
 * is taken over.  Returns the locked fd (keep it open for the process's
 * life) or -errno.  The lock survives fork, so it can be taken before
 * daemonizing.  ANY_THREAD.
 */
ANY_THREAD int daemon_pidfile_open(const char *path, struct err *err);

/* Writes the calling process's pid into the locked pidfile.  0 or -errno. */
ANY_THREAD int daemon_pidfile_write(int fd, struct err *err);

/* Removes the pidfile and closes its fd (dropping the lock). */
ANY_THREAD void daemon_pidfile_remove(const char *path, int fd);

/*
 * Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit.
 * The soft limit is commonly 1024 for the sake of programs that use
 * select(2), which the daemon does not; each client costs it a
 * descriptor.  Never lowers it.  Sets *limit to the soft limit in force
 * afterwards and returns 0, or returns -errno with err set (the limit
 * unchanged, *limit still set when it could be read).  ANY_THREAD
 * (start-up).
 */
ANY_THREAD int daemon_raise_nofile(uint64_t *limit, struct err *err);

/*
 * Whether stderr is the stream systemd's journal gave us ($JOURNAL_STREAM
 * names stderr's device and inode): lines then take "<N>" priority
 * prefixes.  ANY_THREAD.
 */
ANY_THREAD bool daemon_stderr_is_journal(void);

#endif
