#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A client that queues 128 READs of 8 MiB and never reads a reply
# (stalled_reader.py): the server's RSS may grow by at most the
# per-connection cap on reply bytes plus some slack, must come back once
# the client hangs up, and other clients must be served meanwhile.
#
# STALL_CAP_MIB is the per-connection cap the server is meant to hold
# replies to (the default of max_inflight_bytes in struct server_limits,
# include/nbdsrv/server.h: 64 MiB); STALL_SLACK_MIB covers buffer pools,
# allocator arenas and the well-behaved client.  Keep STALL_CAP_MIB in
# step with the server's default.
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
make_random "$T/disk.img" 128M
start_server -l "unix:$T/nbd.sock" -e "disk=$T/disk.img"
pyrun stalled_reader.py "unix:$T/nbd.sock" "$SERVER_PID" \
    --bound-mib "$STALL_CAP_MIB" --slack-mib "$STALL_SLACK_MIB" \
    --read-mib "$STALL_READ_MIB" --count "$STALL_COUNT"
server_alive
stop_server
step "PASS"
