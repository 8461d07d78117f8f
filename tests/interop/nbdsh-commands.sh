#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every transmission-phase command through libnbd (nbdsh and its Python
# module): READ, WRITE (with FUA), FLUSH, TRIM, WRITE_ZEROES (NO_HOLE,
# FAST_ZERO), CACHE, BLOCK_STATUS on base:allocation (REQ_ONE too), DF
# reads, option haggling in opt mode (LIST, INFO, LIST_META_CONTEXT, GO),
# simple replies, two connections (multi-conn), and the error replies the
# specification names, each followed by a read proving that the connection
# is still in step.  Runs over TCP and over a Unix socket, then against a
# read-only (-r) server.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdsh python3 truncate dd cmp
requires_nbd_python

MiB=$((1024 * 1024))
disk=$T/disk.img
other=$T/other.img
big=$T/big.img
expected=$T/expected.img
ours=0
if is_our_server; then
    ours=1
fi

# The read-write checks.  argv: URI of "disk", a URI in which @NAME@ stands
# for an export name, the disk image path, the file to save the
# expected final contents to, 1 if the server is ours.
cat >"$T/commands.py" <<'EOF'
import os
import sys

import nbd

uri, uri_template, image, expected_out, ours = sys.argv[1:6]
ours = ours == "1"
MiB = 1024 * 1024
HOLE_ZERO = nbd.STATE_HOLE | nbd.STATE_ZERO
failures = 0


def log(msg):
    print("  " + msg, flush=True)


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def errname(e):
    # libnbd 1.14 gives the symbolic name; accept a number too.
    if isinstance(e.errno, int):
        import errno as errno_mod
        return errno_mod.errorcode.get(e.errno, str(e.errno))
    return str(e.errno)


def expect_error(what, names, fn):
    try:
        fn()
    except nbd.Error as e:
        name = errname(e)
        check(name in names, "%s: got %s (%s), expected %s"
              % (what, name, e.string, "/".join(names)))
        log("%s: %s as expected" % (what, name))
        return name
    fail("%s: succeeded, expected %s" % (what, "/".join(names)))


def expect_ok_or(what, names, fn):
    """Success or one of the errors named; returns None or the error."""
    try:
        fn()
    except nbd.Error as e:
        name = errname(e)
        check(name in names, "%s: got %s (%s), expected success or %s"
              % (what, name, e.string, "/".join(names)))
        log("%s: %s (allowed)" % (what, name))
        return name
    log("%s: succeeded" % what)
    return None


with open(image, "rb") as f:
    model = bytearray(f.read())
size = len(model)


def verify(h, off, length, what):
    got = h.pread(length, off)
    want = bytes(model[off:off + length])
    if got != want:
        bad = next(i for i in range(length) if got[i] != want[i])
        fail("%s: data differs at offset %d (got %#x, want %#x)"
             % (what, off + bad, got[bad], want[bad]))


def verify_all(h, what):
    for off in range(0, size, 4 * MiB):
        verify(h, off, min(4 * MiB, size - off), what)


def verify_file(what):
    with open(image, "rb") as f:
        data = f.read()
    check(len(data) == size, "%s: image file size %d" % (what, len(data)))
    if data != model:
        bad = next(i for i in range(size) if data[i] != model[i])
        fail("%s: image file differs at offset %d" % (what, bad))


def write(h, data, off, flags=0):
    h.pwrite(data, off, flags)
    model[off:off + len(data)] = data


def zero_model(off, length):
    model[off:off + length] = bytes(length)


def extents(h, off, length, flags=0):
    """One BLOCK_STATUS: the base:allocation extents as (off, len, flags)."""
    got = []

    def cb(meta, offset, entries, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            got.append((offset, list(entries)))
        return 0

    h.block_status(length, off, cb, flags)
    check(len(got) == 1, "block status at %d: %d base:allocation replies"
          % (off, len(got)))
    offset, entries = got[0]
    check(offset == off, "block status echoed offset %d for %d"
          % (offset, off))
    check(len(entries) >= 2 and len(entries) % 2 == 0,
          "block status at %d: bad entries %r" % (off, entries))
    out = []
    pos = off
    for i in range(0, len(entries), 2):
        check(entries[i] > 0, "zero-length extent at %d" % pos)
        out.append((pos, entries[i], entries[i + 1]))
        pos += entries[i]
    return out


def allocation_map(h, off, length):
    """Extents covering [off, off+length), merged by flags, clipped."""
    out = []
    pos = off
    end = off + length
    while pos < end:
        for (o, ln, fl) in extents(h, pos, end - pos):
            ln = min(ln, end - o)
            if ln <= 0:
                break
            if out and out[-1][2] == fl and out[-1][0] + out[-1][1] == o:
                out[-1] = (out[-1][0], out[-1][1] + ln, fl)
            else:
                out.append((o, ln, fl))
            pos = o + ln
    return out


def connect(name="disk", meta=True, sr=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not sr:
        h.set_request_structured_replies(False)
    h.connect_uri(uri_template.replace("@NAME@", name))
    return h


# --- handshake results -----------------------------------------------
h = connect()
log("connected to %s" % uri)
check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
      "base:allocation not negotiated")
check(h.get_size() == size, "size %d, want %d" % (h.get_size(), size))
check(not h.is_read_only(), "export is read-only")
for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_cache",
            "can_multi_conn", "can_df"):
    check(getattr(h, cap)(), "%s is false" % cap)
if ours:
    check(h.can_fast_zero(), "can_fast_zero is false")
    bs = (h.get_block_size(nbd.SIZE_MINIMUM),
          h.get_block_size(nbd.SIZE_PREFERRED),
          h.get_block_size(nbd.SIZE_MAXIMUM))
    check(bs == (1, 4096, 32 * MiB), "block sizes %r" % (bs,))
log("flags, size and contexts as expected")

# --- BLOCK_STATUS on the layout prepared by the shell script ---------
want = [(0, MiB, HOLE_ZERO), (MiB, 64 * 1024, 0),
        (MiB + 64 * 1024, size - MiB - 64 * 1024, HOLE_ZERO)]
got = allocation_map(h, 0, size)
check(got == want, "allocation map %r, want %r" % (got, want))
log("block status: hole+zero (3) / data (0) / hole+zero (3)")

one = extents(h, 0, size, nbd.CMD_FLAG_REQ_ONE)
check(len(one) == 1, "REQ_ONE at 0 gave %d extents" % len(one))
check(one[0][2] == HOLE_ZERO and one[0][1] <= MiB,
      "REQ_ONE at 0 gave %r" % (one,))
one = extents(h, MiB, size - MiB, nbd.CMD_FLAG_REQ_ONE)
check(len(one) == 1 and one[0][2] == 0 and one[0][1] <= 64 * 1024,
      "REQ_ONE at 1 MiB gave %r" % (one,))
one = extents(h, MiB + 4096, 4096, nbd.CMD_FLAG_REQ_ONE)
check(len(one) == 1 and one[0][2] == 0 and one[0][1] == 4096,
      "REQ_ONE for 4 KiB inside the data gave %r" % (one,))
log("block status with REQ_ONE: one extent each time")

# --- READ, structured reads, DF ---------------------------------------
verify(h, 0, size, "first read of the whole export")
verify(h, MiB - 1000, 70000, "unaligned read across hole and data")
chunks = []


def chunk_cb(subbuf, offset, status, err):
    chunks.append((offset, len(subbuf), status))
    return 0


buf = h.pread_structured(64 * 1024, MiB, chunk_cb, nbd.CMD_FLAG_DF)
check(buf == bytes(model[MiB:MiB + 64 * 1024]), "DF read: wrong data")
check(len(chunks) == 1 and chunks[0][:2] == (MiB, 64 * 1024),
      "DF read came in chunks %r" % chunks)
chunks.clear()
buf = h.pread_structured(64 * 1024, 3 * MiB, chunk_cb, nbd.CMD_FLAG_DF)
check(buf == bytes(64 * 1024), "DF read of a hole: not zeroes")
check(len(chunks) == 1 and chunks[0][:2] == (3 * MiB, 64 * 1024),
      "DF read of a hole came in chunks %r" % chunks)
chunks.clear()
buf = h.pread_structured(MiB, MiB - 512 * 1024, chunk_cb)
check(buf == bytes(model[MiB - 512 * 1024:2 * MiB - 512 * 1024]),
      "structured read across hole and data: wrong data")
covered = sorted((o, o + n) for (o, n, s) in chunks)
pos = MiB - 512 * 1024
for (a, b) in covered:
    check(a == pos, "structured read chunks overlap or leave a gap: %r"
          % chunks)
    pos = b
check(pos == 2 * MiB - 512 * 1024, "structured read chunks end at %d" % pos)
log("reads, a DF read (one chunk) and a chunked read are right")

# --- WRITE with and without FUA, unaligned ---------------------------
write(h, os.urandom(128 * 1024), 4 * MiB, nbd.CMD_FLAG_FUA)
verify(h, 4 * MiB, 128 * 1024, "FUA write")
verify_file("after the FUA write")
write(h, os.urandom(3333), 4 * MiB + 1001)
write(h, b"\x5a", 4 * MiB + 77777)
write(h, os.urandom(100), size - 100)
verify(h, 4 * MiB, 128 * 1024, "unaligned writes")
verify(h, size - 4096, 4096, "write ending at the end of the export")
h.flush()
verify_file("after flush")
log("writes (FUA, unaligned, up to the last byte) and flush")

# --- TRIM ------------------------------------------------------------
write(h, os.urandom(256 * 1024), 8 * MiB)
h.trim(256 * 1024, 8 * MiB)
h.pread(256 * 1024, 8 * MiB)    # contents unspecified, must still read
h.trim(4096, 8 * MiB + 4096, nbd.CMD_FLAG_FUA)
h.zero(256 * 1024, 8 * MiB)     # make the region defined again
zero_model(8 * MiB, 256 * 1024)
verify(h, 8 * MiB, 256 * 1024, "zero after trim")
log("trim (plain and FUA)")

# --- WRITE_ZEROES ----------------------------------------------------
write(h, os.urandom(MiB), 9 * MiB)
h.zero(MiB, 9 * MiB)
zero_model(9 * MiB, MiB)
verify(h, 9 * MiB, MiB, "zero")
write(h, os.urandom(MiB), 10 * MiB)
h.zero(MiB - 4096, 10 * MiB + 4096, nbd.CMD_FLAG_NO_HOLE)
zero_model(10 * MiB + 4096, MiB - 4096)
verify(h, 10 * MiB, MiB, "zero with NO_HOLE")
# Whether NO_HOLE zeroes show up as a hole in base:allocation depends on
# the file system (ext4 reports unwritten extents as holes to SEEK_HOLE),
# so only the contents are checked.
h.zero(64 * 1024, 12 * MiB, nbd.CMD_FLAG_NO_HOLE)    # was a hole
verify(h, 12 * MiB, 64 * 1024, "zero with NO_HOLE over a hole")
h.zero(5000, 11 * MiB + 333, nbd.CMD_FLAG_FUA)
zero_model(11 * MiB + 333, 5000)
verify(h, 11 * MiB, 8192, "unaligned zero with FUA")
log("zero (plain, NO_HOLE, FUA, unaligned)")

if h.can_fast_zero():
    for flags, what in ((nbd.CMD_FLAG_FAST_ZERO, "fast zero"),
                        (nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE,
                         "fast zero with NO_HOLE")):
        write(h, os.urandom(64 * 1024), 13 * MiB)
        r = expect_ok_or(what, ["ENOTSUP"],
                         lambda: h.zero(64 * 1024, 13 * MiB, flags))
        if r is None:
            zero_model(13 * MiB, 64 * 1024)
            verify(h, 13 * MiB, 64 * 1024, what)
        else:
            h.zero(64 * 1024, 13 * MiB)
            zero_model(13 * MiB, 64 * 1024)
else:
    log("server does not offer fast zero: not sent")

# --- CACHE -----------------------------------------------------------
h.cache(MiB, 0)
h.cache(size, 0)
h.cache(1, size - 1)
log("cache")

# --- multi-conn: a flush on one connection covers the other's view ---
h2 = connect()
data = os.urandom(64 * 1024)
write(h, data, 14 * MiB)
h.flush()
check(h2.pread(64 * 1024, 14 * MiB) == data, "second connection: stale data")
data = os.urandom(4096)
write(h2, data, 14 * MiB + 100)
h2.flush()
verify(h, 14 * MiB, 64 * 1024, "first connection after the second wrote")
h2.shutdown()
log("two connections see each other's flushed writes")

# --- error replies; each followed by a good read ---------------------
def still_good(what):
    verify(h, MiB - 100, 4096, "read after " + what)


h.set_strict_mode(h.get_strict_mode() & ~(nbd.STRICT_BOUNDS |
                                          nbd.STRICT_ZERO_SIZE |
                                          nbd.STRICT_FLAGS))
cases = [
    ("read past the end", ["EINVAL"], lambda: h.pread(512, size - 256)),
    ("read at the end", ["EINVAL"], lambda: h.pread(1, size)),
    ("read with offset+length wrapping", ["EINVAL"],
     lambda: h.pread(4096, (1 << 64) - 512)),
    ("write past the end", ["ENOSPC"],
     lambda: h.pwrite(b"x" * 512, size - 256)),
    ("write with offset+length wrapping", ["ENOSPC", "EINVAL"],
     lambda: h.pwrite(b"x" * 4096, (1 << 64) - 512)),
    ("zero past the end", ["ENOSPC"], lambda: h.zero(512, size - 256)),
    ("trim past the end", ["EINVAL"], lambda: h.trim(512, size - 256)),
    ("cache past the end", ["EINVAL"], lambda: h.cache(512, size - 256)),
    ("block status past the end", ["EINVAL"],
     lambda: h.block_status(512, size, lambda *a: 0)),
    ("read with NO_HOLE (a flag READ does not take)", ["EINVAL"],
     lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE)),
    ("flush with REQ_ONE (a flag FLUSH does not take)", ["EINVAL"],
     lambda: h.flush(nbd.CMD_FLAG_REQ_ONE)),
]
for what, names, fn in cases:
    expect_error(what, names, fn)
    still_good(what)
# The write past the end must not have written the part inside.
verify(h, size - 4096, 4096, "tail after the failed writes")

# Zero-length requests: the specification leaves the result open; the
# server may answer success or EINVAL but must stay in step.
allowed = ["EINVAL"] if ours else ["EINVAL", "ENOSPC"]
for what, fn in (("zero-length read", lambda: h.pread(0, 4096)),
                 ("zero-length write", lambda: h.pwrite(b"", 4096)),
                 ("zero-length trim", lambda: h.trim(0, 4096)),
                 ("zero-length zero", lambda: h.zero(0, 4096)),
                 ("zero-length cache", lambda: h.cache(0, 4096)),
                 ("zero-length read at the end", lambda: h.pread(0, size))):
    expect_ok_or(what, allowed, fn)
    still_good(what)
h.set_strict_mode(nbd.STRICT_MASK)
verify_all(h, "whole export after the error cases")

# --- unknown export ---------------------------------------------------
for name in ("nosuch", "disk/../disk", "DISK"):
    x = nbd.NBD()
    expect_error("connect to export %r" % name,
                 ["ENOENT"],     # libnbd's errno for NBD_REP_ERR_UNKNOWN
                 lambda: x.connect_uri(uri_template.replace("@NAME@", name)))
    del x

# --- option haggling in opt mode --------------------------------------
x = nbd.NBD()
x.set_opt_mode(True)
x.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
x.connect_uri(uri)
names = []
x.opt_list(lambda name, desc: names.append(name))
check(sorted(names) == ["big", "disk", "other"],
      "NBD_OPT_LIST gave %r" % names)
x.set_export_name("nosuch")
expect_error("NBD_OPT_INFO of an unknown export",
             ["ENOENT"], x.opt_info)
x.set_export_name("other")
x.opt_info()
check(x.get_size() == 4 * MiB, "NBD_OPT_INFO size of other: %d"
      % x.get_size())
x.set_export_name("disk")
x.opt_info()
check(x.get_size() == size, "NBD_OPT_INFO size of disk: %d" % x.get_size())
contexts = []
x.opt_list_meta_context(lambda name: contexts.append(name))
check("base:allocation" in contexts,
      "NBD_OPT_LIST_META_CONTEXT gave %r" % contexts)
x.opt_go()
check(x.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
      "base:allocation missing after opt_go")
verify(x, 0, MiB + 4096, "read after opt mode")
x.shutdown()
log("opt mode: LIST, INFO, LIST_META_CONTEXT, GO")

# --- simple replies (no structured replies negotiated) ---------------
s = connect(meta=False, sr=False)
check(not s.get_structured_replies_negotiated(), "structured replies on")
verify(s, 0, 2 * MiB, "read with simple replies")
write(s, os.urandom(4096), 15 * MiB)
s.flush()
s.set_strict_mode(s.get_strict_mode() & ~nbd.STRICT_BOUNDS)
expect_error("simple reply: read past the end", ["EINVAL"],
             lambda: s.pread(4096, size - 2048))
verify(s, MiB - 100, 8192, "simple-reply read after an error")
expect_error("simple reply: write past the end", ["ENOSPC"],
             lambda: s.pwrite(b"y" * 4096, size - 2048))
verify(s, 15 * MiB, 4096, "simple-reply read after a write error")
s.shutdown()
log("simple replies, including errors")

h.flush()
verify_all(h, "whole export at the end")
verify_file("at the end")
h.shutdown()
with open(expected_out, "wb") as f:
    f.write(model)
log("done")
EOF

# Offsets past 4 GiB on a 5 GiB sparse export, to catch 32-bit
# truncation.  argv: URI, image path.
cat >"$T/big.py" <<'EOF'
import os
import sys

import nbd

uri, image = sys.argv[1:3]
GiB, MiB = 1 << 30, 1 << 20
size = 5 * GiB


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
if h.get_size() != size:
    fail("size %d, want %d" % (h.get_size(), size))
low = os.urandom(256 * 1024)
h.pwrite(low, 0)
cross = os.urandom(65536)
h.pwrite(cross, 4 * GiB - 1000)          # across the 4 GiB line
high = os.urandom(4096)
HIGH = 4 * GiB + 128 * 1024 + 8192       # 128 KiB + 8192 if truncated
h.pwrite(high, HIGH)
tail = os.urandom(4096)
h.pwrite(tail, size - 4096)
checks = [(0, low), (4 * GiB - 1000, cross), (HIGH, high),
          (size - 4096, tail)]
for off, data in checks:
    if h.pread(len(data), off) != data:
        fail("read at %d: wrong data" % off)
if h.pread(65536, 4 * GiB + MiB) != bytes(65536):
    fail("a hole past 4 GiB does not read as zeroes")

# base:allocation with the largest count a compact request carries, and
# across the 4 GiB line.
got = []
h.block_status(0xFFFFFFFF, 0,
               lambda meta, off, ents, err: got.append(list(ents)) or 0)
if len(got) != 1 or got[0][1] != 0 or got[0][0] < 256 * 1024:
    fail("block status from 0 with count 2^32-1: %r" % got[:1])
got = []
h.block_status(size - (4 * GiB - 2 * MiB), 4 * GiB - 2 * MiB,
               lambda meta, off, ents, err: got.append(list(ents)) or 0)
if len(got) != 1:
    fail("block status: %d replies" % len(got))
pos = 4 * GiB - 2 * MiB
flags_at = []
ents = got[0]
for i in range(0, len(ents), 2):
    flags_at.append((pos, pos + ents[i], ents[i + 1]))
    pos += ents[i]


def state(off):
    for a, b, fl in flags_at:
        if a <= off < b:
            return fl
    return None


for off in (4 * GiB - 2 * MiB, 4 * GiB - MiB):
    if state(off) not in (None, 3):
        fail("block status: %d should be a hole, got %r" % (off, state(off)))
for off in range(4 * GiB - 1000, 4 * GiB + 64536, 4096):
    if state(off) not in (None, 0):
        fail("block status: %d should be data, got %r" % (off, state(off)))
if state(4 * GiB - 1000) is None:
    fail("block status did not reach the data at 4 GiB: %r" % flags_at[:4])
h.flush()

h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
for what, fn, want in (
        ("read at 5 GiB", lambda: h.pread(512, size), "EINVAL"),
        ("read at 2^32 past the end", lambda: h.pread(512, size + 4 * GiB),
         "EINVAL"),
        ("write at 2^32 past the end",
         lambda: h.pwrite(b"q" * 512, size + 4 * GiB), "ENOSPC")):
    try:
        fn()
        fail("%s succeeded" % what)
    except nbd.Error as e:
        if str(e.errno) != want:
            fail("%s: %s, want %s" % (what, e.errno, want))
h.shutdown()

with open(image, "rb") as f:
    for off, data in checks:
        f.seek(off)
        if f.read(len(data)) != data:
            fail("image file at %d: wrong data" % off)
    f.seek(HIGH - 4 * GiB)
    if f.read(4096) != low[HIGH - 4 * GiB:HIGH - 4 * GiB + 4096]:
        fail("a write past 4 GiB landed 4 GiB lower (offset truncated)")
print("  5 GiB export: offsets past 4 GiB are right")
EOF

# The read-only checks.  argv: URI, expected contents file.
cat >"$T/readonly.py" <<'EOF'
import sys

import nbd

uri, expected = sys.argv[1:3]
with open(expected, "rb") as f:
    model = f.read()


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def errname(e):
    if isinstance(e.errno, int):
        import errno as errno_mod
        return errno_mod.errorcode.get(e.errno, str(e.errno))
    return str(e.errno)


h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
if not h.is_read_only():
    fail("export is not read-only")
if h.pread(len(model), 0) != model:
    fail("read-only export: wrong contents")
# Let the requests reach the server: libnbd would refuse them itself.
h.set_strict_mode(0)
for what, fn in (("write", lambda: h.pwrite(b"z" * 4096, 0)),
                 ("write with FUA",
                  lambda: h.pwrite(b"z" * 4096, 0, nbd.CMD_FLAG_FUA)),
                 ("trim", lambda: h.trim(4096, 0)),
                 ("zero", lambda: h.zero(4096, 0))):
    try:
        fn()
        fail("%s on a read-only export succeeded" % what)
    except nbd.Error as e:
        if errname(e) != "EPERM":
            fail("%s on a read-only export: %s, want EPERM"
                 % (what, errname(e)))
        print("  %s: EPERM as expected" % what)
    if h.pread(8192, 1024 * 1024 - 100) != \
            model[1024 * 1024 - 100:1024 * 1024 + 8092]:
        fail("read after the refused %s: wrong data" % what)
h.cache(65536, 0)
h.block_status(65536, 0, lambda *a: 0)
if h.pread(len(model), 0) != model:
    fail("read-only export changed")
h.shutdown()
print("  read-only export refuses writes with EPERM")
EOF

# prepare: a 16 MiB sparse disk with 64 KiB of data at 1 MiB, and a second
# 4 MiB export.
prepare()
{
    make_image "$disk" 16M
    make_random "$T/data" 64K
    write_at "$disk" "$MiB" "$T/data"
    make_image "$other" 4M
    make_image "$big" 5G
}

run_commands()
{
    local addr=$1
    step "commands over $addr"
    tmo "$NBD_PYTHON" "$T/commands.py" "$(uri_for "$addr" disk)" \
        "$(uri_for "$addr" @NAME@)" "$disk" "$expected" "$ours" ||
        fail "libnbd commands over $addr failed"
    # nbdsh itself, as a user would run it.
    nbdsh_run -u "$(uri_for "$addr" other)" \
        -c 'assert h.get_size() == 4 * 1024 * 1024' \
        -c 'h.pwrite(b"nbdsh" * 100, 4096)' \
        -c 'assert h.pread(500, 4096) == b"nbdsh" * 100' \
        -c 'h.flush()' || fail "nbdsh -c over $addr failed"
    nbdsh_run --base-allocation -u "$(uri_for "$addr" disk)" \
        -c 'assert h.can_meta_context("base:allocation")' ||
        fail "nbdsh --base-allocation over $addr failed"
    tmo "$NBD_PYTHON" "$T/big.py" "$(uri_for "$addr" big)" "$big" ||
        fail "checks past 4 GiB over $addr failed"
}

check_images()
{
    cmp "$expected" "$disk" || fail "disk image differs from the expected data"
    [ "$(head -c 500 <(tail -c +4097 "$other"))" = \
        "$(printf 'nbdsh%.0s' {1..100})" ] ||
        fail "other image lacks what nbdsh wrote"
    step "image files hold exactly what was written"
}

prepare
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" -e "other=$other" \
    -e "big=$big"
run_commands "127.0.0.1:$port"
server_alive
stop_server
check_images

prepare
start_server -l "unix:$T/nbd.sock" -e "disk=$disk" -e "other=$other" \
    -e "big=$big"
run_commands "unix:$T/nbd.sock"
stop_server
check_images

step "read-only server (-r)"
port=$(free_port)
start_server -l "127.0.0.1:$port" -r -e "disk=$disk" -e "other=$other" \
    -e "big=$big"
tmo "$NBD_PYTHON" "$T/readonly.py" "$(uri disk)" "$expected" ||
    fail "read-only checks failed"
stop_server
cmp "$expected" "$disk" || fail "the read-only run changed the image"
step "pass"
