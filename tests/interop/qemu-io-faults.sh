#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Storage faults end to end, through the test daemon
# ($BUILD/tests/nbd-serverd-test, whose hook wraps the exports named in
# NBDSRV_TEST_FAULTS in the fault-injection filter) and qemu-io:
#  - backend EIO on reads of one range and on flush reaches the client as
#    EIO (the flush seen through libnbd: qemu-io does not report it), and
#    the rest of the export keeps working;
#  - ENOSPC on writes and write-zeroes past 4 MiB reaches it as ENOSPC,
#    and the image stays as it was there;
#  - a flush that fails when the daemon stops makes it exit 1, saying so;
#  - slow storage: a write that the storage holds for seconds is still in
#    flight when SIGTERM comes; the daemon answers it before exiting, the
#    client sees success and the data is in the image;
#  - a malformed fault list stops the test daemon with a message, and the
#    daemon users run ignores the variable.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "fault injection needs nbd-serverd's test daemon"
requires qemu-io python3 truncate cmp
requires_nbd_python
SERVER_BIN=$BUILD/tests/nbd-serverd-test

bad=$T/bad.img
full=$T/full.img
slow=$T/slow.img
make_image "$bad" 4M
make_image "$full" 8M
make_image "$slow" 4M

# qio_expect URI WANT CMD...: qemu-io runs the commands; its output must
# contain WANT (an error text, or "ok" for success with no error).
qio_expect()
{
    local u=$1 want=$2 c
    local -a args=()
    shift 2
    if [ "$want" = ok ]; then
        qio "$u" "$@"
        return
    fi
    for c in "$@"; do
        args+=(-c "$c")
    done
    tmo qemu-io -f raw "$u" "${args[@]}" >"$T/qio.out" 2>&1 || true
    if ! grep -q "$want" "$T/qio.out"; then
        cat "$T/qio.out" >&2
        fail "qemu-io did not report '$want' (commands: $*)"
    fi
    step "qemu-io $*: $want"
}

export NBDSRV_TEST_FAULTS="bad=read@1M-2M:EIO,flush:EIO;full=write+zero@4M-:ENOSPC;slow=write@0-64K:delay=3000"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "bad=$bad" -e "full=$full"

step "EIO from the storage"
qio_expect "$(uri bad)" "Input/output error" 'read 1M 4k'
qio_expect "$(uri bad)" "Input/output error" 'read 1020k 8k'
qio_expect "$(uri bad)" ok 'write -P 0x21 0 64k' 'read -P 0x21 0 64k' \
    'read -P 0 2M 64k'
# qemu-io does not report a failed flush: ask libnbd directly.
nbdsh_run -u "$(uri bad)" -c '
import errno
try:
    h.flush()
except nbd.Error as e:
    if str(e.errno) not in ("EIO", str(errno.EIO)):
        raise SystemExit("flush failed with %s, not EIO" % e.errno)
    print("flush: EIO")
else:
    raise SystemExit("flush succeeded")
' >"$T/flush.out" 2>&1 || fail "flush through nbdsh: $(cat "$T/flush.out")"
grep -q 'flush: EIO' "$T/flush.out" || fail "flush: $(cat "$T/flush.out")"
step "NBD_CMD_FLUSH: EIO"
grep -q 'fault: failing read at 1048576+4096 with Input/output error' \
    "$SERVER_LOG" || fail "the server log does not name the injected read error"

step "ENOSPC from the storage"
qio_expect "$(uri full)" "No space left on device" 'write -P 0x31 4M 64k'
qio_expect "$(uri full)" "No space left on device" 'write -P 0x31 4092k 8k'
qio_expect "$(uri full)" "No space left on device" 'write -z 6M 1M'
qio_expect "$(uri full)" ok 'write -P 0x32 0 4092k' 'read -P 0x32 0 4092k' \
    'read -P 0 4M 4M'

step "a flush that fails at shutdown: exit status 1, and the log says why"
signal_server TERM
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=
[ "$rc" = 1 ] || fail "the server exited $rc, not 1, after a failed flush"
grep -q "flushing export 'bad': Input/output error" "$SERVER_LOG" ||
    fail "the log does not name the export whose flush failed"
check_sanitizer_reports

step "slow storage: a write in flight at SIGTERM is answered and kept"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "slow=$slow"
tmo qemu-io -f raw "$(uri slow)" -c 'write -P 0x5a 0 64k' \
    >"$T/slow.out" 2>&1 &
slow_pid=$!
track_pid "$slow_pid"
for ((i = 0; i < 200; i++)); do
    grep -q 'fault: delaying write at 0+65536' "$SERVER_LOG" && break
    sleep 0.05
done
grep -q 'fault: delaying write at 0+65536' "$SERVER_LOG" ||
    fail "the slow write never reached the storage"
stop_server
rc=0
wait "$slow_pid" || rc=$?
[ "$rc" = 0 ] && ! grep -qi 'error\|failed' "$T/slow.out" ||
    fail "the write in flight at SIGTERM failed ($rc): $(cat "$T/slow.out")"
head -c 65536 /dev/zero | tr '\0' '\132' >"$T/want"
cmp -n 65536 "$slow" "$T/want" ||
    fail "the image lacks the write acknowledged during shutdown"
step "the delayed write was acknowledged and is in the image"
cmp -i 4M:0 -n 4M "$full" /dev/zero ||
    fail "writes refused with ENOSPC changed the image"

step "a malformed NBDSRV_TEST_FAULTS stops the test daemon"
rc=0
NBDSRV_TEST_FAULTS="bad=frob:EIO" tmo "$SERVER_BIN" -f \
    -l "127.0.0.1:$(free_port)" -e "bad=$bad" >"$T/typo.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "the test daemon started with a malformed fault list"
grep -q "fault rule 'frob:EIO': unknown operation 'frob'" "$T/typo.out" ||
    fail "no clear message for a malformed fault list: $(cat "$T/typo.out")"

step "the daemon users run has no fault injection"
SERVER_BIN=$BUILD/nbd-serverd
injected=$(grep -c 'fault:' "$SERVER_LOG")
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "bad=$bad"
qio_expect "$(uri bad)" ok 'read -P 0 1M 4k'
# Exit status 0: the flush at shutdown did not fail either.
stop_server
[ "$(grep -c 'fault:' "$SERVER_LOG")" = "$injected" ] ||
    fail "build/nbd-serverd injected a fault"
