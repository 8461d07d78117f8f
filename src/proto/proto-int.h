/* SPDX-License-Identifier: MIT */
/*
 * Private helpers of the protocol codec: big-endian loads and stores at
 * any alignment.  Wire buffers are plain bytes with no alignment promise,
 * so every access goes through memcpy, which compilers turn into a single
 * (possibly unaligned) load or store plus a byte swap.
 */
#ifndef NBDSRV_PROTO_INT_H
#define NBDSRV_PROTO_INT_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline void put_u16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, sizeof v);
}

static inline void put_u32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof v);
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, sizeof v);
}

static inline uint16_t get_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return be16toh(v);
}

static inline uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return be32toh(v);
}

static inline uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return be64toh(v);
}

/*
 * Copies a string that the caller vouched for; `len` may be 0 with a
 * NULL pointer (memcpy must never see NULL, even for 0 bytes).
 */
static inline void put_bytes(uint8_t *p, const void *s, size_t len)
{
    if (len > 0) {
        memcpy(p, s, len);
    }
}

#endif
