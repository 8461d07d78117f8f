#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# libnbd 1.22 (the chroot's nbdsh and Python module) against nbd-serverd
# with a 16 GiB sparse export:
#   - extended headers are negotiated (libnbd says so, and the server);
#   - READ and WRITE at 64-bit offsets (across 4 GiB, above 4 GiB, at the
#     end), checked in the image file itself, and nothing lands at the
#     offset truncated to 32 bits;
#   - WRITE_ZEROES, TRIM, CACHE and BLOCK_STATUS (block_status_64) with
#     lengths over 4 GiB, each checked for its whole range: a length cut
#     to 32 bits would leave data behind or stop the extents short;
#   - the structured-reply fallback (set_request_extended_headers(False))
#     and plain simple replies: 64-bit offsets still work, 32-bit lengths
#     are the limit, and the 4 GiB requests are refused by libnbd before
#     they reach the wire;
#   - strict mode off (set_strict_mode(STRICT_AUTO_FLAG)): out-of-range requests and
#     unknown flags reach the server and get the errors the specification
#     names, and the connection stays in step;
#   - LIBNBD_DEBUG=1: libnbd logs the negotiation and prints no warning or
#     complaint about the server.
# Over TCP and over a Unix socket.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate
chroot_requires python3 nbdsh

img=$T/big.img
make_image "$img" 16G

cat >"$T/big.py" <<'EOF'
import errno
import os
import sys

import nbd

uri, image = sys.argv[1:3]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SIZE = 16 * GiB
HOLE_ZERO = nbd.STATE_HOLE | nbd.STATE_ZERO


def log(msg):
    print("  " + msg, flush=True)


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def errname(e):
    if isinstance(e.errno, int):
        return errno.errorcode.get(e.errno, str(e.errno))
    return str(e.errno)


def expect_error(what, names, fn):
    try:
        fn()
    except nbd.Error as e:
        name = errname(e)
        check(name in names, "%s: got %s (%s), expected %s"
              % (what, name, e.string, "/".join(names)))
        log("%s: %s as expected" % (what, name))
        return
    fail("%s: succeeded, expected %s" % (what, "/".join(names)))


def file_read(off, n):
    with open(image, "rb") as f:
        f.seek(off)
        return f.read(n)


def file_data_in(off, n):
    """Is any byte of [off, off+n) of the image file allocated?"""
    fd = os.open(image, os.O_RDONLY)
    try:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return False
            raise
        return d < off + n
    finally:
        os.close(fd)


def extents(h, off, count, flags=0, call=None):
    """The base:allocation extents of one BLOCK_STATUS request."""
    got = []

    def cb(metacontext, offset, entries, err):
        if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        check(offset == off, "extent callback offset %d, asked %d" % (offset, off))
        if entries and isinstance(entries[0], int):
            # block_status (32-bit): a flat list, length and flags in turn
            entries = list(zip(entries[0::2], entries[1::2]))
        got.extend(entries)
        return 0

    (call or h.block_status_64)(count, off, cb, flags)
    check(len(got) > 0, "BLOCK_STATUS at %d: no extent" % off)
    return got


def status_map(h, off, count, call=None, step=None):
    """(offset, length, flags) over [off, off+count), in as many requests
    as the server needs."""
    out = []
    pos, end = off, off + count
    while pos < end:
        n = end - pos if step is None else min(step, end - pos)
        ex = extents(h, pos, n, call=call)
        for item in ex:
            length, fl = item if isinstance(item, tuple) else (item[0], item[1])
            check(length > 0, "zero-length extent at %d" % pos)
            out.append((pos, length, fl))
            pos += length
            if pos >= end:
                break
    return out


def flags_at(smap, off):
    for o, n, fl in smap:
        if o <= off < o + n:
            return fl
    fail("offset %d not in the map" % off)


def pattern(seed, n):
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(256)) * (n // 256)


# ---------------------------------------------------------------
# Extended headers
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
check(h.get_extended_headers_negotiated(), "extended headers not negotiated")
check(h.get_size() == SIZE, "size %d, want %d" % (h.get_size(), SIZE))
check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "no base:allocation")
for what in ("can_trim", "can_zero", "can_cache", "can_flush", "can_fua"):
    check(getattr(h, what)(), what + " is false")
log("extended headers, 16 GiB, base:allocation, trim/zero/cache/flush/fua")

# The empty export is one hole: with 64-bit extents it can come as one
# extent of 16 GiB (a server limited to 32-bit lengths needs four).
ex = extents(h, 0, SIZE)
check(all(e[1] & HOLE_ZERO == HOLE_ZERO for e in ex), "empty export: %s" % ex)
check(ex[0][0] > 4 * GiB,
      "the empty 16 GiB export: first extent %d bytes, not over 4 GiB" % ex[0][0])
log("empty export: %d extent(s), the first %d bytes" % (len(ex), ex[0][0]))

# Writes at 64-bit offsets, read back, checked in the file, and nothing at
# the offset cut to 32 bits.
spots = [(4 * GiB - 4 * KiB, 8 * KiB, 1),       # across 4 GiB
         (5 * GiB + 12345 * 4096, 64 * KiB, 2),
         (9 * GiB + 512, 4 * KiB, 3),            # not 4 KiB aligned
         (11 * GiB, 1 * MiB, 4),
         (14 * GiB, 256 * KiB, 5),
         (SIZE - 64 * KiB, 64 * KiB, 6)]         # the last bytes
for off, n, seed in spots:
    buf = pattern(seed, n)
    h.pwrite(buf, off, nbd.CMD_FLAG_FUA if seed % 2 else 0)
for off, n, seed in spots:
    buf = pattern(seed, n)
    check(h.pread(n, off) == buf, "read back at %d differs" % off)
    check(file_read(off, n) == buf, "image file at %d differs" % off)
    low = off & 0xFFFFFFFF
    if off >= 4 * GiB and not any(o < low + n and low < o + m
                                  for o, m, _ in spots):
        check(file_read(low, n) == bytes(n),
              "data for %d also at %d (offset cut to 32 bits)" % (off, low))
h.flush()
log("READ/WRITE at %d 64-bit offsets, in the file too" % len(spots))

# BLOCK_STATUS over more than 4 GiB: one request for the whole export.
ex = extents(h, 0, SIZE)
total = sum(e[0] for e in ex)
log("block_status_64(16 GiB): %d extents, %d bytes" % (len(ex), total))
check(total > 4 * GiB,
      "one BLOCK_STATUS of 16 GiB answered only %d bytes (<= 4 GiB)" % total)
smap = status_map(h, 0, SIZE)
for off, n, seed in spots:
    check(flags_at(smap, off) & nbd.STATE_HOLE == 0,
          "written data at %d reported as a hole" % off)
check(flags_at(smap, 7 * GiB) & HOLE_ZERO == HOLE_ZERO,
      "7 GiB (never written) is not a hole")
# REQ_ONE: one extent, not beyond the request.
one = extents(h, 6 * GiB, 6 * GiB, nbd.CMD_FLAG_REQ_ONE)
check(len(one) == 1 and one[0][0] <= 6 * GiB,
      "REQ_ONE gave %s" % (one,))
log("block status: data where written, holes elsewhere, REQ_ONE one extent")

# WRITE_ZEROES over 5.5 GiB from 4 GiB: the second half of the spot
# across 4 GiB and the data at 5 GiB and 9 GiB become zero; the data at
# 11 GiB (after) stays.
zoff, zlen = 4 * GiB, 5 * GiB + 512 * MiB
h.zero(zlen, zoff)
for off, n, seed in spots:
    inside = zoff <= off and off + n <= zoff + zlen
    want = bytes(n) if inside else pattern(seed, n)
    if off < zoff < off + n:          # the spot across 4 GiB: half zeroed
        want = pattern(seed, n)[:zoff - off] + bytes(off + n - zoff)
    check(h.pread(n, off) == want, "after zero(%d, %d): %d wrong" % (zoff, zlen, off))
    check(file_read(off, n) == want, "after zero: file at %d wrong" % off)
smap = status_map(h, zoff, zlen)
check(all(fl & nbd.STATE_ZERO for _, _, fl in smap),
      "zeroed range not reported as zero: %s" % smap[:4])
log("WRITE_ZEROES of %d bytes (> 4 GiB): whole range zero" % zlen)

# NO_HOLE zero of 4 GiB + 4 KiB from 10 GiB: 11 GiB and the first 4 KiB
# at 14 GiB become zero, the next 4 KiB at 14 GiB stay.
h.zero(4 * GiB + 4 * KiB, 10 * GiB, nbd.CMD_FLAG_NO_HOLE)
check(h.pread(4096, 11 * GiB) == bytes(4096), "NO_HOLE zero left data at 11 GiB")
check(h.pread(4096, 14 * GiB) == bytes(4096), "NO_HOLE zero left data at 14 GiB")
check(h.pread(4096, 14 * GiB + 4096) == pattern(5, 4096),
      "NO_HOLE zero went past its end")
log("WRITE_ZEROES NO_HOLE of 4 GiB + 4 KiB")

# TRIM over 5 GiB covering 11 GiB and 14 GiB; the file backend punches
# holes, so the file must have no data left there, and the last spot
# (after the range) stays.
h.pwrite(pattern(7, 1 * MiB), 11 * GiB)
toff, tlen = 10 * GiB, 5 * GiB
h.trim(tlen, toff)
h.flush()
check(not file_data_in(toff, tlen),
      "TRIM of %d bytes at %d left allocated data in the file" % (tlen, toff))
check(h.pread(64 * KiB, SIZE - 64 * KiB) == pattern(6, 64 * KiB),
      "TRIM went past its end")
log("TRIM of %d bytes (> 4 GiB): whole range punched" % tlen)

# CACHE over 8 GiB.
h.cache(8 * GiB, 6 * GiB)
check(h.pread(64 * KiB, SIZE - 64 * KiB) == pattern(6, 64 * KiB),
      "connection out of step after CACHE")
log("CACHE of 8 GiB")

# Beyond the end, even by one byte with a 64-bit length.
expect_error("zero past the end",
             ["EINVAL", "ENOSPC", "ERANGE"], lambda: h.zero(8 * GiB, 9 * GiB))
h.shutdown()

# ---------------------------------------------------------------
# Structured replies without extended headers
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.set_request_extended_headers(False)
h.connect_uri(uri)
check(not h.get_extended_headers_negotiated(), "extended headers negotiated")
check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
h.pwrite(pattern(8, 64 * KiB), 13 * GiB)
check(h.pread(64 * KiB, 13 * GiB) == pattern(8, 64 * KiB),
      "64-bit offset without extended headers")
check(file_read(13 * GiB, 64 * KiB) == pattern(8, 64 * KiB), "file at 13 GiB")
# 32-bit lengths: 4 GiB is refused by libnbd itself, 4 GiB - 4 KiB works.
expect_error("zero of 4 GiB without extended headers",
             ["EINVAL", "ERANGE", "EOVERFLOW"], lambda: h.zero(4 * GiB, 8 * GiB))
h.zero(4 * GiB - 4 * KiB, 8 * GiB)
check(h.pread(64 * KiB, 13 * GiB) == pattern(8, 64 * KiB),
      "zero of 4 GiB - 4 KiB at 8 GiB reached 13 GiB")
check(not file_data_in(8 * GiB, 4 * GiB - 4 * KiB) or
      file_read(12 * GiB - 8 * KiB, 4 * KiB) == bytes(4 * KiB), "zero range")
smap = status_map(h, 0, SIZE, call=h.block_status, step=4 * GiB - 4 * KiB)
check(flags_at(smap, 13 * GiB) & nbd.STATE_HOLE == 0, "13 GiB is a hole (SR)")
check(flags_at(smap, 7 * GiB) & nbd.STATE_HOLE, "7 GiB is data (SR)")
h.pwrite(pattern(10, 4 * KiB), 9 * GiB)
h.trim(4 * GiB - 4 * KiB, 8 * GiB)
h.flush()
check(not file_data_in(8 * GiB, 4 * GiB - 4 * KiB), "TRIM (SR) left data")
h.cache(4 * GiB - 4 * KiB, 8 * GiB)
check(h.pread(64 * KiB, 13 * GiB) == pattern(8, 64 * KiB),
      "TRIM (SR) went past its end, or the connection is out of step")
h.shutdown()
log("structured replies only: 64-bit offsets, 32-bit lengths")

# Simple replies only (neither structured replies nor extended headers).
h = nbd.NBD()
h.set_request_extended_headers(False)
h.set_request_structured_replies(False)
h.connect_uri(uri)
check(not h.get_structured_replies_negotiated(), "structured replies negotiated")
check(h.pread(64 * KiB, 13 * GiB) == pattern(8, 64 * KiB), "simple replies read")
h.pwrite(pattern(9, 4 * KiB), 15 * GiB)
check(file_read(15 * GiB, 4 * KiB) == pattern(9, 4 * KiB), "simple replies write")
h.shutdown()
log("simple replies: 64-bit offsets")

# ---------------------------------------------------------------
# Strict mode off: the server sees the bad requests.
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
# All checks off but STRICT_AUTO_FLAG: libnbd still sets PAYLOAD_LEN on
# WRITE, without which the server cannot tell a payload follows (it
# disconnects then, which is the subject of other tests).
h.set_strict_mode(nbd.STRICT_AUTO_FLAG)
h.connect_uri(uri)
check(h.get_extended_headers_negotiated(), "extended headers (strict off)")
good = pattern(6, 4 * KiB)


def in_step():
    check(h.pread(4 * KiB, SIZE - 64 * KiB) == good, "out of step")


bad = [
    ("READ past the end", ["EINVAL"], lambda: h.pread(8 * KiB, SIZE - 4 * KiB)),
    ("READ at 2^63", ["EINVAL"], lambda: h.pread(512, 1 << 63)),
    ("WRITE past the end", ["ENOSPC", "EINVAL"],
     lambda: h.pwrite(bytes(8 * KiB), SIZE - 4 * KiB)),
    ("WRITE_ZEROES past the end (> 4 GiB)", ["ENOSPC", "EINVAL"],
     lambda: h.zero(5 * GiB, SIZE - 4 * GiB)),
    ("TRIM past the end (> 4 GiB)", ["EINVAL", "ENOSPC"],
     lambda: h.trim(5 * GiB, SIZE - 4 * GiB)),
    ("CACHE past the end", ["EINVAL", "ENOSPC"],
     lambda: h.cache(8 * KiB, SIZE - 4 * KiB)),
    ("BLOCK_STATUS past the end", ["EINVAL"],
     lambda: extents(h, SIZE, 4 * KiB)),
    ("offset + length wraps 2^64", ["EINVAL", "ENOSPC"],
     lambda: h.trim(8 * GiB, (1 << 64) - 4 * GiB)),
    ("READ with FUA|NO_HOLE|FAST_ZERO flags", ["EINVAL"],
     lambda: h.pread(4 * KiB, 0, nbd.CMD_FLAG_FAST_ZERO)),
    ("READ with an unknown flag (1 << 9)", ["EINVAL"],
     lambda: h.pread(4 * KiB, 0, 1 << 9)),
    ("TRIM with REQ_ONE", ["EINVAL"],
     lambda: h.trim(4 * KiB, 0, nbd.CMD_FLAG_REQ_ONE)),
]
for what, names, fn in bad:
    expect_error(what, names, fn)
    in_step()
h.shutdown()
log("strict mode off: %d bad requests refused, connection in step" % len(bad))
EOF

cat >"$T/debug.py" <<'EOF'
import sys

import nbd

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
h.pread(4096, 5 << 30)
h.zero(5 << 30, 6 << 30)
h.block_status_64(16 << 30, 0, lambda *a: 0)
h.trim(5 << 30, 6 << 30)
h.shutdown()
EOF

# reset_image: empty the image in place (the server holds it open).
reset_image()
{
    truncate -s 0 "$img"
    truncate -s 16G "$img"
}

port=$(free_port)
sock=$T/nbd.sock
start_server -v -l "127.0.0.1:$port" -l "unix:$sock" -e "big=$img"

for u in "nbd://127.0.0.1:$port/big" "nbd+unix:///big?socket=$sock"; do
    step "libnbd $(chroot_version nbdinfo): $u"
    reset_image
    chroot_py "$T/big.py" "$u" "$img" || fail "big.py against $u"
done
grep -q "serving export 'big', structured replies, extended headers" \
    "$SERVER_LOG" || fail "the server log does not say extended headers"

step "LIBNBD_DEBUG=1"
reset_image
in_chroot env LIBNBD_DEBUG=1 python3 "$T/debug.py" \
    "nbd://127.0.0.1:$port/big" >"$T/debug.out" 2>&1 ||
    { cat "$T/debug.out" >&2; fail "debug.py failed"; }
grep -q 'libnbd: debug: .*negotiated extended headers' "$T/debug.out" ||
    fail "LIBNBD_DEBUG: no 'negotiated extended headers' line"
grep -q 'libnbd: debug: .*nbd_trim: leave: ret=0' "$T/debug.out" ||
    fail "LIBNBD_DEBUG: no debug lines for the commands (not debugging?)"
# libnbd's debug lines start with "libnbd: debug:"; anything else it says
# about the server (a warning, "server sent ...", "unexpected ...") is a
# complaint.
if grep -v '^libnbd: debug: ' "$T/debug.out" | grep -q .; then
    grep -v '^libnbd: debug: ' "$T/debug.out" >&2
    fail "LIBNBD_DEBUG: lines other than debug lines"
fi
if grep -i -E '(^|[^a-z])(warn|unexpected|ignor|invalid|violat|non-?compliant|bogus|bug)' \
    "$T/debug.out" | grep -v 'enter:\|leave:' | grep -q .; then
    grep -i -E '(^|[^a-z])(warn|unexpected|ignor|invalid|violat|non-?compliant|bogus|bug)' "$T/debug.out" >&2
    fail "LIBNBD_DEBUG: libnbd complains about the server"
fi
step "LIBNBD_DEBUG: $(grep -c . "$T/debug.out") debug lines, no complaint"

stop_server
