#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An RBD image changed under a running export: `rbd resize` makes the
# server log the new size once, clients keep the size they were given
# and go on reading and writing, and the next start serves the new size;
# `rbd rm` of an image an export has open is refused by Ceph (the export
# is a watcher), and the export keeps serving.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires nbdinfo qemu-io

new_image 32M
sock=$T/s.sock
start_server -l "unix:$sock" -e "disk=rbd:$IMG"
u="nbd+unix:///disk?socket=$sock"
tmo qemu-io -f raw "$u" -c 'write -P 7 1M 64k' >/dev/null

step "rbd resize to 48M under the export"
rbdc resize --size 48M "$IMG" >/dev/null 2>&1 || fail "rbd resize"
for ((i = 0; i < 100; i++)); do
    grep -q "the image was resized from 33554432 to 50331648 bytes" \
        "$SERVER_LOG" && break
    sleep 0.1
done
grep -q "rbd $IMG: the image was resized from 33554432 to 50331648 bytes" \
    "$SERVER_LOG" || fail "no log line for the resize"
[ "$(tmo nbdinfo --size "$u")" = 33554432 ] ||
    fail "the export's size changed under its clients"
tmo qemu-io -f raw "$u" -c 'read -P 7 1M 64k' -c 'write -P 8 2M 4k' \
    -c 'read -P 8 2M 4k' >/dev/null || fail "I/O after the resize"

step "rbd rm of the open image is refused, the export serves on"
if rbdc rm "$IMG" >"$T/rm.out" 2>&1; then
    fail "rbd rm removed an image an export has open"
fi
grep -q -i "watchers" "$T/rm.out" || fail "rbd rm: $(cat "$T/rm.out")"
tmo qemu-io -f raw "$u" -c 'read -P 7 1M 64k' >/dev/null ||
    fail "I/O after the refused rm"
stop_server
grep -c "the image was resized" "$SERVER_LOG" | grep -qx 1 ||
    fail "the resize was logged more than once"

step "the next start serves the new size"
start_server -l "unix:$sock" -e "disk=rbd:$IMG"
[ "$(tmo nbdinfo --size "$u")" = 50331648 ] || fail "not reopened at 48M"
stop_server
step ok
