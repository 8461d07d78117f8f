# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Helpers for the tests that run the clients and servers of the Debian
# trixie chroot (tests/chroot-trixie.sh) against the nbd-serverd and nbdc
# built on the host.  Sourced after tests/interop/lib.sh's conventions:
# each script sources this file, which sources that one.
#
# chroot-trixie.sh run mounts the chroot and a shared directory (TMPDIR, the same
# path inside and out), so $T, the test's temporary directory, holds the
# images, sockets and PKI for both sides: a path under $T means the same
# file in the chroot and on the host.  Servers started on the host listen
# on 127.0.0.1 or on sockets in $T; the chroot's programs reach them there,
# and the reverse.

# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../interop/lib.sh"

ROOT=${NBDSRV_CHROOT:-}
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ -z "$ROOT" ] || [ -z "${NBDSRV_CHROOT_SHARED:-}" ] ||
    [ ! -d "$ROOT$T" ]; then
    missing "the trixie chroot is not mounted: run this through 'make check-modern' (tests/chroot-trixie.sh run)"
fi

# in_chroot CMD...: run CMD in the chroot, with a time limit and a clean
# environment (plus the VAR=VALUE words in CHROOT_ENV).
CHROOT_ENV=()
in_chroot()
{
    tmo chroot "$ROOT" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root \
        LANG=C.UTF-8 TMPDIR="$T" "${CHROOT_ENV[@]}" "$@"
}

# chroot_requires CMD...: every command must be in the chroot.
chroot_requires()
{
    local c
    for c in "$@"; do
        chroot "$ROOT" /bin/sh -c "command -v '$c'" >/dev/null 2>&1 ||
            missing "'$c' is not in the chroot $ROOT (tests/chroot-trixie.sh ensure)"
    done
}

# chroot_version PROGRAM: the version the program prints (first number).
chroot_version()
{
    in_chroot "$1" --version 2>/dev/null | head -n 1 |
        grep -E -o '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1
}

# chroot_py SCRIPT ARGS...: run a Python script (a file under $T) with the
# chroot's python3 (and its nbd module, libnbd 1.22).
chroot_py()
{
    in_chroot python3 "$@"
}

# start_chroot_peer NAME LOG CMD...: start CMD in the chroot in the
# background (killed on exit); `chroot` execs it, so CHROOT_PEER_PID is
# the program's own pid.  Waits until ADDR (the variable PEER_ADDR, set by
# the caller: unix:PATH or HOST:PORT) greets like an NBD server.
start_chroot_peer()
{
    local name=$1 log=$2 deadline
    shift 2
    printf '===== chroot peer %s: %s\n' "$name" "$*" >>"$log"
    chroot "$ROOT" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root \
        LANG=C.UTF-8 TMPDIR="$T" "$@" >>"$log" 2>&1 &
    CHROOT_PEER_PID=$!
    track_pid "$CHROOT_PEER_PID"
    deadline=$((SECONDS + 20))
    until probe "$PEER_ADDR"; do
        kill -0 "$CHROOT_PEER_PID" 2>/dev/null ||
            fail "$name exited before listening on $PEER_ADDR: $(tail -n 5 "$log")"
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "$name does not answer on $PEER_ADDR after 20 s"
        sleep 0.1
    done
    step "$name is up in the chroot (pid $CHROOT_PEER_PID) on $PEER_ADDR"
}

stop_chroot_peer()
{
    kill "$CHROOT_PEER_PID" 2>/dev/null || true
    wait "$CHROOT_PEER_PID" 2>/dev/null || true
}

# chroot_fails WHAT CMD...: CMD, run in the chroot, must fail: not by the
# time limit, and not because the program is missing (126, 127).
chroot_fails()
{
    local what=$1 rc=0
    shift
    in_chroot "$@" >"$T/chroot_fails.out" 2>&1 || rc=$?
    case $rc in
    0)
        cat "$T/chroot_fails.out" >&2
        fail "$what: succeeded but should have failed"
        ;;
    124 | 137)
        cat "$T/chroot_fails.out" >&2
        fail "$what: timed out instead of failing"
        ;;
    126 | 127)
        cat "$T/chroot_fails.out" >&2
        fail "$what: could not run $1 (exit $rc)"
        ;;
    esac
    step "$what: failed as expected (exit $rc): $(head -c 200 "$T/chroot_fails.out" | tr '\n' ' ')"
}

# same_sparse A B...: every file has the content of A, compared in time
# proportional to the data, not the size: a digest over the size and every
# 64 KiB block that holds a non-zero byte, found with SEEK_DATA (reading
# a 6 GiB sparse image whole takes half a minute on a busy machine).
same_sparse()
{
    python3 - "$@" <<'PY' || fail "contents differ: $*"
import hashlib, os, sys
B = 64 << 10
def digest(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(b"%d;" % size)
        pos, last = 0, -1
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            blk = max(start // B * B, last + B)
            while blk < end:
                data = os.pread(fd, B, blk)
                if data.count(0) != len(data):
                    h.update(b"%d:" % blk + data)
                last = blk
                blk += B
            pos = end
    finally:
        os.close(fd)
    return h.hexdigest()
want = digest(sys.argv[1])
bad = [p for p in sys.argv[2:] if digest(p) != want]
for p in bad:
    print("  %s differs from %s" % (p, sys.argv[1]), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    step "same content (sparse digest): $*"
}
