#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# /metrics from a configuration file: each handshake-failure reason is
# counted once for a raw client that causes it (an export hidden by its
# allow list, a TLS handshake broken off after STARTTLS, TLS required,
# handshake-timeout), and the counters of an export go by its name
# across reloads: an export removed by a reload keeps its series, one
# added is counted, and one added back carries on from where it was.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 promtool curl certtool truncate
is_our_server || skip "metrics-listen and reload are nbd-serverd's"

pki=$T/pki
make_pki "$pki"
for e in a c hidden; do
    make_image "$T/$e.img" 1M
done
port=$(free_port)
maddr=127.0.0.1:$(free_port)
conf=$T/nbd-serverd.conf

# write_conf TLS EXPORTS...: the file with tls = TLS and those exports.
write_conf()
{
    local tls=$1 e
    shift
    {
        printf '[server]\nmetrics-listen = %s\nhandshake-timeout = 2\n' "$maddr"
        printf 'tls = %s\ntls-certs = %s/server\n' "$tls" "$pki"
        for e in "$@"; do
            printf '[export %s]\npath = %s/%s.img\n' "$e" "$T" "$e"
        done
        # Only for addresses of the documentation range: never this client.
        printf '[export hidden]\npath = %s/hidden.img\nallow = 192.0.2.0/24\n' "$T"
    } >"$conf"
}

# reload: SIGHUP, then wait for the log to say it is done.
reload()
{
    local n i
    n=$(grep -c 'reloaded:' "$SERVER_LOG" || true)
    kill -HUP "$SERVER_PID"
    for ((i = 0; i < 100; i++)); do
        [ "$(grep -c 'reloaded:' "$SERVER_LOG" || true)" -gt "$n" ] && return 0
        sleep 0.1
    done
    fail "the reload is not logged"
}

cat >"$T/client.py" <<'EOF'
import socket
import sys
import time

import nbdwire as w

addr, what = sys.argv[1], sys.argv[2]


def writes(name, n):
    s = w.connect(addr)
    w.handshake(s)
    w.opt_go(s, name)
    for i in range(n):
        w.send_request(s, w.CMD_WRITE, i + 1, i * 512, 512, b"m" * 512)
        err = w.simple_reply(s, i + 1)
        if err != 0:
            sys.exit("write %d to %s: %s" % (i, name, w.error_name(err)))
    w.send_request(s, w.CMD_DISC, 99, 0, 0)
    s.close()


def refused(name, want):
    s = w.connect(addr)
    w.handshake(s)
    s.sendall(w.pack_go(name))
    rtype, _ = w.option_replies(s, w.OPT_GO)[-1]
    if rtype != want:
        sys.exit("GO %s: reply %#x, not %#x" % (name, rtype, want))
    w.send_option(s, w.OPT_ABORT)
    w.option_reply(s, w.OPT_ABORT)
    s.close()


if what == "hidden":
    refused("hidden", w.REP_ERR_UNKNOWN)
elif what == "tls-required":
    refused("a", w.REP_ERR_TLS_REQD)
elif what == "tls-broken":
    s = w.connect(addr)
    w.handshake(s)
    w.option_ack(s, w.OPT_STARTTLS)
    s.sendall(b"this is not a TLS client hello" * 10)
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()
elif what == "timeout":
    s = w.connect(addr)
    w.handshake(s)
    w.expect_eof(s, "a client that says nothing after the flags", limit=20)
    s.close()
else:
    name, n = what.split(":")
    writes(name, int(n))
EOF
client()
{
    tmo python3 "$T/client.py" "127.0.0.1:$port" "$1" >"$T/client.out" 2>&1 ||
        fail "client $1: $(cat "$T/client.out")"
}

# check EXPR...: each "NAME{LABELS} VALUE" must be in a scrape that
# promtool accepts, taken once no connection is left: a connection is
# let go of after its requests and its handshake are counted.
check()
{
    local want i
    for ((i = 0; i < 100; i++)); do
        curl -sS -f "http://$maddr/metrics" >"$T/scrape.txt" ||
            fail "GET /metrics failed"
        grep -qx 'nbd_serverd_connections 0' "$T/scrape.txt" && break
        sleep 0.1
    done
    grep -qx 'nbd_serverd_connections 0' "$T/scrape.txt" ||
        fail "connections are left: $(grep '^nbd_serverd_connections ' "$T/scrape.txt")"
    promtool check metrics <"$T/scrape.txt" >"$T/promtool.out" 2>&1 ||
        fail "promtool: $(cat "$T/promtool.out")"
    for want in "$@"; do
        grep -qxF "$want" "$T/scrape.txt" ||
            fail "the scrape has no line '$want': $(grep -F "${want%% *}" "$T/scrape.txt" | head -n 5)"
        step "scrape: $want"
    done
}

write_conf on a
start_server -c "$conf" -l "127.0.0.1:$port"

step "handshakes that fail, one of each reason"
client hidden
client tls-broken
client timeout
client a:3
HS=nbd_serverd_handshakes_failed_total
check "$HS{reason=\"allow_list\"} 1" "$HS{reason=\"tls\"} 1" \
    "$HS{reason=\"timeout\"} 1" "$HS{reason=\"unknown_export\"} 0" \
    "$HS{reason=\"other\"} 0"

step "tls = require: a plain GO is refused and counted"
write_conf require a
reload
client tls-required
check "$HS{reason=\"tls\"} 2"

R=nbd_serverd_requests_total
step "reload: a removed, c added; a's series stay, c is counted"
write_conf on c
reload
client c:2
check "$R{export=\"a\",command=\"write\"} 3" "$R{export=\"c\",command=\"write\"} 2"

step "reload: a back; its counters carry on"
write_conf on a c
reload
client a:1
check "$R{export=\"a\",command=\"write\"} 4" "$R{export=\"c\",command=\"write\"} 2" \
    "nbd_serverd_written_bytes_total{export=\"a\"} 2048"

server_alive
stop_server
step "pass"
