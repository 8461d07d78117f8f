/* SPDX-License-Identifier: MIT */
/* What the libFuzzer targets under tests/fuzz/ share. */
#ifndef NBDSRV_TESTS_FUZZ_H
#define NBDSRV_TESTS_FUZZ_H

#include "nbdsrv/log.h"
#include "nbdsrv/proto.h"

#include <errno.h>
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
 * Evaluates `call`, an encoder call that writes to FUZZ_OUT with room
 * FUZZ_CAP, twice: into the first half of the heap buffer `out` (`cap`
 * bytes), and, when that wrote n bytes, into the last n - 1 bytes of the
 * buffer, where the encoder must answer -ENOBUFS; a byte it wrote past
 * them would land in ASan's redzone.  Yields the first result, whose
 * bytes are left at `out`.
 */
#define FUZZ_BUILD(out, cap, call)                                             \
    ({                                                                         \
        size_t fuzz_cap_ = (cap);                                              \
        uint8_t *FUZZ_OUT = (out);                                             \
        size_t FUZZ_CAP = fuzz_cap_ / 2;                                       \
        ssize_t fuzz_n_ = (call);                                              \
        if (fuzz_n_ > 0) {                                                     \
            FUZZ_CAP = (size_t)fuzz_n_ - 1;                                    \
            FUZZ_OUT = (out) + fuzz_cap_ - FUZZ_CAP;                           \
            FUZZ_ASSERT((call) == -ENOBUFS);                                   \
        }                                                                      \
        fuzz_n_;                                                               \
    })

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
