#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc over TLS: nbdc info with nbds:// (X.509 from tls-certificates=DIR,
# and PSK from tls-psk-file=FILE with the user name as identity) against
# nbd-serverd --tls=require and nbdkit --tls=require; nbds+unix://; a
# wrong PSK key, an unknown identity, a server certificate that names
# another host, one from a CA we do not trust, a CA directory without ca-cert.pem and a server with
# --tls=off each fail with a clear message and exit status 1; nbdc copy
# of 64 MiB of random data round-trips over TLS with --connections 2.
# nbdc info names the TLS version and cipher, and the server logs the
# same ones for the connection, with the TLS identity.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool psktool python3 sha256sum truncate
is_our_server || skip "TLS options are specific to nbd-serverd"

tls_fixture 8M alice bob
make_psk "$T/wrong.psk" alice
# A client that trusts only the other CA, which did not sign the server.
mkdir -p "$T/othtrust"
cp "$pki/oca-cert.pem" "$T/othtrust/ca-cert.pem"

# info_tls URI [WHO]: nbdc info --json over URI must report 8 MiB, TLS,
# its version and cipher; with WHO, the server must have logged the same
# version and cipher for this connection, with WHO as the TLS identity.
info_tls()
{
    local line=
    nbdc "$T/info.json" info --json "$1"
    if [ -n "${2:-}" ]; then
        line=$(grep 'TLS established' "$SERVER_LOG" | tail -n 1)
    fi
    python3 - "$T/info.json" "$line" "${2:-}" <<'PY' || fail "nbdc info --json $1: $(cat "$T/info.json"); server: $line"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["TLS"] is True, "TLS is not true"
assert j["exports"][0]["export-size"] == 8388608, "wrong size"
assert j["TLS-version"].startswith("TLS1."), "TLS-version"
assert j["TLS-cipher"] != "", "TLS-cipher"
line, who = sys.argv[2], sys.argv[3]
if who:
    want = f"TLS established: {j['TLS-version']} {j['TLS-cipher']},"
    assert want in line, f"server log lacks {want!r}"
    assert line.endswith(", " + who), f"server log lacks identity {who!r}"
PY
    step "nbdc info over $1: TLS, 8 MiB${2:+, server logged $2}"
}

step "nbd-serverd --tls=require, X.509 and PSK"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -l "unix:$T/tls.sock" -e "disk=$disk" \
    --tls=require --tls-certs "$pki/server" --tls-psk "$psk"
info_tls "$(tls_uri "$addr" disk "tls-certificates=$pki/client")" \
    "no client certificate"
info_tls "$(tls_uri "$addr" disk "tls-certificates=$pki/nocert")" \
    "no client certificate"
info_tls "$(tls_uri "localhost:$port" disk "tls-certificates=$pki/nocert")"
info_tls "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)" \
    "PSK identity alice"
info_tls "$(tls_uri "$addr" disk "tls-psk-file=$psk" bob)" "PSK identity bob"
info_tls "nbds+unix://alice@/disk?socket=$T/tls.sock&tls-psk-file=$psk"
info_tls "nbds+unix:///disk?socket=$T/tls.sock&tls-certificates=$pki/client"
nbdc "$T/info.txt" info "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
grep -E -q '^protocol: newstyle-fixed with TLS \(TLS1\.[0-9], [A-Z0-9-]+\)$' \
    "$T/info.txt" || fail "nbdc info: $(cat "$T/info.txt")"
nbdc "$T/list.json" info --list --json \
    "$(tls_uri "$addr" "" "tls-psk-file=$psk" alice)"
grep -q '"export-name": "disk"' "$T/list.json" ||
    fail "nbdc info --list over TLS: $(cat "$T/list.json")"
step "nbdc info --list over TLS"

nbdc_fails 1 "TLS handshake with the server failed" info \
    "$(tls_uri "$addr" disk "tls-psk-file=$T/wrong.psk" alice)"
nbdc_fails 1 "no key for identity 'carol'" info \
    "$(tls_uri "$addr" disk "tls-psk-file=$psk" carol)"
nbdc_fails 1 "TLS handshake with the server failed: .*not trusted" info \
    "$(tls_uri "$addr" disk "tls-certificates=$T/othtrust")"
nbdc_fails 1 "TLS handshake with the server failed: .*not trusted" info \
    "$(tls_uri "$addr" disk "tls-certificates=$pki/client&tls-hostname=elsewhere.example")"
# Without the check of the server's certificate both connect.
info_tls "$(tls_uri "$addr" disk "tls-certificates=$T/othtrust&tls-verify-peer=false")"
info_tls "$(tls_uri "$addr" disk "tls-certificates=$pki/client&tls-hostname=elsewhere.example&tls-verify-peer=false")"
nbdc_fails 1 "ca-cert.pem" info \
    "$(tls_uri "$addr" disk "tls-certificates=$T/nowhere")"
nbdc_fails 1 "tls-certificates=DIR .* tls-psk-file=FILE" info \
    "nbds://$addr/disk"
nbdc_fails 1 "TLS is required|NBD_REP_ERR_TLS_REQD" info "nbd://$addr/disk"
info_tls "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
stop_server

step "nbd-serverd --tls-verify-peer logs the client certificate"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-verify-peer
info_tls "$(tls_uri "$addr" disk "tls-certificates=$pki/client")" \
    "client certificate CN=client"
stop_server

step "nbd-serverd --tls=off refuses STARTTLS"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk"
nbdc_fails 1 "the server does not offer TLS" info \
    "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
nbdc "$T/plain.json" info --json "nbd://$addr/disk"
grep -q '"TLS": false' "$T/plain.json" ||
    fail "plain nbdc info: $(cat "$T/plain.json")"
stop_server

step "nbdc copy of 64 MiB over TLS, --connections 2"
requires dd
src=$T/src.img
mid=$T/mid.img
back=$T/back.img
make_random "$src" 64M
make_image "$mid" 64M
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$mid" --tls=require \
    --tls-certs "$pki/server" --tls-psk "$psk"
for q in "tls-certificates=$pki/client" "tls-psk-file=$psk"; do
    u=$(tls_uri "$addr" disk "$q" bob)
    rm -f "$back"
    nbdc "$T/copy.out" copy "$src" "$u" --connections 2
    nbdc "$T/copy.out" copy "$u" "$back" --connections 2
    same_content "$src" "$back" || fail "copy over $u changed the data"
    step "64 MiB round-trip over $q: same sha256"
done
stop_server

if command -v nbdkit >/dev/null; then
    step "nbdkit --tls=require"
    sock=$T/nbdkit.sock
    nbdkit -f --exit-with-parent -U "$sock" --tls=require \
        --tls-certificates="$pki/server" file "$disk" \
        >>"$SERVER_LOG" 2>&1 &
    pid=$!
    track_pid "$pid"
    deadline=$((SECONDS + 20))
    until [ -S "$sock" ]; do
        kill -0 "$pid" 2>/dev/null || fail "nbdkit exited before listening"
        [ "$SECONDS" -lt "$deadline" ] || fail "nbdkit does not listen"
        sleep 0.1
    done
    info_tls "nbds+unix:///?socket=$sock&tls-certificates=$pki/client"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true

    sock=$T/nbdkit-psk.sock
    nbdkit -f --exit-with-parent -U "$sock" --tls=require \
        --tls-psk="$psk" file "$disk" >>"$SERVER_LOG" 2>&1 &
    pid=$!
    track_pid "$pid"
    deadline=$((SECONDS + 20))
    until [ -S "$sock" ]; do
        kill -0 "$pid" 2>/dev/null || fail "nbdkit exited before listening"
        [ "$SECONDS" -lt "$deadline" ] || fail "nbdkit does not listen"
        sleep 0.1
    done
    info_tls "nbds+unix://alice@/?socket=$sock&tls-psk-file=$psk"
    nbdc_fails 1 "TLS handshake with the server failed" info \
        "nbds+unix://alice@/?socket=$sock&tls-psk-file=$T/wrong.psk"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
fi
step "pass"
