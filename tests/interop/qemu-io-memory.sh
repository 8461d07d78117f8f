#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Memory exports (-e NAME=memory:SIZE, and memory = SIZE in a
# configuration file) driven by qemu-io: pattern writes and reads,
# write-zeroes, discard, flush, many requests in flight; nbdinfo shows the
# size and an allocation map in which only written pages are data and
# discarded ones are holes again; a SIGHUP reload that keeps the export
# keeps its data.  A wrong pattern must be noticed (negative control).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "memory exports are specific to nbd-serverd"
requires qemu-io nbdinfo python3

# map URI: the allocation map as "offset length type" lines.
map()
{
    tmo nbdinfo --map "$1" | awk '{print $1, $2, $4}'
}

conf=$T/memory.conf
cat >"$conf" <<CONF
[export fromfile]
memory = 8M
description = a scratch disk
CONF

port=$(free_port)
start_server -l "127.0.0.1:$port" -c "$conf" -e scratch=memory:16M \
    -e odd=memory:1000001

step "sizes"
[ "$(tmo nbdinfo --size "$(uri scratch)")" = 16777216 ] ||
    fail "scratch is not 16 MiB"
[ "$(tmo nbdinfo --size "$(uri fromfile)")" = 8388608 ] ||
    fail "fromfile is not 8 MiB"
[ "$(tmo nbdinfo --size "$(uri odd)")" = 1000001 ] ||
    fail "odd is not 1000001 bytes"

step "a fresh memory export is one hole"
got=$(map "$(uri scratch)")
[ "$got" = "0 16777216 hole,zero" ] || fail "fresh map: $got"

step "negative control: a wrong pattern must be reported"
rc=0
tmo qemu-io -f raw "$(uri scratch)" -c 'write -P 0xab 0 4k' \
    -c 'read -P 0xcd 0 4k' >"$T/neg.out" 2>&1 || rc=$?
grep -q 'Pattern verification failed' "$T/neg.out" ||
    fail "qemu-io did not notice a wrong pattern: $(cat "$T/neg.out")"
[ "$rc" != 0 ] || fail "qemu-io exited 0 despite a pattern mismatch"

aio=()
for ((i = 0; i < 64; i++)); do
    aio+=("aio_write -P $((i + 1)) $((4 * 1024 * 1024 + i * 4096)) 4k")
done
check=()
for ((i = 0; i < 64; i++)); do
    check+=("read -P $((i + 1)) $((4 * 1024 * 1024 + i * 4096)) 4k")
done

u=$(uri scratch)
qio "$u" 'write -P 0xab 0 64k' 'read -P 0xab 0 64k'
qio "$u" 'write -P 0x5a 1001 3333' 'read -P 0x5a 1001 3333' \
    'read -P 0xab 0 1001' 'read -P 0xab 4334 61202' 'read -P 0 64k 64k'
qio "$u" 'write -f -P 0x33 64k 64k' 'read -P 0x33 64k 64k'
qio "$u" 'write -P 0x77 128k 192k' 'write -z 128k 64k' \
    'write -z -u 192k 64k' 'write -z -f 256k 32k' \
    'read -P 0 128k 160k' 'read -P 0x77 288k 32k'
qio "$u" 'write -P 0x66 1M 1M' 'discard 1M 1M' 'read -P 0 1M 1M' \
    'write -P 0x67 1M 4k' 'read -P 0x67 1M 4k' flush
qio "$u" "${aio[@]}" aio_flush "${check[@]}"
qio "$u" 'write -P 0x42 8M 8M' 'read -P 0x42 8M 8M' \
    'write -P 0x44 16777215 1' 'read -P 0x44 16777215 1'
qio "$(uri odd)" 'write -P 0x11 999999 2' 'read -P 0x11 999999 2' \
    'read -P 0 0 999999'
qio "$(uri fromfile)" 'write -P 0x21 4k 4k' 'read -P 0x21 4k 4k'

step "the map: written pages are data, the rest holes"
got=$(map "$(uri scratch)" | tr '\n' ';')
# write -z without -u asks to keep the space, but a memory export gives
# the pages back all the same (32K at 256K).
want="0 131072 data;131072 163840 hole,zero;294912 32768 data;"
want+="327680 720896 hole,zero;1048576 4096 data;1052672 3141632 hole,zero;"
want+="4194304 262144 data;4456448 3932160 hole,zero;8388608 8388608 data;"
[ "$got" = "$want" ] || fail "map after the writes: $got (want $want)"

step "discard and write-zeroes give whole pages back"
qio "$u" 'discard 8M 8M' 'write -z -u 0 128k'
got=$(map "$(uri scratch)" | tr '\n' ';')
want="0 294912 hole,zero;294912 32768 data;327680 720896 hole,zero;"
want+="1048576 4096 data;1052672 3141632 hole,zero;4194304 262144 data;"
want+="4456448 12320768 hole,zero;"
[ "$got" = "$want" ] || fail "map after discard: $got (want $want)"

step "a reload that keeps the exports keeps their data"
printf '\n[export added]\nmemory = 1M\n' >>"$conf"
kill -HUP "$SERVER_PID"
for ((i = 0; i < 100; i++)); do
    grep -q 'reloaded:' "$SERVER_LOG" && break
    sleep 0.1
done
grep -q 'reloaded: 4 exports' "$SERVER_LOG" ||
    fail "no reload to 4 exports in the server log"
[ "$(tmo nbdinfo --size "$(uri added)")" = 1048576 ] ||
    fail "the export added by the reload is not served"
qio "$(uri fromfile)" 'read -P 0x21 4k 4k' 'read -P 0 0 4k'
qio "$u" 'read -P 0x67 1M 4k' "${check[@]}"

stop_server
