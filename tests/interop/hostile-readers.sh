#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Clients that send large READs and never read the replies must not make
# the server hold memory beyond its caps (max-buffer-memory-per-connection
# for one connection, max-buffer-memory for all), other clients must go
# on being served, a client that reads nothing for request-timeout is
# disconnected, and the memory goes back to the system once they are gone.
# Memory is the server's VmRSS from /proc/PID/status.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
requires_nbd_python
is_our_server || skip "tests nbd-serverd's own memory limits"

MiB=$((1024 * 1024))
PER_CONN=64     # MiB: --max-buffer-memory-per-connection
GLOBAL=192      # MiB: --max-buffer-memory
SLACK=48        # MiB: stacks, thread caches, the well-behaved client
disk=$T/disk.img
truncate -s 1G "$disk"
# Data, not holes: every READ really fills a buffer.
python3 -c "
import os
with open('$disk', 'r+b') as f:
    for i in range(0, 1 << 30, 1 << 24):
        f.seek(i); f.write(os.urandom(1 << 20) * 16)
"

port=$(free_port)
start_server -l "127.0.0.1:$port" -t 2 -e disk="$disk" \
    --max-buffer-memory-per-connection ${PER_CONN}M \
    --max-buffer-memory ${GLOBAL}M --request-timeout 4

cat >"$T/hostile.py" <<'EOF'
import os
import socket
import sys
import time

import nbd
import nbdwire as w
from nbdwire import fail, log

pid, port, per_conn, glob, slack = (int(a) for a in sys.argv[1:6])
server_log = sys.argv[6]
sanitizer = sys.argv[7]  # none, asan or tsan
# TSan's shadow memory grows with every buffer touched: no RSS bound.
bounded = sanitizer != "tsan"
MiB = 1 << 20


def rss_mib():
    return w.proc_status_kib(pid, "VmRSS") / 1024


def hostile(nreads, length):
    """EXPORT_NAME, then nreads READs of length bytes, never read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    size, _ = w.export_name(s, "disk")
    reqs = b"".join(
        w.pack_request(w.CMD_READ, i + 1, (i * length) % (size - length),
                       length)
        for i in range(nreads))
    s.sendall(reqs)
    return s


def good_client(tag, size):
    """A well-behaved client: writes, reads back, within a deadline."""
    h = nbd.NBD()
    h.connect_tcp("127.0.0.1", str(port))
    data = os.urandom(size)
    off = (hash(tag) % 512) * MiB
    h.pwrite(data, off)
    if h.pread(len(data), off) != data:
        fail("%s: data read back differs" % tag)
    h.shutdown()


def wait_dropped(s, limit):
    """True once the server logged that it disconnects s, a client that
    reads nothing (reading here would make it a well-behaved client)."""
    me = "%s:%d: the client has read no reply" % s.getsockname()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open(server_log) as f:
            if me in f.read():
                return True
        time.sleep(0.2)
    return False


base = rss_mib()
log("server RSS before: %.0f MiB" % base)

# One hostile connection: 32 READs of 32 MiB (1 GiB) never read.
h1 = hostile(32, 32 * MiB)
time.sleep(2)
one = rss_mib()
log("one client holding 32 x 32 MiB READs: RSS %.0f MiB (+%.0f; cap %d)"
    % (one, one - base, per_conn))
if bounded and one - base > per_conn + slack:
    fail("one connection made the server hold %.0f MiB (cap %d MiB)"
         % (one - base, per_conn))
t0 = time.monotonic()
good_client("beside one", MiB)
log("a well-behaved client is served beside it (%.1f s)"
    % (time.monotonic() - t0))

# Five more, of 16 MiB READs: three of them fit a connection's cap, and
# the six connections together would be over the server-wide cap.
more = [hostile(32, 16 * MiB) for _ in range(5)]
time.sleep(2)
many = rss_mib()
log("six such clients: RSS %.0f MiB (+%.0f; server-wide cap %d)"
    % (many, many - base, glob))
if bounded and many - base > glob + slack:
    fail("six connections made the server hold %.0f MiB (cap %d MiB)"
         % (many - base, glob))

# The server holds 32 + 3 x 48 MiB; two receive sides wait for the
# budget.  A client that needs 16 MiB more waits too, until
# request-timeout (4 s) drops clients that read nothing and the budget
# they held serves others again.
t0 = time.monotonic()
good_client("after the cap", 16 * MiB)
log("a well-behaved client is served once the stalled ones are dropped "
    "(%.1f s)" % (time.monotonic() - t0))
for i, s in enumerate([h1] + more):
    if not wait_dropped(s, 30):
        fail("hostile client %d was not disconnected" % i)
    s.close()
log("every hostile client was disconnected")

if sanitizer != "none":
    # ASan and TSan keep freed memory in quarantine: RSS cannot fall.
    log("%s build: RSS after the clients left not checked" % sanitizer)
    sys.exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    after = rss_mib()
    if after - base <= 32:
        break
    time.sleep(0.5)
log("RSS after they left: %.0f MiB (+%.0f)" % (after, after - base))
if after - base > 32:
    fail("the server kept %.0f MiB after the clients left" % (after - base))
EOF

step "hostile readers against caps of ${PER_CONN} MiB per connection, ${GLOBAL} MiB in all"
sanitizer=none
# The whole list first: grep -q would stop reading, and ldd, killed by
# SIGPIPE, would fail the pipeline (pipefail).
libs=$(ldd "$BUILD/nbd-serverd" 2>/dev/null || true)
if grep -q libasan <<<"$libs"; then
    sanitizer=asan
elif grep -q libtsan <<<"$libs"; then
    sanitizer=tsan
fi
"$NBD_PYTHON" "$T/hostile.py" "$SERVER_PID" "$port" $PER_CONN $GLOBAL $SLACK \
    "$SERVER_LOG" $sanitizer ||
    fail "hostile readers"
grep -q "read no reply for .* (request-timeout), disconnecting" "$SERVER_LOG" ||
    fail "no log line for the stalled clients"
server_alive
stop_server
check_sanitizer_reports
step pass
