#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The handshake timeout (1 s): clients that stop talking before, during
# or after the greeting, the client flags or an option are dropped, while
# a client idle in the transmission phase is not.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
is_our_server || skip "nbdkit has no handshake timeout"

disk=$T/disk.img

# (e) Clients that stop talking during the handshake are dropped within
# LIMIT seconds; a client in transmission is not.  argv: ADDR NAME LIMIT.
cat >"$T/silent.py" <<'EOF'
import sys
import time

import nbdwire as w
from nbdwire import fail, log

TIMEOUT = 5.0
addr, name, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
for what, prepare in (
        ("silent client", lambda s: None),
        ("silent after the greeting", w.greeting),
        ("silent after the flags", w.handshake),
        ("silent in the middle of an option",
         lambda s: (w.handshake(s),
                    s.sendall(w.pack_option(w.OPT_LIST)[:12])))):
    s = w.connect(addr, TIMEOUT)
    prepare(s)
    w.expect_eof(s, what, limit)
s = w.connect(addr, TIMEOUT)
w.export_name(s, name)
time.sleep(limit)
w.send_request(s, w.CMD_READ, 9, 0, 512)
if w.simple_reply(s, 9):
    fail("read after an idle period in transmission failed")
w.recv_exact(s, 512)
w.send_request(s, w.CMD_DISC, 10, 0, 0)
w.expect_eof(s, "NBD_CMD_DISC after idling", TIMEOUT)
log("an idle client in transmission is not dropped")
EOF

step "(e) handshake timeout of 1 s"
make_image "$disk" 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" --handshake-timeout 1 -e "disk=$disk"
tmo python3 "$T/silent.py" "127.0.0.1:$port" disk 3 ||
    fail "handshake timeout checks failed"
server_alive
stop_server
step "pass"
