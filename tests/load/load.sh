#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# 1,000 concurrent connections doing verified reads and writes while 100
# others send garbage and half-requests (load.py): every well-formed
# request is answered correctly, the server keeps running and closes
# every connection once its client leaves, and an idle connection costs
# less than LOAD_IDLE_BOUND_KIB (16 KiB) of resident memory.
#
# Reported, not asserted: the memory per busy connection, and the memory
# per idle connection of nbdkit (file plugin) measured the same way with
# LOAD_NBDKIT_CONNS connections (nbdkit runs threads per connection, so
# a thousand would be heavy for a report).  The figures go to
# $BUILD/load-report.txt as well.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../faults/lib-faults.sh
. "$(dirname "$0")/../faults/lib-faults.sh"

requires python3 truncate
requires_nbd_python

LOAD_CONNS=${LOAD_CONNS:-1000}
LOAD_HOSTILE=${LOAD_HOSTILE:-100}
LOAD_ROUNDS=${LOAD_ROUNDS:-20}
LOAD_IDLE_BOUND_KIB=${LOAD_IDLE_BOUND_KIB:-16}
LOAD_NBDKIT_CONNS=${LOAD_NBDKIT_CONNS:-200}
report=$BUILD/load-report.txt

# Every connection is a descriptor in the server and in load.py: the
# well-formed ones, 20 short-lived ones, the hostile ones and up to 200
# of theirs held open half way (load.py: CHURNERS, HELD_MAX).
need=$((LOAD_CONNS + 20 + LOAD_HOSTILE + 200 + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" 2>/dev/null ||
        fail "cannot raise the open-file limit to $need (hard limit $(ulimit -Hn))"
fi

# Limits that would refuse our clients: all come from 127.0.0.1.
# Options are passed only when this build has them.
opts=(--handshake-timeout 60)
if has_server_option --max-connections; then
    opts+=(--max-connections $((need * 2)))
fi
if has_server_option --max-connections-per-client; then
    opts+=(--max-connections-per-client 0)
fi

if [[ $BUILD == *-asan* ]] || [[ $BUILD == *-tsan* ]] ||
    [[ $BUILD == *-valgrind* ]]; then
    bound=0 # sanitizers change the memory picture: report only
else
    bound=$LOAD_IDLE_BOUND_KIB
fi

make_image "$T/disk.img" 80M
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img" "${opts[@]}"
: >"$report"
pyrun_long()
{
    timeout -k 5 300 "$NBD_PYTHON" "$(dirname "$0")/load.py" "$@"
}
pyrun_long "127.0.0.1:$port" "$SERVER_PID" --export disk \
    --conns "$LOAD_CONNS" --hostile "$LOAD_HOSTILE" --rounds "$LOAD_ROUNDS" \
    --idle-bound-kib "$bound" --label nbd-serverd --report "$report"
server_alive
stop_server

if command -v nbdkit >/dev/null 2>&1; then
    kport=$(free_port)
    nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$kport" file "$T/disk.img" \
        >>"$SERVER_LOG" 2>&1 &
    kpid=$!
    fault_track_pid "$kpid"
    for ((i = 0; i < 100; i++)); do
        probe "127.0.0.1:$kport" && break
        sleep 0.1
    done
    pyrun_long "127.0.0.1:$kport" "$kpid" --conns "$LOAD_NBDKIT_CONNS" \
        --idle-only --label "nbdkit $(nbdkit --version | cut -d' ' -f2)" \
        --report "$report" ||
        step "nbdkit comparison failed (reported only)"
    stop_pid "$kpid"
elif [ "${CI:-}" = true ]; then
    fail "nbdkit is not installed (CI=true: every tool must be installed)"
else
    step "nbdkit is not installed: no comparison"
fi
step "memory per connection (KiB):"
sed 's/^/    /' "$report"
step "PASS"
