#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SIGINT while 32 writes are in flight: the server drains, exits 0, and
# the image keeps every acknowledged write.  For our server, no write may
# be carried out without its reply reaching the client.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
requires_nbd_python

disk=$T/disk.img

# Keeps 32 writes of 64 KiB in flight, each to a block of its own, and
# sends the server SIGNAL once 200 have been acknowledged; on the first
# error (ESHUTDOWN, or the connection closing) it stops and disconnects
# softly, as the specification asks.  Lists the acknowledged blocks in
# OUT (first line), then the blocks sent but not acknowledged (second
# line).  argv: URI, server pid, signal name, OUT.
cat >"$T/drain.py" <<'EOF'
import os
import signal
import sys

import nbd

uri, pid, signame, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
BS = 65536
h = nbd.NBD()
h.connect_uri(uri)
nblocks = h.get_size() // BS
inflight = {}
acked = []
errors = {}
signalled = stop = False
next_block = 0


def block_data(i):
    return i.to_bytes(8, "big") * (BS // 8)


def count_error(e):
    key = str(e.errno) if isinstance(e, nbd.Error) else e
    errors[key] = errors.get(key, 0) + 1


def gone():
    return h.aio_is_dead() or h.aio_is_closed()


while True:
    while not stop and next_block < nblocks and len(inflight) < 32:
        try:
            c = h.aio_pwrite(block_data(next_block), next_block * BS)
        except nbd.Error as e:
            count_error(e)
            stop = True
            break
        inflight[c] = next_block
        next_block += 1
    if not inflight:
        break
    if gone():
        stop = True
    else:
        try:
            h.poll(1000)
        except nbd.Error:
            stop = True
    for c in list(inflight):
        try:
            if h.aio_command_completed(c):
                acked.append(inflight.pop(c))
        except nbd.Error as e:
            inflight.pop(c)
            count_error(e)
            stop = True
    if gone():
        for c in inflight:
            count_error("lost with the connection")
        inflight.clear()
    if not signalled and len(acked) >= 200:
        os.kill(pid, getattr(signal, "SIG" + signame))
        signalled = True
try:
    h.shutdown()
except nbd.Error:
    pass
with open(out, "w") as f:
    f.write(" ".join(str(b) for b in sorted(acked)) + "\n")
    f.write(" ".join(str(b) for b in range(next_block) if b not in acked)
            + "\n")
print("  %d writes acknowledged of %d sent; errors: %r"
      % (len(acked), next_block, errors))
if not signalled:
    sys.exit("the signal was never sent")
EOF

step "(g) SIGINT while 32 writes are in flight: drain, exit 0, keep what was acknowledged"
make_image "$disk" 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk"
tmo "$NBD_PYTHON" "$T/drain.py" "$(uri disk)" "$SERVER_PID" INT \
    "$T/drained" || fail "the write storm client failed"
wait_server_exit
python3 - "$disk" "$T/drained" "$T/unanswered" <<'EOF' ||
import sys
BS = 65536
with open(sys.argv[1], "rb") as f:
    d = f.read()
with open(sys.argv[2]) as f:
    acked, unacked = ([int(x) for x in line.split()] for line in f)


def written(i):
    return d[i * BS:(i + 1) * BS] == i.to_bytes(8, "big") * (BS // 8)


for i in acked:
    if not written(i):
        sys.exit("  acknowledged block %d is not in the image" % i)
print("  all %d acknowledged blocks are in the image" % len(acked))
# Writes the server carried out but whose replies never reached the
# client: it serviced them, yet the client was left without an answer.
lost = [i for i in unacked if written(i)]
print("  %d of the %d unanswered writes were carried out anyway%s"
      % (len(lost), len(unacked), ": %r" % lost[:8] if lost else ""))
with open(sys.argv[3], "w") as f:
    f.write("%d %d\n" % (len(lost), len(unacked)))
EOF
    fail "an acknowledged write was lost at shutdown"

# Checked last so that the checks above run even when this one fails.
if is_our_server; then
    read -r lost unanswered <"$T/unanswered"
    if [ "$lost" != 0 ]; then
        fail "(g) after SIGINT the server carried out $lost writes whose replies libnbd never saw ($unanswered requests ended with ENOTCONN): the server stops reading and closes the socket while the client is still sending, so the client's next send fails and it drops the connection before reading the replies already sent.  The specification asks that requests arriving during shutdown get ESHUTDOWN (the client then disconnects softly), so keep reading and answering them until the client goes, or at least half-close and drain before closing"
    fi
fi
step "pass"
