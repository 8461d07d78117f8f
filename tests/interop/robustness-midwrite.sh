#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A client that hangs up in the middle of a write payload, after an
# acknowledged write, and one that hangs up in the middle of a request
# header, with a clean NBD_CMD_DISC for comparison.  Afterwards the
# server must still serve, hold no more file descriptors, exit 0 on
# SIGTERM, and the image must hold exactly the acknowledged write.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-robustness.sh
. "$(dirname "$0")/lib-robustness.sh"

requires python3 nbdinfo truncate

ABORTED_AT=$((40 * MiB))    # the write cut short in its payload

# (c) A complete, acknowledged WRITE, then a WRITE of 64 KiB at OFFSET
# that carries only 1000 bytes of its payload.  The acknowledged data
# goes to ACKED.  argv: ADDR NAME OFFSET ACKED.
cat >"$T/midwrite.py" <<'EOF'
import os
import sys

import nbdwire as w
from nbdwire import fail, log

LIMIT = 5.0
addr, name, offset, acked_out = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                 sys.argv[4])
s = w.connect(addr, LIMIT)
size, tflags = w.export_name(s, name)
if not tflags & w.TFLAG_HAS_FLAGS:
    fail("transmission flags %#x lack HAS_FLAGS" % tflags)
acked = os.urandom(4096)
w.send_request(s, w.CMD_WRITE, 0x1001, offset + 65536, len(acked), acked)
err = w.simple_reply(s, 0x1001)
if err:
    fail("acknowledged write: error %d" % err)
w.send_request(s, w.CMD_READ, 0x1002, offset + 65536, 4096)
err = w.simple_reply(s, 0x1002)
if err or w.recv_exact(s, 4096) != acked:
    fail("read back of the acknowledged write: error %d or wrong data" % err)
with open(acked_out, "wb") as f:
    f.write(acked)
w.send_request(s, w.CMD_WRITE, 0x1003, offset, 65536, b"\x77" * 1000)
s.close()
log("write cut off after 1000 of 65536 payload bytes")
# The same on a connection with a request header cut in half.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
s.sendall(w.pack_request(w.CMD_WRITE, 7, offset, 65536)[:13])
s.close()
# And a clean NBD_CMD_DISC for comparison.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
w.send_request(s, w.CMD_DISC, 0x1004, 0, 0)
w.expect_eof(s, "NBD_CMD_DISC", LIMIT)
EOF

robust_start
step "(c) disconnect in the middle of a write payload"
tmo python3 "$T/midwrite.py" "$addr" disk "$ABORTED_AT" "$T/acked" ||
    fail "mid-write checks failed"
robust_finish

# [ABORTED_AT, ABORTED_AT + 64 KiB) was never acknowledged: not checked.
acked_at=$((ABORTED_AT + 65536))
image_holds 0 "$ABORTED_AT" zero \
    "$acked_at" $((acked_at + 4096)) "@$T/acked" \
    $((acked_at + 4096)) $((48 * MiB)) zero
step "pass"
