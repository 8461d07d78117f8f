#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu-img against the server: convert into an export (with parallel,
# out-of-order writes and zeroing of holes) and back out, compare, the
# allocation map of a sparse export, info, and bench with many requests in
# flight.  TCP for everything, a Unix socket for one compare.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires qemu-img python3 truncate dd cmp
MiB=$((1024 * 1024))

# src: 16 MiB with data in three places and holes between.
src=$T/src.img
make_sparse "$src" 16M 0:1M $((5 * MiB)):2M $((15 * MiB + 8192)):4K

# disk: the target, full of random bytes, so that converting must also
# overwrite the holes of src with zeroes.
disk=$T/disk.img
make_random "$disk" 16M

# sparse: a known layout for qemu-img map.
sparse=$T/sparse.img
make_sparse "$sparse" 8M "$MiB:64K"

# bench: an empty export for qemu-img bench.
bench=$T/bench.img
make_image "$bench" 16M

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" -e "sparse=$sparse" \
    -e "bench=$bench"

step "qemu-img info"
tmo qemu-img info --output=json -f raw "$(uri disk)" >"$T/info.json" ||
    fail "qemu-img info failed"
python3 - "$T/info.json" <<'EOF' || fail "qemu-img info: wrong answer"
import json, sys
with open(sys.argv[1]) as f:
    info = json.load(f)
if info.get("virtual-size") != 16 * 1024 * 1024 or info.get("format") != "raw":
    print("  info: %r" % info, file=sys.stderr)
    sys.exit(1)
EOF
tmo qemu-img info -f raw "$(uri sparse)" >"$T/info.txt" ||
    fail "qemu-img info of sparse failed"
grep -q 'virtual size: 8 MiB' "$T/info.txt" ||
    fail "qemu-img info of sparse lacks the size: $(cat "$T/info.txt")"

step "qemu-img convert file -> export (8 coroutines, out of order)"
tmo qemu-img convert -n -W -m 8 -f raw -O raw "$src" "$(uri disk)" ||
    fail "qemu-img convert into the export failed"
tmo qemu-img compare -f raw -F raw "$src" "$(uri disk)" ||
    fail "qemu-img compare: the export differs from the source"
cmp "$src" "$disk" || fail "the image file differs from the source"

step "qemu-img convert export -> file"
tmo qemu-img convert -f raw -O raw "$(uri disk)" "$T/out.img" ||
    fail "qemu-img convert out of the export failed"
same_content "$src" "$T/out.img" "$disk"

step "qemu-img convert again, serially (-m 1), from a random source"
make_random "$T/src2.img" 16M
tmo qemu-img convert -n -m 1 -f raw -O raw "$T/src2.img" "$(uri '')" ||
    fail "serial qemu-img convert failed"
tmo qemu-img compare -f raw -F raw "$T/src2.img" "$(uri disk)" ||
    fail "qemu-img compare after the serial convert failed"
same_content "$T/src2.img" "$disk"

step "qemu-img map of a sparse export"
tmo qemu-img map --output=json -f raw "$(uri sparse)" >"$T/map.json" ||
    fail "qemu-img map failed"
python3 - "$T/map.json" <<'EOF' || fail "qemu-img map: wrong layout"
import json, sys
MiB = 1024 * 1024
with open(sys.argv[1]) as f:
    entries = json.load(f)
merged = []
for e in entries:
    key = (e["data"], e["zero"])
    if merged and merged[-1][2] == key and \
            merged[-1][0] + merged[-1][1] == e["start"]:
        merged[-1][1] += e["length"]
    else:
        merged.append([e["start"], e["length"], key])
hole, data = (False, True), (True, False)
want = [[0, MiB, hole], [MiB, 65536, data],
        [MiB + 65536, 7 * MiB - 65536, hole]]
if merged != want:
    print("  got:  %s" % merged, file=sys.stderr)
    print("  want: %s" % want, file=sys.stderr)
    sys.exit(1)
EOF

step "qemu-img bench: 2000 writes of 4 KiB, 32 in flight"
tmo qemu-img bench -f raw -w -c 2000 -d 32 -s 4k -S 8k --pattern=0x5c \
    "$(uri bench)" >"$T/bench.out" || fail "qemu-img bench -w failed"
tmo qemu-img bench -f raw -c 2000 -d 32 -s 4k -S 8k "$(uri bench)" \
    >"$T/bench.out" || fail "qemu-img bench (read) failed"
python3 - "$bench" <<'EOF' || fail "the bench image holds the wrong data"
import sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
for i in range(2000):
    off = i * 8192
    if data[off:off + 4096] != b"\x5c" * 4096:
        sys.exit("  block at %d lacks the 0x5c pattern" % off)
    if data[off + 4096:off + 8192] != bytes(4096):
        sys.exit("  gap at %d was written" % (off + 4096))
if data[2000 * 8192:] != bytes(len(data) - 2000 * 8192):
    sys.exit("  data past the benchmarked area")
EOF
server_alive
stop_server

step "qemu-img over a Unix socket"
start_server -l "unix:$T/nbd.sock" -e "disk=$disk" -e "sparse=$sparse"
tmo qemu-img compare -f raw -F raw "$T/src2.img" "$(uri disk)" ||
    fail "qemu-img compare over the Unix socket failed"
tmo qemu-img convert -n -f raw -O raw "$src" "$(uri disk)" ||
    fail "qemu-img convert over the Unix socket failed"
tmo qemu-img compare -f raw -F raw "$src" "$(uri disk)" ||
    fail "qemu-img compare over the Unix socket failed"
stop_server
same_content "$src" "$disk"
step "pass"
