#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Limits on what clients may hold, driven by raw-socket clients:
# request-timeout drops a client that stops half way through a request
# header or a WRITE payload (its time counted from when the server had to
# wait for the rest), while an idle client, a slow but whole request and
# a client with nothing half sent stay served.  max-connections and
# max-connections-per-client (unix clients are one address) are held
# open by idle clients: the next client is closed at once, the refusals
# are logged once per reason, a well-behaved client (nbdinfo) is served
# as soon as a place frees, also when the place frees because a stalled
# half-request was dropped, and a reload changes the limits for new
# clients only.  The open file limit: the server raises its soft limit to
# the hard one at start, and when it runs out of descriptors it logs once
# and pauses accepting (no retry loop) until a connection closes; the
# clients waiting in the backlog are then served.
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
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import nbdwire as w
from nbdwire import (CMD_DISC, CMD_READ, CMD_WRITE, IHAVEOPT, OPT_EXPORT_NAME,
                     SIMPLE_REPLY_MAGIC, log, recv_exact)

failures = []


def fail(msg):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    failures.append(msg)


def connect(addr, timeout=10.0, src=None):
    """Connects to ADDR ("HOST:PORT" or "unix:PATH"), from source address
    src if given (127.0.0.0/8 is all loopback)."""
    if addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr[5:]
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
        if src is not None:
            s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(target)
    return s


def export_name(s, name="disk"):
    """Fixed newstyle, NO_ZEROES, NBD_OPT_EXPORT_NAME."""
    w.export_name(s, name)


header = w.pack_request


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


def refused(addr, src=None):
    """Connects; True if the server closes the connection without a
    greeting, False if it greets (the client is served)."""
    s = connect(addr, src=src)
    try:
        data = s.recv(18)
    except ConnectionResetError:
        data = b""
    s.close()
    return data == b""


def served(addr, src=None, what="client"):
    """A client that is served: handshake and one READ."""
    s = connect(addr, src=src)
    export_name(s)
    if not read_ok(s, 1, what):
        raise SystemExit("  FAIL: %s: READ failed" % what)
    return s


def served_retrying(addr, src, what, limit=20.0):
    """The connection that a place has just been freed for.  The server
    frees a place before it closes the socket, but the start-up probe of
    the test library may still hold one for a moment: retry a refusal."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return served(addr, src, what)
        except (EOFError, ConnectionResetError):
            if time.monotonic() > deadline:
                raise SystemExit("  FAIL: %s: refused for %.0f s" %
                                 (what, limit))
            time.sleep(0.05)


def nbdinfo(uri):
    r = subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                       text=True, timeout=60)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def log_count(path, text):
    with open(path, errors="replace") as f:
        return f.read().count(text)


def reload(conf, pid, log_path, text):
    before = log_count(log_path, "reloaded: ")
    with open(conf, "w") as f:
        f.write(text)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while log_count(log_path, "reloaded: ") == before:
        if time.monotonic() > deadline:
            raise SystemExit("  FAIL: the reload was not logged")
        time.sleep(0.05)


def limits(tcp, unix, per, total, limit, conf, pid, log_path, counts):
    """Fills max-connections-per-client from 127.0.0.1 and
    max-connections with unix clients (TOTAL = PER from 127.0.0.1, 1 from
    127.0.0.2, the rest over unix), all idle, and checks what the next
    clients get."""
    per, total, limit, pid = int(per), int(total), float(limit), int(pid)
    unix_uri = "nbd+unix:///disk?socket=" + unix[5:]
    tcp_uri = "nbd://%s/disk" % tcp
    n_per = n_full = 0
    held = [served_retrying(tcp, "127.0.0.1", "client %d from 127.0.0.1" % i)
            for i in range(per)]
    log("%d idle clients from 127.0.0.1" % per)
    for i in range(20):
        if not refused(tcp, "127.0.0.1"):
            raise SystemExit("  FAIL: client %d from 127.0.0.1 served over "
                             "max-connections-per-client" % (per + 1))
        n_per += 1
    log("20 more from 127.0.0.1: each closed without a greeting")
    other = served(tcp, "127.0.0.2", "a client from 127.0.0.2")
    log("a client from 127.0.0.2 is served")
    held_unix = [served(unix, what="unix client %d" % i)
                 for i in range(total - per - 1)]
    log("%d unix clients: %d connections in all" % (len(held_unix), total))
    for i in range(10):
        if not refused(tcp, "127.0.0.3") or not refused(unix):
            raise SystemExit("  FAIL: a client served over max-connections")
        n_full += 2
    ok, out = nbdinfo(unix_uri)
    if ok:
        raise SystemExit("  FAIL: nbdinfo served over max-connections")
    n_full += 1
    log("at max-connections: 20 raw clients and nbdinfo are closed at once")

    # A place frees when a client leaves: once the client has seen its
    # connection close, the next client is served at the first attempt.
    other.sendall(header(CMD_DISC, 9, 0, 0))
    if closed_within(other, 10) is None:
        raise SystemExit("  FAIL: NBD_CMD_DISC did not close the connection")
    ok, out = nbdinfo(unix_uri)
    if not ok:
        raise SystemExit("  FAIL: nbdinfo refused after a place freed: " + out)
    log("a client sent NBD_CMD_DISC: nbdinfo is served at once (size %s)"
        % out)

    # A client stalled half way through a request holds its place only
    # until request-timeout drops it.
    t0 = time.monotonic()
    held[0].sendall(header(CMD_WRITE, 10, 0, 1 << 20) + b"\x11" * 100)
    if not refused(tcp, "127.0.0.1"):
        raise SystemExit("  FAIL: served over max-connections-per-client")
    n_per += 1
    expect_dropped("a client stalled in a payload", held[0], t0, limit,
                   limit + 30)
    deadline = time.monotonic() + 30
    while True:
        ok, out = nbdinfo(tcp_uri)
        if ok:
            break
        n_per += 1
        if time.monotonic() > deadline:
            raise SystemExit("  FAIL: nbdinfo not served after the stalled "
                             "client was dropped: " + out)
        time.sleep(0.05)
    log("the stalled client's place went to nbdinfo")

    # A reload: lower limits apply to new clients; connected ones stay.
    reload(conf, pid, log_path, "[server]\nmax-connections = %d\n"
           "max-connections-per-client = 1\nrequest-timeout = %g\n"
           % (total, limit))
    for what, addr in (("127.0.0.1", tcp), ("unix", unix)):
        if not refused(addr, "127.0.0.1" if addr == tcp else None):
            raise SystemExit("  FAIL: %s served over the reloaded "
                             "max-connections-per-client = 1" % what)
        n_per += 1
    for i, s in enumerate(held[1:] + held_unix):
        if not read_ok(s, 20 + i, "a client connected before the reload"):
            raise SystemExit(1)
    log("after a reload to max-connections-per-client = 1: new clients "
        "from 127.0.0.1 and unix are closed, the %d connected ones are "
        "served" % (len(held) - 1 + len(held_unix)))
    reload(conf, pid, log_path, "[server]\nmax-connections = 0\n"
           "max-connections-per-client = 0\n")
    extra = [served(tcp, "127.0.0.1", "a client after the limits went")
             for i in range(total)]
    log("after a reload to no limits: %d more clients served" % len(extra))
    for s in held[1:] + held_unix + extra:
        s.sendall(header(CMD_DISC, 99, 0, 0))
        s.close()
    with open(counts, "w") as f:
        f.write("%d %d\n" % (n_full, n_per))


def nofile(addr, room, log_path):
    """The server has descriptors for about ROOM more clients: clients
    connect one at a time until one is not greeted because accept failed
    (the warning is logged); the next ones wait in the backlog too, and
    each connection that closes lets one waiting client in."""
    room = int(room)
    held = []
    first_waiting = None
    while first_waiting is None:
        if len(held) > room + 20:
            raise SystemExit("  FAIL: %d clients served, no EMFILE" %
                             len(held))
        s = connect(addr)
        deadline = time.monotonic() + 30
        while True:
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable:
                export_name(s)
                if not read_ok(s, 1, "client %d" % len(held)):
                    raise SystemExit(1)
                held.append(s)
                break
            if log_count(log_path, "accept: Too many open files") > 0:
                first_waiting = s
                break
            if time.monotonic() > deadline:
                raise SystemExit("  FAIL: neither served nor an EMFILE "
                                 "warning")
    if len(held) < 3:
        raise SystemExit("  FAIL: only %d clients served" % len(held))
    log("%d clients served, then accept ran out of descriptors" % len(held))
    waiting = []
    greeted = []

    def wait_greeting(s, i):
        try:
            s.settimeout(60)
            recv_exact(s, 18)
            greeted.append(i)
        except (OSError, EOFError) as e:
            fail("waiting client %d: %s" % (i, e))

    threads = []
    for i in range(3):
        s = first_waiting if i == 0 else connect(addr)
        waiting.append(s)
        t = threading.Thread(target=wait_greeting, args=(s, i))
        t.start()
        threads.append(t)
    # A retry loop would fail and log again and again in this time.
    time.sleep(3)
    lines = log_count(log_path, "accept: Too many open files")
    if lines > 2:
        raise SystemExit("  FAIL: %d EMFILE warnings in 3 s: the acceptor "
                         "retries instead of pausing" % lines)
    if greeted:
        raise SystemExit("  FAIL: a client over the descriptor limit was "
                         "served")
    log("out of descriptors: %d warning logged in 3 s, 3 clients wait"
        % lines)
    for n in range(1, 4):
        held[n - 1].sendall(header(CMD_DISC, 50, 0, 0))
        if closed_within(held[n - 1], 10) is None:
            raise SystemExit("  FAIL: NBD_CMD_DISC did not close")
        deadline = time.monotonic() + 30
        while len(greeted) < n:
            if time.monotonic() > deadline:
                raise SystemExit("  FAIL: no waiting client served after "
                                 "%d connections closed" % n)
            time.sleep(0.01)
    log("each connection that closed let one waiting client in")
    for t in threads:
        t.join()
    for s in waiting:
        s.sendall(struct.pack(">I", 1 | 2))
        s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 4) +
                  b"disk")
        recv_exact(s, 10)
        if not read_ok(s, 60, "a client that waited in the backlog"):
            raise SystemExit(1)
        s.sendall(header(CMD_DISC, 61, 0, 0))
    for s in held[3:]:
        s.sendall(header(CMD_DISC, 62, 0, 0))
    log("the clients that waited are served")


action = sys.argv[1]
{"stall": stall, "limits": limits, "nofile": nofile}[action](*sys.argv[2:])
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

step "max-connections and max-connections-per-client, held by idle clients"
conf=$T/limits.conf
printf '[server]\nmax-connections = 6\nmax-connections-per-client = 3\nrequest-timeout = 2\n' >"$conf"
port=$(free_port)
start_server -c "$conf" -l "127.0.0.1:$port" -l "unix:$T/nbd.sock" \
    -e "disk=$disk"
tmo python3 "$T/raw.py" limits "127.0.0.1:$port" "unix:$T/nbd.sock" 3 6 2 \
    "$conf" "$SERVER_PID" "$SERVER_LOG" "$T/counts" ||
    fail "connection limit checks failed"
server_alive
read -r n_full n_per <"$T/counts"
full=$(count_log "refused: already 6 connections (max-connections)")
per=$(count_log "connections from this address (max-connections-per-client)")
step "refusals: $n_full over max-connections logged in $full lines, $n_per over max-connections-per-client in $per lines"
# One line per reason and 10 s; the test takes a few seconds (more
# under a sanitizer), so allow for one more window.
[ "$full" -ge 1 ] && [ "$full" -le 2 ] ||
    fail "max-connections refusals: $full log lines for $n_full refusals"
[ "$per" -ge 1 ] && [ "$per" -le 3 ] ||
    fail "max-connections-per-client refusals: $per log lines for $n_per refusals"
stop_server

step "the open file limit: raised to the hard limit, then exhausted"
requires prlimit
hard=$(ulimit -Hn)
soft=$((hard > 512 ? 256 : hard / 2))
printf '[server]\n' >"$conf"
ulimit -Sn "$soft"
port=$(free_port)
start_server -c "$conf" -l "127.0.0.1:$port" -t 1 -e "disk=$disk"
ulimit -Sn "$hard"
got=$(awk '/^Max open files/ {print $4 " " $5}' "/proc/$SERVER_PID/limits")
[ "$got" = "$hard $hard" ] ||
    fail "started with a soft limit of $soft and a hard one of $hard, the server has $got"
step "started with the soft limit at $soft: the server raised it to $hard"
if [ "$hard" -gt 1200 ] &&
    grep -q "but the open file limit" "$SERVER_LOG"; then
    fail "a warning about the open file limit with $hard descriptors"
fi
# Leave room for 5 clients.
nfd=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
limit=$((nfd + 5))
prlimit --pid "$SERVER_PID" --nofile=$limit:$limit
tmo python3 "$T/raw.py" nofile "127.0.0.1:$port" 5 "$SERVER_LOG" ||
    fail "open file limit checks failed"
tmo nbdinfo --size "$(uri disk)" >/dev/null ||
    fail "nbdinfo fails after the descriptors ran out"
# max-connections beyond what the limit allows is reported (at start, and
# here on a reload that changes it).
printf '[server]\nmax-connections = 100\n' >"$conf"
kill -HUP "$SERVER_PID"
for ((i = 0; i < 300; i++)); do
    grep -q "reloaded: " "$SERVER_LOG" && break
    sleep 0.1
done
grep -q "max-connections = 100, but the open file limit ($limit) leaves room" \
    "$SERVER_LOG" ||
    fail "no warning that max-connections = 100 exceeds the open file limit"
stop_server

step "pass"
