#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS over an RBD export: nbdcopy with 4 connections into the export and
# back out over X.509 TLS (--tls=require), checked by sha256, on a
# server with two loops.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires nbdcopy certtool sha256sum

pki=$T/pki
make_pki "$pki"
new_image 32M
make_random "$T/src.img" 32M
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=rbd:$IMG" --tls=require \
    --tls-certs "$pki/server"
u=$(tls_uri "$addr" disk "tls-certificates=$pki/client")
tmo nbdcopy --connections=4 --flush "$T/src.img" "$u" ||
    fail "nbdcopy into the export over TLS failed"
make_image "$T/out.img" 32M
tmo nbdcopy --connections=4 "$u" "$T/out.img" ||
    fail "nbdcopy out of the export over TLS failed"
[ "$(sha256sum <"$T/src.img")" = "$(sha256sum <"$T/out.img")" ] ||
    fail "sha256 differs after the TLS round trip"
step "TLS round trip: sha256 matches"
rc=0
tmo nbdcopy "nbd://$addr/disk" "$T/plain.img" >/dev/null 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "a plaintext client was served despite --tls=require"
step "plaintext refused"
stop_server
