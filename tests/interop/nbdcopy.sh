#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdcopy against the server, with several connections (multi-conn):
# 64 MiB of random data file -> export -> file; a sparse file over it
# (zeroing through WRITE_ZEROES); requests of the maximum payload size
# (32 MiB); export -> export; and a copy over a Unix socket.  The sha256
# of the source, the copy and the server's image file must agree.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdcopy sha256sum truncate dd

MiB=$((1024 * 1024))
src=$T/src.img
disk=$T/disk.img
copy=$T/copy.img
make_random "$src" 64M
make_image "$disk" 64M
make_image "$copy" 64M

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" -e "copy=$copy"

step "file -> export, 4 connections"
tmo nbdcopy --connections=4 --flush "$src" "$(uri disk)" ||
    fail "nbdcopy into the export failed"
step "export -> file, 4 connections"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=4 "$(uri disk)" "$T/out.img" ||
    fail "nbdcopy out of the export failed"
same_content "$src" "$T/out.img" "$disk"

step "sparse file over the random data (holes become zero requests)"
sparse=$T/sparse.img
make_sparse "$sparse" 64M $((7 * MiB)):3M $((63 * MiB)):1M
tmo nbdcopy --connections=4 --flush "$sparse" "$(uri disk)" ||
    fail "nbdcopy of the sparse file failed"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=4 "$(uri disk)" "$T/out.img" ||
    fail "nbdcopy out of the export failed"
same_content "$sparse" "$T/out.img" "$disk"

step "32 MiB requests (the maximum payload), one connection"
tmo nbdcopy --connections=1 --request-size=33554432 --requests=2 --flush \
    "$src" "$(uri disk)" || fail "nbdcopy with 32 MiB requests failed"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=1 --request-size=33554432 --requests=2 \
    "$(uri disk)" "$T/out.img" || fail "nbdcopy with 32 MiB reads failed"
same_content "$src" "$T/out.img" "$disk"

step "export -> export on the same server"
tmo nbdcopy --connections=4 --flush "$(uri disk)" "$(uri copy)" ||
    fail "nbdcopy between exports failed"
same_content "$src" "$copy"

step "export -> null: (reads with extents)"
tmo nbdcopy --connections=4 "$(uri '')" null: ||
    fail "nbdcopy to null: failed"
server_alive
stop_server
same_content "$src" "$disk" "$copy"

step "over a Unix socket, synchronous and with 2 connections"
make_image "$disk" 64M
start_server -l "unix:$T/nbd.sock" -e "disk=$disk"
tmo nbdcopy --synchronous "$sparse" "$(uri disk)" ||
    fail "nbdcopy --synchronous over the Unix socket failed"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=2 "$(uri disk)" "$T/out.img" ||
    fail "nbdcopy out over the Unix socket failed"
stop_server
same_content "$sparse" "$T/out.img" "$disk"
step "pass"
