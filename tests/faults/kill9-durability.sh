#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kill -9 under FUA and FLUSH writes from 4 connections: after a restart,
# every write acknowledged with FUA and every write acknowledged before an
# acknowledged FLUSH reads back exactly, and no page holds garbage
# (durability.py: the rules and the journal it keeps).
#
# A SIGKILL of the server alone loses nothing that reached the page
# cache, so on its own it shows that acknowledged data was written and
# that the restart reads it, but not that FUA and FLUSH reach the disk: a
# server that never syncs would pass.  Hence two kinds of storage, each
# with cache=writeback and cache=none (O_DIRECT):
#  - disk: an image file on a disk file system (not tmpfs), the server
#    SIGKILLed;
#  - power cut: the image is a file on a FUSE mount (nbdfuse) backed by
#    nbdkit's cache filter in writeback mode over a file on disk.  That
#    nbdkit keeps every write in its own cache until a flush reaches it
#    (the server's fdatasync or RWF_DSYNC write becomes FUSE_FSYNC, then
#    NBD_CMD_FLUSH), so SIGKILLing it before the server loses exactly
#    what a power cut would lose from a disk's volatile cache.  The
#    restarted server then serves the backing file directly.
# Each case runs three times: mixed FUA and FLUSH writes, FUA only, and
# FLUSH only.  In a power cut any sync reaches the whole disk, so a
# working FLUSH would hide a FUA that does nothing, and the other way
# round.
# The control: the same power cut with nbdkit's fua filter discarding
# FUA and flush requests (a server that ignores them) must make the
# verifier report lost writes; if it does not, the test cannot fail and
# is itself broken.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-faults.sh
. "$(dirname "$0")/lib-faults.sh"

requires python3 truncate nbdkit nbdfuse
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

# serve PATH CACHE: start the server on PATH as export "disk".
serve()
{
    printf '[export disk]\npath = %s\ncache = %s\n' "$1" "$2" >"$T/disk.conf"
    start_server -c "$T/disk.conf" -l "$addr"
}

# reap_killed: the server was SIGKILLed by the verifier; collect it.
reap_killed()
{
    local rc=0
    wait "$SERVER_PID" || rc=$?
    [ "$rc" = 137 ] || fail "the server exited with status $rc, not by SIGKILL"
    SERVER_PID=
}

# check_image PATH WANT WHAT: restart on PATH, run the check; its status
# must be WANT (0: consistent, 3: lost writes), else case WHAT failed.
FAILED=()
NO_POWER_CUT=
check_image()
{
    local rc=0
    serve "$1" writeback
    pyrun durability.py check "$url" "$T/journal.json" || rc=$?
    stop_server
    if [ "$rc" != "$2" ]; then
        step "FAILED: $3: durability check status $rc, want $2"
        FAILED+=("$3")
        case $3 in
        "power cut, cache=none"*) hint_fuse_direct_dsync ;;
        esac
    fi
}

# disk_case CACHE MIX
disk_case()
{
    local cache=$1 mix=$2 img=$disk_dir/disk-$1.img
    step "== disk, cache=$cache, $mix: SIGKILL of the server"
    make_image "$img" 64M
    serve "$img" "$cache"
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --mix "$mix" --kill "$SERVER_PID"
    reap_killed
    check_image "$img" 0 "disk, cache=$cache, $mix"
}

# power_cut_case CACHE MIX WANT [FILTER ARGS...]: nbdkit FILTER ARGS
# (none, or the fua filter) over the cache filter over a file on disk.
power_cut_case()
{
    local cache=$1 mix=$2 want=$3 back=$disk_dir/back.img
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
    step "== power cut, cache=$cache, $mix${*:+, nbdkit $*}"
    make_image "$back" 64M
    rm -f "$nsock" # a SIGKILLed nbdkit leaves its socket behind
    # Filters given first sit between the client and the cache filter.
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
            # No FUSE here (not root, no /dev/fuse): the disk cases
            # still count; the end of the script decides.
            NO_POWER_CUT="nbdfuse could not mount $mnt (is /dev/fuse usable?)"
            stop_pid "$nk_pid"
            return 0
        fi
        sleep 0.1
    done
    is_mounted "$mnt" || fail "nbdfuse did not mount $mnt within 10 s"

    serve "$mnt/disk" "$cache"
    # The storage loses power first, then the server dies.
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --mix "$mix" --kill "$nk_pid,$SERVER_PID"
    reap_killed
    wait "$nk_pid" 2>/dev/null || true
    unmount "$mnt"
    for ((i = 0; i < 50; i++)); do
        kill -0 "$fuse_pid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$fuse_pid"
    check_image "$back" "$want" "power cut, cache=$cache, $mix${*:+, nbdkit $*}"
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
