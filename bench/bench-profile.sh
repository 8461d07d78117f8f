#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Where nbd-serverd's CPU goes per request: runs the server on a 1 GiB
# random image in /dev/shm, drives it with `nbdc bench` (QD 32 for 4 KiB,
# QD 8 for 1 MiB, one connection), records the server with perf record -g
# in the middle of the run, and sorts every sample by the system call it
# was taken in (bench/profile-split.py): receive (recvmsg), backend
# (pread, pwrite, io_uring's read and write), reply (sendmsg), loop
# (io_uring_enter: waiting and submitting), other system calls, kernel
# work outside a system call (interrupts, soft interrupts) and user
# space.  With the server's CPU per request (/proc/PID/stat over the
# requests nbdc counted) each share becomes µs per request.
#
# Usage: bench/bench-profile.sh [BUILD_DIR]
#   PROFILE_WORKLOADS  RW:BS list (default "randread:4k randwrite:4k read:1m write:1m")
#   PROFILE_TRANSPORT  tcp (default) or unix
#   PROFILE_TIME       seconds of nbdc bench (default 8; perf records the
#                      middle half)
#   PROFILE_THREADS    nbd-serverd --threads (default: its own default)
#   PROFILE_KEEP=DIR   keep each perf.data and a perf report there
set -euo pipefail

build=${1:-build}
workloads=${PROFILE_WORKLOADS:-randread:4k randwrite:4k read:1m write:1m}
transport=${PROFILE_TRANSPORT:-tcp}
secs=${PROFILE_TIME:-8}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
server=$build/nbd-serverd
nbdc=$build/nbdc
for p in "$server" "$nbdc"; do
    [ -x "$p" ] || { echo "bench-profile: $p not built" >&2; exit 1; }
done
command -v perf >/dev/null || { echo "bench-profile: perf is required (Debian: linux-perf)" >&2; exit 1; }
case $transport in tcp | unix) ;; *)
    echo "bench-profile: PROFILE_TRANSPORT=$transport: want tcp or unix" >&2; exit 2 ;;
esac
[ "$secs" -ge 4 ] 2>/dev/null || { echo "bench-profile: PROFILE_TIME must be 4 or more" >&2; exit 2; }

tmp=$(mktemp -d /tmp/nbd-profile.XXXXXX)
img=/dev/shm/nbd-profile-$$.img
pid=
cleanup()
{
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -f "$img"
    rm -rf "$tmp"
}
trap cleanup EXIT
head -c 1G /dev/urandom >"$img"
hz=$(getconf CLK_TCK)
ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }

echo "| workload | transport | rate | server CPU µs/req | receive | backend | reply | loop | other syscalls | kernel, no syscall | user space |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for workload in $workloads; do
    rw=${workload%%:*}
    bs=${workload#*:}
    qd=32
    [ "$bs" != 1m ] && [ "$bs" != 1M ] || qd=8
    threads=()
    [ -z "${PROFILE_THREADS:-}" ] || threads=(-t "$PROFILE_THREADS")
    if [ "$transport" = unix ]; then
        listen=unix:$tmp/sock
        uri="nbd+unix:///bench?socket=$tmp/sock"
    else
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        listen=127.0.0.1:$port
        uri=nbd://127.0.0.1:$port/bench
    fi
    "$server" -f "${threads[@]}" -l "$listen" -e "bench=$img" 2>"$tmp/server.log" &
    pid=$!
    for _ in $(seq 100); do
        "$nbdc" info "$uri" >/dev/null 2>&1 && break
        sleep 0.05
    done
    "$nbdc" bench "$uri" --rw "$rw" --bs "$bs" --iodepth "$qd" --time "$secs" >"$tmp/bench.out" 2>&1 &
    bench_pid=$!
    skip=$((secs / 4))
    rec=$((secs / 2))
    sleep "$skip"
    t0=$(ticks "$pid")
    w0=$(date +%s.%N)
    perf record -q -g -F 1999 -p "$pid" -o "$tmp/perf.data" -- sleep "$rec" >/dev/null 2>&1
    t1=$(ticks "$pid")
    w1=$(date +%s.%N)
    wait "$bench_pid"
    kill "$pid"
    wait "$pid" || true
    pid=
    # Requests in the window: nbdc's mean rate over its per-second lines
    # (the first and the last, partly outside the load, left out) times
    # the window's length.
    reqs=$(awk -v w="$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$w0" "$w1")" '
        /^\[/ { for (i = 1; i <= NF; i++) if ($i == "IOPS:") { v = $(i + 1); gsub(",", "", v); r[++n] = v } }
        END { for (i = 2; i < n; i++) { s += r[i]; m++ } print m ? int(s / m * w) : 0 }' "$tmp/bench.out")
    rate=$(awk '/^IOPS:/ { i = $2 } /^MiB\/s:/ { m = $2 } END { printf "%d IOPS, %.0f MiB/s", i, m }' "$tmp/bench.out")
    perf script -i "$tmp/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$tmp/perf.txt"
    cpu_s=$(python3 -c 'import sys; print((int(sys.argv[2]) - int(sys.argv[1])) / float(sys.argv[3]))' "$t0" "$t1" "$hz")
    python3 "$here/profile-split.py" "$tmp/perf.txt" "$cpu_s" "$reqs" \
        "$rw $bs QD$qd" "$transport" "$rate"
    if [ -n "${PROFILE_KEEP:-}" ]; then
        mkdir -p "$PROFILE_KEEP"
        name=$PROFILE_KEEP/$rw-$bs-$transport
        cp "$tmp/perf.data" "$name.perf.data"
        perf report -i "$name.perf.data" --children --sort sym --stdio -g none \
            >"$name.report.txt" 2>/dev/null || true
    fi
done
