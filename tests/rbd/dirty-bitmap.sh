#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Incremental backup of an RBD export: dirty bitmaps kept in a sidecar
# file beside an RBD image.  A full backup with nbdc copy, qemu-io writes
# and zeroes, a checkpoint through the control socket, then `nbdc copy
# --dirty-bitmap` of the frozen bitmap: it copies exactly the bitmap's
# dirty bytes, and the backup equals both the export (read back through
# NBD) and the image itself (`rbd export`).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

new_image 32M
sock=$T/s.sock
csock=$T/control.sock
cat >"$T/c.conf" <<CONF
[server]
control = $csock
[export disk]
rbd = $IMG
ceph-conf = $CEPH_CONF
dirty-bitmap = b0
dirty-bitmap-file = $T/disk.bitmaps
CONF
start_server -c "$T/c.conf" -l "unix:$sock"
u="nbd+unix:///disk?socket=$sock"
ctl()
{
    tmo "$BUILD/nbd-serverd-ctl" -s "$csock" "$@"
}

tmo qemu-io -f raw "$u" -c 'write -P 1 0 8M' >/dev/null
step "a full backup, then b1 starts clean"
ctl checkpoint disk b0 b1 >/dev/null || fail "checkpoint b0 b1"
nbdc "$T/full.out" copy "$u" "$T/backup.img"
ctl bitmap-remove disk b0 >/dev/null || fail "bitmap-remove b0"

step "writes and zeroes, then a checkpoint and an incremental of b1"
tmo qemu-io -f raw "$u" -c 'write -P 2 4M 100k' -c 'write -z 16M 1M' \
    -c 'write -P 3 31M 4k' >/dev/null
ctl checkpoint disk b1 b2 >/dev/null || fail "checkpoint b1 b2"
ctl --json bitmaps disk >"$T/bitmaps.json" || fail "bitmaps"
want=$(python3 -c 'import json, sys
print(next(b["dirty-bytes"] for b in json.load(open(sys.argv[1]))["bitmaps"]
           if b["name"] == "b1"))' "$T/bitmaps.json")
nbdc "$T/incr.out" copy --dirty-bitmap b1 "$u" "$T/backup.img"
copied=$(awk '/^copied/ {print $2}' "$T/incr.out")
step "copied $copied bytes; b1 has $want dirty"
[ "$copied" = "$want" ] || fail "copied $copied, b1 has $want dirty"
# 100k at 4M covers two 64 KiB blocks, 1M sixteen, 4k one.
[ "$copied" = $((19 * 65536)) ] || fail "copied $copied, want 19 blocks"

nbdc "$T/now.out" copy "$u" "$T/now.img"
same_content "$T/now.img" "$T/backup.img" ||
    fail "the incremental backup differs from the export"
stop_server
rbdc export "$IMG" "$T/exported.img" >/dev/null 2>&1 || fail "rbd export"
same_content "$T/exported.img" "$T/backup.img" ||
    fail "the incremental backup differs from the RBD image"
step ok
