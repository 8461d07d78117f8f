#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fio's nbd engine (libnbd) against the server, with crc32c verification:
# a random-write pass that verifies every block afterwards, a verify-only
# pass, a negative control (one block overwritten with zeroes must make the
# verify-only pass fail, proving that the data really are checked), a
# time-based random read/write mix that verifies as it goes, and four jobs
# (four connections) at once over a Unix socket.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires fio python3 truncate
fio --enghelp=nbd >/dev/null 2>&1 || missing "this fio has no nbd engine"

disk=$T/disk.img
make_image "$disk" 64M

# fio keeps verify state files in its working directory: run it in $T.
fio_t()
{
    (cd "$T" && tmo fio "$@")
}

# run_fio NAME ARGS...: a fio job with JSON output; fio must exit 0 and
# every job must report error 0 and (when verifying) have read something.
run_fio()
{
    local name=$1 rc=0
    shift
    fio_t --name="$name" --ioengine=nbd --output-format=json \
        --output="$T/$name.json" "$@" >"$T/$name.err" 2>&1 || rc=$?
    if [ "$rc" != 0 ] || grep -qi 'verify:\|bad magic\|verify failed' "$T/$name.err"; then
        cat "$T/$name.err" >&2
        fail "fio $name exited $rc or reported verify errors"
    fi
    python3 - "$T/$name.json" <<'EOF' || fail "fio $name: job errors"
import json, sys
with open(sys.argv[1]) as f:
    text = f.read()
# fio may print notes before the JSON document.
doc = json.loads(text[text.index("{"):])
for job in doc["jobs"]:
    r, w = job["read"]["io_kbytes"], job["write"]["io_kbytes"]
    print("  job %s: error %d, read %d KiB, written %d KiB"
          % (job["jobname"], job["error"], r, w))
    if job["error"] != 0:
        sys.exit(1)
    if r == 0:
        sys.exit("  nothing was read back, so nothing was verified")
EOF
    step "fio $name: no errors"
}

common=(--bs=4k --iodepth=16 --verify=crc32c --verify_fatal=1)

port=$(free_port)
start_server -l "127.0.0.1:$port" -t 4 -e "disk=$disk"
u=$(uri disk)

step "random writes over 32 MiB, then verify every block"
run_fio write-verify --uri="$u" --rw=randwrite --size=32m "${common[@]}" \
    --do_verify=1
run_fio verify-only --uri="$u" --rw=randwrite --size=32m "${common[@]}" \
    --verify_only

step "negative control: zero one block, the verify pass must fail"
fio_t --name=corrupt --ioengine=nbd --uri="$u" --rw=write --bs=4k \
    --size=4k --offset=1m --zero_buffers >"$T/corrupt.out" 2>&1 ||
    fail "fio could not overwrite a block: $(cat "$T/corrupt.out")"
rc=0
fio_t --name=verify-bad --ioengine=nbd --uri="$u" --rw=randwrite \
    --size=32m "${common[@]}" --verify_only >"$T/verify-bad.out" 2>&1 ||
    rc=$?
if [ "$rc" = 0 ] || ! grep -q 'verify' "$T/verify-bad.out"; then
    fail "fio did not notice a zeroed block (exit $rc)"
fi
step "the zeroed block was noticed (exit $rc)"

step "time-based random read/write mix over 64 MiB with verify_backlog"
run_fio randrw --uri="$u" --rw=randrw --size=64m --runtime=3 \
    --time_based "${common[@]}" --verify_backlog=256
server_alive
stop_server

step "four jobs, four connections, over a Unix socket"
start_server -l "unix:$T/nbd.sock" -e "disk=$disk"
run_fio four-jobs --uri="$(uri disk)" --rw=randwrite --size=16m \
    --numjobs=4 --offset_increment=16m "${common[@]}" --do_verify=1
stop_server
step "pass"
