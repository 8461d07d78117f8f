#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu 10 (qemu-img, qemu-io) reading from nbd-serverd: qemu negotiates
# extended headers (the server's log says so); qemu-img info gives the
# 16 GiB size; qemu-img map shows the data written above 4 GiB where it
# is and holes elsewhere; qemu-img compare finds the export equal to its
# image, and a copy that differs in one byte above 4 GiB different;
# qemu-img convert from the export gives the same bytes; qemu-io reads
# the patterns at offsets above 4 GiB (and across 4 GiB).  qemu traces
# every reply it finds non-compliant (nbd_*_compliance): none may appear,
# and a positive control proves tracing works.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate dd python3 cmp
chroot_requires qemu-img qemu-io

GiB=$((1024 * 1024 * 1024))
img=$T/disk.img
make_image "$img" 16G
# Patterns at 4 GiB - 512 (across 4 GiB), 5 GiB and 15 GiB + 3 MiB.
python3 - "$img" <<'PY'
import sys
G = 1 << 30
with open(sys.argv[1], "r+b") as f:
    for off, byte, n in ((4 * G - 512, 0xa1, 1024), (5 * G, 0xa5, 1 << 20),
                         (15 * G + (3 << 20), 0x5a, 64 << 10)):
        f.seek(off)
        f.write(bytes([byte]) * n)
PY

sock=$T/nbd.sock
start_server -v -l "unix:$sock" -e "disk=$img"
u="nbd+unix:///disk?socket=$sock"
TRACE=(-T 'nbd_*compliance' -T nbd_receive_negotiate_size_flags)

# qemu_ok OUT CMD...: run a qemu tool with the compliance traces on; fail
# if it fails or traces a non-compliant reply, or if the control trace
# (the export size at negotiation) is missing.
qemu_ok()
{
    local out=$1
    shift
    in_chroot "$@" >"$out" 2>&1 || { cat "$out" >&2; fail "$* failed"; }
    if grep -q 'compliance\|non-compliant' "$out"; then
        grep 'compliance\|non-compliant' "$out" >&2
        fail "$1: qemu traced a non-compliant reply"
    fi
    grep -q "^nbd_receive_negotiate_size_flags Size is $((16 * GiB))" "$out" ||
        fail "$1: no negotiation trace (is tracing working?): $(head -c 300 "$out")"
}

step "qemu $(chroot_version qemu-img): qemu-img info"
qemu_ok "$T/info.out" qemu-img "${TRACE[@]}" info --output=json -f raw "$u"
grep -q "\"virtual-size\": $((16 * GiB))" "$T/info.out" ||
    fail "qemu-img info: $(cat "$T/info.out")"
grep -q "serving export 'disk', structured replies, extended headers" \
    "$SERVER_LOG" || fail "qemu did not negotiate extended headers"

step "qemu-img map"
qemu_ok "$T/map.out" qemu-img "${TRACE[@]}" map --output=json -f raw "$u"
grep -v '^nbd_' "$T/map.out" >"$T/map.json"
python3 - "$T/map.json" <<'PY' || fail "qemu-img map: $(cat "$T/map.json")"
import json, sys
G, M = 1 << 30, 1 << 20
m = json.load(open(sys.argv[1]))
end = 0
for e in m:
    assert e["start"] == end, "gap at %d" % end
    end += e["length"]
assert end == 16 * G, "map ends at %d" % end
data = [(e["start"], e["length"]) for e in m if e["data"]]
def covered(off, n):
    return any(s <= off and off + n <= s + l for s, l in data)
for off, n in ((4 * G - 512, 1024), (5 * G, M), (15 * G + 3 * M, 64 << 10)):
    assert covered(off, n), "data at %d+%d not mapped as data: %s" % (off, n, data)
assert sum(l for _, l in data) < 64 * M, "too much data: %s" % data
assert not covered(8 * G, 4096), "8 GiB mapped as data"
print("  %d extents, data %s" % (len(m), data))
PY

step "qemu-img compare"
qemu_ok "$T/cmp.out" qemu-img "${TRACE[@]}" compare -f raw -F raw "$img" "$u"
cp --sparse=always "$img" "$T/other.img"
printf '\001' | dd of="$T/other.img" bs=1 seek=$((15 * GiB + 7)) conv=notrunc status=none
rc=0
in_chroot qemu-img compare -f raw -F raw "$T/other.img" "$u" >"$T/cmp2.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "qemu-img compare with a changed byte: exit $rc, want 1: $(cat "$T/cmp2.out")"
grep -q "offset $((15 * GiB))" "$T/cmp2.out" ||
    fail "qemu-img compare names the wrong offset: $(cat "$T/cmp2.out")"
step "compare found the changed byte: $(head -n 1 "$T/cmp2.out")"

step "qemu-img convert from the export"
qemu_ok "$T/conv.out" qemu-img "${TRACE[@]}" convert -f raw -O raw "$u" "$T/copy.img"
cmp "$img" "$T/copy.img" || fail "converted copy differs"

step "qemu-io reads above 4 GiB"
qemu_ok "$T/io.out" qemu-io "${TRACE[@]}" -r -f raw \
    -c "read -P 0xa1 $((4 * GiB - 512)) 1024" \
    -c "read -P 0xa5 $((5 * GiB)) 1M" \
    -c "read -P 0x5a $((15 * GiB + 3 * 1024 * 1024)) 64k" \
    -c "read -P 0 $((6 * GiB)) 2M" \
    -c "read -P 0 $((16 * GiB - 4096)) 4096" "$u"
if grep -q 'Pattern verification failed\|failed' "$T/io.out"; then
    cat "$T/io.out" >&2
    fail "qemu-io pattern reads"
fi
[ "$(grep -c '^read ' "$T/io.out")" = 5 ] || fail "qemu-io: not 5 reads: $(cat "$T/io.out")"
step "qemu-io: 5 pattern reads"

stop_server
