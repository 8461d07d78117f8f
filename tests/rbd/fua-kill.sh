#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A write with FUA is in the image once acknowledged: kill -9 of the
# server right after it, then `rbd export` has the data.  A second,
# plain write flushed by NBD_CMD_FLUSH is checked the same way.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires qemu-io python3

new_image 32M
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=rbd:$IMG"
tmo qemu-io -f raw "$(uri disk)" -c 'write -f -P 0x5c 3M 1M' \
    -c 'write -P 0x6d 9M 64k' -c flush >"$T/qio.out" 2>&1 ||
    { cat "$T/qio.out" >&2; fail "qemu-io failed"; }
step "kill -9 the server"
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
rbdc export "$IMG" "$T/out.img" >/dev/null 2>&1 || fail "rbd export failed"
python3 - "$T/out.img" <<'PY' || fail "the image misses acknowledged data"
import sys

d = open(sys.argv[1], "rb").read()
M = 1024 * 1024
assert d[3 * M:4 * M] == b"\x5c" * M, "FUA write lost"
assert d[9 * M:9 * M + 65536] == b"\x6d" * 65536, "flushed write lost"
assert d[4 * M:9 * M] == bytes(5 * M), "unexpected data"
PY
step "rbd export has both writes"
