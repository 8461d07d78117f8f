#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# --tls-priority is used as given, on any CPU: a ChaCha20-only string
# makes gnutls-cli (GnuTLS's default cipher order, through a relay that
# does NBD's STARTTLS for it) and nbdc (whose own default puts ChaCha20
# last on a CPU with AES) negotiate ChaCha20-Poly1305, over PSK and X.509;
# and a plain NORMAL gets no server precedence added, so a GnuTLS client
# gets its own choice for TLS 1.3 PSK, ChaCha20 again.  The start-up line
# says the string is the configured one, and the server's log names the
# cipher of every connection.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool psktool gnutls-cli python3 truncate
is_our_server || skip "--tls-priority and the TLS log are nbd-serverd's"

tls_fixture 1M alice
key=$(sed -n 's/^alice://p' "$psk")
cli_psk=(--priority "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" --pskusername alice
    --pskkey "$key")
cli_x509=(--x509cafile "$pki/client/ca-cert.pem")


# start PRIORITY: the server with PRIORITY, and a relay in front of it.
start()
{
    addr=127.0.0.1:$(free_port)
    start_server -l "$addr" -e "disk=$disk" --tls=require \
        --tls-certs "$pki/server" --tls-psk "$psk" --tls-priority "$1"
    grep -q -F "priority $1 (as configured)" "$SERVER_LOG" ||
        fail "the start-up line does not name '$1' as configured: $(grep priority "$SERVER_LOG")"
    starttls_relay "$addr"
}

chacha_only="NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305"
step "--tls-priority $chacha_only"
start "$chacha_only"
n=$(tls_logged)
c=$(gnutls_cli_cipher "$T/cli-psk.out" "${cli_psk[@]}")
expect_tls_cipher "gnutls-cli, PSK" CHACHA20-POLY1305 "$c" "$n"
n=$(tls_logged)
c=$(gnutls_cli_cipher "$T/cli-x509.out" "${cli_x509[@]}")
expect_tls_cipher "gnutls-cli, X.509" CHACHA20-POLY1305 "$c" "$n"
n=$(tls_logged)
nbdc "$T/nbdc-psk.json" info --json "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
expect_tls_cipher "nbdc, PSK" CHACHA20-POLY1305 "$(json_tls_cipher "$T/nbdc-psk.json")" "$n"
n=$(tls_logged)
nbdc "$T/nbdc-x509.json" info --json "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
expect_tls_cipher "nbdc, X.509" CHACHA20-POLY1305 "$(json_tls_cipher "$T/nbdc-x509.json")" "$n"
stop_server

step "--tls-priority NORMAL: the client's order, nothing added"
start NORMAL
n=$(tls_logged)
c=$(gnutls_cli_cipher "$T/cli-psk2.out" "${cli_psk[@]}")
expect_tls_cipher "gnutls-cli, PSK" CHACHA20-POLY1305 "$c" "$n"
stop_server
