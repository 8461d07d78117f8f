/* SPDX-License-Identifier: MIT */
/* The loop the whole-connection fuzz targets run their coroutines on. */
#ifndef NBDSRV_TESTS_FUZZ_LOOP_H
#define NBDSRV_TESTS_FUZZ_LOOP_H

#include "fuzz.h"
#include "nbdsrv/err.h"
#include "nbdsrv/log.h"
#include "nbdsrv/loop.h"

#include <stdlib.h>

/*
 * Starts `loops` with one loop thread, shared by every input of the
 * process, and sets the log level: errors only, everything with
 * FUZZ_DEBUG in the environment.
 */
static inline void fuzz_start_one_loop(struct loop_group *loops)
{
    log_set_level(getenv("FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG
                                               : LOG_LEVEL_ERROR);
    struct err err;
    err_clear(&err);
    struct loop_config lc = {.poll_ns = LOOP_POLL_NONE};
    if (loop_group_start(loops, 1, &lc, &err) < 0) {
        log_error("loop_group_start: %s", err.msg);
        BUG("the fuzz target's loop does not start");
    }
}

#endif
