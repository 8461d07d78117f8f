#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu 10 (qemu-img, qemu-io) writing to nbd-serverd with extended
# headers: qemu-io pattern writes at offsets above 4 GiB and across
# 4 GiB, with and without FUA, land in the image file at those offsets;
# write -z and discard over ranges above 4 GiB; qemu-img convert into the
# export and qemu-img compare against the source.  No reply may be traced
# as non-compliant (nbd_*_compliance).
#
# qemu 10's client sends NBD_CMD_WRITE with extended headers without
# NBD_CMD_FLAG_PAYLOAD_LEN (its trace: flags = 0x0 or 0x1, type = 1);
# every write fails while the server refuses that.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate dd python3 cmp
chroot_requires qemu-img qemu-io

GiB=$((1024 * 1024 * 1024))
MiB=$((1024 * 1024))
img=$T/disk.img
make_image "$img" 16G
sock=$T/nbd.sock
start_server -v -l "unix:$sock" -e "disk=$img"
u="nbd+unix:///disk?socket=$sock"

qemu_io()
{
    in_chroot qemu-io -T 'nbd_*compliance' -f raw "$@" "$u" >"$T/io.out" 2>&1 ||
        { cat "$T/io.out" >&2; fail "qemu-io $*"; }
    if grep -q 'failed\|compliance' "$T/io.out"; then
        cat "$T/io.out" >&2
        grep 'NBD_CMD\|PAYLOAD_LEN' "$SERVER_LOG" | tail -n 3 >&2 || true
        fail "qemu-io $*: an operation failed or a reply was non-compliant"
    fi
}

# file_has OFFSET LENGTH BYTE: the image file holds BYTE there.
file_has()
{
    python3 - "$img" "$@" <<'PY' || fail "image file at $1+$2 is not $3"
import sys
path, off, n, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 0)
with open(path, "rb") as f:
    f.seek(off)
    sys.exit(f.read(n) != bytes([byte]) * n)
PY
}

step "qemu $(chroot_version qemu-io): qemu-io pattern writes above 4 GiB"
qemu_io -c "write -P 0xa1 $((4 * GiB - 512)) 1024" \
    -c "write -P 0xa5 $((5 * GiB)) 1M" \
    -c "write -f -P 0x5a $((15 * GiB + 3 * MiB)) 64k" \
    -c "aio_write -P 0x11 $((7 * GiB)) 256k" \
    -c "aio_write -P 0x22 $((7 * GiB + 256 * 1024)) 256k" -c aio_flush \
    -c "read -P 0xa5 $((5 * GiB)) 1M"
file_has $((4 * GiB - 512)) 1024 0xa1
file_has $((5 * GiB)) $MiB 0xa5
file_has $((15 * GiB + 3 * MiB)) 65536 0x5a
file_has $((7 * GiB)) 262144 0x11
file_has $((7 * GiB + 262144)) 262144 0x22
file_has $((1 * GiB)) $MiB 0   # 5 GiB cut to 32 bits
step "the writes are in the image file, nothing at the 32-bit offsets"

step "qemu-io write -z and discard above 4 GiB"
qemu_io -c "write -z $((5 * GiB)) 512k" -c "discard $((7 * GiB)) 512k" \
    -c "read -P 0 $((5 * GiB)) 512k" -c "read -P 0xa5 $((5 * GiB + 512 * 1024)) 512k"
file_has $((5 * GiB)) 524288 0
file_has $((5 * GiB + 524288)) 524288 0xa5

step "qemu-img convert into the export, then compare"
make_image "$T/src.img" 6G
make_random "$T/chunk" 4M
write_at "$T/src.img" $((4 * GiB - 2 * MiB)) "$T/chunk"
write_at "$T/src.img" $((5 * GiB + 123 * 4096)) "$T/chunk"
stop_server
make_image "$img" 6G
start_server -v -l "unix:$sock" -e "disk=$img"
in_chroot qemu-img -T 'nbd_*compliance' convert -n -f raw -O raw "$T/src.img" "$u" \
    >"$T/conv.out" 2>&1 || { cat "$T/conv.out" >&2; fail "qemu-img convert into the export"; }
! grep -q compliance "$T/conv.out" || fail "non-compliant reply: $(cat "$T/conv.out")"
in_chroot qemu-img compare -f raw -F raw "$T/src.img" "$u" >"$T/cmp.out" 2>&1 ||
    fail "qemu-img compare after convert: $(cat "$T/cmp.out")"
cmp "$T/src.img" "$img" || fail "the image differs from the source"
stop_server
