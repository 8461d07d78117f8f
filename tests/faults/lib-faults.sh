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
