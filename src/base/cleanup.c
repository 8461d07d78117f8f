/* SPDX-License-Identifier: MIT */
/* Targets of the cleanup attributes in cleanup.h. */
#include "nbdsrv/cleanup.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

void cleanup_free(void *ptr)
{
    free(*(void **)ptr);
}

void cleanup_close(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

void cleanup_unlock(pthread_mutex_t **mutex)
{
    pthread_mutex_unlock(*mutex);
}
