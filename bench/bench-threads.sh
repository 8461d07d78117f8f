#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# One connection, 32 requests in flight: nbd-serverd at -t 1 against -t 2.
# For each setting, runs fio's nbd engine (4 KiB random read, then random
# write, QD 32, one job) against a 256 MiB image in /dev/shm and reports
# IOPS and the CPU each server thread used during the run (utime+stime
# from /proc/PID/task/TID/stat), so that it shows whether the request
# work spreads over both loops.
#
# Usage: bench/bench-threads.sh [BUILD_DIR]   (BENCH_RUNTIME, default 5 s)
set -euo pipefail

build=${1:-build}
runtime=${BENCH_RUNTIME:-5}
server=$build/nbd-serverd
[ -x "$server" ] || { echo "bench-threads: $server not built" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-threads: fio is required" >&2; exit 1; }

img=/dev/shm/nbd-bench-threads-$$.img
pid=
cleanup()
{
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT
head -c 256M /dev/urandom >"$img"
hz=$(getconf CLK_TCK)

# thread_ticks PID: "TID NAME TICKS" for each thread.
thread_ticks()
{
    local t
    for t in /proc/"$1"/task/*; do
        awk -v tid="${t##*/}" '{
            # comm may hold spaces: fields after the closing parenthesis.
            s = $0; sub(/^.*\) /, "", s); split(s, f, " ");
            n = $0; sub(/^[^(]*\(/, "", n); sub(/\).*$/, "", n);
            print tid, n, f[12] + f[13] }' "$t/stat" 2>/dev/null || true
    done
}

echo "| -t | workload | IOPS | server threads: CPU % during the run |"
echo "|---:|---|---:|---|"
for threads in 1 2; do
    for rw in randread randwrite; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        "$server" -f -t "$threads" -l "127.0.0.1:$port" -e "bench=$img" \
            2>/dev/null &
        pid=$!
        for _ in $(seq 50); do
            (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
            sleep 0.1
        done
        out=$(mktemp)
        fio --name=t --ioengine=nbd --uri="nbd://127.0.0.1:$port/bench" \
            --rw="$rw" --bs=4k --iodepth=32 --numjobs=1 --time_based \
            --runtime="$runtime" --ramp_time=1 --norandommap \
            --output-format=json --output="$out" >/dev/null 2>&1 &
        fio_pid=$!
        sleep 1.5
        before=$(thread_ticks "$pid")
        t0=$(date +%s.%N)
        sleep $((runtime - 1))
        after=$(thread_ticks "$pid")
        t1=$(date +%s.%N)
        wait "$fio_pid"
        kill "$pid"
        wait "$pid" || true
        pid=
        iops=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0][sys.argv[2]]["iops"]))' \
            "$out" "${rw#rand}")
        rm -f "$out"
        cpu=$(python3 - "$hz" "$t0" "$t1" <<PY
import sys
hz, t0, t1 = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
before = {}
for line in """$before""".splitlines():
    tid, name, ticks = line.split()
    before[tid] = int(ticks)
parts = []
for line in """$after""".splitlines():
    tid, name, ticks = line.split()
    pct = (int(ticks) - before.get(tid, 0)) / hz / (t1 - t0) * 100
    if pct >= 1:
        parts.append("%s %.0f%%" % (name, pct))
print(", ".join(parts))
PY
)
        echo "| $threads | $rw 4K QD32 | $iops | $cpu |"
    done
done
