#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The --tls options at start-up: a usage mistake, a missing certificate
# file, a key that does not match its certificate, a malformed PSK line
# (named with its line number), a PSK file that is a directory and a bad
# priority string each stop the daemon with exit status 2 and a message
# naming the option or the file; --help lists the options.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool psktool truncate
is_our_server || skip "TLS options are specific to nbd-serverd"

disk=$T/disk.img
make_image "$disk" 1M
pki=$T/pki
make_pki "$pki"
make_psk "$T/good.psk" alice bob

# refused STATUS REGEX ARGS...: the daemon must exit with STATUS at once
# and print a message matching REGEX.
refused()
{
    local want=$1 regex=$2 rc=0
    shift 2
    tmo "$BUILD/nbd-serverd" -f -l "127.0.0.1:$(free_port)" -e "disk=$disk" \
        "$@" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] ||
        fail "$*: exit status $rc, want $want ($(cat "$T/out"))"
    grep -E -q -- "$regex" "$T/out" ||
        fail "$*: message '$(cat "$T/out")' does not match '$regex'"
    step "refused with $rc: $(head -n 1 "$T/out")"
}

"$BUILD/nbd-serverd" --help >"$T/help"
for opt in --tls=off --tls-certs --tls-psk --tls-verify-peer --tls-priority; do
    grep -q -- "$opt" "$T/help" || fail "--help does not mention $opt"
done

refused 2 "--tls=maybe: expected off, on or require" --tls=maybe
refused 2 "tls=require needs tls-certs or tls-psk \(--tls-certs, --tls-psk\)" \
    --tls=require
refused 2 "tls-verify-peer needs tls-certs \(--tls-certs\)" --tls=on \
    --tls-psk "$T/good.psk" --tls-verify-peer

refused 2 "--tls-certs: TLS certificate directory $T/nosuch: No such file or directory" \
    --tls=on --tls-certs "$T/nosuch"
mkdir -p "$T/nokey"
cp "$pki/server/ca-cert.pem" "$pki/server/server-cert.pem" "$T/nokey/"
refused 2 "$T/nokey/server-key.pem: No such file or directory" --tls=on \
    --tls-certs "$T/nokey"
refused 2 "$pki/badkey/server-key.pem does not match $pki/badkey/server-cert.pem" \
    --tls=require --tls-certs "$pki/badkey"
printf 'not a certificate\n' >"$T/nokey/server-key.pem"
refused 2 "$T/nokey/server-cert.pem or $T/nokey/server-key.pem: " --tls=on \
    --tls-certs "$T/nokey"

refused 2 "--tls-psk: TLS PSK file $T/nosuch.psk: No such file or directory" --tls=on \
    --tls-psk "$T/nosuch.psk"
refused 2 "$T: not a regular file" --tls=on --tls-psk "$T"
{
    cat "$T/good.psk"
    echo 'carol:12345'
} >"$T/odd.psk"
refused 2 "$T/odd.psk:3: key has an odd number of hex digits" --tls=on \
    --tls-psk "$T/odd.psk"
printf '# keys\n\nalice:00112233\nno colon here\n' >"$T/nocolon.psk"
refused 2 "$T/nocolon.psk:4: expected identity:hexkey" --tls=on \
    --tls-psk "$T/nocolon.psk"
printf 'alice:0011zz33\n' >"$T/nothex.psk"
refused 2 "$T/nothex.psk:1: key is not hexadecimal" --tls=on \
    --tls-psk "$T/nothex.psk"
printf 'alice:00\nalice:11\n' >"$T/twice.psk"
refused 2 "$T/twice.psk:2: identity 'alice' given twice" --tls=on \
    --tls-psk "$T/twice.psk"
refused 2 "TLS priority string 'NORMAL:.NO-SUCH-THING': bad syntax at" \
    --tls=on --tls-certs "$pki/server" --tls-priority NORMAL:+NO-SUCH-THING

step "good settings start"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" --tls=on \
    --tls-certs "$pki/server" --tls-psk "$T/good.psk" \
    --tls-priority "NORMAL:-VERS-ALL:+VERS-TLS1.3"
stop_server
step "pass"
