#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The replies of a burst leave together: a raw client sends 32 WRITEs and
# then 32 READs, each burst in one send, to one loop (-t 1, a memory
# export, so that no request waits for the disk), and counts the server's
# socket writes of replies in /metrics (nbd_serverd_reply_writes_total).
# Requests sent one at a time get one write each; a burst of 32 gets a
# few, and every READ's data is the data written, whichever reply it
# shared a write with.  A burst that mixes 4 KiB READs with 128 KiB ones
# (too large to wait for a batch) and data-less replies comes back whole.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 curl
is_our_server || skip "nbd_serverd_reply_writes_total is nbd-serverd's"

port=$(free_port)
maddr=127.0.0.1:$(free_port)
start_server -l "127.0.0.1:$port" -t 1 -e "mem=memory:8M" \
    --metrics-listen "$maddr"

cat >"$T/burst.py" <<'EOF'
import random
import sys

import nbdwire as w
import promtext as p

addr, maddr = sys.argv[1], sys.argv[2]
BLOCK = 4096
BURST = 32
rng = random.Random(20261204)
blocks = [rng.randbytes(BLOCK) for _ in range(BURST)]
fails = []


def writes():
    return p.get(p.scrape(maddr), "nbd_serverd_reply_writes_total")


def read_replies(s, want):
    """Simple replies to the cookies of `want` (cookie -> READ length, 0
    for a data-less reply), in any order: cookie -> data."""
    got = {}
    while len(got) < len(want):
        err, cookie = w.parse_simple_reply(w.recv_exact(s, w.SIMPLE_REPLY_SIZE))
        if cookie not in want or cookie in got:
            w.fail("reply to cookie %#x, unknown or repeated" % cookie)
        if err != 0:
            w.fail("cookie %#x: error %s" % (cookie, w.error_name(err)))
        got[cookie] = w.recv_exact(s, want[cookie])
    return got


s = w.connect(addr)
w.export_name(s, "mem")

before = writes()
for i in range(4):
    w.send_request(s, w.CMD_WRITE, 100 + i, i * BLOCK, BLOCK, blocks[i])
    read_replies(s, {100 + i: 0})
alone = writes() - before
w.log("4 requests one at a time: %d reply writes" % alone)
if alone != 4:
    fails.append("one at a time: %d writes, not 4" % alone)

before = writes()
s.sendall(b"".join(w.pack_request(w.CMD_WRITE, 200 + i, i * BLOCK, BLOCK)
                   + blocks[i] for i in range(BURST)))
read_replies(s, {200 + i: 0 for i in range(BURST)})
wburst = writes() - before
w.log("a burst of %d WRITEs: %d reply writes" % (BURST, wburst))

before = writes()
s.sendall(b"".join(w.pack_request(w.CMD_READ, 300 + i, i * BLOCK, BLOCK)
                   for i in range(BURST)))
got = read_replies(s, {300 + i: BLOCK for i in range(BURST)})
rburst = writes() - before
w.log("a burst of %d 4 KiB READs: %d reply writes" % (BURST, rburst))
for i in range(BURST):
    if got[300 + i] != blocks[i]:
        fails.append("READ of block %d: not the data written" % i)
for name, n in (("WRITE", wburst), ("READ", rburst)):
    if not 1 <= n <= 4:
        fails.append("a burst of %d %ss: %d reply writes, not 1-4"
                     % (BURST, name, n))

# Mixed: 4 KiB READs, 128 KiB READs (sent directly) and FLUSHes.
whole = b"".join(blocks)
want, reqs = {}, []
for i in range(BURST):
    cookie = 400 + i
    if i % 8 == 3:
        reqs.append(w.pack_request(w.CMD_READ, cookie, 0, len(whole)))
        want[cookie] = len(whole)
    elif i % 8 == 5:
        reqs.append(w.pack_request(w.CMD_FLUSH, cookie, 0, 0))
        want[cookie] = 0
    else:
        reqs.append(w.pack_request(w.CMD_READ, cookie, i * BLOCK, BLOCK))
        want[cookie] = BLOCK
s.sendall(b"".join(reqs))
got = read_replies(s, want)
for cookie, n in want.items():
    i = cookie - 400
    expect = whole if n == len(whole) else blocks[i] if n else b""
    if got[cookie] != expect:
        fails.append("mixed burst, cookie %d: wrong data" % cookie)
w.log("a mixed burst of %d: every reply whole" % BURST)

w.send_request(s, w.CMD_DISC, 1, 0, 0)
s.close()
if fails:
    w.fail("; ".join(fails))
EOF
step "bursts of requests, one loop"
tmo python3 "$T/burst.py" "127.0.0.1:$port" "$maddr" ||
    fail "the reply batching check failed"
server_alive
stop_server
