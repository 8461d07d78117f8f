#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qemu-io against the server: pattern writes and reads (aligned,
# unaligned, FUA, large), write-zeroes (plain, may-unmap, FUA), discard,
# flush, and many asynchronous writes and reads in flight followed by
# aio_flush, each checked with read -P.  A wrong pattern makes qemu-io
# print "Pattern verification failed" and exit non-zero; a negative control
# proves that this is noticed.  Then the image file is checked directly.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires qemu-io python3 truncate

disk=$T/disk.img
make_image "$disk" 16M

run_io()
{
    local u=$1
    local -a aw ar
    mapfile -t aw < <(aio_cmds aio_write 64 $((1024 * 1024)))
    mapfile -t ar < <(aio_cmds aio_read 64 $((1024 * 1024)))

    qio "$u" 'write -P 0xab 0 64k' 'read -P 0xab 0 64k'
    qio "$u" 'write -P 0x5a 1001 3333' 'read -P 0x5a 1001 3333' \
        'read -P 0xab 0 1001' 'read -P 0xab 4334 61202'
    qio "$u" 'write -f -P 0x33 64k 64k' 'read -P 0x33 64k 64k' \
        'read -P 0xab 0 1001'
    qio "$u" 'write -P 0x77 128k 192k' 'write -z 128k 64k' \
        'write -z -u 192k 64k' 'write -z -f 256k 32k' \
        'read -P 0 128k 160k' 'read -P 0x77 288k 32k'
    qio "$u" 'write -P 0x66 320k 64k' 'discard 320k 64k' 'read 320k 64k' \
        'write -P 0x67 320k 4k' 'read -P 0x67 320k 4k' flush
    # Many in flight: qemu-io issues every aio_ command before waiting.
    qio "$u" "${aw[@]}" aio_flush
    qio "$u" "${ar[@]}" aio_flush 'read -P 1 1M 4k' 'read -P 64 1276k 4k'
    qio "$u" 'write -P 0x42 4M 8M' 'read -P 0x42 4M 8M' flush
    qio "$u" 'write -P 0x43 15M 1M' 'read -P 0x43 15M 1M' \
        'write -P 0x44 16777215 1' 'read -P 0x44 16777215 1'
}

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk"

step "negative control: a wrong pattern must be reported"
rc=0
tmo qemu-io -f raw "$(uri disk)" -c 'write -P 0xab 0 4k' \
    -c 'read -P 0xcd 0 4k' >"$T/neg.out" 2>&1 || rc=$?
grep -q 'Pattern verification failed' "$T/neg.out" ||
    fail "qemu-io did not notice a wrong pattern: $(cat "$T/neg.out")"
[ "$rc" != 0 ] || fail "qemu-io exited 0 despite a pattern mismatch"

run_io "$(uri disk)"
step "reads past the end fail cleanly and the server goes on"
rc=0
tmo qemu-io -f raw "$(uri disk)" -c 'read 16M 4k' >"$T/neg.out" 2>&1 ||
    rc=$?
[ "$rc" != 0 ] || fail "qemu-io read past the end succeeded"
qio "$(uri disk)" 'read -P 0xab 0 1001'
server_alive
stop_server

check_image()
{
    python3 - "$disk" <<'EOF' || fail "the image file holds the wrong data"
import sys
K, M = 1024, 1024 * 1024
with open(sys.argv[1], "rb") as f:
    d = f.read()
want = [(0, 1001, 0xab), (1001, 3333, 0x5a), (4334, 64 * K - 4334, 0xab),
        (64 * K, 64 * K, 0x33), (128 * K, 160 * K, 0),
        (288 * K, 32 * K, 0x77), (320 * K, 4 * K, 0x67),
        (4 * M, 8 * M, 0x42), (15 * M, M - 1, 0x43), (16 * M - 1, 1, 0x44)]
want += [(M + i * 4 * K, 4 * K, i + 1) for i in range(64)]
if len(d) != 16 * M:
    sys.exit("  image size %d" % len(d))
for off, ln, pat in want:
    if d[off:off + ln] != bytes([pat]) * ln:
        sys.exit("  %d+%d is not %#x" % (off, ln, pat))
EOF
    step "image file holds every pattern"
}
check_image

step "the same over a Unix socket, with one thread"
make_image "$disk" 16M
start_server -l "unix:$T/nbd.sock" -t 1 -e "disk=$disk"
run_io "$(uri disk)"
stop_server
check_image
step "pass"
