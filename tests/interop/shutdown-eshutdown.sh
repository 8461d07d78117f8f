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
import socket
import struct
import sys
import time

host, port, pid, mode = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                         sys.argv[4])
structured = mode == "1"
s = socket.create_connection((host, port), timeout=5)


def recv_exact(n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            sys.exit("server closed the connection after %d of %d bytes"
                     % (len(b), n))
        b += chunk
    return b


IHAVEOPT = 0x49484156454F5054
recv_exact(18)                            # greeting
s.sendall(struct.pack(">I", 3))           # FIXED_NEWSTYLE | NO_ZEROES


def option(opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_reply():
    magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(20))
    return rtype, recv_exact(length)


if mode == "haggle":
    option(8)                             # STRUCTURED_REPLY, before the stop
    rtype, _ = option_reply()
    assert rtype == 1, "STRUCTURED_REPLY not acknowledged: %#x" % rtype
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    name = b"disk"
    option(7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    rtype, msg = option_reply()
    assert rtype == 0x80000007, "GO while stopping: reply %#x, want " \
        "NBD_REP_ERR_SHUTDOWN" % rtype
    print("  GO after SIGTERM: NBD_REP_ERR_SHUTDOWN (%s)" % msg.decode())
    rest = s.recv(100)
    assert rest == b"", "%d more bytes after the refusal" % len(rest)
    print("  then the server closed the connection")
    sys.exit(0)

if structured:
    option(8)                             # STRUCTURED_REPLY
    rtype, _ = option_reply()
    assert rtype == 1, "STRUCTURED_REPLY not acknowledged: %#x" % rtype
name = b"disk"
option(7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))  # GO
while True:
    rtype, _ = option_reply()
    if rtype == 1:                        # ACK: transmission begins
        break
    assert rtype == 3, "unexpected GO reply %#x" % rtype

os.kill(pid, signal.SIGTERM)
time.sleep(0.3)                           # the server is draining now

# READ 4096 bytes at 0, cookie 7.
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 4096))
ESHUTDOWN = 108
if structured:
    magic, flags, rtype, cookie, length = struct.unpack(">IHHQI",
                                                        recv_exact(20))
    payload = recv_exact(length)
    assert magic == 0x668E33EF and cookie == 7, (magic, cookie)
    assert rtype == 0x8001, "expected an error chunk, got type %#x" % rtype
    err = struct.unpack(">I", payload[:4])[0]
else:
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(16))
    assert magic == 0x67446698 and cookie == 7, (magic, cookie)
assert err == ESHUTDOWN, "READ after SIGTERM: error %d, want ESHUTDOWN" % err
print("  READ after SIGTERM: ESHUTDOWN")

# DISC, cookie 8: no reply may come, only the end of the connection.
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 8, 0, 0))
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
