#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdcopy through a memory export: random data with holes file -> memory
# export -> file over several connections, memory -> memory, and the
# sha256 of source and copies must agree; the holes of the source stay
# holes in the export (nbdcopy sends them as zero requests, which give
# the pages back).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "memory exports are specific to nbd-serverd"
requires nbdcopy nbdinfo sha256sum truncate dd

MiB=$((1024 * 1024))
src=$T/src.img
make_sparse "$src" 64M $((7 * MiB)):3M $((63 * MiB)):1M

sock=$T/ours.sock
start_server -l "unix:$sock" -e mem=memory:64M -e other=memory:64M

step "file -> memory, 4 connections"
tmo nbdcopy --connections=4 --flush "$src" "$(uri mem)" ||
    fail "nbdcopy into the memory export failed"
step "memory -> file"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=4 "$(uri mem)" "$T/out.img" ||
    fail "nbdcopy out of the memory export failed"
step "memory -> memory"
tmo nbdcopy "$(uri mem)" "$(uri other)" || fail "nbdcopy memory -> memory"
make_image "$T/out2.img" 64M
tmo nbdcopy "$(uri other)" "$T/out2.img" || fail "nbdcopy other -> file"
same_content "$src" "$T/out.img" "$T/out2.img"

step "the export's holes are where the source's are"
data=$(tmo nbdinfo --map "$(uri mem)" | awk '$4 == "data" {print $1, $2}' |
    tr '\n' ';')
[ "$data" = "7340032 3145728;66060288 1048576;" ] ||
    fail "data extents of the memory export: $data"

stop_server
