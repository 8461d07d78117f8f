/* SPDX-License-Identifier: MIT */
/* Whole-buffer blocking I/O on a file descriptor (fdio.h). */
#include "nbdsrv/fdio.h"

#include <errno.h>
#include <unistd.h>

int fd_write_all(int fd, const void *buf, size_t len, off_t at)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = at == FDIO_POS ? write(fd, p, len) : pwrite(fd, p, len, at);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        p += n;
        len -= (size_t)n;
        at = at == FDIO_POS ? at : at + n;
    }
    return 0;
}

ssize_t fd_read_full(int fd, void *buf, size_t len, off_t at)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = at == FDIO_POS
                        ? read(fd, p + got, len - got)
                        : pread(fd, p + got, len - got, at + (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}
