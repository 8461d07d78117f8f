#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Stopping the server with a client connected: a request that arrives
# after SIGTERM is answered with ESHUTDOWN (simple and structured
# replies), NBD_CMD_DISC then gets no reply at all, and the server exits 0.
# A client still haggling gets NBD_REP_ERR_SHUTDOWN for its next option.
# A raw-socket client, so that every byte on the wire is checked.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
if ! is_our_server; then
    skip "ESHUTDOWN during the stop is specific to nbd-serverd"
fi

cat >"$T/shutdown.py" <<'PY'
import os
import signal
import struct
import sys
import time

import nbdwire as w

host, port, pid, mode = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                         sys.argv[4])
structured = mode == "1"
s = w.connect("%s:%d" % (host, port), timeout=5)
w.handshake(s)                            # FIXED_NEWSTYLE | NO_ZEROES

if mode == "haggle":
    w.option_ack(s, w.OPT_STRUCTURED_REPLY)  # before the stop
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    s.sendall(w.pack_go("disk"))
    rtype, msg = w.option_reply(s, w.OPT_GO)
    assert rtype == w.REP_ERR_SHUTDOWN, "GO while stopping: reply %#x, " \
        "want NBD_REP_ERR_SHUTDOWN" % rtype
    print("  GO after SIGTERM: NBD_REP_ERR_SHUTDOWN (%s)" % msg.decode())
    rest = s.recv(100)
    assert rest == b"", "%d more bytes after the refusal" % len(rest)
    print("  then the server closed the connection")
    sys.exit(0)

if structured:
    w.option_ack(s, w.OPT_STRUCTURED_REPLY)
s.sendall(w.pack_go("disk"))
while True:
    rtype, _ = w.option_reply(s, w.OPT_GO)
    if rtype == w.REP_ACK:                # transmission begins
        break
    assert rtype == w.REP_INFO, "unexpected GO reply %#x" % rtype

os.kill(pid, signal.SIGTERM)
time.sleep(0.3)                           # the server is draining now

# READ 4096 bytes at 0, cookie 7.
w.send_request(s, w.CMD_READ, 7, 0, 4096)
if structured:
    flags, rtype, cookie, length = w.parse_chunk_header(
        w.recv_exact(s, w.CHUNK_HEADER_SIZE))
    payload = w.recv_exact(s, length)
    assert cookie == 7, cookie
    assert rtype == w.CHUNK_ERROR, "expected an error chunk, got type %#x" \
        % rtype
    err = struct.unpack(">I", payload[:4])[0]
else:
    err = w.simple_reply(s, 7)
assert err == w.ESHUTDOWN, "READ after SIGTERM: error %d, want ESHUTDOWN" \
    % err
print("  READ after SIGTERM: ESHUTDOWN")

# DISC, cookie 8: no reply may come, only the end of the connection.
w.send_request(s, w.CMD_DISC, 8, 0, 0)
rest = s.recv(100)
assert rest == b"", "DISC got %d bytes of reply: %r" % (len(rest), rest[:32])
print("  DISC: no reply, connection closed")
PY

disk=$T/disk.img
make_image "$disk" 16M
for mode in 0 1 haggle; do
    port=$(free_port)
    start_server -l "127.0.0.1:$port" -e "disk=$disk"
    case $mode in
    haggle) step "SIGTERM with a client still haggling" ;;
    *) step "SIGTERM with a client connected (structured replies: $mode)" ;;
    esac
    tmo python3 "$T/shutdown.py" 127.0.0.1 "$port" "$SERVER_PID" \
        "$mode" || fail "shutdown exchange failed"
    wait_server_exit
done
step "pass"
