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
disk_dir=$T
case $(stat -f -c %T "$T") in
tmpfs | ramfs)
    case $BUILD in
    /*) disk_dir=$BUILD ;;
    *) disk_dir=$PWD/$BUILD ;;
    esac
    disk_dir=$(mktemp -d "$disk_dir/faults-disk.XXXXXX")
    trap 'rc=$?; set +e; faults_cleanup; rm -rf "$disk_dir"; (exit $rc); cleanup' EXIT
    ;;
esac
step "images in $disk_dir ($(stat -f -c %T "$disk_dir"))"

# The base: 256 MiB, random data in its first 32 MiB and last 16 MiB, a
# hole between.  The writes cover all of it (--pages), so that most of
# them allocate a new block and the map changes until the kill, not
# only at the start.
PAGES=65536
base=$disk_dir/base.img
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

reap_killed()
{
    local rc=0
    wait "$SERVER_PID" || rc=$?
    [ "$rc" = 137 ] || fail "the server exited with status $rc, not by SIGKILL"
    SERVER_PID=
}

# check_overlay PATH WANT WHAT: restart on overlay PATH and check it; the
# status must be WANT (0: consistent, 3: lost writes).
FAILED=()
NO_POWER_CUT=
check_overlay()
{
    local rc=0
    serve "$1" writeback
    pyrun durability.py check "$url" "$T/journal.json" --base "$base" || rc=$?
    stop_server
    if [ "$rc" != "$2" ]; then
        step "FAILED: $3: durability check status $rc, want $2"
        FAILED+=("$3")
    fi
    cmp "$base" "$T/base.orig" || fail "$3: the base file was written"
}

# disk_case CACHE MIX
disk_case()
{
    local cache=$1 mix=$2 ovl=$disk_dir/disk-$1.ovl
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
    local cache=$1 mix=$2 want=$3 back=$disk_dir/back.ovl
    local nsock=$T/nbdkit.sock mnt=$T/fuse nk_pid fuse_pid i a
    local -a filters=() params=()
    shift 3
    [ -z "$NO_POWER_CUT" ] || return 0
    for a in "$@"; do
        case $a in
        --filter=*) filters+=("$a") ;;
        *) params+=("$a") ;;
        esac
    done
    step "== power cut under the overlay, cache=$cache, $mix${*:+, nbdkit $*}"
    fresh_overlay "$back"
    rm -f "$nsock"
    TMPDIR=$T nbdkit -f --exit-with-parent -U "$nsock" "${filters[@]}" \
        --filter=cache file "$back" cache=writeback "${params[@]}" \
        >>"$SERVER_LOG" 2>&1 &
    nk_pid=$!
    fault_track_pid "$nk_pid"
    for ((i = 0; i < 100; i++)); do
        probe "unix:$nsock" && break
        kill -0 "$nk_pid" 2>/dev/null || fail "nbdkit exited at start"
        sleep 0.1
    done
    mkdir -p "$mnt"
    nbdfuse "$mnt/disk" "nbd+unix:///?socket=$nsock" >>"$SERVER_LOG" 2>&1 &
    fuse_pid=$!
    fault_track_pid "$fuse_pid"
    FAULT_MOUNTS+=("$mnt")
    for ((i = 0; i < 100; i++)); do
        is_mounted "$mnt" && [ -e "$mnt/disk" ] && break
        if ! kill -0 "$fuse_pid" 2>/dev/null; then
            NO_POWER_CUT="nbdfuse could not mount $mnt (is /dev/fuse usable?)"
            stop_pid "$nk_pid"
            return 0
        fi
        sleep 0.1
    done
    is_mounted "$mnt" || fail "nbdfuse did not mount $mnt within 10 s"

    serve "$mnt/disk" "$cache"
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --pages "$PAGES" --mix "$mix" --kill "$nk_pid,$SERVER_PID"
    reap_killed
    wait "$nk_pid" 2>/dev/null || true
    unmount "$mnt"
    for ((i = 0; i < 50; i++)); do
        kill -0 "$fuse_pid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$fuse_pid"
    check_overlay "$back" "$want" \
        "power cut, cache=$cache, $mix${*:+, nbdkit $*}"
}

for cache in writeback none; do
    for mix in mixed fua flush; do
        disk_case "$cache" "$mix"
    done
done
for cache in writeback none; do
    for mix in mixed fua flush; do
        power_cut_case "$cache" "$mix" 0
    done
done
step "== control: a server that drops FUA and FLUSH must be caught"
power_cut_case writeback mixed 3 --filter=fua fuamode=discard
[ "${#FAILED[@]}" = 0 ] || fail "failed: $(printf '[%s] ' "${FAILED[@]}")"
[ -z "$NO_POWER_CUT" ] || cannot "power-cut cases not run: $NO_POWER_CUT"
step "PASS"
