#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Limits on what clients may hold, driven by raw-socket clients:
# request-timeout drops a client that stops half way through a request
# header or a WRITE payload (its time counted from when the server had to
# wait for the rest), while an idle client, a slow but whole request and
# a client with nothing half sent stay served.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
if ! is_our_server; then
    skip "the connection limits and request-timeout are nbd-serverd's"
fi

disk=$T/disk.img
make_image "$disk" 64M

# Raw-socket clients.  argv: ACTION ARGS...
cat >"$T/raw.py" <<'EOF'
import socket
import struct
import sys
import threading
import time

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME = 1
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
failures = []


def log(msg):
    print("  " + msg, flush=True)


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    failures.append(msg)


def connect(addr, timeout=10.0):
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


def export_name(s, name="disk"):
    """Fixed newstyle, NO_ZEROES, NBD_OPT_EXPORT_NAME."""
    magic, opt_magic, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    s.sendall(struct.pack(">I", 1 | (hflags & 2)))
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, len(name))
              + name.encode())
    recv_exact(s, 10)
    if not hflags & 2:
        recv_exact(s, 124)


def header(cmd, cookie, offset, length):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, cookie, offset,
                       length)


def reply_ok(s, cookie, what):
    magic, err, rcookie = struct.unpack(">IIQ", recv_exact(s, 16))
    if magic != SIMPLE_REPLY_MAGIC or rcookie != cookie or err != 0:
        fail("%s: reply magic %#x error %d cookie %#x (want %#x)"
             % (what, magic, err, rcookie, cookie))
        return False
    return True


def read_ok(s, cookie, what):
    s.sendall(header(CMD_READ, cookie, 0, 512))
    if reply_ok(s, cookie, what):
        recv_exact(s, 512)
        return True
    return False


def closed_within(s, limit):
    """Seconds until the server closes s (reading and discarding), or
    None if it is still open after limit seconds."""
    t0 = time.monotonic()
    try:
        while True:
            left = t0 + limit - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            if not s.recv(65536):
                break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        return None
    return time.monotonic() - t0


def expect_dropped(what, s, t0, limit, deadline):
    """The server must close s no sooner than limit seconds after t0 and
    before deadline seconds have passed."""
    waited = closed_within(s, deadline)
    if waited is None:
        fail("%s: still open %.0f s after the request stalled" %
             (what, deadline))
        return
    elapsed = time.monotonic() - t0
    # The server counts from when it went back to the socket for the rest,
    # which is after the bytes were sent.
    if elapsed < limit - 0.01:
        fail("%s: dropped after %.2f s, before request-timeout (%g s)"
             % (what, elapsed, limit))
        return
    log("%s: dropped after %.1f s" % (what, elapsed))


def stall(addr, limit):
    """A client stalls in a header, one in a payload, one in a header
    after a request whose timer was still running; an idle client, one
    that sends whole requests with pauses between them and one whose
    payload arrives in two halves within the limit stay served."""
    limit = float(limit)
    deadline = limit + 30
    idle = connect(addr)
    export_name(idle)

    def half_header():
        s = connect(addr)
        export_name(s)
        t0 = time.monotonic()
        s.sendall(header(CMD_READ, 1, 0, 512)[:13])
        expect_dropped("half a request header", s, t0, limit, deadline)

    def one_payload_byte():
        s = connect(addr)
        export_name(s)
        t0 = time.monotonic()
        s.sendall(header(CMD_WRITE, 2, 0, 32 * 1024 * 1024) + b"\x55")
        expect_dropped("1 byte of a 32 MiB WRITE payload", s, t0, limit,
                       deadline)

    def stall_after_whole():
        # The first header's time starts the connection's timer; that
        # header completes, and the timer, still running when the second
        # header stalls, must give that one its full time.
        s = connect(addr)
        export_name(s)
        h = header(CMD_READ, 3, 0, 512)
        s.sendall(h[:10])
        time.sleep(limit / 2)
        s.sendall(h[10:])
        if not reply_ok(s, 3, "a header sent in two parts"):
            return
        recv_exact(s, 512)
        t0 = time.monotonic()
        s.sendall(header(CMD_READ, 4, 0, 512)[:20])
        expect_dropped("half a header after a whole request", s, t0, limit,
                       deadline)

    def paced():
        s = connect(addr)
        export_name(s)
        cookie = 100
        end = time.monotonic() + 2 * limit
        while time.monotonic() < end:
            if not read_ok(s, cookie, "a client pausing between requests"):
                return
            cookie += 1
            time.sleep(limit / 4)
        s.sendall(header(CMD_DISC, cookie, 0, 0))
        log("a client pausing between whole requests: served %d reads"
            % (cookie - 100))

    def slow_payload():
        s = connect(addr)
        export_name(s)
        payload = b"\x66" * 65536
        s.sendall(header(CMD_WRITE, 5, 1 << 20, len(payload)) +
                  payload[:30000])
        time.sleep(limit / 2)
        s.sendall(payload[30000:])
        if reply_ok(s, 5, "a payload in two halves within the limit"):
            log("a payload in two halves within the limit: written")
        s.sendall(header(CMD_DISC, 6, 0, 0))

    threads = [threading.Thread(target=f) for f in
               (half_header, one_payload_byte, stall_after_whole, paced,
                slow_payload)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if read_ok(idle, 7, "the idle client, after the others"):
        log("a client idle for %.0f s is still served" % (2 * limit))
    idle.sendall(header(CMD_DISC, 8, 0, 0))


action = sys.argv[1]
{"stall": stall}[action](*sys.argv[2:])
sys.exit(1 if failures else 0)
EOF

# count_log PATTERN: how many server log lines match PATTERN.
count_log()
{
    grep -c -e "$1" "$SERVER_LOG" || true
}

step "request-timeout: stalled half-requests are dropped, idle clients stay"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" --request-timeout 2
tmo python3 "$T/raw.py" stall "127.0.0.1:$port" 2 ||
    fail "request-timeout checks failed"
server_alive
n=$(count_log "did not arrive whole within 2 s (request-timeout)")
[ "$n" = 3 ] || fail "want 3 request-timeout log lines, found $n"
stop_server

step "pass"
