#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Our client, nbdc, against today's servers in the chroot:
#   nbdkit 1.42 (file plugin), which does not offer extended headers:
#   nbdc info says structured replies without extended headers;
#   qemu-storage-daemon 10 (an NBD export of a raw file), which does:
#   nbdc info says extended headers.
# With each, over a Unix socket and TCP: nbdc info --map finds the data of
# a 6 GiB sparse image where it is, across and above 4 GiB (64-bit
# extents from qemu); nbdc copy of another such image into the export and
# back gives the same content (in the image file too); a short nbdc bench
# completes requests.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate dd sha256sum python3
chroot_requires nbdkit qemu-storage-daemon

GiB=$((1024 * 1024 * 1024))
src=$T/src.img
make_image "$src" 6G
make_random "$T/a" 4M
write_at "$src" $((4 * GiB - 1024 * 1024)) "$T/a"
write_at "$src" $((5 * GiB + 777 * 4096)) "$T/a"
src2=$T/src2.img
make_image "$src2" 6G
make_random "$T/b" 3M
write_at "$src2" $((4 * GiB - 2 * 1024 * 1024)) "$T/b"
write_at "$src2" $((6 * GiB - 3 * 1024 * 1024)) "$T/b"
peer_log=$T/peer.log

# check_peer NAME URI IMAGE WANT_EXTENDED
check_peer()
{
    local name=$1 u=$2 image=$3 ext=$4
    step "nbdc info --json against $name: $u"
    nbdc "$T/info.json" info --json "$u"
    python3 - "$T/info.json" "$ext" <<'PY' || fail "nbdc info against $name: $(cat "$T/info.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["structured"] is True, "structured %r" % j["structured"]
assert j["extended"] is (sys.argv[2] == "1"), "extended %r" % j["extended"]
assert j["exports"][0]["export-size"] == 6 << 30, j["exports"][0]["export-size"]
PY
    # The export holds a sparse copy of src: its map first.
    step "nbdc info --map against $name"
    nbdc "$T/map.out" info --map "$u"
    python3 - "$T/map.out" <<'PY' || fail "nbdc info --map against $name: $(cat "$T/map.out")"
import re, sys
G, M = 1 << 30, 1 << 20
ext = []
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 3 and f[0].isdigit():
        ext.append((int(f[0]), int(f[1]), int(f[2])))
assert ext, "no extents"
assert sum(n for _, n, _ in ext) == 6 * G, "map covers %d" % sum(n for _, n, _ in ext)
data = [(o, n) for o, n, t in ext if t & 1 == 0]
for off in (4 * G - M, 5 * G + 777 * 4096):
    assert any(o <= off < o + n for o, n in data), "no data at %d: %s" % (off, data)
assert not any(o <= 3 * G < o + n for o, n in data), "3 GiB is data: %s" % data
print("  %d extents, data %s" % (len(ext), data))
PY
    step "nbdc copy into $name and back"
    nbdc "$T/copy.out" copy "$src2" "$u" --connections 4
    rm -f "$T/back.img"
    nbdc "$T/copy.out" copy "$u" "$T/back.img" --connections 2
    same_sparse "$src2" "$image" "$T/back.img"
    step "nbdc bench against $name"
    nbdc "$T/bench.out" bench "$u" --rw randrw --bs 64K --time 2 \
        --size 1G --connections 2 --iodepth 8
    grep -E -q -i 'iops' "$T/bench.out" || fail "nbdc bench printed no IOPS: $(cat "$T/bench.out")"
    step "bench: $(grep -i iops "$T/bench.out" | tail -n 1)"
}

# nbdkit 1.42 on a Unix socket, then TCP.
for transport in unix tcp; do
    img=$T/nbdkit.img
    cp --sparse=always "$src" "$img"
    if [ $transport = unix ]; then
        PEER_ADDR=unix:$T/nbdkit.sock
        args=(-U "$T/nbdkit.sock")
        u="nbd+unix:///disk?socket=$T/nbdkit.sock"
    else
        port=$(free_port)
        PEER_ADDR=127.0.0.1:$port
        args=(-i 127.0.0.1 -p "$port")
        u="nbd://127.0.0.1:$port/disk"
    fi
    start_chroot_peer "nbdkit $(chroot_version nbdkit)" "$peer_log" \
        nbdkit -f "${args[@]}" -e disk file "$img"
    check_peer nbdkit "$u" "$img" 0
    stop_chroot_peer
done

# qemu-storage-daemon 10.
for transport in unix tcp; do
    img=$T/qsd.img
    cp --sparse=always "$src" "$img"
    if [ $transport = unix ]; then
        PEER_ADDR=unix:$T/qsd.sock
        addr="addr.type=unix,addr.path=$T/qsd.sock"
        u="nbd+unix:///disk?socket=$T/qsd.sock"
    else
        port=$(free_port)
        PEER_ADDR=127.0.0.1:$port
        addr="addr.type=inet,addr.host=127.0.0.1,addr.port=$port"
        u="nbd://127.0.0.1:$port/disk"
    fi
    start_chroot_peer "qemu-storage-daemon $(chroot_version qemu-storage-daemon)" \
        "$peer_log" qemu-storage-daemon \
        --blockdev "driver=file,node-name=file0,filename=$img" \
        --blockdev driver=raw,node-name=disk0,file=file0 \
        --nbd-server "$addr" \
        --export type=nbd,id=exp0,node-name=disk0,name=disk,writable=on
    check_peer qemu-storage-daemon "$u" "$img" 1
    stop_chroot_peer
done
