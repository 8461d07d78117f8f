#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS 1.3 KeyUpdate from the client while the server is sending: the
# server's reader processes the KeyUpdate while request coroutines (on
# the same loop or another one) write READ replies into the session.
# $BUILD/tests/tools/nbd-tls-rekey (a small GnuTLS client,
# tests/tools/nbd-tls-rekey.c) keeps 8 reads of 1 MiB in flight and sends
# 12 KeyUpdates during them, every other one asking the server to update
# its keys too.  Every read must return the image's data, each request
# must be answered by the server's own KeyUpdate, and the server must go
# on serving.  Run with one and with two server threads.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool nbdinfo
is_our_server || skip "the TLS client below talks to nbd-serverd's TLS setup"
rekey=$BUILD/tests/tools/nbd-tls-rekey
[ -x "$rekey" ] || fail "$rekey does not exist (run make first)"

pki=$T/pki
make_pki "$pki"
image=$T/disk.img
make_random "$image" 64M

for threads in 1 2; do
    port=$(free_port)
    start_server -l "127.0.0.1:$port" -t "$threads" -e "disk=$image" \
        --tls=require --tls-certs "$pki/server"
    step "12 key updates during 1 MiB reads, $threads server thread(s)"
    tmo "$rekey" 127.0.0.1 "$port" disk "$pki/ca-cert.pem" "$image" 12 \
        >"$T/rekey.out" 2>&1 || {
        cat "$T/rekey.out" >&2
        fail "the client failed with $threads server thread(s)"
    }
    step "$(cat "$T/rekey.out")"
    size=$(tmo nbdinfo --size \
        "$(tls_uri "127.0.0.1:$port" disk "tls-certificates=$pki/client")") ||
        fail "nbdinfo after the key updates"
    [ "$size" = 67108864 ] || fail "nbdinfo said $size"
    server_alive
    stop_server
done
step pass
