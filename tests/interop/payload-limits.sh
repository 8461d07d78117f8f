#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Request sizes on the wire, with a raw client: READs and WRITEs of up to
# max-payload (64 MiB) from a client that did not ask for block sizes
# (NBD_OPT_EXPORT_NAME, as nbd-tester-client), while a client that asked
# is held to the 32 MiB it was told; a payload over the limit gets EINVAL
# and a disconnect; with extended headers, a WRITE without PAYLOAD_LEN
# (qemu 10 sends them) carries its data.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate cmp fincore
is_our_server || skip "tests nbd-serverd's payload limits"

disk=$T/disk.img
truncate -s 256M "$disk"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e disk="$disk"

cat >"$T/payload.py" <<'EOF'
import os
import struct
import sys

import nbdwire as w
from nbdwire import fail, log

port = int(sys.argv[1])
disk = sys.argv[2]
MiB = 1 << 20
ADDR = "127.0.0.1:%d" % port


def go(s, infos):
    """NBD_OPT_GO for "disk": returns the maximum block size announced."""
    maxb = None
    for rtype, d in w.opt_go(s, "disk", infos):
        if (rtype == w.REP_INFO
                and struct.unpack(">H", d[:2])[0] == w.INFO_BLOCK_SIZE):
            maxb = struct.unpack(">III", d[2:14])[2]
    return maxb


def simple_reply(s, cookie, datalen=0):
    error = w.simple_reply(s, cookie)
    data = w.recv_exact(s, datalen) if error == 0 and datalen else b""
    return error, data


# 1. EXPORT_NAME: 48 MiB and 64 MiB WRITE and READ are served.
s = w.connect(ADDR)
w.export_name(s, "disk")
for n, size in enumerate((48 * MiB, 64 * MiB)):
    data = os.urandom(size)
    off = 16 * MiB * n
    w.send_request(s, w.CMD_WRITE, 10 + n, off, size, data)
    err, _ = simple_reply(s, 10 + n)
    if err:
        fail("%d MiB WRITE: error %d" % (size // MiB, err))
    w.send_request(s, w.CMD_READ, 20 + n, off, size)
    err, back = simple_reply(s, 20 + n, size)
    if err or back != data:
        fail("%d MiB READ: error %d or different data" % (size // MiB, err))
    with open(disk, "rb") as f:
        f.seek(off)
        if f.read(size) != data:
            fail("%d MiB WRITE: the image differs" % (size // MiB))
    log("EXPORT_NAME client: %d MiB WRITE and READ served" % (size // MiB))

# Over max-payload: EINVAL, then a disconnect (framing cannot be kept).
w.send_request(s, w.CMD_WRITE, 30, 0, 64 * MiB + 1)
err, _ = simple_reply(s, 30)
if err != w.EINVAL:
    fail("64 MiB + 1 WRITE: error %d, want EINVAL" % err)
log("64 MiB + 1 WRITE: EINVAL")
w.expect_eof(s, "64 MiB + 1 WRITE")

# 2. GO asking for block sizes: told 32 MiB, and a 48 MiB READ is
# refused while 32 MiB is served.
s = w.connect(ADDR)
w.handshake(s)
maxb = go(s, [w.INFO_BLOCK_SIZE])
if maxb != 32 * MiB:
    fail("advertised maximum %r, want 32 MiB" % maxb)
w.send_request(s, w.CMD_READ, 40, 0, 32 * MiB)
err, _ = simple_reply(s, 40, 32 * MiB)
if err:
    fail("32 MiB READ after GO: error %d" % err)
w.send_request(s, w.CMD_READ, 41, 0, 48 * MiB)
err, _ = simple_reply(s, 41)
if err != w.EINVAL:
    fail("48 MiB READ from a client told 32 MiB: error %d, want EINVAL" % err)
log("GO with NBD_INFO_BLOCK_SIZE: told 32 MiB, 48 MiB READ gets EINVAL")
s.close()

# 3. Extended headers: a WRITE without PAYLOAD_LEN, as qemu 10 sends
# it, carries its data, and the request after it is still framed right.
s = w.connect(ADDR)
w.handshake(s)
w.option_ack(s, w.OPT_EXTENDED_HEADERS)
go(s, [])
data = os.urandom(4096)
write_hdr = w.pack_ext_request(w.CMD_WRITE, 50, 8192, len(data))
read_hdr = w.pack_ext_request(w.CMD_READ, 51, 8192, len(data))
s.sendall(write_hdr + data + read_hdr)
replies = {}
for _ in range(2):  # in either order: the two run concurrently
    flags, rtype, cookie, off, ln = w.parse_ext_reply_header(
        w.recv_exact(s, w.EXT_REPLY_SIZE))
    replies[cookie] = (rtype, w.recv_exact(s, ln))
if sorted(replies) != [50, 51]:
    fail("replies to cookies %s, sent 50 and 51" % sorted(replies))
if replies[50][0] & 0x8000:
    fail("WRITE without PAYLOAD_LEN: error chunk %d" % replies[50][0])
with open(disk, "rb") as f:
    f.seek(8192)
    if f.read(len(data)) != data:
        fail("the image does not hold the WRITE's data")
log("extended WRITE without PAYLOAD_LEN: its data written, framing kept")
s.close()
EOF

step "payload sizes with a raw client"
python3 "$T/payload.py" "$port" "$disk" || fail "payload checks"
server_alive
stop_server

# NBD_CMD_CACHE of 256 MiB with max-payload 1M: at most that much (plus
# a little of the kernel's read-ahead) is brought into the page cache;
# at 4b2efa4 one request brought in 8 MiB.
cat >"$T/cache.py" <<'EOF'
import os
import subprocess
import sys
import time

import nbdwire as w
from nbdwire import fail

port, disk = int(sys.argv[1]), sys.argv[2]
MiB = 1 << 20


def resident_mib():
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", disk],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0]) / MiB


fd = os.open(disk, os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
before = resident_mib()
s = w.connect("127.0.0.1:%d" % port, 30)
w.export_name(s, "disk")
w.send_request(s, w.CMD_CACHE, 1, 0, 256 * MiB)
error = w.simple_reply(s, 1)
if error != 0:
    fail("CACHE reply error %d" % error)
time.sleep(1)
after = resident_mib()
print("  CACHE of 256 MiB: %.1f MiB resident before, %.1f after"
      % (before, after), flush=True)
if after - before > 4:
    sys.exit("  FAIL: one CACHE request read %.0f MiB ahead (max-payload 1M)"
             % (after - before))
EOF
python3 - "$disk" <<'EOF'
import os
import sys
with open(sys.argv[1], "r+b") as f:
    for i in range(256):
        f.write(os.urandom(1 << 20))
EOF
port=$(free_port)
start_server -l "127.0.0.1:$port" -e disk="$disk" --max-payload 1M \
    --max-buffer-memory-per-connection 1M --max-buffer-memory 1M
step "NBD_CMD_CACHE is clipped to max-payload"
python3 "$T/cache.py" "$port" "$disk" || fail "CACHE read-ahead"
server_alive
stop_server
check_sanitizer_reports
step pass
