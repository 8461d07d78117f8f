#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# /metrics (metrics-listen): bad addresses are refused with a message
# naming the option or the configuration line, a port in use stops the
# start with a clear error; then, after qemu-io traffic, `promtool check
# metrics` accepts a scrape and its counters are exactly what the clients
# did: N writes and M reads of known sizes, the latency histogram's
# count, bad requests from a raw client counted as errors by command and
# errno, handshakes refused for an unknown export and broken off, a
# connection refused at max-connections, per-loop requests adding up, and
# nothing left in flight.  Other paths get 404, other methods 405.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 qemu-io promtool curl truncate
is_our_server || skip "metrics-listen is nbd-serverd's"

disk=$T/disk.img
make_image "$disk" 16M

step "bad metrics-listen values are refused, naming the option or the line"
for bad in 127.0.0.1 127.0.0.1:99999 127.0.0.1:0 unix:/tmp/x; do
    rc=0
    "$SERVER_BIN" -f --check-config -e "disk=$disk" --metrics-listen "$bad" \
        >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = 2 ] || fail "--metrics-listen $bad: exit $rc, not 2"
    grep -q -- "--metrics-listen $bad" "$T/bad.out" ||
        fail "--metrics-listen $bad: the message does not name it: $(cat "$T/bad.out")"
done
rc=0
"$SERVER_BIN" -s -e "disk=$disk" --metrics-listen 127.0.0.1:9 </dev/null \
    >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q -- "--metrics-listen makes no sense" "$T/bad.out" ||
    fail "-s with --metrics-listen: exit $rc: $(cat "$T/bad.out")"
printf '[server]\nlisten = 127.0.0.1:1\n\nmetrics-listen = 127.0.0.1:70000\n' \
    >"$T/bad.conf"
printf '[export disk]\npath = %s\n' "$disk" >>"$T/bad.conf"
rc=0
"$SERVER_BIN" -f --check-config -c "$T/bad.conf" >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "a bad port in the file: exit $rc, not 2"
grep -q "bad.conf:4: metrics-listen 127.0.0.1:70000: bad port" "$T/bad.out" ||
    fail "the message does not name line 4 and the port: $(cat "$T/bad.out")"
step "refused: $(head -n 1 "$T/bad.out")"

step "a metrics port in use is an error at start"
busy_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
time.sleep(60)' "$busy_port" &
holder=$!
track_pid "$holder"
for ((i = 0; i < 50; i++)); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$busy_port" 2>/dev/null && break
    sleep 0.1
done
rc=0
tmo "$SERVER_BIN" -f -l "127.0.0.1:$(free_port)" -e "disk=$disk" \
    --metrics-listen "127.0.0.1:$busy_port" >"$T/busy.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "the server started on a metrics port in use"
grep -q "metrics-listen 127.0.0.1:$busy_port: .*Address already in use" \
    "$T/busy.out" || fail "no clear message: $(cat "$T/busy.out")"
kill "$holder"
step "exit $rc: $(grep metrics-listen "$T/busy.out")"

port=$(free_port)
mport=$(free_port)
maddr=127.0.0.1:$mport
start_server -l "127.0.0.1:$port" -t 2 -e "disk=$disk" --max-connections 2 \
    --metrics-listen "$maddr"
u=$(uri disk)

scrape()
{
    curl -sS -f "http://$maddr/metrics" >"$T/$1.txt" ||
        fail "GET /metrics failed"
}

step "404 for another path, 405 for another method"
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$maddr/")
[ "$code" = 404 ] || fail "GET /: status $code, not 404"
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$maddr/metrics/x")
[ "$code" = 404 ] || fail "GET /metrics/x: status $code, not 404"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -d x "http://$maddr/metrics")
[ "$code" = 405 ] || fail "POST /metrics: status $code, not 405"
ctype=$(curl -sS -o /dev/null -w '%{content_type}' "http://$maddr/metrics")
case $ctype in
"text/plain; version=0.0.4"*) ;;
*) fail "Content-Type is '$ctype'" ;;
esac

scrape before
nwrites=7
nreads=5
args=()
for ((i = 0; i < nwrites; i++)); do
    args+=(-c "write -P $((i + 1)) $((i * 65536)) 64k")
done
for ((i = 0; i < nreads; i++)); do
    args+=(-c "read -P $((i + 1)) $((i * 65536)) 4k")
done
step "qemu-io: $nwrites writes of 64 KiB, $nreads reads of 4 KiB"
tmo qemu-io -f raw "${args[@]}" "$u" >"$T/qemu-io.out" 2>&1 ||
    fail "qemu-io failed: $(cat "$T/qemu-io.out")"

step "a raw client: bad requests, an unknown export, a broken handshake, a refusal"
cat >"$T/bad.py" <<'EOF'
import json
import socket
import sys
import time

import nbdwire as w
import promtext as p

addr, maddr, out = sys.argv[1], sys.argv[2], sys.argv[3]
errors = {}


def count(cmd, err):
    name = {w.CMD_READ: "read", w.CMD_WRITE: "write"}.get(cmd, "other")
    key = "%s/%s" % (name, w.error_name(err))
    errors[key] = errors.get(key, 0) + 1


s = w.connect(addr)
size, _ = w.export_name(s, "disk")
# READ past the end, WRITE past the end, an unknown command.
w.send_request(s, w.CMD_READ, 1, size, 4096)
count(w.CMD_READ, w.simple_reply(s, 1))
w.send_request(s, w.CMD_WRITE, 2, size - 512, 4096, b"x" * 4096)
count(w.CMD_WRITE, w.simple_reply(s, 2))
w.send_request(s, 99, 3, 0, 0)
count(99, w.simple_reply(s, 3))
# A WRITE over max-payload: refused, then the server closes.
w.send_request(s, w.CMD_WRITE, 4, 0, 1 << 30)
count(w.CMD_WRITE, w.simple_reply(s, 4))
w.expect_eof(s, "after the oversized write")
s.close()

# Handshakes: an unknown export then a polite abort (counted), a client
# that goes away in the middle (counted as other), a LIST then a polite
# abort (not a failure).
s = w.connect(addr)
w.handshake(s)
s.sendall(w.pack_go("no-such-export"))
rtype, _ = w.option_replies(s, w.OPT_GO)[-1]
assert rtype == w.REP_ERR_UNKNOWN, hex(rtype)
w.send_option(s, w.OPT_ABORT)
w.option_reply(s, w.OPT_ABORT)
s.close()
s = w.connect(addr)
w.handshake(s)
s.sendall(w.pack_option(w.OPT_GO)[:10])  # half an option header
s.close()
s = w.connect(addr)
w.handshake(s)
w.send_option(s, w.OPT_LIST)
w.option_replies(s, w.OPT_LIST)
w.send_option(s, w.OPT_ABORT)
w.option_reply(s, w.OPT_ABORT)
s.close()

# max-connections 2: hold two, the third is refused (closed at once).
# The earlier connections must be gone first: the server lets go of
# them soon after they close.
for _ in range(100):
    if p.get(p.scrape(maddr), "nbd_serverd_connections") == 0:
        break
    time.sleep(0.1)
else:
    sys.exit("the handshake connections are still counted")
held = []
for _ in range(2):
    c = w.connect(addr)
    w.greeting(c)
    held.append(c)
host, port = addr.rsplit(":", 1)
third = socket.create_connection((host, int(port)), 10)
third.settimeout(10)
got = third.recv(100)
assert got == b"", "the third connection got %r" % got
third.close()
for c in held:
    c.close()
with open(out, "w") as f:
    json.dump(errors, f)
EOF
# The handshakes above end with the server's closing; wait until the
# server has let go of them before holding its two slots.
wait_connections()
{
    local want=$1 i
    for ((i = 0; i < 100; i++)); do
        scrape conns
        grep -qx "nbd_serverd_connections $want" "$T/conns.txt" && return 0
        sleep 0.1
    done
    fail "nbd_serverd_connections is not $want: $(grep '^nbd_serverd_connections ' "$T/conns.txt")"
}
wait_connections 0
tmo python3 "$T/bad.py" "127.0.0.1:$port" "$maddr" "$T/bad.json" ||
    fail "the raw client failed"
step "the raw client got: $(cat "$T/bad.json")"
wait_connections 0

scrape after
step "promtool check metrics"
[ -s "$T/after.txt" ] || fail "the scrape is empty"
promtool check metrics <"$T/after.txt" >"$T/promtool.out" 2>&1 ||
    fail "promtool: $(cat "$T/promtool.out")"

version=$(sed -n 's/^#define NBDSRV_VERSION "\(.*\)"$/\1/p' include/nbdsrv/version.h)
python3 - "$T" "$nwrites" "$nreads" "$version" <<'EOF' || fail "the counters do not match"
import json
import sys

import promtext as p

t, nwrites, nreads, version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
before = p.parse(open(t + "/before.txt").read())
after = p.parse(open(t + "/after.txt").read())
bad = json.load(open(t + "/bad.json"))
fails = []


def want(what, got, expected):
    print("  %s: %g (want %g)" % (what, got, expected))
    if got != expected:
        fails.append(what)


def d(name, **labels):
    return p.get(after, name, **labels) - p.get(before, name, **labels)


want("build_info", p.get(after, "nbd_serverd_build_info", version=version), 1)
# The raw client's failed WRITEs count as writes too.
bad_writes = sum(n for k, n in bad.items() if k.startswith("write/"))
bad_reads = sum(n for k, n in bad.items() if k.startswith("read/"))
bad_other = sum(n for k, n in bad.items() if k.startswith("other/"))
R = "nbd_serverd_requests_total"
want("writes", d(R, export="disk", command="write"), nwrites + bad_writes)
want("reads", d(R, export="disk", command="read"), nreads + bad_reads)
want("other commands", d(R, export="disk", command="other"), bad_other)
want("bytes written", d("nbd_serverd_written_bytes_total", export="disk"),
     nwrites * 65536)
want("bytes read", d("nbd_serverd_read_bytes_total", export="disk"),
     nreads * 4096)
for key, n in sorted(bad.items()):
    cmd, err = key.split("/")
    want("errors %s %s" % (cmd, err),
         d("nbd_serverd_request_errors_total", export="disk", command=cmd,
           errno=err), n)
errs = sum(v for _, v in p.series(after, "nbd_serverd_request_errors_total"))
want("errors in all", errs, sum(bad.values()))

H = "nbd_serverd_request_duration_seconds"
for cmd, n in (("write", nwrites + bad_writes), ("read", nreads + bad_reads)):
    want("latency count %s" % cmd, p.get(after, H + "_count", export="disk",
                                         command=cmd), n)
    buckets = sorted(((float(l["le"]), v) for l, v in p.series(after, H + "_bucket")
                      if l["command"] == cmd), key=lambda b: b[0])
    counts = [v for _, v in buckets]
    if counts != sorted(counts) or buckets[-1] != (float("inf"), n):
        fails.append("buckets of %s: %r" % (cmd, buckets))
    if not p.get(after, H + "_sum", export="disk", command=cmd) > 0:
        fails.append("latency sum of %s" % cmd)

HS = "nbd_serverd_handshakes_failed_total"
want("handshake failed: unknown export", d(HS, reason="unknown_export"), 1)
# The half option, and the two held connections that left after the
# greeting.
want("handshake failed: other", d(HS, reason="other"), 3)
want("handshake failed: tls", d(HS, reason="tls"), 0)
want("refused at max-connections",
     d("nbd_serverd_connections_refused_total", reason="max_connections"), 1)
# qemu-io, the raw client's 4 connections that were accepted, 2 held.
want("accepted", d("nbd_serverd_connections_accepted_total"), 1 + 4 + 2)
want("connections now", p.get(after, "nbd_serverd_connections"), 0)
want("in flight", p.get(after, "nbd_serverd_requests_in_flight"), 0)
want("buffer bytes", p.get(after, "nbd_serverd_buffer_bytes"), 0)

total = sum(v for _, v in p.series(after, R))
loops = p.series(after, "nbd_serverd_loop_requests_total")
want("loops", len(loops), 2)
want("requests of the loops", sum(v for _, v in loops), total)
cpu = p.series(after, "nbd_serverd_loop_cpu_seconds_total")
want("loops with a CPU time", len(cpu), 2)
if not all(v > 0 for _, v in cpu):
    fails.append("loop CPU time")
if fails:
    sys.exit("mismatch: %s" % ", ".join(fails))
EOF
server_alive
stop_server
step "pass"
