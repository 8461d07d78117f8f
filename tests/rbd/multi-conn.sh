#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Multi-conn over an RBD export: the server advertises it; four
# connections each write their own region, one flush on the first
# connection, and every connection then reads all four regions.  Then
# block status (base:allocation) agrees with `rbd diff --whole-object`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires nbdinfo python3
requires_nbd_python

new_image 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" -t 2 -e "disk=rbd:$IMG"

cat >"$T/mc.py" <<'PY'
import sys

import nbd

port = sys.argv[1]
hs = []
for i in range(4):
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_tcp("127.0.0.1", port)
    assert h.can_multi_conn(), "multi-conn is not advertised"
    hs.append(h)
M = 1024 * 1024
for i, h in enumerate(hs):
    h.pwrite(bytes([0x10 + i]) * M, (8 + 12 * i) * M)
hs[0].flush()
for j, h in enumerate(hs):
    for i in range(4):
        got = h.pread(M, (8 + 12 * i) * M)
        assert got == bytes([0x10 + i]) * M, "connection %d misses region %d" % (j, i)
for h in hs:
    h.shutdown()
print("multi-conn ok")
PY
tmo "$NBD_PYTHON" "$T/mc.py" "$port" || fail "multi-conn check failed"
step "4 connections, one flush: every connection sees every write"

step "block status against rbd diff --whole-object"
tmo nbdinfo --map --json "$(uri disk)" >"$T/map.json" || fail "nbdinfo --map failed"
rbdc diff --whole-object --format json "$IMG" >"$T/diff.json" ||
    fail "rbd diff failed"
python3 - "$T/map.json" "$T/diff.json" <<'PY' || fail "block status and rbd diff disagree"
import json
import sys

nbd_map = json.load(open(sys.argv[1]))
diff = json.load(open(sys.argv[2]))


def merge(rs):
    out = []
    for a, b in sorted(rs):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


data = merge([(e["offset"], e["offset"] + e["length"]) for e in nbd_map
              if e["type"] & 1 == 0])
ref = merge([(d["offset"], d["offset"] + d["length"]) for d in diff
             if d["exists"] in (True, "true")])
print("nbd data:", data)
print("rbd diff:", ref)
assert data == ref, "they differ"
assert len(data) == 4, "expected four data runs"
PY
step "block status agrees with rbd diff"
stop_server
