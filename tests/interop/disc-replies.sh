#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD_CMD_DISC after a burst of requests, plain and over TLS: every
# request received before the DISC is answered before the server closes
# (and, over TLS, before its close_notify), even when replies wait in
# another loop's batch.  Rounds of 400 small requests sent with the DISC
# in one write, against two loops, with a background client keeping the
# loops busy so that requests spread.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 certtool truncate
is_our_server || skip "tests nbd-serverd's reply order on DISC"

disk=$T/disk.img
truncate -s 64M "$disk"
pki=$T/pki
make_pki "$pki"

cat >"$T/disc.py" <<'EOF'
import socket
import ssl
import struct
import sys
import threading
import time

port, ca, use_tls, rounds = (int(sys.argv[1]), sys.argv[2],
                             sys.argv[3] == "tls", int(sys.argv[4]))
IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_STARTTLS, OPT_GO = 1, 5, 7
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
N = 400


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 3))
    if use_tls:
        s.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0))
        _, _, rtype, ln = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, ln)
        if rtype != 1:
            fail("STARTTLS refused: %#x" % rtype)
        ctx = ssl.create_default_context(cafile=ca)
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 4) + b"disk")
    recv_exact(s, 10)
    return s


stop = False


def busy():
    """Large READs on another connection keep one loop loaded."""
    s = connect()
    cookie = 0
    while not stop:
        cookie += 1
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, cookie,
                              0, 1 << 20))
        recv_exact(s, 16 + (1 << 20))
    s.close()


t = threading.Thread(target=busy)
t.start()
lost_rounds = 0
try:
    for r in range(rounds):
        s = connect()
        reqs = b"".join(
            struct.pack(">IHHQQI", REQUEST_MAGIC, 0,
                        CMD_FLUSH if i % 2 else CMD_WRITE, i + 1,
                        (i * 512) % (1 << 20), 0 if i % 2 else 512)
            + (b"" if i % 2 else bytes([i % 256]) * 512)
            for i in range(N))
        reqs += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0)
        s.sendall(reqs)
        seen = set()
        try:
            while len(seen) < N:
                magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
                if magic != SIMPLE_REPLY_MAGIC or error != 0:
                    fail("round %d: bad reply %#x error %d"
                         % (r, magic, error))
                seen.add(cookie)
        except (EOFError, ssl.SSLError, OSError):
            pass
        s.close()
        if len(seen) != N:
            lost_rounds += 1
            print("  round %d: %d of %d replies before the close"
                  % (r, len(seen), N), flush=True)
finally:
    stop = True
    t.join()
if lost_rounds:
    fail("%d of %d rounds lost replies" % (lost_rounds, rounds))
print("  %d rounds: every reply arrived before the close" % rounds,
      flush=True)
EOF

for mode in plain tls; do
    port=$(free_port)
    if [ "$mode" = tls ]; then
        start_server -l "127.0.0.1:$port" -t 2 -e disk="$disk" --tls=on \
            --tls-certs "$pki/server"
    else
        start_server -l "127.0.0.1:$port" -t 2 -e disk="$disk"
    fi
    step "$mode: 50 rounds of $mode requests, then DISC"
    tmo python3 "$T/disc.py" "$port" "$pki/ca-cert.pem" "$mode" 50 ||
        fail "$mode: replies lost on DISC"
    server_alive
    stop_server
done
check_sanitizer_reports
step pass
