#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Dirty bitmaps end to end.  An export with two bitmaps lists
# qemu:dirty-bitmap:NAME beside base:allocation; writes, zeroes and trims
# from qemu-io mark exactly their 64 KiB blocks (nbdinfo --map, qemu-img
# map through x-dirty-bitmap, libnbd with REQ_ONE); a full backup with
# nbdc copy, random writes from fio on two connections and qemu-io, then
# `nbdc copy --dirty-bitmap` onto the full backup: the backup equals the
# live image by sha256, and the bytes copied are the bitmap's dirty bytes
# as nbdinfo counts them, fewer than the image.  A clean restart keeps
# the bits; a kill -9 makes the bitmap all dirty on the next start (the
# log says so), and the next incremental copies everything, still equal.
# The same over an overlay export, and a memory export keeps its bitmap
# in memory.  Bad uses get clear errors.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "dirty bitmaps of raw files are nbd-serverd's"
requires nbdinfo qemu-io qemu-img fio sha256sum
requires_nbd_python

img=$T/disk.img
make_random "$img" 32M
sock=$T/s.sock
cat >"$T/c.conf" <<EOF
[export disk]
path = $img
dirty-bitmap = daily
dirty-bitmap = weekly
dirty-bitmap-file = $T/disk.bitmaps
[export cow]
path = $T/base.img
overlay = $T/cow.ovl
dirty-bitmap = b
dirty-bitmap-file = $T/cow.bitmaps
[export mem]
memory = 8M
dirty-bitmap = m
EOF
make_random "$T/base.img" 8M
disk="nbd+unix:///disk?socket=$sock"
cow="nbd+unix:///cow?socket=$sock"
mem="nbd+unix:///mem?socket=$sock"
start_server -c "$T/c.conf" -l "unix:$sock"

# dirty_map URI BITMAP: "offset length dirty|clean" lines.
dirty_map()
{
    tmo nbdinfo --map="qemu:dirty-bitmap:$2" "$1" | awk '{print $1, $2, $4}'
}
# dirty_bytes URI BITMAP: the bytes nbdinfo reports dirty.
dirty_bytes()
{
    tmo nbdinfo --map="qemu:dirty-bitmap:$2" "$1" |
        awk '$3 == 1 {n += $2} END {print n + 0}'
}

step "the contexts are listed"
tmo nbdinfo --list "nbd+unix:///?socket=$sock" >"$T/list"
for c in daily weekly b m; do
    grep -q "qemu:dirty-bitmap:$c\$" "$T/list" ||
        fail "qemu:dirty-bitmap:$c is not listed: $(cat "$T/list")"
done

step "a fresh bitmap is clean"
[ "$(dirty_map "$disk" daily)" = "0 33554432 clean" ] ||
    fail "fresh bitmap: $(dirty_map "$disk" daily)"

step "a full backup"
nbdc "$T/copy.out" copy "$disk" "$T/backup.img"
same_content "$img" "$T/backup.img" || fail "the full backup differs"

step "qemu-io marks exactly the blocks it touches"
tmo qemu-io -f raw "$disk" -c 'write -P 7 100k 10k' -c 'write -z 5M 1M' \
    -c 'discard 9M 64k' -c 'write -P 9 1048575 2' >/dev/null
cat >"$T/want.map" <<'MAP'
0 65536 clean
65536 65536 dirty
131072 851968 clean
983040 131072 dirty
1114112 4128768 clean
5242880 1048576 dirty
6291456 3145728 clean
9437184 65536 dirty
9502720 24051712 clean
MAP
dirty_map "$disk" daily >"$T/daily.map"
diff -u "$T/want.map" "$T/daily.map" || fail "unexpected dirty map"
dirty_map "$disk" weekly >"$T/weekly.map"
diff -u "$T/want.map" "$T/weekly.map" || fail "the second bitmap differs"

step "qemu-img map reads the bitmap through x-dirty-bitmap"
tmo qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=unix,server.path=$sock,export=disk,x-dirty-bitmap=qemu:dirty-bitmap:daily" \
    >"$T/qimg.json"
"$NBD_PYTHON" - "$T/qimg.json" "$T/want.map" <<'PY'
import json
import sys

# With x-dirty-bitmap qemu reads the status as base:allocation flags:
# dirty (0x1, "hole") comes out as data false.
got = json.load(open(sys.argv[1]))
want = [(int(a), int(b), c) for a, b, c in
        (line.split() for line in open(sys.argv[2]))]
decoded = []
for e in got:
    state = "clean" if e["data"] else "dirty"
    if decoded and decoded[-1][2] == state:
        decoded[-1] = (decoded[-1][0], decoded[-1][1] + e["length"], state)
    else:
        decoded.append((e["start"], e["length"], state))
if decoded != want:
    sys.exit(f"qemu-img map decodes to {decoded}, want {want}")
PY

step "libnbd: the bitmap beside base:allocation, and REQ_ONE"
cat >"$T/one.py" <<'PY'
import sys

import nbd

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.add_meta_context("qemu:dirty-bitmap:weekly")
h.connect_uri(sys.argv[1])
assert h.can_meta_context("qemu:dirty-bitmap:weekly")
for flags, want in ((0, [65536, 1, 851968, 0, 131072, 1]),
                    (nbd.CMD_FLAG_REQ_ONE, [65536, 1])):
    seen = {}

    def cb(meta, offset, entries, err):
        seen[meta] = list(entries)
        return 0

    h.block_status(1048576, 65536, cb, flags=flags)
    got = seen.get("qemu:dirty-bitmap:weekly")
    assert got == want, (flags, got, want)
    assert "base:allocation" in seen
h.shutdown()
PY
tmo "$NBD_PYTHON" "$T/one.py" "$disk" || fail "libnbd block status"

step "fio random writes on two connections, then an incremental copy"
tmo fio --name=dirty --ioengine=nbd --uri="$disk" --rw=randwrite --bs=4k \
    --iodepth=8 --numjobs=2 --size=32M --number_ios=300 \
    --randrepeat=0 --output="$T/fio.out" || fail "fio failed"
tmo qemu-io -f raw "$disk" -c 'write -P 3 20M 1M' >/dev/null
want_bytes=$(dirty_bytes "$disk" daily)
nbdc "$T/incr.out" copy --dirty-bitmap daily "$disk" "$T/backup.img"
same_content "$img" "$T/backup.img" ||
    fail "the backup differs from the image after the incremental copy"
copied=$(awk '/^copied/ {print $2}' "$T/incr.out")
step "incremental: $(cat "$T/incr.out"); nbdinfo counts $want_bytes dirty"
[ "$copied" = "$want_bytes" ] ||
    fail "copied $copied bytes, the bitmap has $want_bytes dirty"
[ "$copied" -lt $((32 << 20)) ] || fail "the incremental copied everything"

step "an overlay export tracks its writes"
nbdc "$T/cow-full.out" copy "$cow" "$T/cow-backup.img"
tmo qemu-io -f raw "$cow" -c 'write -P 4 1M 128k' -c 'write -z 7M 64k' \
    >/dev/null
[ "$(dirty_bytes "$cow" b)" = $((192 << 10)) ] ||
    fail "overlay: $(dirty_map "$cow" b)"
nbdc "$T/cow-incr.out" copy --dirty-bitmap b "$cow" "$T/cow-backup.img"
nbdc "$T/cow-now.out" copy "$cow" "$T/cow-now.img"
same_content "$T/cow-now.img" "$T/cow-backup.img" ||
    fail "the overlay's incremental backup differs"

step "a memory export's bitmap lives in memory"
tmo qemu-io -f raw "$mem" -c 'write -P 1 0 4k' >/dev/null
[ "$(dirty_bytes "$mem" m)" = 65536 ] || fail "memory: $(dirty_map "$mem" m)"

step "a clean restart keeps the bits"
dirty_map "$disk" daily >"$T/before.map"
stop_server
start_server -c "$T/c.conf" -l "unix:$sock"
dirty_map "$disk" daily >"$T/after.map"
diff -u "$T/before.map" "$T/after.map" || fail "the bits changed over a restart"

step "kill -9: the next start takes the bitmaps as all dirty"
signal_server KILL
reap_killed_server "$sock"
start_server -c "$T/c.conf" -l "unix:$sock"
grep -q "disk.bitmaps: the daemon that had it open did not stop cleanly" \
    "$SERVER_LOG" || fail "no warning about the unclean stop"
[ "$(dirty_map "$disk" daily)" = "0 33554432 dirty" ] ||
    fail "after kill -9: $(dirty_map "$disk" daily)"
tmo qemu-io -f raw "$disk" -c 'write -P 5 3M 64k' >/dev/null
nbdc "$T/incr2.out" copy --dirty-bitmap daily "$disk" "$T/backup.img"
grep -q "^copied 33554432 bytes" "$T/incr2.out" ||
    fail "after kill -9 the incremental should copy all: $(cat "$T/incr2.out")"
same_content "$img" "$T/backup.img" || fail "the backup differs after kill -9"

step "bad uses"
nbdc_fails 1 "does not offer qemu:dirty-bitmap:nope" \
    copy --dirty-bitmap nope "$disk" "$T/backup.img"
nbdc_fails 1 "missing.img.*No such file" \
    copy --dirty-bitmap daily "$disk" "$T/missing.img"
nbdc_fails 1 "the source must be an nbd:// or nbds:// URI" \
    copy --dirty-bitmap daily "$img" "$T/backup.img"
nbdc_fails 2 "writes onto an existing backup" \
    copy --dirty-bitmap daily "$disk" null:
if tmo nbdinfo --map=qemu:dirty-bitmap:nope "$disk" >"$T/nope" 2>&1; then
    fail "an unknown bitmap was served"
fi
stop_server

step "a second daemon on the same bitmap file is refused"
start_server -c "$T/c.conf" -l "unix:$sock"
cat >"$T/second.conf" <<EOF
[server]
listen = unix:$T/second.sock
[export disk]
path = $img
dirty-bitmap = daily
dirty-bitmap-file = $T/disk.bitmaps
EOF
rc=0
tmo "$SERVER_BIN" -f -c "$T/second.conf" >"$T/second.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "second daemon: exit $rc: $(cat "$T/second.log")"
grep -q "disk.bitmaps: in use by another export or process" "$T/second.log" ||
    fail "second daemon: $(cat "$T/second.log")"
stop_server
step "ok"
