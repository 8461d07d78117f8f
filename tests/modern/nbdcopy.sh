#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdcopy from libnbd 1.22 with nbd-serverd, 1 and 4 connections: a 6 GiB
# sparse image with random data across 4 GiB and above it goes file ->
# export -> file and export -> export (two exports of one server), and
# every copy has the sha256 of the source; the holes stay holes in the
# exported image (block status, then zeroing only what is data); extended
# headers are negotiated on every connection.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate dd sha256sum du
chroot_requires nbdcopy

GiB=$((1024 * 1024 * 1024))
src=$T/src.img
make_image "$src" 6G
make_random "$T/a" 8M
make_random "$T/b" 16M
write_at "$src" 0 "$T/a"
write_at "$src" $((4 * GiB - 4 * 1024 * 1024)) "$T/b"
write_at "$src" $((5 * GiB + 12345 * 4096)) "$T/a"

sock=$T/nbd.sock
for conns in 1 4; do
    step "nbdcopy $(chroot_version nbdcopy) --connections=$conns"
    mid=$T/mid.img other=$T/other.img back=$T/back.img
    # Old data in the destinations: the copy must replace it, zeroes too.
    make_image "$mid" 6G
    make_image "$other" 6G
    make_random "$T/junk" 1M
    write_at "$mid" $((2 * GiB)) "$T/junk"
    write_at "$other" $((5 * GiB + 512 * 1024 * 1024)) "$T/junk"
    rm -f "$sock" "$back"
    start_server -v -l "unix:$sock" -e "mid=$mid" -e "other=$other"
    um="nbd+unix:///mid?socket=$sock"
    uo="nbd+unix:///other?socket=$sock"
    in_chroot nbdcopy --connections="$conns" --flush "$src" "$um" ||
        fail "nbdcopy file -> export"
    in_chroot nbdcopy --connections="$conns" "$um" "$uo" ||
        fail "nbdcopy export -> export"
    in_chroot nbdcopy --connections="$conns" "$uo" "$back" ||
        fail "nbdcopy export -> file"
    n=$(grep -c "serving export '[a-z]*', structured replies, extended headers" \
        "$SERVER_LOG")
    [ "$n" -ge 3 ] || fail "only $n connections negotiated extended headers"
    if [ "$conns" = 4 ]; then
        # nbdcopy opens one connection per --connections and side
        [ "$n" -ge 8 ] || fail "4 connections per side, but $n were served"
    fi
    stop_server
    same_sparse "$src" "$mid" "$other" "$back"
    used=$(du -k "$mid" | cut -f1)
    [ "$used" -lt $((64 * 1024)) ] ||
        fail "the exported 6 GiB image uses $used KiB: holes were written"
    step "$conns connection(s): $n connections served, $used KiB allocated"
done
