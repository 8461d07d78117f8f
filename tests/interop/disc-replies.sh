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
import ssl
import sys
import threading

import nbdwire as w
from nbdwire import fail

port, ca, use_tls, rounds = (int(sys.argv[1]), sys.argv[2],
                             sys.argv[3] == "tls", int(sys.argv[4]))
N = 400


def connect():
    s = w.connect("127.0.0.1:%d" % port, timeout=20)
    hflags = w.handshake(s)
    if use_tls:
        s = w.starttls(s, ca)
    w.opt_export_name(s, "disk", hflags)
    return s


stop = False


def busy():
    """Large READs on another connection keep one loop loaded."""
    s = connect()
    cookie = 0
    while not stop:
        cookie += 1
        w.send_request(s, w.CMD_READ, cookie, 0, 1 << 20)
        w.recv_exact(s, w.SIMPLE_REPLY_SIZE + (1 << 20))
    s.close()


t = threading.Thread(target=busy)
t.start()
lost_rounds = 0
try:
    for r in range(rounds):
        s = connect()
        reqs = b"".join(
            w.pack_request(w.CMD_FLUSH if i % 2 else w.CMD_WRITE, i + 1,
                           (i * 512) % (1 << 20), 0 if i % 2 else 512)
            + (b"" if i % 2 else bytes([i % 256]) * 512)
            for i in range(N))
        reqs += w.pack_request(w.CMD_DISC, 0, 0, 0)
        s.sendall(reqs)
        seen = set()
        try:
            while len(seen) < N:
                error, cookie = w.parse_simple_reply(
                    w.recv_exact(s, w.SIMPLE_REPLY_SIZE))
                if error != 0:
                    fail("round %d: reply error %d" % (r, error))
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
