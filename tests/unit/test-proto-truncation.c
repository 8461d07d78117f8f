/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * known-good frames and their prefixes, random input through every decoder.
 * The frames, decoder wrappers and helpers the test-proto-*.c files share
 * are in fixture-proto.c; fixture-proto.h says how the tests are built.
 */
#include "fixture-main.h"
#include "fixture-proto.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/proto.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Known-good frames, used by the round-trip and truncation tests      */
/* ------------------------------------------------------------------ */

/* Every known-good frame decodes, and every strict prefix of it fails. */
UNIT_LOOP_TEST("truncation", test_proto_truncated_frames_fail, 0,
               ARRAY_SIZE(frames))
{
    const struct frame *f = &frames[_i];

    ck_assert_msg(run_exact(f->decode, f->bytes, f->len) == 0,
                  "%s: full frame refused", f->what);
    for (size_t n = 0; n < f->len; n++) {
        int r = run_exact(f->decode, f->bytes, n);
        ck_assert_msg(r < 0, "%s: %zu-byte prefix accepted", f->what, n);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Robustness: random input through every decoder                      */
/* ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static decode_fn *const all_decoders[] = {
    w_greeting,
    w_client_flags,
    w_option_header,
    w_opt_info,
    w_opt_meta,
    w_option_reply,
    w_rep_server,
    w_rep_info,
    w_rep_meta_context,
    w_export_name_reply,
    w_request,
    w_request_ext,
    w_reply,
    w_reply_ext,
    w_offset_data,
    w_offset_hole,
    w_block_status,
    w_block_status_ext,
    w_chunk_error,
    w_chunk_error_offset,
};

/*
 * Random bytes, often starting from a valid frame with a few bytes
 * flipped so that the decoders get past their first checks.  The only
 * assertion is that nothing crashes or reads out of bounds (ASan).
 */
UNIT_TEST("truncation", test_proto_random_input_never_crashes)
{
    for (int round = 0; round < 20000; round++) {
        const struct frame *f = &frames[rng() % ARRAY_SIZE(frames)];
        size_t len = rng() % 64;
        uint8_t *p = malloc(len > 0 ? len : 1);

        ck_assert_ptr_nonnull(p);
        for (size_t i = 0; i < len; i++) {
            p[i] = i < f->len && rng() % 4 != 0 ? f->bytes[i] : (uint8_t)rng();
        }
        for (size_t d = 0; d < ARRAY_SIZE(all_decoders); d++) {
            (void)all_decoders[d](p, len);
        }
        free(p);
    }
}
END_TEST

UNIT_SUITE("proto");
UNIT_TCASE("truncation", 30, NULL, NULL);
