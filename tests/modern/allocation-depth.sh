#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu:allocation-depth with extended headers: libnbd 1.22 (the chroot's
# Python module) selects it beside base:allocation on an overlay export,
# extended headers are on, and one block_status_64 call over 5 GiB gets
# both contexts with 64-bit lengths: depth 1 for the blocks the overlay
# holds (one of them above 4 GiB), 2 for the rest; the chroot's qemu 10
# nbdinfo map is the one the chroot's qemu-nbd -A gives for a qcow2
# overlay after the same writes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate
chroot_requires python3 nbdinfo qemu-io qemu-img qemu-nbd

base=$T/base.img
make_image "$base" 6G
sock=$T/ours.sock
start_server -l "unix:$sock" -e "cow=$base,overlay=$T/cow.ovl"
u="nbd+unix:///cow?socket=$sock"

writes=(-c 'write -P 0x22 0 64k' -c 'write -P 0x33 5G 64k')
in_chroot qemu-io -f raw "$u" "${writes[@]}" >/dev/null
qcow=$T/top.qcow2
in_chroot qemu-img create -q -f qcow2 -b "$base" -F raw "$qcow"
in_chroot qemu-io -f qcow2 "$qcow" "${writes[@]}" >/dev/null

cat >"$T/depth.py" <<'PY'
import sys

import nbd

GiB = 1 << 30
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.add_meta_context("qemu:allocation-depth")
h.connect_uri(sys.argv[1])
assert h.get_extended_headers_negotiated(), "no extended headers"
assert h.can_meta_context("qemu:allocation-depth")
seen = {}


def cb(meta, offset, entries, err):
    assert offset == 0, offset
    seen[meta] = [(e[0], e[1]) for e in entries]
    return 0


h.block_status_64(5 * GiB + 64 * 1024 + 4096, 0, cb)
depth = seen.get("qemu:allocation-depth")
want = [(65536, 1), (5 * GiB - 65536, 2), (65536, 1), (4096, 2)]
assert depth == want, depth
alloc = seen.get("base:allocation")
assert alloc is not None and alloc[0] == (65536, 0), alloc
h.shutdown()
print("  both contexts, 64-bit lengths: ok")
PY
step "libnbd 1.22: both contexts in one block_status_64 over 5 GiB"
chroot_py "$T/depth.py" "$u" || fail "depth.py"

step "nbdinfo 1.22's depth map equals qemu-nbd 10's for a qcow2 overlay"
in_chroot nbdinfo --map=qemu:allocation-depth "$u" >"$T/ours.map"
PEER_ADDR=unix:$T/peer.sock
start_chroot_peer qemu-nbd "$SERVER_LOG" qemu-nbd -t -A -f qcow2 \
    -k "$T/peer.sock" "$qcow"
in_chroot nbdinfo --map=qemu:allocation-depth \
    "nbd+unix:///?socket=$T/peer.sock" >"$T/peer.map"
stop_chroot_peer
diff -u "$T/peer.map" "$T/ours.map" || fail "our map differs from qemu-nbd's"
grep -q 'backing depth 2' "$T/ours.map" || fail "no depth 2 in the map"

stop_server
step "ok"
