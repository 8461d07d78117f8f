#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SIGTERM while a client (libnbd) is connected and idle: the server must
# not wait for it, and exits 0 within 15 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate
requires_nbd_python
is_our_server || skip "nbdkit waits for idle clients"

disk=$T/disk.img

step "(f) SIGTERM while a client is connected and idle"
make_image "$disk" 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk"
"$NBD_PYTHON" -c '
import sys, time, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("  idle client connected", flush=True)
time.sleep(60)' "$(uri disk)" &
idle=$!
track_pid "$idle"
sleep 1
stop_server
kill "$idle" 2>/dev/null || true
step "pass"
