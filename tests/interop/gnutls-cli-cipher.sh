#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The default TLS priority on a CPU with AES and carry-less multiply
# instructions: gnutls-cli with GnuTLS's default cipher order (through a
# relay that does NBD's STARTTLS for it) and nbdc, each with PSK and with
# X.509, get AES-GCM, and the server's log names the same cipher for each
# connection.  GnuTLS left to itself picks ChaCha20-Poly1305 for TLS 1.3
# PSK, so the PSK cases fail without the preference.  The server's
# start-up line must agree with /proc/cpuinfo about the CPU; on a CPU
# without those instructions the rest is skipped, saying so.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool psktool gnutls-cli python3 truncate
is_our_server || skip "the TLS priority and its log are nbd-serverd's"

# cpu_flag NAME: /proc/cpuinfo lists NAME among the first CPU's flags
# (x86: "flags", arm64: "Features").
cpu_flag()
{
    sed -n '/^\(flags\|Features\)[[:space:]]*:/{p;q}' /proc/cpuinfo |
        tr -s ' \t' '\n' | grep -qx "$1"
}
case $(uname -m) in
x86_64 | i?86) cpu_flag aes && cpu_flag pclmulqdq && aes_gcm=yes || aes_gcm=no ;;
aarch64) cpu_flag aes && cpu_flag pmull && aes_gcm=yes || aes_gcm=no ;;
*) aes_gcm=no ;;
esac

tls_fixture 1M alice
key=$(sed -n 's/^alice://p' "$psk")

addr=127.0.0.1:$(free_port)
start_server -l "$addr" -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-psk "$psk"
if [ "$aes_gcm" = yes ]; then
    grep -q 'priority .*(default: AES-GCM preferred' "$SERVER_LOG" ||
        fail "the CPU has AES-GCM instructions, the server did not prefer AES-GCM: $(grep priority "$SERVER_LOG")"
else
    grep -q "priority NORMAL (default: GnuTLS's order" "$SERVER_LOG" ||
        fail "the CPU lacks AES-GCM instructions, the server's default is not GnuTLS's: $(grep priority "$SERVER_LOG")"
    skip "the CPU lacks AES or carry-less multiply instructions (GnuTLS's order kept, as the log says): no AES-GCM preference to check"
fi
step "the server prefers AES-GCM, as /proc/cpuinfo says it should"
starttls_relay "$addr"

n=$(tls_logged)
# NORMAL lacks the PSK key exchanges; adding them keeps its cipher order.
c=$(gnutls_cli_cipher "$T/cli-psk.out" --priority "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" \
    --pskusername alice --pskkey "$key")
expect_tls_cipher "gnutls-cli (NORMAL with PSK), PSK" "AES-(128|256)-GCM" "$c" "$n"

n=$(tls_logged)
c=$(gnutls_cli_cipher "$T/cli-x509.out" --x509cafile "$pki/client/ca-cert.pem")
expect_tls_cipher "gnutls-cli (default priority), X.509" "AES-(128|256)-GCM" "$c" "$n"

n=$(tls_logged)
nbdc "$T/nbdc-psk.json" info --json "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)"
expect_tls_cipher "nbdc, PSK" "AES-(128|256)-GCM" "$(json_tls_cipher "$T/nbdc-psk.json")" "$n"

n=$(tls_logged)
nbdc "$T/nbdc-x509.json" info --json "$(tls_uri "$addr" disk "tls-certificates=$pki/client")"
expect_tls_cipher "nbdc, X.509" "AES-(128|256)-GCM" "$(json_tls_cipher "$T/nbdc-x509.json")" "$n"

stop_server
