/* SPDX-License-Identifier: MIT */
/* libFuzzer target: transmission-phase requests, compact and extended. */
/*
 * The input is decoded as a 28-byte compact and as a 32-byte extended
 * request header.  Whatever decodes (0, or -EINVAL, which still fills
 * the struct) must encode back to the same bytes, must report unknown
 * flags exactly when the header form does not define them, and must
 * survive a trip through the other header form.  The payload length
 * follows the spec's rule (WRITE, or PAYLOAD_LEN with extended headers),
 * and the command's name and flags format for the log.
 */
#include "fuzz.h"
#include "nbdsrv/proto.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

static uint32_t load_be32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof v);
    return be32toh(v);
}

static bool same_request(const struct proto_request *a,
                         const struct proto_request *b)
{
    return a->flags == b->flags && a->type == b->type &&
           a->cookie == b->cookie && a->offset == b->offset &&
           a->length == b->length;
}

static void check_payload_len(const struct proto_request *req, bool extended)
{
    uint64_t want = 0;

    if (req->type == PROTO_CMD_WRITE ||
        (extended && (req->flags & PROTO_CMD_FLAG_PAYLOAD_LEN))) {
        want = req->length;
    }
    FUZZ_ASSERT(proto_request_payload_len(req, extended) == want);
}

/* The decoded request sent in the other header form. */
static void check_other_form(const struct proto_request *req, bool extended)
{
    uint8_t out[PROTO_EXTENDED_REQUEST_SIZE];
    struct proto_request back;
    bool other = !extended;
    uint32_t known = other ? PROTO_CMD_FLAGS_ALL : PROTO_CMD_FLAGS_COMPACT;
    ssize_t n = proto_encode_request(out, sizeof out, req, other);
    int r;

    if (!other && req->length > UINT32_MAX) {
        FUZZ_ASSERT(n == -EOVERFLOW);
        return;
    }
    FUZZ_ASSERT(n ==
                (other ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE));
    r = proto_decode_request(out, (size_t)n, other, &back);
    FUZZ_ASSERT(r == ((req->flags & ~known) ? -EINVAL : 0));
    FUZZ_ASSERT(same_request(req, &back));
}

static void fuzz_request(const uint8_t *data, size_t size, bool extended)
{
    size_t hsize = extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;
    uint32_t magic =
        extended ? PROTO_EXTENDED_REQUEST_MAGIC : PROTO_REQUEST_MAGIC;
    uint32_t known = extended ? PROTO_CMD_FLAGS_ALL : PROTO_CMD_FLAGS_COMPACT;
    uint8_t out[PROTO_EXTENDED_REQUEST_SIZE];
    struct proto_request req;
    int r = proto_decode_request(data, size, extended, &req);

    if (r == -EBADMSG) {
        FUZZ_ASSERT(size < hsize || load_be32(data) != magic);
        return;
    }
    FUZZ_ASSERT(r == 0 || r == -EINVAL);
    FUZZ_ASSERT(size >= hsize && load_be32(data) == magic);
    FUZZ_ASSERT((r == -EINVAL) == ((req.flags & ~known) != 0));
    FUZZ_ASSERT(extended || req.length <= UINT32_MAX);

    FUZZ_ASSERT(proto_encode_request(out, sizeof out, &req, extended) ==
                (ssize_t)hsize);
    FUZZ_ASSERT(memcmp(out, data, hsize) == 0);
    FUZZ_ASSERT(proto_encode_request(out, hsize - 1, &req, extended) ==
                -ENOBUFS);

    check_payload_len(&req, extended);
    check_other_form(&req, extended);
    FUZZ_ASSERT(proto_cmd_name(req.type) != NULL);
    fuzz_check_flags(PROTO_FIELD_CMD, req.flags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_request(data, size, false);
    fuzz_request(data, size, true);
    return 0;
}
