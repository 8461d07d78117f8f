#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Clients that hang up (FIN or RST) in the middle of a WRITE payload, a
# request header or a READ reply, or with requests in flight whose
# replies they never read (vanishing_clients.py), over TCP and a Unix
# socket: the server must not crash (no SIGPIPE, no assertion), must not
# apply a cut-short WRITE, must close every such connection (no fd left)
# and release its buffers, and must go on serving.  On a sanitizer build
# the RSS bound is not checked (ASan keeps freed memory in quarantine);
# its report in the server log fails the test instead.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-faults.sh
. "$(dirname "$0")/lib-faults.sh"

requires python3 head
requires_nbd_python

slack=16
if [[ $BUILD == *-asan* ]] || [[ $BUILD == *-tsan* ]]; then
    slack=0
fi

make_random "$T/disk.img" 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" -l "unix:$T/nbd.sock" -e "disk=$T/disk.img"
for addr in "127.0.0.1:$port" "unix:$T/nbd.sock"; do
    step "vanishing clients on $addr"
    pyrun vanishing_clients.py "$addr" "$SERVER_PID" --slack-mib "$slack"
done
server_alive
stop_server
step "PASS"
