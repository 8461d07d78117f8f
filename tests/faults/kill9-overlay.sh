#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kill -9 under FUA and FLUSH writes into a copy-on-write overlay export:
# after a restart every write acknowledged with FUA, and every write
# acknowledged before an acknowledged FLUSH, reads back exactly; a page
# never written, or whose writes were never persistent, reads the base's
# bytes (random data, so that a zero or a stale block shows); and the
# base file is unchanged byte for byte (durability.py check --base).
#
# As in kill9-durability.sh, two kinds of storage for the overlay file,
# each with cache=writeback and cache=none, the base always on disk:
#  - disk: the overlay on a disk file system, the server SIGKILLed;
#  - power cut: the overlay is the file of a FUSE mount (nbdfuse) backed
#    by nbdkit's cache filter in writeback mode, which loses every write
#    not yet flushed when it is SIGKILLed first: what a power cut loses.
#    The overlay file must exist there (a FUSE mount of one file has no
#    directory to create it in), so a fresh overlay made by the server
#    on disk is copied in as nbdkit's backing file; the restarted server
#    then opens that backing file as the overlay.
# A power cut is where the order of the overlay's commits shows: a map
# bit that reached the disk before its block's data would read as a
# torn or zero page, and one that never did as a lost write.
# The control: nbdkit's fua filter discarding FUA and flush (a server
# that never syncs) must make the verifier report lost writes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-faults.sh
. "$(dirname "$0")/lib-faults.sh"

requires python3 truncate nbdkit nbdfuse cmp
requires_nbd_python

OPS=${FAULTS_DURABILITY_OPS:-4000}
sock=$T/nbd.sock
addr=unix:$sock
url=$(uri_for "$addr" disk)

# The images must be on a disk, not in memory.
durability_disk_dir

# The base: 256 MiB, random data in its first 32 MiB and last 16 MiB, a
# hole between.  The writes cover all of it (--pages), so that most of
# them allocate a new block and the map changes until the kill, not
# only at the start.
PAGES=65536
base=$DISK_DIR/base.img
truncate -s 256M "$base"
head -c 32M /dev/urandom | dd of="$base" conv=notrunc status=none
head -c 16M /dev/urandom |
    dd of="$base" bs=1M seek=240 conv=notrunc status=none
cp --sparse=always "$base" "$T/base.orig"

# serve OVERLAY CACHE: start the server with export "disk": the base
# under the overlay file OVERLAY.
serve()
{
    printf '[export disk]\npath = %s\noverlay = %s\ncache = %s\n' \
        "$base" "$1" "$2" >"$T/disk.conf"
    start_server -c "$T/disk.conf" -l "$addr"
}

# fresh_overlay PATH: a new, empty overlay over the base, made by the
# server itself.
fresh_overlay()
{
    rm -f "$1"
    serve "$1" writeback
    stop_server
    [ -s "$1" ] || fail "the server did not create the overlay $1"
}

# check_overlay PATH WANT WHAT: restart on overlay PATH and check it; the
# status must be WANT (durability_status), and the base unchanged.
check_overlay()
{
    local rc=0
    serve "$1" writeback
    pyrun durability.py check "$url" "$T/journal.json" --base "$base" || rc=$?
    stop_server
    durability_status "$rc" "$2" "$3"
    cmp "$base" "$T/base.orig" || fail "$3: the base file was written"
}

# disk_case CACHE MIX
disk_case()
{
    local cache=$1 mix=$2 ovl=$DISK_DIR/disk-$1.ovl
    step "== overlay on disk, cache=$cache, $mix: SIGKILL of the server"
    rm -f "$ovl"
    serve "$ovl" "$cache"
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --pages "$PAGES" --mix "$mix" --kill "$SERVER_PID"
    reap_killed
    check_overlay "$ovl" 0 "disk, cache=$cache, $mix"
}

# power_cut_case CACHE MIX WANT [FILTER ARGS...]
power_cut_case()
{
    local cache=$1 mix=$2 want=$3 back=$DISK_DIR/back.ovl
    shift 3
    [ -z "$NO_POWER_CUT" ] || return 0
    step "== power cut under the overlay, cache=$cache, $mix${*:+, nbdkit $*}"
    fresh_overlay "$back"
    power_cut_start "$back" "$@" || return 0
    serve "$PC_DISK" "$cache"
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --pages "$PAGES" --mix "$mix" --kill "$NK_PID,$SERVER_PID"
    power_cut_end
    check_overlay "$back" "$want" \
        "power cut, cache=$cache, $mix${*:+, nbdkit $*}"
}

durability_cases
