#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu:allocation-depth on an overlay export: nbdinfo lists it beside
# base:allocation; its map (nbdinfo --map=qemu:allocation-depth) is 1
# where the overlay holds the data and 2 where it reads the base, the
# same map qemu-nbd -A gives for a qcow2 overlay over the same base after
# the same writes; qemu-img map reads it (x-dirty-bitmap selects it
# beside base:allocation, so each BLOCK_STATUS reply has two chunks);
# libnbd gets both contexts in one call, REQ_ONE too; the query "qemu:"
# lists it but selects nothing; an export without an overlay neither lists
# nor serves it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "overlays are specific to nbd-serverd"
requires nbdinfo qemu-io qemu-img qemu-nbd
requires_nbd_python

# The base: data in [1M, 2M) of 4 MiB, holes around it.
base=$T/base.img
make_image "$base" 4M
tmo qemu-io -f raw "$base" -c 'write -P 0x11 1M 1M' >/dev/null

sock=$T/ours.sock
start_server -l "unix:$sock" -e "cow=$base,overlay=$T/cow.ovl" \
    -e "plain=$base"
cow="nbd+unix:///cow?socket=$sock"
plain="nbd+unix:///plain?socket=$sock"

# The same writes to our overlay and to a qcow2 overlay of the base.
writes=(-c 'write -P 0x22 0 64k' -c 'write -P 0x33 1536k 64k'
    -c 'write -z 3M 64k')
tmo qemu-io -f raw "$cow" "${writes[@]}" >/dev/null
qcow=$T/top.qcow2
tmo qemu-img create -q -f qcow2 -b "$base" -F raw "$qcow"
tmo qemu-io -f qcow2 "$qcow" "${writes[@]}" >/dev/null

step "nbdinfo lists qemu:allocation-depth on the overlay export only"
tmo nbdinfo --list "nbd+unix:///?socket=$sock" >"$T/list"
awk '/^export=/ {e = $0} /qemu:allocation-depth/ {print e}' "$T/list" \
    >"$T/listed"
[ "$(cat "$T/listed")" = "export=\"cow\":" ] || {
    cat "$T/list" >&2
    fail "qemu:allocation-depth listed for: $(tr '\n' ' ' <"$T/listed")"
}
grep -q 'base:allocation' "$T/list" || fail "base:allocation is not listed"

step "the depth map: 1 in the overlay, 2 in the base"
tmo nbdinfo --map=qemu:allocation-depth "$cow" >"$T/ours.map"
cat >"$T/want.map" <<'MAP'
0 65536 1
65536 1507328 2
1572864 65536 1
1638400 1507328 2
3145728 65536 1
3211264 983040 2
MAP
awk '{print $1, $2, $3}' "$T/ours.map" >"$T/ours.cols"
diff -u "$T/want.map" "$T/ours.cols" || fail "unexpected depth map"

step "the same map as qemu-nbd -A for a qcow2 overlay"
start_peer qemu-nbd top "$qcow" -f qcow2 -A
tmo nbdinfo --map=qemu:allocation-depth "$PEER_URI" >"$T/peer.map"
stop_peer
diff -u "$T/peer.map" "$T/ours.map" || fail "our map differs from qemu-nbd's"

step "qemu-img map reads it through x-dirty-bitmap"
# With x-dirty-bitmap qemu reads the context's value as base:allocation
# flags: depth 1 (0x1, "hole") is data false, depth 2 (0x2, "zero") is
# zero true and data true.
tmo qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=unix,server.path=$sock,export=cow,x-dirty-bitmap=qemu:allocation-depth" \
    >"$T/qimg.json"
"$NBD_PYTHON" - "$T/qimg.json" "$T/want.map" <<'PY'
import json
import sys

got = json.load(open(sys.argv[1]))
want = [tuple(int(x) for x in line.split()) for line in open(sys.argv[2])]
decoded = []
for e in got:
    depth = 1 if not e["data"] else 2 if e["zero"] else None
    if decoded and decoded[-1][2] == depth:
        decoded[-1] = (decoded[-1][0], decoded[-1][1] + e["length"], depth)
    else:
        decoded.append((e["start"], e["length"], depth))
if decoded != want:
    sys.exit(f"qemu-img map decodes to {decoded}, want {want}")
PY

step "libnbd: both contexts in one BLOCK_STATUS, and with REQ_ONE"
cat >"$T/both.py" <<'PY'
import sys

import nbd

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.add_meta_context("qemu:allocation-depth")
h.connect_uri(sys.argv[1])
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.can_meta_context("qemu:allocation-depth")
# [64k, 1600k): the base's hole to 1M, its data to 1536k, then 64k the
# overlay holds.
want_all = {"base:allocation": [983040, 3, 589824, 0],
            "qemu:allocation-depth": [1507328, 2, 65536, 1]}
want_one = {"base:allocation": [983040, 3],
            "qemu:allocation-depth": [1507328, 2]}
for flags, want in ((0, want_all), (nbd.CMD_FLAG_REQ_ONE, want_one)):
    seen = {}

    def cb(meta, offset, entries, err):
        assert offset == 65536, offset
        assert meta not in seen, f"{meta} twice"
        seen[meta] = list(entries)
        return 0

    h.block_status(1572864, 65536, cb, flags=flags)
    assert seen == want, (flags, seen, want)
h.shutdown()
PY
tmo "$NBD_PYTHON" "$T/both.py" "$cow" || fail "two contexts in one call"

step "the query qemu: lists the context in LIST and selects nothing in SET"
cat >"$T/wildcard.py" <<'PY'
import sys

import nbd

h = nbd.NBD()
h.set_opt_mode(True)
h.add_meta_context("qemu:")
h.connect_uri(sys.argv[1])
listed = []
h.opt_list_meta_context(lambda name: listed.append(name) or 0)
assert listed == ["qemu:allocation-depth"], listed
h.opt_go()
assert not h.can_meta_context("qemu:allocation-depth"), "qemu: selected it"
h.shutdown()
PY
tmo "$NBD_PYTHON" "$T/wildcard.py" "$cow" || fail "the qemu: query"

step "an export without an overlay does not serve it"
if tmo nbdinfo --map=qemu:allocation-depth "$plain" >"$T/plain.out" 2>&1; then
    cat "$T/plain.out" >&2
    fail "qemu:allocation-depth served on an export without an overlay"
fi
grep -q 'does not support metadata context' "$T/plain.out" ||
    fail "unexpected error: $(cat "$T/plain.out")"

stop_server
step "ok"
