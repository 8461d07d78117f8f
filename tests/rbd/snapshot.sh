#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# rbd = POOL/IMAGE@SNAP serves the snapshot read-only: the data as it
# was at the snapshot, writes refused, while the image itself has moved
# on.  Also: a config file export with ceph-conf, and an image that does
# not exist fails the start with a message naming it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires qemu-io nbdinfo

new_image 16M
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=rbd:$IMG"
tmo qemu-io -f raw "$(uri disk)" -c 'write -P 0xa1 0 1M' >/dev/null ||
    fail "first write failed"
rbdc snap create "$IMG@s1" || fail "rbd snap create failed"
tmo qemu-io -f raw "$(uri disk)" -c 'write -P 0xb2 0 1M' >/dev/null ||
    fail "second write failed"
stop_server

cat >"$T/conf" <<CONF
[export snap]
rbd = $IMG@s1
ceph-conf = $CEPH_CONF
[export live]
rbd = $IMG
ceph-conf = $CEPH_CONF
CONF
start_server -c "$T/conf" -l "127.0.0.1:$port"
tmo nbdinfo --json "$(uri snap)" >"$T/info.json" || fail "nbdinfo failed"
grep -q '"is_read_only": true' "$T/info.json" ||
    fail "the snapshot export is not read-only"
step "snapshot export is read-only"
tmo qemu-io -r -f raw "$(uri snap)" -c 'read -P 0xa1 0 1M' >"$T/r.out" 2>&1 ||
    { cat "$T/r.out" >&2; fail "the snapshot does not hold the data at snapshot time"; }
tmo qemu-io -r -f raw "$(uri live)" -c 'read -P 0xb2 0 1M' >"$T/r.out" 2>&1 ||
    { cat "$T/r.out" >&2; fail "the image does not hold the later data"; }
step "snapshot has 0xa1, the image 0xb2"
rc=0
tmo qemu-io -f raw "$(uri snap)" -c 'write -P 1 0 4k' >"$T/w.out" 2>&1 || rc=$?
[ "$rc" != 0 ] || grep -qi 'error\|fail\|read-only' "$T/w.out" ||
    fail "a write to the snapshot export succeeded"
step "a write to the snapshot is refused"
stop_server

step "a missing image fails the start, naming it"
rc=0
timeout 60 "$SERVER_BIN" -f -l "127.0.0.1:$port" -e "x=rbd:rbd/no-such-image" \
    >"$T/miss.log" 2>&1 || rc=$?
cat "$T/miss.log"
[ "$rc" = 2 ] || fail "exit status $rc for a missing image, expected 2"
grep -q 'rbd rbd/no-such-image' "$T/miss.log" ||
    fail "the message does not name the image"
step "exit status $rc"
