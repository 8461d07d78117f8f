#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS with nbdinfo: X.509 (nbds:// with tls-certificates=DIR) and PSK
# (nbds://alice@...?tls-psk-file=FILE) in require mode; a wrong PSK key
# and an unknown identity fail; require mode refuses a plain nbd://
# client; on mode serves plain and TLS clients; off mode refuses nbds://;
# --tls-verify-peer accepts the client certificate of our CA and refuses a
# client without a certificate, one from another CA, an expired one and a
# revoked one, each with a log line naming the reason and the peer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo certtool psktool truncate
is_our_server || skip "TLS options are specific to nbd-serverd"

tls_fixture 8M alice bob
# The same identity with another key.
make_psk "$T/wrong.psk" alice

# size_is URI: nbdinfo --size of URI must be 8 MiB.
size_is()
{
    local size
    size=$(tmo nbdinfo --size "$1") || fail "nbdinfo --size $1 failed"
    [ "$size" = 8388608 ] || fail "nbdinfo --size $1 said $size"
    step "nbdinfo --size $1: $size"
}

# log_has REGEX: the server log must contain a line matching REGEX.
log_has()
{
    grep -E -q "$1" "$SERVER_LOG" ||
        fail "the server log has no line matching '$1'"
    step "server log: $(grep -E "$1" "$SERVER_LOG" | tail -n 1)"
}

step "require mode, X.509 and PSK together"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-psk "$psk"
size_is "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
size_is "$(tls_uri "$addr" disk "tls-certificates=$pki/nocert")"
size_is "$(tls_uri localhost:$port disk "tls-certificates=$pki/nocert")"
size_is "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
size_is "$(tls_uri "$addr" disk "tls-psk-file=$psk" bob)"
tmo nbdinfo --json "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)" \
    >"$T/info.json" || fail "nbdinfo --json over TLS failed"
grep -q '"protocol": "newstyle-fixed"' "$T/info.json" ||
    fail "nbdinfo --json: $(cat "$T/info.json")"
grep -q '"TLS": true' "$T/info.json" || fail "nbdinfo does not report TLS"
tmo nbdinfo --list "$(tls_uri "$addr" "" "tls-psk-file=$psk" alice)" \
    >"$T/list.txt" || fail "nbdinfo --list over TLS failed"
grep -q 'export="disk"' "$T/list.txt" || fail "list: $(cat "$T/list.txt")"

expect_fail "PSK with the wrong key" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-psk-file=$T/wrong.psk" alice)"
log_has "127\.0\.0\.1:[0-9]+: TLS handshake failed: "
expect_fail "PSK with an unknown identity" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-psk-file=$psk" carol)"
expect_fail "plain nbd:// in require mode" nbdinfo --size "nbd://$addr/disk"
log_has "127\.0\.0\.1:[0-9]+: plain-text NBD_OPT_[A-Z_]+ refused: TLS is required"
expect_fail "plain nbd:// listing in require mode" \
    nbdinfo --list "nbd://$addr/"
size_is "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
stop_server

step "on mode: plain and TLS clients"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk" --tls=on --tls-certs "$pki/server"
size_is "nbd://$addr/disk"
size_is "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
size_is "nbd://$addr/disk"
expect_fail "PSK against a server without PSK" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
stop_server

step "off mode: STARTTLS is unsupported"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk"
expect_fail "nbds:// against --tls=off" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
size_is "nbd://$addr/disk"
stop_server

step "--tls-verify-peer"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-verify-peer
size_is "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
expect_fail "a client without a certificate" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-certificates=$pki/nocert")"
log_has "127\.0\.0\.1:[0-9]+: TLS handshake failed: .*(certificate|Certificate)"
expect_fail "a client certificate from another CA" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-certificates=$pki/othca")"
log_has "TLS handshake failed: peer certificate not trusted: .*issuer is unknown"
expect_fail "an expired client certificate" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-certificates=$pki/expired")"
log_has "TLS handshake failed: peer certificate not trusted: .*expired"
expect_fail "a revoked client certificate" \
    nbdinfo --size "$(tls_uri "$addr" disk "tls-certificates=$pki/revoked")"
log_has "TLS handshake failed: peer certificate not trusted: .*revoked"
size_is "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
stop_server
step "pass"
