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
durability_disk_dir

# serve PATH CACHE: start the server on PATH as export "disk".
serve()
{
    printf '[export disk]\npath = %s\ncache = %s\n' "$1" "$2" >"$T/disk.conf"
    start_server -c "$T/disk.conf" -l "$addr"
}

# check_image PATH WANT WHAT: restart on PATH and run the check; its
# status must be WANT (durability_status).
check_image()
{
    local rc=0
    serve "$1" writeback
    pyrun durability.py check "$url" "$T/journal.json" || rc=$?
    stop_server
    durability_status "$rc" "$2" "$3"
}

# disk_case CACHE MIX
disk_case()
{
    local cache=$1 mix=$2 img=$DISK_DIR/disk-$1.img
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
    local cache=$1 mix=$2 want=$3 back=$DISK_DIR/back.img
    shift 3
    [ -z "$NO_POWER_CUT" ] || return 0
    step "== power cut, cache=$cache, $mix${*:+, nbdkit $*}"
    make_image "$back" 64M
    power_cut_start "$back" "$@" || return 0
    serve "$PC_DISK" "$cache"
    # The storage loses power first, then the server dies.
    pyrun durability.py write "$url" "$T/journal.json" --ops "$OPS" \
        --mix "$mix" --kill "$NK_PID,$SERVER_PID"
    power_cut_end
    check_image "$back" "$want" "power cut, cache=$cache, $mix${*:+, nbdkit $*}"
}

durability_cases
