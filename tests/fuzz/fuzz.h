/* SPDX-License-Identifier: MIT */
/* What the libFuzzer targets under tests/fuzz/ share. */
#ifndef NBDSRV_TESTS_FUZZ_H
#define NBDSRV_TESTS_FUZZ_H

#include "nbdsrv/log.h"
#include "nbdsrv/proto.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A property the codec must keep: a failure logs the condition with
 * file:line and aborts, which libFuzzer reports as a crash and saves
 * the input.
 */
#define FUZZ_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            BUG("fuzz assertion failed: " #cond);                              \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Formats `flags` of `field` for a log into a roomy buffer, a 7-byte one
 * and none, and checks that the three agree on the length and the text.
 */
static inline void fuzz_check_flags(enum proto_flag_field field, uint32_t flags)
{
    char big[256], small[8];
    size_t n = proto_format_flags(field, flags, big, sizeof big);

    FUZZ_ASSERT(n < sizeof big && n == strlen(big) && n > 0);
    FUZZ_ASSERT(proto_format_flags(field, flags, small, sizeof small) == n);
    FUZZ_ASSERT(strlen(small) == (n < sizeof small ? n : sizeof small - 1));
    FUZZ_ASSERT(strncmp(small, big, sizeof small - 1) == 0);
    FUZZ_ASSERT(proto_format_flags(field, flags, NULL, 0) == n);
}

#endif
