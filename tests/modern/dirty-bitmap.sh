#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu:dirty-bitmap with extended headers: libnbd 1.22 (the chroot's
# Python module) selects a bitmap beside base:allocation on a 6 GiB memory
# export, extended headers are on, and one block_status_64 call over the
# whole export gets the bitmap with 64-bit lengths: dirty for the blocks
# the chroot's qemu-io 10 wrote (one above 4 GiB), clean between them in
# runs longer than 4 GiB; the chroot's nbdinfo prints the same map, and
# qemu-img 10 map reads it through x-dirty-bitmap.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

chroot_requires python3 nbdinfo qemu-io qemu-img

sock=$T/ours.sock
cat >"$T/c.conf" <<CONF
[export big]
memory = 6G
dirty-bitmap = nightly
CONF
start_server -c "$T/c.conf" -l "unix:$sock"
u="nbd+unix:///big?socket=$sock"
in_chroot qemu-io -f raw "$u" -c 'write -P 0x22 64k 4k' \
    -c 'write -P 0x33 5G 64k' >/dev/null

cat >"$T/bitmap.py" <<'PY'
import sys

import nbd

GiB = 1 << 30
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.add_meta_context("qemu:dirty-bitmap:nightly")
h.connect_uri(sys.argv[1])
assert h.get_extended_headers_negotiated(), "no extended headers"
assert h.can_meta_context("qemu:dirty-bitmap:nightly")
seen = {}


def cb(meta, offset, entries, err):
    assert offset == 0, offset
    seen[meta] = [(e[0], e[1]) for e in entries]
    return 0


h.block_status_64(6 * GiB, 0, cb)
got = seen.get("qemu:dirty-bitmap:nightly")
want = [(65536, 0), (65536, 1), (5 * GiB - 131072, 0), (65536, 1),
        (GiB - 65536, 0)]
assert got == want, got
h.shutdown()
print("  the bitmap with 64-bit lengths: ok")
PY
step "libnbd 1.22: the bitmap in one block_status_64 over 6 GiB"
chroot_py "$T/bitmap.py" "$u" || fail "bitmap.py"

step "nbdinfo 1.22 prints the same map"
in_chroot nbdinfo --map=qemu:dirty-bitmap:nightly "$u" |
    awk '{print $1, $2, $3}' >"$T/map"
cat >"$T/want" <<MAP
0 65536 0
65536 65536 1
131072 $((5 * (1 << 30) - 131072)) 0
$((5 * (1 << 30))) 65536 1
$((5 * (1 << 30) + 65536)) $(((1 << 30) - 65536)) 0
MAP
diff -u "$T/want" "$T/map" || fail "unexpected nbdinfo map"

step "qemu-img 10 map reads it through x-dirty-bitmap"
in_chroot qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=unix,server.path=$sock,export=big,x-dirty-bitmap=qemu:dirty-bitmap:nightly" \
    >"$T/qimg.json"
python3 - "$T/qimg.json" <<'PY'
import json
import sys

GiB = 1 << 30
got = [(e["start"], e["length"], e["data"]) for e in json.load(open(sys.argv[1]))]
merged = []
for start, length, data in got:
    if merged and merged[-1][2] == data:
        merged[-1] = (merged[-1][0], merged[-1][1] + length, data)
    else:
        merged.append((start, length, data))
# Dirty reads as data false (the status bit qemu takes for "hole").
want = [(0, 65536, True), (65536, 65536, False),
        (131072, 5 * GiB - 131072, True), (5 * GiB, 65536, False),
        (5 * GiB + 65536, GiB - 65536, True)]
if merged != want:
    sys.exit(f"qemu-img map: {merged}, want {want}")
PY
stop_server
step "ok"
