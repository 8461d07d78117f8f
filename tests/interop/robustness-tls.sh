#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# STARTTLS edge cases and misbehaving TLS clients, with raw sockets and
# Python's ssl module: STARTTLS with a payload and STARTTLS twice get
# NBD_REP_ERR_INVALID; in require mode INFO, LIST and GO before TLS get
# NBD_REP_ERR_TLS_REQD and EXPORT_NAME disconnects; garbage instead of a
# ClientHello, a client that hangs up half way through its ClientHello,
# and one that stops there are each dropped (the last by the handshake
# timeout) with a log line naming the peer, while a TLS client served at
# the same time is unaffected; a SIGTERM while a TLS client sits idle in
# the transmission phase and another in the middle of its handshake
# ends the server promptly with status 0.  With --tls=on, structured
# replies agreed in plain text are forgotten by STARTTLS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 nbdinfo certtool truncate
requires_nbd_python
is_our_server || skip "TLS options are specific to nbd-serverd"

disk=$T/disk.img
make_image "$disk" 8M
pki=$T/pki
make_pki "$pki"

cat >"$T/raw.py" <<'EOF'
import os
import socket
import ssl
import struct
import sys
import time

from nbdwire import (IHAVEOPT, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
                     OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT,
                     OPT_REPLY_MAGIC, OPT_STARTTLS, OPT_STRUCTURED_REPLY,
                     REP_ACK, REP_ERR_INVALID, REP_ERR_TLS_REQD, fail, log,
                     recv_exact)


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    magic, opt_magic, hflags = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt_magic != IHAVEOPT:
        fail("bad greeting")
    s.sendall(struct.pack(">I", 1 | 2))  # FIXED_NEWSTYLE | NO_ZEROES
    return s


def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def read_reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != OPT_REPLY_MAGIC:
        fail("bad option reply magic")
    return opt, rtype, recv_exact(s, length)


def expect_reply(s, opt, want, what):
    got_opt, rtype, data = read_reply(s)
    if got_opt != opt or rtype != want:
        fail("%s: reply to option %d is type 0x%x (%r), want 0x%x"
             % (what, got_opt, rtype, data, want))
    log("%s: reply 0x%x %r" % (what, rtype, data[:60]))


def expect_closed(s, what, within=10):
    s.settimeout(within)
    start = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        fail("%s: the server did not close the connection" % what)
    log("%s: closed by the server after %.1f s"
        % (what, time.monotonic() - start))


def client_hello(host):
    """The first flight of a TLS client, as bytes."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def starttls(s, ca):
    send_opt(s, OPT_STARTTLS)
    expect_reply(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    ctx = ssl.create_default_context(cafile=ca)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


action, addr = sys.argv[1], sys.argv[2]
if action == "starttls-edges":
    ca = sys.argv[3]
    s = connect(addr)
    send_opt(s, OPT_STARTTLS, b"junk")
    expect_reply(s, OPT_STARTTLS, REP_ERR_INVALID, "STARTTLS with data")
    t = starttls(s, ca)
    log("TLS: %s %s" % (t.version(), t.cipher()[0]))
    send_opt(t, OPT_STARTTLS)
    expect_reply(t, OPT_STARTTLS, REP_ERR_INVALID, "STARTTLS twice")
    send_opt(t, OPT_LIST)
    _, rtype, _ = read_reply(t)
    while rtype != REP_ACK:
        _, rtype, _ = read_reply(t)
    log("LIST over TLS: ACK")
    send_opt(t, OPT_ABORT)
    expect_reply(t, OPT_ABORT, REP_ACK, "ABORT")
elif action == "require":
    ca = sys.argv[3]
    s = connect(addr)
    info = struct.pack(">I", 4) + b"disk" + struct.pack(">H", 0)
    send_opt(s, OPT_INFO, info)
    expect_reply(s, OPT_INFO, REP_ERR_TLS_REQD, "INFO before TLS")
    send_opt(s, OPT_LIST)
    expect_reply(s, OPT_LIST, REP_ERR_TLS_REQD, "LIST before TLS")
    send_opt(s, OPT_GO, info)
    expect_reply(s, OPT_GO, REP_ERR_TLS_REQD, "GO before TLS")
    t = starttls(s, ca)
    send_opt(t, OPT_GO, info)
    _, rtype, _ = read_reply(t)
    while rtype != REP_ACK:
        _, rtype, _ = read_reply(t)
    log("GO over TLS after the refusals: ACK")
    s = connect(addr)
    send_opt(s, OPT_EXPORT_NAME, b"disk")
    expect_closed(s, "EXPORT_NAME before TLS")
elif action == "forget":
    # --tls=on: what was agreed in plain text does not survive STARTTLS.
    ca = sys.argv[3]
    s = connect(addr)
    send_opt(s, OPT_STRUCTURED_REPLY)
    expect_reply(s, OPT_STRUCTURED_REPLY, REP_ACK, "plain STRUCTURED_REPLY")
    query = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 1)
    query += struct.pack(">I", 15) + b"base:allocation"
    send_opt(s, OPT_LIST_META_CONTEXT, query)
    _, rtype, _ = read_reply(s)
    while rtype != REP_ACK:
        _, rtype, _ = read_reply(s)
    log("plain LIST_META_CONTEXT: ACK")
    t = starttls(s, ca)
    send_opt(t, OPT_LIST_META_CONTEXT, query)
    expect_reply(t, OPT_LIST_META_CONTEXT, REP_ERR_INVALID,
                 "LIST_META_CONTEXT over TLS before STRUCTURED_REPLY")
    send_opt(t, OPT_STRUCTURED_REPLY)
    expect_reply(t, OPT_STRUCTURED_REPLY, REP_ACK, "STRUCTURED_REPLY over TLS")
    send_opt(t, OPT_ABORT)
    expect_reply(t, OPT_ABORT, REP_ACK, "ABORT")
elif action == "garbage":
    s = connect(addr)
    send_opt(s, OPT_STARTTLS)
    expect_reply(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    s.sendall(os.urandom(2048))
    expect_closed(s, "garbage instead of a ClientHello")
elif action == "hangup":
    s = connect(addr)
    send_opt(s, OPT_STARTTLS)
    expect_reply(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    hello = client_hello("127.0.0.1")
    s.sendall(hello[: len(hello) // 2])
    s.close()
    log("hung up after %d of %d ClientHello bytes"
        % (len(hello) // 2, len(hello)))
elif action == "stall":
    s = connect(addr)
    send_opt(s, OPT_STARTTLS)
    expect_reply(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    hello = client_hello("127.0.0.1")
    s.sendall(hello[: len(hello) // 2])
    open(sys.argv[3], "w").close()  # tell the script we are stalled
    expect_closed(s, "a client stalled in its ClientHello", within=20)
else:
    fail("unknown action " + action)
EOF

# log_has REGEX: the server log must contain a line matching REGEX.
log_has()
{
    grep -E -q "$1" "$SERVER_LOG" ||
        fail "the server log has no line matching '$1'"
    step "server log: $(grep -E "$1" "$SERVER_LOG" | tail -n 1)"
}

port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --handshake-timeout 3
tls_client="$(tls_uri "$addr" disk "tls-certificates=$pki/client")"

step "STARTTLS with a payload, STARTTLS twice"
tmo python3 "$T/raw.py" starttls-edges "$addr" "$pki/ca-cert.pem" ||
    fail "STARTTLS edge cases"
step "require mode before TLS"
tmo python3 "$T/raw.py" require "$addr" "$pki/ca-cert.pem" ||
    fail "require mode refusals"
log_has "127\.0\.0\.1:[0-9]+: plain-text NBD_OPT_EXPORT_NAME refused"

step "garbage during the TLS handshake"
tmo python3 "$T/raw.py" garbage "$addr" || fail "garbage client"
log_has "127\.0\.0\.1:[0-9]+: TLS handshake failed: "

step "a client that hangs up in the middle of its ClientHello"
tmo python3 "$T/raw.py" hangup "$addr" || fail "hang-up client"

step "a client that stops in the middle of its ClientHello"
rm -f "$T/stalled"
python3 "$T/raw.py" stall "$addr" "$T/stalled" &
stall_pid=$!
track_pid "$stall_pid"
for ((i = 0; i < 100; i++)); do
    [ -e "$T/stalled" ] && break
    sleep 0.1
done
[ -e "$T/stalled" ] || fail "the stalling client did not get going"
# Served while the other one is stuck in its handshake.
size=$(tmo nbdinfo --size "$tls_client") || fail "nbdinfo during a stall"
[ "$size" = 8388608 ] || fail "nbdinfo during a stall said $size"
step "a TLS client is served meanwhile"
wait "$stall_pid" || fail "the stalled client was not dropped"
log_has "127\.0\.0\.1:[0-9]+: handshake timed out"

server_alive
size=$(tmo nbdinfo --size "$tls_client") || fail "nbdinfo afterwards"
[ "$size" = 8388608 ] || fail "nbdinfo afterwards said $size"

stop_server

step "--tls=on: options agreed before STARTTLS are forgotten"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk" --tls=on \
    --tls-certs "$pki/server" --handshake-timeout 3
tmo python3 "$T/raw.py" forget "$addr" "$pki/ca-cert.pem" ||
    fail "state negotiated before STARTTLS"

step "SIGTERM with an idle TLS client and one stalled in its handshake"
cat >"$T/idle.py" <<'EOF'
import sys
import time

import nbd

h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(sys.argv[2])
h.set_export_name("disk")
h.connect_tcp("127.0.0.1", sys.argv[1])
h.pread(4096, 0)
open(sys.argv[3], "w").close()
time.sleep(60)
EOF
rm -f "$T/idle" "$T/stalled"
"$NBD_PYTHON" "$T/idle.py" "$port" "$pki/client" "$T/idle" &
track_pid $!
python3 "$T/raw.py" stall "$addr" "$T/stalled" >/dev/null 2>&1 &
track_pid $!
for ((i = 0; i < 200; i++)); do
    [ -e "$T/idle" ] && [ -e "$T/stalled" ] && break
    sleep 0.1
done
[ -e "$T/idle" ] && [ -e "$T/stalled" ] || fail "the idle clients did not connect"
start=$SECONDS
stop_server
step "the server exited 0 within $((SECONDS - start)) s"
step "pass"
