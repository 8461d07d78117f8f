#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Request sizes on the wire, with a raw client: READs and WRITEs of up to
# max-payload (64 MiB) from a client that did not ask for block sizes
# (NBD_OPT_EXPORT_NAME, as nbd-tester-client), while a client that asked
# is held to the 32 MiB it was told; a payload over the limit gets EINVAL
# and a disconnect; with extended headers, a WRITE without PAYLOAD_LEN
# has no payload, and the next request's header is never written into
# the image.
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
import socket
import struct
import sys

port = int(sys.argv[1])
disk = sys.argv[2]
MiB = 1 << 20
IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
EXT_REPLY_MAGIC = 0x6E8A278C
OPT_EXPORT_NAME, OPT_GO, OPT_EXTENDED_HEADERS = 1, 7, 11
INFO_BLOCK_SIZE = 3
CMD_READ, CMD_WRITE = 0, 1
FLAG_PAYLOAD_LEN = 1 << 5
EINVAL = 22


def log(msg):
    print("  " + msg, flush=True)


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_replies(s, opt):
    """Replies up to the final one; returns the list of (type, data)."""
    out = []
    while True:
        magic, ropt, rtype, ln = struct.unpack(">QIII", recv_exact(s, 20))
        if ropt != opt:
            fail("reply to option %d, sent %d" % (ropt, opt))
        out.append((rtype, recv_exact(s, ln)))
        if rtype != 3:  # not NBD_REP_INFO: final
            return out


def export_name(s):
    option(s, OPT_EXPORT_NAME, b"disk")
    return struct.unpack(">QH", recv_exact(s, 10))


def go(s, infos):
    data = struct.pack(">I", 4) + b"disk" + struct.pack(">H", len(infos))
    data += b"".join(struct.pack(">H", i) for i in infos)
    option(s, OPT_GO, data)
    replies = option_replies(s, OPT_GO)
    if replies[-1][0] != 1:
        fail("GO refused: %#x" % replies[-1][0])
    maxb = None
    for rtype, d in replies:
        if rtype == 3 and struct.unpack(">H", d[:2])[0] == INFO_BLOCK_SIZE:
            maxb = struct.unpack(">III", d[2:14])[2]
    return maxb


def simple_request(s, cmd, cookie, offset, length, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, cookie, offset,
                          length) + payload)


def simple_reply(s, cookie, datalen=0):
    magic, error, rcookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC or rcookie != cookie:
        fail("bad simple reply %#x cookie %d (want %d)"
             % (magic, rcookie, cookie))
    data = recv_exact(s, datalen) if error == 0 and datalen else b""
    return error, data


def expect_closed(s, what):
    s.settimeout(10)
    try:
        while s.recv(1 << 20):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        fail("%s: the server kept the connection open" % what)
    log("%s: then the server closed the connection" % what)


# 1. EXPORT_NAME: 48 MiB and 64 MiB WRITE and READ are served.
s = connect()
export_name(s)
for n, size in enumerate((48 * MiB, 64 * MiB)):
    data = os.urandom(size)
    off = 16 * MiB * n
    simple_request(s, CMD_WRITE, 10 + n, off, size, data)
    err, _ = simple_reply(s, 10 + n)
    if err:
        fail("%d MiB WRITE: error %d" % (size // MiB, err))
    simple_request(s, CMD_READ, 20 + n, off, size)
    err, back = simple_reply(s, 20 + n, size)
    if err or back != data:
        fail("%d MiB READ: error %d or different data" % (size // MiB, err))
    with open(disk, "rb") as f:
        f.seek(off)
        if f.read(size) != data:
            fail("%d MiB WRITE: the image differs" % (size // MiB))
    log("EXPORT_NAME client: %d MiB WRITE and READ served" % (size // MiB))

# Over max-payload: EINVAL, then a disconnect (framing cannot be kept).
simple_request(s, CMD_WRITE, 30, 0, 64 * MiB + 1)
err, _ = simple_reply(s, 30)
if err != EINVAL:
    fail("64 MiB + 1 WRITE: error %d, want EINVAL" % err)
log("64 MiB + 1 WRITE: EINVAL")
expect_closed(s, "64 MiB + 1 WRITE")

# 2. GO asking for block sizes: told 32 MiB, and a 48 MiB READ is
# refused while 32 MiB is served.
s = connect()
maxb = go(s, [INFO_BLOCK_SIZE])
if maxb != 32 * MiB:
    fail("advertised maximum %r, want 32 MiB" % maxb)
simple_request(s, CMD_READ, 40, 0, 32 * MiB)
err, _ = simple_reply(s, 40, 32 * MiB)
if err:
    fail("32 MiB READ after GO: error %d" % err)
simple_request(s, CMD_READ, 41, 0, 48 * MiB)
err, _ = simple_reply(s, 41)
if err != EINVAL:
    fail("48 MiB READ from a client told 32 MiB: error %d, want EINVAL" % err)
log("GO with NBD_INFO_BLOCK_SIZE: told 32 MiB, 48 MiB READ gets EINVAL")
s.close()

# 3. Extended headers: a WRITE without PAYLOAD_LEN, then a READ header.
s = connect()
option(s, OPT_EXTENDED_HEADERS)
if option_replies(s, OPT_EXTENDED_HEADERS)[-1][0] != 1:
    fail("EXTENDED_HEADERS refused")
go(s, [])
with open(disk, "rb") as f:
    before = f.read(64 * 1024)
write_hdr = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, 0, CMD_WRITE, 50,
                        0, 32)
read_hdr = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, 0, CMD_READ, 51, 0,
                       4096)
s.sendall(write_hdr + read_hdr)
magic, flags, rtype, cookie, off, ln = struct.unpack(
    ">IHHQQQ", recv_exact(s, 32))
if magic != EXT_REPLY_MAGIC or cookie != 50:
    fail("no extended reply to the WRITE: magic %#x cookie %d"
         % (magic, cookie))
payload = recv_exact(s, ln)
if rtype != 32769 or struct.unpack(">I", payload[:4])[0] != EINVAL:
    fail("WRITE without PAYLOAD_LEN: reply type %d, want an EINVAL error"
         % rtype)
log("extended WRITE without PAYLOAD_LEN: EINVAL")
expect_closed(s, "extended WRITE without PAYLOAD_LEN")
with open(disk, "rb") as f:
    if f.read(64 * 1024) != before:
        fail("the image changed: the next header was taken for data")
log("the image is unchanged")
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
import socket
import struct
import subprocess
import sys
import time

port, disk = int(sys.argv[1]), sys.argv[2]
MiB = 1 << 20


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def resident_mib():
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", disk],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0]) / MiB


fd = os.open(disk, os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
before = resident_mib()
s = socket.create_connection(("127.0.0.1", port), timeout=30)
recv_exact(s, 18)
s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 4) + b"disk")
recv_exact(s, 10)
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 5, 1, 0, 256 * MiB))
magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
if magic != 0x67446698 or cookie != 1 or error != 0:
    sys.exit("  FAIL: CACHE reply %#x error %d" % (magic, error))
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
