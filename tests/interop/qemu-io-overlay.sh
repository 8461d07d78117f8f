#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Copy-on-write overlays (overlay = FILE, -e NAME=PATH,overlay=FILE)
# driven by qemu-io: the export reads as its base at first; partial
# writes keep the base's bytes around them; write-zeroes and discard
# mask the base; many writes in flight; nbdinfo's map shows the base's
# holes and the masked blocks as holes; the base file is unchanged byte
# for byte; after a restart the overlay reads back the same; read-only
# serves an existing overlay as it is; --check-config and the daemon
# refuse an overlay whose base changed size.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "overlays are specific to nbd-serverd"
requires qemu-io qemu-img nbdinfo cmp

# The base: 0x11 in [0, 8M), a hole in [8M, 12M), 0x22 in [12M, 16M).
base=$T/base.img
make_image "$base" 16M
tmo qemu-io -f raw "$base" -c 'write -P 0x11 0 8M' \
    -c 'write -P 0x22 12M 4M' >/dev/null
cp "$base" "$T/base.orig"

conf=$T/overlay.conf
cat >"$conf" <<CONF
[export cow]
path = base.img
overlay = cow.ovl
CONF
sock=$T/ours.sock
start_server -l "unix:$sock" -c "$conf" -e "cl=$base,overlay=$T/cl.ovl"
u=$(uri cow)

step "a new overlay reads as its base"
[ "$(tmo nbdinfo --size "$u")" = 16777216 ] || fail "cow is not 16 MiB"
tmo qemu-img compare -f raw -F raw "$base" "$u" >/dev/null ||
    fail "a fresh overlay differs from its base"
[ -f "$T/cow.ovl" ] || fail "the overlay file was not created next to the config"
[ -f "$T/cl.ovl" ] || fail "the -e overlay file was not created"

step "negative control: a wrong pattern must be reported"
rc=0
tmo qemu-io -f raw "$u" -c 'read -P 0x22 0 4k' >"$T/neg.out" 2>&1 || rc=$?
grep -q 'Pattern verification failed' "$T/neg.out" ||
    fail "qemu-io did not notice a wrong pattern: $(cat "$T/neg.out")"

aio=()
check=()
for ((i = 0; i < 64; i++)); do
    aio+=("aio_write -P $((i + 1)) $((4 * 1024 * 1024 + i * 5000)) 5000")
    check+=("read -P $((i + 1)) $((4 * 1024 * 1024 + i * 5000)) 5000")
done
# The commands and the reads that check them after a restart.
writes=('write -P 0xab 1000 3000'
    'write -P 0xac 65530 20'
    'write -f -P 0xad 1M 128k'
    'write -P 0xae 10M 4k'
    'write -z -u 2M 64k'
    'write -z 3M 100'
    'discard 5M 256k'
    'write -P 0xaf 16777215 1')
reads=('read -P 0x11 0 1000' 'read -P 0xab 1000 3000'
    'read -P 0x11 4000 61530' 'read -P 0xac 65530 20'
    'read -P 0x11 65550 65536'
    'read -P 0xad 1M 128k'
    'read -P 0 8M 2M' 'read -P 0xae 10M 4k' 'read -P 0 10489856 2093056'
    'read -P 0 2M 64k' 'read -P 0x11 2162688 64k'
    'read -P 0x11 3145724 4' 'read -P 0 3M 100' 'read -P 0x11 3145828 65436'
    'read -P 0 5M 256k' 'read -P 0x11 5505024 64k'
    'read -P 0x22 12M 4194303' 'read -P 0xaf 16777215 1')
qio "$u" "${writes[@]}" flush
qio "$u" "${reads[@]}"
qio "$u" "${aio[@]}" aio_flush "${check[@]}"

step "the other export's overlay is its own: cl still reads as the base"
tmo qemu-img compare -f raw -F raw "$base" "$(uri cl)" >/dev/null ||
    fail "writes to cow reached cl"

# (The 4k written at 10M made its whole 64k block data: a copy-up.)
step "the map: the base's hole and the masked blocks are holes"
got=$(tmo nbdinfo --map "$u" | awk '$3 != 0 {print $1, $2}' | tr '\n' ';')
want="2097152 65536;5242880 262144;8388608 2097152;10551296 2031616;"
[ "$got" = "$want" ] || fail "holes: $got (want $want)"

step "the base is unchanged"
cmp "$base" "$T/base.orig" || fail "the base file was written"

step "after a restart the overlay reads the same"
stop_server
start_server -l "unix:$sock" -c "$conf" -e "cl=$base,overlay=$T/cl.ovl"
qio "$u" "${reads[@]}" "${check[@]}"
stop_server

step "read-only: an existing overlay is served as it is"
printf 'read-only = yes\n' >>"$conf"
start_server -l "unix:$sock" -c "$conf"
qio -r "$u" "${reads[@]}"
rc=0
tmo qemu-io -f raw "$u" -c 'write -P 1 0 4k' >"$T/ro.out" 2>&1 || rc=$?
grep -qi 'permission\|read-only\|denied\|not permitted' "$T/ro.out" ||
    fail "a write to a read-only overlay export: $(cat "$T/ro.out")"
stop_server
cmp "$base" "$T/base.orig" || fail "the base file was written"

step "a base that changed size is refused"
truncate -s 17M "$base"
rc=0
"$SERVER_BIN" --check-config -c "$conf" >"$T/check.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--check-config exited $rc, want 2"
grep -qF "overlay.conf:3: [export cow]: overlay $T/cow.ovl: made over a base of 16777216 bytes, but the base now has 17825792: the base changed size" \
    "$T/check.out" || fail "--check-config said: $(cat "$T/check.out")"
rc=0
"$SERVER_BIN" -f -l "unix:$sock" -c "$conf" >"$T/start.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "the daemon started over a base of another size ($rc)"
grep -q 'the base changed size' "$T/start.out" ||
    fail "the daemon said: $(cat "$T/start.out")"
step "PASS"
