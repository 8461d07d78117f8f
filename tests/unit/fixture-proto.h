/* SPDX-License-Identifier: MIT */
/* Test fixture: NBD frames and decoder wrappers for the test-proto-*.c
 * suites, the unit tests of the protocol codec (include/nbdsrv/proto.h). */
/*
 * Table-driven: known-good frames written out by hand from doc/proto.md
 * are decoded and compared field by field, encoders must reproduce them
 * byte for byte, and malformed or truncated input must be refused with
 * the documented errno.  Every malformed input is copied into a heap
 * buffer of exactly its length, so that under ASan a decoder that reads
 * one byte too far fails the test instead of passing by luck.
 */
#ifndef NBDSRV_FIXTURE_PROTO_H
#define NBDSRV_FIXTURE_PROTO_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#define COOKIE 0x0102030405060708ull

/* A heap copy of exactly `len` bytes (at least one byte allocated). */
uint8_t *dup_exact(const void *src, size_t len);
/* A heap buffer of `len` bytes of `c`, for long strings. */
char *filled(size_t len, char c);

/* Uniform wrappers: each decodes one message kind and returns 0/-errno. */
typedef int decode_fn(const void *buf, size_t len);

int w_greeting(const void *buf, size_t len);
int w_client_flags(const void *buf, size_t len);
int w_option_header(const void *buf, size_t len);
int w_opt_info(const void *buf, size_t len);
int w_opt_meta(const void *buf, size_t len);
int w_option_reply(const void *buf, size_t len);
int w_rep_server(const void *buf, size_t len);
int w_rep_info(const void *buf, size_t len);
int w_rep_meta_context(const void *buf, size_t len);
int w_export_name_reply(const void *buf, size_t len);
int w_request(const void *buf, size_t len);
int w_request_ext(const void *buf, size_t len);
int w_reply(const void *buf, size_t len);
int w_reply_ext(const void *buf, size_t len);
int w_offset_data(const void *buf, size_t len);
int w_offset_hole(const void *buf, size_t len);
int w_block_status(const void *buf, size_t len);
int w_block_status_ext(const void *buf, size_t len);
int w_chunk_error(const void *buf, size_t len);
int w_chunk_error_offset(const void *buf, size_t len);

/* Runs `fn` on an exact heap copy of the bytes. */
int run_exact(decode_fn *fn, const uint8_t *bytes, size_t len);

/*
 * Known-good frames, used by the round-trip and truncation tests (the
 * lengths are checked against the definitions in fixture-proto.c).
 */
extern const uint8_t greeting_bytes[18];
extern const uint8_t client_flags_bytes[4];
extern const uint8_t option_header_bytes[16];
extern const uint8_t opt_go_bytes[14];
extern const uint8_t opt_meta_bytes[40];
extern const uint8_t option_reply_ack_bytes[20];
extern const uint8_t rep_info_export_data[12];
extern const uint8_t rep_info_block_size_data[14];
extern const uint8_t export_name_reply_short[10];
extern const uint8_t request_bytes[28];
extern const uint8_t request_ext_bytes[32];
extern const uint8_t simple_reply_bytes[16];
extern const uint8_t structured_reply_bytes[20];
extern const uint8_t extended_reply_bytes[32];
extern const uint8_t offset_data_prefix[8];
extern const uint8_t offset_hole_bytes[12];
extern const uint8_t block_status_bytes[20];
/* One extent only: every prefix of a longer list would be a valid list. */
extern const uint8_t block_status_one_bytes[12];
extern const uint8_t block_status_ext_bytes[24];
extern const uint8_t chunk_error_bytes[9];
extern const uint8_t chunk_error_offset_bytes[16];

/* Each known-good frame with its decoder. */
struct frame {
    const char *what;
    decode_fn *decode;
    const uint8_t *bytes;
    size_t len;
};

extern const struct frame frames[20];

/* A hand-written option payload and the errno its parser must give. */
struct payload_case {
    const char *what;
    uint8_t bytes[48];
    size_t len;
    int expect;
};

#endif
