#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A client that queues 128 READs of 8 MiB and never reads a reply
# (stalled_reader.py): the server's RSS may grow by at most the
# per-connection cap on reply bytes plus some slack, must come back once
# the client hangs up, and other clients must be served meanwhile.
#
# STALL_CAP_MIB is the per-connection cap on request buffers: it is
# passed as --max-buffer-memory-per-connection when the server has that
# option (its default is 64M too), so the bound checked is the one
# configured.  STALL_SLACK_MIB covers buffer pools, allocator arenas and
# the well-behaved client.  The server-wide budget (max-buffer-memory,
# default 1G) is left at its default: one connection stays below it.
# tests/interop/hostile-readers.sh checks both caps with several hostile
# clients and the request timeout; this one runs at the defaults, with
# simple and structured replies.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-faults.sh
. "$(dirname "$0")/lib-faults.sh"

requires python3 head
requires_nbd_python

STALL_CAP_MIB=${STALL_CAP_MIB:-64}
STALL_SLACK_MIB=${STALL_SLACK_MIB:-32}
STALL_READ_MIB=${STALL_READ_MIB:-8}
STALL_COUNT=${STALL_COUNT:-128}

if [ -n "${NBDSRV_SANITIZE_BUILD:-}" ] || [[ $BUILD == *-asan* ]] ||
    [[ $BUILD == *-tsan* ]]; then
    # ASan's quarantine keeps freed memory resident: no RSS bound holds.
    skip "RSS bounds mean nothing under a sanitizer build ($BUILD)"
fi

# Random data: a READ of a hole would need no buffer.
opts=()
if has_server_option --max-buffer-memory-per-connection; then
    opts+=(--max-buffer-memory-per-connection "${STALL_CAP_MIB}M")
fi
make_random "$T/disk.img" 128M
start_server -l "unix:$T/nbd.sock" -e "disk=$T/disk.img" "${opts[@]}"
pyrun stalled_reader.py "unix:$T/nbd.sock" "$SERVER_PID" \
    --bound-mib "$STALL_CAP_MIB" --slack-mib "$STALL_SLACK_MIB" \
    --read-mib "$STALL_READ_MIB" --count "$STALL_COUNT"
server_alive
stop_server
step "PASS"
