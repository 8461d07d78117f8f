#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdcopy round trips through a copy-on-write overlay export: the export
# copies out as its base at first; a write storm (an image copied in
# over 4 connections with many requests in flight, holes included)
# copies back out exactly, also after a restart of the server, while
# the base file stays unchanged byte for byte; and the overlay file
# copied elsewhere is an overlay that serves the same.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "overlays are specific to nbd-serverd"
requires nbdcopy nbdinfo sha256sum truncate dd cmp

MiB=$((1024 * 1024))
# The base: random data with a hole in the middle.
base=$T/base.img
make_image "$base" 64M
make_random "$T/a" 24M
make_random "$T/b" 16M
write_at "$base" 0 "$T/a"
write_at "$base" $((48 * MiB)) "$T/b"
cp "$base" "$T/base.orig"
# What is copied in: other random data, with holes where the base has
# data (so that they must mask it) and data where it has a hole.
src=$T/src.img
make_image "$src" 64M
make_random "$T/c" 5M
make_random "$T/d" 30M
write_at "$src" $((3 * MiB + 12345)) "$T/c"
write_at "$src" $((20 * MiB + 4096)) "$T/d"

sock=$T/ours.sock
start_server -l "unix:$sock" -e "cow=$base,overlay=$T/cow.ovl"
u=$(uri cow)

step "a fresh overlay copies out as its base"
make_image "$T/out0.img" 64M
tmo nbdcopy --connections=4 "$u" "$T/out0.img" || fail "nbdcopy out (fresh)"
same_content "$base" "$T/out0.img"

step "write storm: the source in over 4 connections, 64 requests each"
tmo nbdcopy --connections=4 --requests=64 --request-size=1048576 --flush \
    "$src" "$u" || fail "nbdcopy into the overlay failed"
make_image "$T/out1.img" 64M
tmo nbdcopy --connections=4 "$u" "$T/out1.img" || fail "nbdcopy out"
same_content "$src" "$T/out1.img"
cmp "$base" "$T/base.orig" || fail "the base file was written"

step "after a restart the overlay copies out the same"
stop_server
start_server -l "unix:$sock" -e "cow=$base,overlay=$T/cow.ovl"
make_image "$T/out2.img" 64M
tmo nbdcopy "$u" "$T/out2.img" || fail "nbdcopy out after the restart"
same_content "$src" "$T/out2.img"
stop_server

step "a copy of the overlay file is an overlay of the same"
cp --sparse=always "$T/cow.ovl" "$T/copy.ovl"
start_server -l "unix:$sock" -e "copy=$base,overlay=$T/copy.ovl"
make_image "$T/out3.img" 64M
tmo nbdcopy "$(uri copy)" "$T/out3.img" || fail "nbdcopy out of the copy"
same_content "$src" "$T/out3.img"
stop_server
cmp "$base" "$T/base.orig" || fail "the base file was written"
step "PASS"
