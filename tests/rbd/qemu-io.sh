#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An RBD export read and written by qemu-io (patterns, unaligned, FUA,
# write-zeroes with and without holes, discard, flush), then nbdcopy
# round trips checked by sha256 and qemu-img compare, and the image read
# back with `rbd export` agrees.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires qemu-io qemu-img nbdcopy sha256sum

new_image 64M
port=$(free_port)
start_server -l "127.0.0.1:$port" -t 2 -e "disk=rbd:$IMG"
u=$(uri disk)

qio "$u" 'write -P 0xab 0 64k' 'read -P 0xab 0 64k'
qio "$u" 'write -P 0x5a 1001 3333' 'read -P 0x5a 1001 3333' \
    'read -P 0xab 0 1001' 'read -P 0xab 4334 61202'
qio "$u" 'write -f -P 0x33 64k 64k' 'read -P 0x33 64k 64k'
qio "$u" 'write -P 0x77 5M 6M' 'write -z 5M 1M' 'write -z -u 6M 4M' \
    'write -z -f 10M 512k' 'read -P 0 5M 5632k' 'read -P 0x77 10752k 512k'
qio "$u" 'write -P 0x44 20M 8M' 'discard 20M 8M' 'flush'
qio "$u" 'aio_write -P 1 40M 4k' 'aio_write -P 2 41M 4k' 'aio_write -P 3 42M 4k' \
    aio_flush 'read -P 1 40M 4k' 'read -P 2 41M 4k' 'read -P 3 42M 4k'

step "negative control: a wrong pattern is noticed"
tmo qemu-io -f raw "$u" -c 'read -P 0x12 0 64k' >"$T/neg.out" 2>&1 || true
if grep -q 'Pattern verification failed' "$T/neg.out"; then
    step "wrong pattern detected"
else
    fail "a wrong pattern went unnoticed"
fi

step "nbdcopy round trip (4 connections)"
make_random "$T/src.img" 64M
tmo nbdcopy --connections=4 --flush "$T/src.img" "$u" ||
    fail "nbdcopy into the export failed"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=4 "$u" "$T/out.img" ||
    fail "nbdcopy out of the export failed"
a=$(sha256sum <"$T/src.img")
b=$(sha256sum <"$T/out.img")
[ "$a" = "$b" ] || fail "sha256 differs after the round trip"
step "sha256 matches"
tmo qemu-img compare -f raw -F raw "$T/src.img" "$u" ||
    fail "qemu-img compare found a difference"
step "qemu-img compare: identical"
rbdc export "$IMG" "$T/export.img" >/dev/null 2>&1 || fail "rbd export failed"
c=$(sha256sum <"$T/export.img")
[ "$a" = "$c" ] || fail "rbd export differs from what was written"
step "rbd export has the data"
stop_server
