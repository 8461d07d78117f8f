#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Clients that hang up during the handshake: after half the client
# flags, half an option header, part of an option's data, or before
# reading anything; then 300 connections abandoned at different points
# of the handshake.  Afterwards the server must still serve, hold no more
# file descriptors (none may leak), exit 0 on SIGTERM, and the image must
# be untouched.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-robustness.sh
. "$(dirname "$0")/lib-robustness.sh"

requires python3 nbdinfo truncate

# argv: midhandshake ADDR, or churn ADDR COUNT.
cat >"$T/disconnect.py" <<'EOF'
import struct
import sys

import nbdwire as w
from nbdwire import log

LIMIT = 5.0


def midhandshake(addr):
    # (b) the greeting read, 2 of the 4 flag bytes sent.
    s = w.connect(addr, LIMIT)
    w.greeting(s)
    s.sendall(b"\x00\x00")
    s.close()
    # half an option header
    s = w.connect(addr, LIMIT)
    w.handshake(s)
    s.sendall(w.pack_option(w.OPT_LIST)[:10])
    s.close()
    # an option announcing 100 bytes of data, 10 sent
    s = w.connect(addr, LIMIT)
    w.handshake(s)
    s.sendall(struct.pack(">QII", w.IHAVEOPT, w.OPT_EXPORT_NAME, 100)
              + b"d" * 10)
    s.close()
    # nothing read, nothing sent
    w.connect(addr, LIMIT).close()
    log("connections dropped during the handshake")


def churn(addr, count):
    """Many connections abandoned at different points of the handshake."""
    socks = []
    for i in range(int(count)):
        s = w.connect(addr, LIMIT)
        if i % 3 == 1:
            w.greeting(s)
        elif i % 3 == 2:
            w.handshake(s)
        socks.append(s)
        if len(socks) >= 50:
            for x in socks:
                x.close()
            socks = []
    for x in socks:
        x.close()
    log("%s connections opened and abandoned" % count)


{"midhandshake": midhandshake, "churn": churn}[sys.argv[1]](*sys.argv[2:])
EOF

robust_start
step "(b) disconnects during the handshake"
tmo python3 "$T/disconnect.py" midhandshake "$addr" ||
    fail "mid-handshake checks failed"
server_alive
step "churn: 300 abandoned connections"
tmo python3 "$T/disconnect.py" churn "$addr" 300 || fail "churn failed"
robust_finish
image_holds 0 $((48 * MiB)) zero
step "pass"
