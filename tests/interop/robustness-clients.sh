#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# 32 clients (libnbd) writing at once, each 1 MiB of its own in four
# pipelined writes, then a flush and a read back.  Afterwards the server
# must still serve, hold no more file descriptors, exit 0 on SIGTERM, and
# the image must hold exactly the acknowledged writes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-robustness.sh
. "$(dirname "$0")/lib-robustness.sh"

requires python3 nbdinfo truncate
requires_nbd_python

NCLIENTS=32

# One of the clients.  argv: URI, index, go file.
cat >"$T/client.py" <<'EOF'
import os
import sys
import time

import nbd

uri, index, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MiB = 1024 * 1024
h = nbd.NBD()
h.connect_uri(uri)
deadline = time.monotonic() + 30
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("client %d: never told to go" % index)
    time.sleep(0.01)
data = bytes([index + 1]) * (256 * 1024)
cookies = [h.aio_pwrite(data, index * MiB + i * len(data)) for i in range(4)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    if not h.aio_command_completed(c):
        sys.exit("client %d: write %d not completed" % (index, c))
h.flush()
for i in range(4):
    if h.pread(len(data), index * MiB + i * len(data)) != data:
        sys.exit("client %d: read back wrong data" % index)
h.shutdown()
EOF

robust_start
step "(d) $NCLIENTS clients at once, each writing its own 1 MiB"
pids=()
for ((i = 0; i < NCLIENTS; i++)); do
    tmo "$NBD_PYTHON" "$T/client.py" "$(uri disk)" "$i" "$T/go" &
    pids+=($!)
    track_pid $!
done
sleep 1
touch "$T/go"
for ((i = 0; i < NCLIENTS; i++)); do
    wait "${pids[$i]}" || fail "client $i failed"
done
step "all $NCLIENTS clients done"
robust_finish

regions=()
for ((i = 0; i < NCLIENTS; i++)); do
    regions+=($((i * MiB)) $(((i + 1) * MiB)) "$((i + 1))")
done
image_holds "${regions[@]}" $((NCLIENTS * MiB)) $((48 * MiB)) zero
step "pass"
