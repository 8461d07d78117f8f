#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Misbehaving and numerous clients: garbage instead of a handshake or a
# request, a bad option magic, unknown client flags, an unknown option
# (must get NBD_REP_ERR_UNSUP and the haggling goes on), disconnects in
# the middle of the handshake and in the middle of a write payload, 32
# clients writing at once, hundreds of abandoned connections (no file
# descriptor may leak), and, for our server, the handshake timeout and a
# SIGTERM while a client sits idle.  Afterwards the server must still
# serve, exit 0 on SIGTERM, and the image must hold exactly the
# acknowledged writes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 nbdinfo truncate
requires_nbd_python

MiB=$((1024 * 1024))
NCLIENTS=32
ABORTED_AT=$((40 * MiB))    # the write cut short in its payload
disk=$T/disk.img
make_image "$disk" 48M

# Raw-socket clients.  argv: ACTION ADDR [ARGS...].
cat >"$T/raw.py" <<'EOF'
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO = 1, 2, 3, 7
REP_ACK, REP_SERVER = 1, 2
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_INVALID = (1 << 31) + 3
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2


def log(msg):
    print("  " + msg, flush=True)


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def connect(addr, timeout=5.0):
    if addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr[5:]
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    s.settimeout(timeout)
    s.connect(target)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def send_ignoring_close(s, data):
    """Send; the server hanging up half way is fine."""
    try:
        s.sendall(data)
    except OSError:
        pass


def wait_closed(s, what, limit=5.0):
    """Read and discard until EOF; fail if the server keeps the
    connection open for more than limit seconds."""
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            if not s.recv(65536):
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        fail("%s: the server kept the connection open for %.0f s"
             % (what, limit))
    s.close()
    log("%s: connection closed by the server" % what)


def greeting(s):
    magic, opt_magic, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt_magic != IHAVEOPT:
        fail("bad greeting %#x %#x" % (magic, opt_magic))
    if not hflags & 1:
        fail("server does not set FIXED_NEWSTYLE")
    return hflags


def send_flags(s, hflags):
    s.sendall(struct.pack(">I", 1 | (hflags & 2)))


def send_option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def read_option_reply(s, opt):
    magic, ropt, rtype, ln = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != OPT_REPLY_MAGIC or ropt != opt:
        fail("bad option reply: magic %#x option %d (sent %d)"
             % (magic, ropt, opt))
    return rtype, recv_exact(s, ln)


def export_name(s, name):
    """Fixed newstyle with NO_ZEROES and NBD_OPT_EXPORT_NAME."""
    hflags = greeting(s)
    send_flags(s, hflags)
    send_option(s, OPT_EXPORT_NAME, name.encode())
    size, tflags = struct.unpack(">QH", recv_exact(s, 10))
    if not hflags & 2:
        recv_exact(s, 124)
    return size, tflags


def request(s, cmd, cookie, offset, length, payload=b"", flags=0):
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie,
                          offset, length) + payload)


def simple_reply(s, cookie):
    magic, err, rcookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC or rcookie != cookie:
        fail("bad simple reply: magic %#x cookie %#x (sent %#x)"
             % (magic, rcookie, cookie))
    return err


def garbage(addr, name):
    # (a1) garbage instead of the client flags, greeting not even read.
    s = connect(addr)
    send_ignoring_close(s, os.urandom(65536))
    wait_closed(s, "garbage before reading the greeting")
    # (a2) garbage after the greeting.
    s = connect(addr)
    greeting(s)
    send_ignoring_close(s, os.urandom(4096))
    wait_closed(s, "garbage after the greeting")
    # (a3) client flags with an unknown bit: the server must hang up.
    s = connect(addr)
    hflags = greeting(s)
    s.sendall(struct.pack(">I", 0x80000000 | 1 | (hflags & 2)))
    send_ignoring_close(s, struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
    wait_closed(s, "unknown client flag")
    # (a4) an option header with a wrong magic.
    s = connect(addr)
    send_flags(s, greeting(s))
    send_ignoring_close(s, struct.pack(">QII", 0x1122334455667788,
                                       OPT_LIST, 0))
    wait_closed(s, "bad option magic")
    # (a5) garbage in place of a request, after a good handshake.
    s = connect(addr)
    export_name(s, name)
    send_ignoring_close(s, b"\xde\xad\xbe\xef" + os.urandom(4092))
    wait_closed(s, "garbage instead of a request")
    # (a6) an unknown option gets NBD_REP_ERR_UNSUP, then LIST and ABORT
    # still work on the same connection.
    s = connect(addr)
    send_flags(s, greeting(s))
    send_option(s, 0x4242, b"whatever")
    rtype, _ = read_option_reply(s, 0x4242)
    if rtype != REP_ERR_UNSUP:
        fail("unknown option: reply type %#x, want NBD_REP_ERR_UNSUP"
             % rtype)
    send_option(s, OPT_LIST)
    names = []
    while True:
        rtype, data = read_option_reply(s, OPT_LIST)
        if rtype == REP_ACK:
            break
        if rtype != REP_SERVER:
            fail("NBD_OPT_LIST: reply type %#x" % rtype)
        (ln,) = struct.unpack(">I", data[:4])
        names.append(data[4:4 + ln].decode())
    if name not in names:
        fail("NBD_OPT_LIST after an unknown option: %r" % names)
    send_option(s, OPT_ABORT)
    try:
        rtype, _ = read_option_reply(s, OPT_ABORT)
        if rtype != REP_ACK:
            fail("NBD_OPT_ABORT: reply type %#x" % rtype)
    except (EOFError, ConnectionResetError):
        pass    # the specification lets the server just hang up
    wait_closed(s, "NBD_OPT_ABORT")
    log("unknown option: NBD_REP_ERR_UNSUP, the haggling went on")
    # (a7) NBD_OPT_EXPORT_NAME cannot fail with an error reply: for an
    # unknown name the server must hang up.
    s = connect(addr)
    send_flags(s, greeting(s))
    send_option(s, OPT_EXPORT_NAME, b"nosuch")
    wait_closed(s, "NBD_OPT_EXPORT_NAME of an unknown export")
    # (a8) a WRITE announcing a 4 GiB payload: far above any limit.  The
    # server may answer with an error or hang up, but must not try to
    # take it all in memory or die.
    s = connect(addr)
    export_name(s, name)
    request(s, CMD_WRITE, 0x2001, 0, 0xFFFFFFFF)
    send_ignoring_close(s, b"\x00" * 65536)
    s.close()
    # (a9) a READ of 4 GiB - 1 bytes at offset 0: beyond the export and
    # the maximum payload.  An error reply or a hang-up, never data.
    s = connect(addr)
    export_name(s, name)
    request(s, CMD_READ, 0x2002, 0, 0xFFFFFFFF)
    try:
        err = simple_reply(s, 0x2002)
        if err == 0:
            fail("a READ of 4 GiB - 1 bytes succeeded")
        log("READ of 4 GiB - 1 bytes: error %d" % err)
        send_ignoring_close(s, struct.pack(">IHHQQI", REQUEST_MAGIC, 0,
                                           CMD_DISC, 0x2003, 0, 0))
    except (EOFError, ConnectionResetError, BrokenPipeError):
        log("READ of 4 GiB - 1 bytes: the server hung up")
    wait_closed(s, "oversized READ")
    # (a10) a WRITE of 33 MiB (above the 32 MiB maximum payload) with the
    # whole payload sent: an error reply, or a hang-up.
    s = connect(addr)
    export_name(s, name)
    request(s, CMD_WRITE, 0x2004, 0, 33 * 1024 * 1024)
    send_ignoring_close(s, b"\x33" * (33 * 1024 * 1024))
    try:
        err = simple_reply(s, 0x2004)
        # Success is allowed too (nbdkit takes up to 64 MiB): the image
        # check accepts 0x33 in [32 MiB, 33 MiB).
        log("WRITE of 33 MiB: %s" % ("error %d" % err if err else "done"))
        send_ignoring_close(s, struct.pack(">IHHQQI", REQUEST_MAGIC, 0,
                                           CMD_DISC, 0x2005, 0, 0))
    except (EOFError, ConnectionResetError, BrokenPipeError):
        log("WRITE of 33 MiB: the server hung up")
    wait_closed(s, "oversized WRITE")
    # (a11) NBD_OPT_GO with a 5000-byte export name (over the 4096 limit
    # of the specification): an error reply, or a hang-up.
    s = connect(addr)
    send_flags(s, greeting(s))
    send_option(s, OPT_GO, struct.pack(">I", 5000) + b"n" * 5000
                + struct.pack(">H", 0))
    try:
        rtype, _ = read_option_reply(s, OPT_GO)
        if not rtype & (1 << 31):
            fail("NBD_OPT_GO with a 5000-byte name: reply %#x" % rtype)
        log("NBD_OPT_GO with a 5000-byte name: error %#x" % rtype)
        send_option(s, OPT_ABORT)
    except (EOFError, ConnectionResetError, BrokenPipeError):
        log("NBD_OPT_GO with a 5000-byte name: the server hung up")
    wait_closed(s, "overlong export name")
    # (a12) an option announcing 4 GiB - 1 bytes of data: the server must
    # not wait for (or allocate) all that; an error reply or a hang-up.
    s = connect(addr)
    send_flags(s, greeting(s))
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 0xFFFFFFFF) + b"x" * 100)
    try:
        rtype, _ = read_option_reply(s, OPT_GO)
        if not rtype & (1 << 31):
            fail("a 4 GiB option: reply %#x" % rtype)
        log("a 4 GiB option: error %#x" % rtype)
    except (EOFError, ConnectionResetError):
        log("a 4 GiB option: the server hung up")
    except socket.timeout:
        fail("a 4 GiB option: no answer within 5 s; the server waits "
             "for 4 GiB of option data")
    wait_closed(s, "4 GiB option")
    # (a13) NBD_OPT_LIST with data: NBD_REP_ERR_INVALID, then go on.
    s = connect(addr)
    send_flags(s, greeting(s))
    send_option(s, OPT_LIST, b"junk")
    rtype, _ = read_option_reply(s, OPT_LIST)
    if rtype != REP_ERR_INVALID:
        fail("NBD_OPT_LIST with data: reply %#x, want NBD_REP_ERR_INVALID"
             % rtype)
    send_option(s, OPT_ABORT)
    wait_closed(s, "NBD_OPT_LIST with data, then NBD_OPT_ABORT")
    # (a14) a client without NO_ZEROES gets the 124 zero bytes after
    # NBD_OPT_EXPORT_NAME, and the transmission phase is in step.
    s = connect(addr)
    greeting(s)
    s.sendall(struct.pack(">I", 1))
    send_option(s, OPT_EXPORT_NAME, name.encode())
    size, tflags = struct.unpack(">QH", recv_exact(s, 10))
    if recv_exact(s, 124) != bytes(124):
        fail("the 124 bytes after NBD_OPT_EXPORT_NAME are not zero")
    request(s, CMD_READ, 0x3001, 0, 512)
    if simple_reply(s, 0x3001):
        fail("READ without NO_ZEROES failed")
    recv_exact(s, 512)
    request(s, CMD_DISC, 0x3002, 0, 0)
    wait_closed(s, "client without NO_ZEROES")


def midhandshake(addr):
    # (b) the greeting read, 2 of the 4 flag bytes sent.
    s = connect(addr)
    greeting(s)
    s.sendall(b"\x00\x00")
    s.close()
    # half an option header
    s = connect(addr)
    send_flags(s, greeting(s))
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_LIST, 0)[:10])
    s.close()
    # an option announcing 100 bytes of data, 10 sent
    s = connect(addr)
    send_flags(s, greeting(s))
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 100) + b"d" * 10)
    s.close()
    # nothing read, nothing sent
    connect(addr).close()
    log("connections dropped during the handshake")


def midwrite(addr, name, offset, acked_out):
    """(c) A complete, acknowledged WRITE, then a WRITE of 64 KiB at
    offset that carries only 1000 bytes of its payload."""
    offset = int(offset)
    s = connect(addr)
    size, tflags = export_name(s, name)
    if not tflags & 1:
        fail("transmission flags %#x lack HAS_FLAGS" % tflags)
    acked = os.urandom(4096)
    request(s, CMD_WRITE, 0x1001, offset + 65536, len(acked), acked)
    err = simple_reply(s, 0x1001)
    if err:
        fail("acknowledged write: error %d" % err)
    request(s, CMD_READ, 0x1002, offset + 65536, 4096)
    err = simple_reply(s, 0x1002)
    if err or recv_exact(s, 4096) != acked:
        fail("read back of the acknowledged write: error %d or wrong data"
             % err)
    with open(acked_out, "wb") as f:
        f.write(acked)
    request(s, CMD_WRITE, 0x1003, offset, 65536, b"\x77" * 1000)
    s.close()
    log("write cut off after 1000 of 65536 payload bytes")
    # The same on a connection with a request header cut in half.
    s = connect(addr)
    export_name(s, name)
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 7,
                          offset, 65536)[:13])
    s.close()
    # And a clean NBD_CMD_DISC for comparison.
    s = connect(addr)
    export_name(s, name)
    request(s, CMD_DISC, 0x1004, 0, 0)
    wait_closed(s, "NBD_CMD_DISC")


def silent(addr, name, limit):
    """(e) Clients that stop talking during the handshake are dropped
    after the handshake timeout; a client in transmission is not."""
    limit = float(limit)
    for what, prepare in (
            ("silent client", lambda s: None),
            ("silent after the greeting", lambda s: greeting(s)),
            ("silent after the flags",
             lambda s: send_flags(s, greeting(s))),
            ("silent in the middle of an option",
             lambda s: (send_flags(s, greeting(s)),
                        s.sendall(struct.pack(">QI", IHAVEOPT, 3))))):
        s = connect(addr)
        t0 = time.monotonic()
        prepare(s)
        wait_closed(s, what, limit)
        log("%s: dropped after %.1f s" % (what, time.monotonic() - t0))
    s = connect(addr)
    export_name(s, name)
    time.sleep(limit)
    request(s, CMD_READ, 9, 0, 512)
    if simple_reply(s, 9):
        fail("read after an idle period in transmission failed")
    recv_exact(s, 512)
    request(s, CMD_DISC, 10, 0, 0)
    wait_closed(s, "NBD_CMD_DISC after idling")
    log("an idle client in transmission is not dropped")


def churn(addr, count):
    """Many connections abandoned at different points of the handshake."""
    socks = []
    for i in range(int(count)):
        s = connect(addr)
        if i % 3 == 1:
            greeting(s)
        elif i % 3 == 2:
            send_flags(s, greeting(s))
        socks.append(s)
        if len(socks) >= 50:
            for x in socks:
                x.close()
            socks = []
    for x in socks:
        x.close()
    log("%s connections opened and abandoned" % count)


action = sys.argv[1]
{"garbage": garbage, "midhandshake": midhandshake, "midwrite": midwrite,
 "silent": silent, "churn": churn}[action](*sys.argv[2:])
EOF

# One of the 32 concurrent clients.  argv: URI, index, go file.
cat >"$T/client.py" <<'EOF'
import os
import sys
import time

import nbd

uri, index, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MiB = 1024 * 1024
h = nbd.NBD()
h.connect_uri(uri)
deadline = time.monotonic() + 30
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("client %d: never told to go" % index)
    time.sleep(0.01)
data = bytes([index + 1]) * (256 * 1024)
cookies = [h.aio_pwrite(data, index * MiB + i * len(data)) for i in range(4)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    if not h.aio_command_completed(c):
        sys.exit("client %d: write %d not completed" % (index, c))
h.flush()
for i in range(4):
    if h.pread(len(data), index * MiB + i * len(data)) != data:
        sys.exit("client %d: read back wrong data" % index)
h.shutdown()
EOF

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

fd_count()
{
    find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l
}

port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk"
fds_before=$(fd_count)
step "server has $fds_before open file descriptors"

step "(a) garbage"
tmo python3 "$T/raw.py" garbage "$addr" disk || fail "garbage checks failed"
server_alive
step "(b) disconnects during the handshake"
tmo python3 "$T/raw.py" midhandshake "$addr" ||
    fail "mid-handshake checks failed"
server_alive
step "(c) disconnect in the middle of a write payload"
tmo python3 "$T/raw.py" midwrite "$addr" disk "$ABORTED_AT" "$T/acked" ||
    fail "mid-write checks failed"
server_alive

step "(d) $NCLIENTS clients at once, each writing its own 1 MiB"
pids=()
for ((i = 0; i < NCLIENTS; i++)); do
    tmo "$NBD_PYTHON" "$T/client.py" "$(uri disk)" "$i" "$T/go" &
    pids+=($!)
    track_pid $!
done
sleep 1
touch "$T/go"
for ((i = 0; i < NCLIENTS; i++)); do
    wait "${pids[$i]}" || fail "client $i failed"
done
step "all $NCLIENTS clients done"

step "churn: 300 abandoned connections"
tmo python3 "$T/raw.py" churn "$addr" 300 || fail "churn failed"
server_alive
tmo nbdinfo --size "$(uri disk)" >/dev/null ||
    fail "nbdinfo fails after the misbehaving clients"
step "server still serves"

# Every abandoned connection must have been closed by now (give the
# server a moment to notice the last ones).
for ((i = 0; i < 50; i++)); do
    fds_after=$(fd_count)
    [ "$fds_after" -gt $((fds_before + 2)) ] || break
    sleep 0.1
done
[ "$fds_after" -le $((fds_before + 2)) ] ||
    fail "file descriptor leak: $fds_before open before, $fds_after after"
step "open file descriptors: $fds_before before, $fds_after after"
stop_server

step "image holds exactly the acknowledged writes"
python3 - "$disk" "$T/acked" "$NCLIENTS" "$ABORTED_AT" <<'EOF' ||
import sys
MiB = 1024 * 1024
image, acked_file, n, aborted = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(image, "rb") as f:
    d = f.read()
with open(acked_file, "rb") as f:
    acked = f.read()
if len(d) != 48 * MiB:
    sys.exit("  image size %d" % len(d))
for i in range(n):
    if d[i * MiB:(i + 1) * MiB] != bytes([i + 1]) * MiB:
        sys.exit("  region %d lacks its pattern" % i)
# A 33 MiB write from (a10) that the server accepted reaches 1 MiB past
# the client regions.
if d[n * MiB:(n + 1) * MiB] not in (bytes(MiB), b"\x33" * MiB):
    sys.exit("  data after the client regions")
if d[(n + 1) * MiB:aborted] != bytes(aborted - (n + 1) * MiB):
    sys.exit("  data between the client regions and the aborted write")
# [aborted, aborted + 64 KiB) was never acknowledged: not checked.
if d[aborted + 65536:aborted + 65536 + 4096] != acked:
    sys.exit("  the acknowledged raw write is missing")
rest = aborted + 65536 + 4096
if d[rest:] != bytes(len(d) - rest):
    sys.exit("  data after the acknowledged raw write")
EOF
    fail "the image does not hold what was acknowledged"

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

if is_our_server; then
    step "(e) handshake timeout of 1 s"
    port=$(free_port)
    start_server -l "127.0.0.1:$port" --handshake-timeout 1 -e "disk=$disk"
    tmo python3 "$T/raw.py" silent "127.0.0.1:$port" disk 3 ||
        fail "handshake timeout checks failed"
    server_alive

    step "(f) SIGTERM while a client is connected and idle"
    "$NBD_PYTHON" -c '
import sys, time, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("  idle client connected", flush=True)
time.sleep(60)' "$(uri disk)" &
    idle=$!
    track_pid "$idle"
    sleep 1
    stop_server
    kill "$idle" 2>/dev/null || true
else
    step "(e) and (f) skipped: nbdkit has no handshake timeout and waits for idle clients"
fi
# Checked last so that the checks above run even when this one fails.
if is_our_server; then
    read -r lost unanswered <"$T/unanswered"
    if [ "$lost" != 0 ]; then
        fail "(g) after SIGINT the server carried out $lost writes whose replies libnbd never saw ($unanswered requests ended with ENOTCONN): the server stops reading and closes the socket while the client is still sending, so the client's next send fails and it drops the connection before reading the replies already sent.  The specification asks that requests arriving during shutdown get ESHUTDOWN (the client then disconnects softly), so keep reading and answering them until the client goes, or at least half-close and drain before closing"
    fi
fi
step "pass"
