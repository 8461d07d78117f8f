# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Helpers for the fault and load scripts (tests/faults/*.sh,
# tests/load/*.sh), on top of tests/interop/lib.sh (which puts the
# raw-socket Python module on PYTHONPATH): the server's RSS from /proc,
# mounts (tmpfs, FUSE) and helper processes that are undone on exit in
# the right order (server, then mounts, then the processes behind them),
# before lib.sh removes the temporary directory.
#
# These scripts run nbd-serverd only: what they check (RSS bounds, fds,
# recovery after kill -9) are promises of our server.

# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../interop/lib.sh"

is_our_server || fail "the fault and load tests run nbd-serverd only"

FAULT_MOUNTS=()
FAULT_PIDS=()

# fault_track_pid PID: a helper (nbdkit, nbdfuse) stopped on exit after
# the mounts are gone.
fault_track_pid()
{
    FAULT_PIDS+=("$1")
}

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL; reaps it if it is ours.
stop_pid()
{
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

faults_cleanup()
{
    local i
    # A server still running holds files on our mounts open.
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        stop_pid "$SERVER_PID"
        SERVER_PID=
    fi
    for ((i = ${#FAULT_MOUNTS[@]} - 1; i >= 0; i--)); do
        unmount "${FAULT_MOUNTS[$i]}"
    done
    for ((i = ${#FAULT_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${FAULT_PIDS[$i]}"
    done
}
# errexit stays on inside an EXIT trap: switch it off so that lib.sh's
# cleanup always runs, and hand it the exit status.
trap 'rc=$?; set +e; faults_cleanup; (exit $rc); cleanup' EXIT

# is_mounted DIR: DIR is a mount point.  Read from /proc/self/mounts:
# mountpoint(1) stats DIR, which fails on a FUSE mount whose daemon died.
is_mounted()
{
    awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts
}

# unmount DIR: unmount, lazily if it is still busy; never fails.
unmount()
{
    is_mounted "$1" || return 0
    umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null ||
        echo "[$TEST_NAME] WARNING: could not unmount $1" >&2
    return 0
}

# cannot WHY: a mechanism the test needs is not available.  A skip on a
# developer machine, a failure under CI=true: CI runs as root on a
# Debian machine (not an unprivileged container), where mounting tmpfs
# and FUSE works, so there a missing mechanism is a broken setup.
cannot()
{
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: CI runs as root where this must work)"
    fi
    skip "$*"
}

# mount_tmpfs DIR SIZE: a tmpfs of SIZE (mount syntax: 8m) on DIR,
# unmounted on exit.
mount_tmpfs()
{
    local out
    mkdir -p "$1"
    if ! out=$(mount -t tmpfs -o "size=$2,mode=0700" nbdsrv-faults "$1" 2>&1); then
        cannot "cannot mount a tmpfs (needs root and mount rights): $out"
    fi
    FAULT_MOUNTS+=("$1")
    step "mounted a $2 tmpfs on $1"
}

# hint_fuse_direct_dsync: why a FUA write with cache=none on a FUSE file
# may be acknowledged without being persistent.  Seen on Linux 6.18: an
# O_DIRECT write submitted through io_uring with RWF_DSYNC (or O_DSYNC)
# to a FUSE file reaches the FUSE daemon but is never followed by
# FUSE_FSYNC (fio: ioengine=io_uring direct=1 sync=dsync sends no flush;
# ioengine=psync does, and so does io_uring without direct), so the data
# sits in the daemon's volatile cache.  The server cannot rely on
# RWF_DSYNC there; it has to fdatasync itself.
hint_fuse_direct_dsync()
{
    step "hint: with cache=none the server sends FUA writes as O_DIRECT" \
        "RWF_DSYNC writes through io_uring; on a FUSE file the kernel then" \
        "sends no FUSE_FSYNC (compare fio --ioengine=io_uring --direct=1" \
        "--sync=dsync with --ioengine=psync): the server must fdatasync" \
        "after such writes on file systems like FUSE"
}

# wait_nbdkit PID SOCK: wait up to 10 s for nbdkit PID to answer on the
# unix socket SOCK; fails if it exits first.
wait_nbdkit()
{
    local i
    for ((i = 0; i < 100; i++)); do
        probe "unix:$2" && return 0
        kill -0 "$1" 2>/dev/null || fail "nbdkit exited at start"
        sleep 0.1
    done
}

# nbdfuse_mount MNT SOCK: nbdfuse shows the export on the unix socket
# SOCK as the file MNT/disk (unmounted and stopped on exit); FUSE_PID is
# its pid.  Returns 1 if nbdfuse exits without mounting (FUSE not usable
# here), fails if the mount is not there within 10 s.
nbdfuse_mount()
{
    local mnt=$1 i
    mkdir -p "$mnt"
    nbdfuse "$mnt/disk" "nbd+unix:///?socket=$2" >>"$SERVER_LOG" 2>&1 &
    FUSE_PID=$!
    fault_track_pid "$FUSE_PID"
    FAULT_MOUNTS+=("$mnt")
    for ((i = 0; i < 100; i++)); do
        is_mounted "$mnt" && [ -e "$mnt/disk" ] && return 0
        kill -0 "$FUSE_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    fail "nbdfuse did not mount $mnt within 10 s"
}

# nbdfuse_unmount MNT: unmount, give nbdfuse 5 s to exit, then stop it.
nbdfuse_unmount()
{
    local i
    unmount "$1"
    for ((i = 0; i < 50; i++)); do
        kill -0 "$FUSE_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$FUSE_PID"
}

# ---- The durability cases of kill9-durability.sh and kill9-overlay.sh.
# Each script defines serve, disk_case CACHE MIX and power_cut_case
# CACHE MIX WANT [FILTER ARGS...], and checks with durability_status.

# durability_disk_dir: DISK_DIR, a directory on a disk file system (the
# images must not be in memory): $T, or a fresh one under $BUILD,
# removed on exit, when $T is a tmpfs.
durability_disk_dir()
{
    DISK_DIR=$T
    case $(stat -f -c %T "$T") in
    tmpfs | ramfs)
        case $BUILD in
        /*) DISK_DIR=$BUILD ;;
        *) DISK_DIR=$PWD/$BUILD ;;
        esac
        DISK_DIR=$(mktemp -d "$DISK_DIR/faults-disk.XXXXXX")
        trap 'rc=$?; set +e; faults_cleanup; rm -rf "$DISK_DIR"; (exit $rc); cleanup' EXIT
        ;;
    esac
    step "images in $DISK_DIR ($(stat -f -c %T "$DISK_DIR"))"
}

# reap_killed: the server was SIGKILLed by the verifier; collect it.
reap_killed()
{
    local rc=0
    wait "$SERVER_PID" || rc=$?
    [ "$rc" = 137 ] || fail "the server exited with status $rc, not by SIGKILL"
    SERVER_PID=
}

# durability_status RC WANT WHAT: the check of case WHAT ended with
# status RC; unless that is WANT (0: consistent, 3: lost writes), WHAT
# joins FAILED.
FAILED=()
durability_status()
{
    [ "$1" != "$2" ] || return 0
    step "FAILED: $3: durability check status $1, want $2"
    FAILED+=("$3")
    case $3 in
    "power cut, cache=none"*) hint_fuse_direct_dsync ;;
    esac
}

# power_cut_start BACK [FILTER ARGS...]: nbdkit serves the file BACK
# through its cache filter in writeback mode (which loses every write
# not yet flushed when it is SIGKILLed: what a power cut loses), with
# the --filter=... arguments between the client and the cache filter
# and the others as parameters; nbdfuse shows it as $PC_DISK.  NK_PID
# is nbdkit's pid.  Returns 1, with NO_POWER_CUT saying why, where FUSE
# does not work.
NO_POWER_CUT=
power_cut_start()
{
    local back=$1 nsock=$T/nbdkit.sock a
    local -a filters=() params=()
    shift
    for a in "$@"; do
        case $a in
        --filter=*) filters+=("$a") ;;
        *) params+=("$a") ;;
        esac
    done
    rm -f "$nsock" # a SIGKILLed nbdkit leaves its socket behind
    TMPDIR=$T nbdkit -f --exit-with-parent -U "$nsock" "${filters[@]}" \
        --filter=cache file "$back" cache=writeback "${params[@]}" \
        >>"$SERVER_LOG" 2>&1 &
    NK_PID=$!
    fault_track_pid "$NK_PID"
    wait_nbdkit "$NK_PID" "$nsock"
    # shellcheck disable=SC2034 # read by the scripts that source this
    PC_DISK=$T/fuse/disk
    if ! nbdfuse_mount "$T/fuse" "$nsock"; then
        # No FUSE here (not root, no /dev/fuse): the disk cases still
        # count; the end of the script decides.
        NO_POWER_CUT="nbdfuse could not mount $T/fuse (is /dev/fuse usable?)"
        stop_pid "$NK_PID"
        return 1
    fi
}

# power_cut_end: after the verifier SIGKILLed nbdkit and then the
# server: reap both and unmount.
power_cut_end()
{
    reap_killed
    wait "$NK_PID" 2>/dev/null || true
    nbdfuse_unmount "$T/fuse"
}

# durability_cases: every case, on disk and under a power cut, with
# cache=writeback and cache=none, for each write mix; then the control
# (nbdkit's fua filter discarding FUA and flush, a server that never
# syncs), which the verifier must catch.
durability_cases()
{
    local cache mix
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
}

# server_rss_kib: the running server's VmRSS (server_fds and
# wait_fds_at_most are in lib.sh).
server_rss_kib()
{
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$SERVER_PID/status"
}

# has_server_option OPT: the server's --help lists OPT (options that
# other work adds; pass them only once they exist).
has_server_option()
{
    "$BUILD/nbd-serverd" --help 2>&1 | grep -q -- "$1"
}

# pyrun SCRIPT ARGS...: one of the Python drivers next to the test, with
# a time limit.
pyrun()
{
    local script=$1
    shift
    tmo "$NBD_PYTHON" "$(dirname "$0")/$script" "$@"
}
