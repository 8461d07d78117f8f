#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Scaling with loops and connections: nbd-serverd at -t 1, 2 and twice as
# many loops as cores, each with one and with two connections of 32
# requests in flight.
# For each setting, runs fio's nbd engine (a job per connection, QD 32; by default 4 KiB
# random read and write, then 1 MiB sequential read and write) against a
# 256 MiB image in /dev/shm and reports the rate, the CPU each server
# thread used during the run (utime+stime from /proc/PID/task/TID/stat),
# which shows whether the request work spreads over both loops, and the
# CPU fio itself used, which shows how much of the machine was left, and
# the server's CPU per request (all its threads over fio's requests).
#
# Usage: bench/bench-threads.sh [BUILD_DIR]
#   BENCH_RUNTIME   seconds per run (default 5)
#   BENCH_THREADS_WORKLOADS  RW:BS list (default
#                   "randread:4k randwrite:4k read:1m write:1m")
#   BENCH_THREADS_LIST  the -t settings (default "1 2 2*cores")
#   BENCH_THREADS_CONNS the connection counts (default "1 2")
set -euo pipefail

build=${1:-build}
runtime=${BENCH_RUNTIME:-5}
workloads=${BENCH_THREADS_WORKLOADS:-randread:4k randwrite:4k read:1m write:1m}
thread_list=${BENCH_THREADS_LIST:-1 2 $((2 * $(nproc)))}
conn_list=${BENCH_THREADS_CONNS:-1 2}
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

# proc_tree_ticks PID: utime+stime of PID and its children's threads.
proc_tree_ticks()
{
    local p total=0 t
    for p in "$1" $(pgrep -P "$1" || true); do
        for t in /proc/"$p"/task/*/stat; do
            t=$(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " ");
                       print f[12] + f[13] }' "$t" 2>/dev/null || echo 0)
            total=$((total + t))
        done
    done
    echo "$total"
}

echo "| workload | -t | connections | rate | server CPU µs/req | server threads: CPU % during the run | fio CPU % |"
echo "|---|---:|---:|---:|---:|---|---:|"
for workload in $workloads; do
    rw=${workload%%:*}
    bs=${workload#*:}
    for conns in $conn_list; do
    for threads in $thread_list; do
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
            --rw="$rw" --bs="$bs" --iodepth=32 --numjobs="$conns" --time_based \
            --runtime="$runtime" --ramp_time=1 --norandommap --group_reporting \
            --output-format=json --output="$out" >/dev/null 2>&1 &
        fio_pid=$!
        sleep 1.5
        before=$(thread_ticks "$pid")
        fio_before=$(proc_tree_ticks "$fio_pid")
        t0=$(date +%s.%N)
        sleep $((runtime - 1))
        after=$(thread_ticks "$pid")
        fio_after=$(proc_tree_ticks "$fio_pid")
        t1=$(date +%s.%N)
        wait "$fio_pid"
        kill "$pid"
        wait "$pid" || true
        pid=
        dir=${rw#rand}
        # The window is the last runtime-1 s of fio's runtime s after its ramp:
        # requests in it are fio's rate times its length.
        read -r iops req_s < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0][sys.argv[2]]; print("%d_IOPS,_%.0f_MiB/s" % (round(j["iops"]), j["bw_bytes"] / 2**20), j["iops"])' \
            "$out" "$dir")
        iops=${iops//_/ }
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
        fio_cpu=$(python3 -c 'import sys; hz, a, b, t0, t1 = map(float, sys.argv[1:]); print("%.0f%%" % ((b - a) / hz / (t1 - t0) * 100))' \
            "$hz" "$fio_before" "$fio_after" "$t0" "$t1")
        us_req=$(python3 -c 'import sys; hz, t0, t1, rate = map(float, sys.argv[1:5]); ticks = sum(int(l.split()[2]) for l in sys.argv[6].splitlines()) - sum(int(l.split()[2]) for l in sys.argv[5].splitlines()); print("%.1f" % (ticks / hz * 1e6 / max(rate * (t1 - t0), 1)))' \
            "$hz" "$t0" "$t1" "$req_s" "$before" "$after")
        echo "| $rw $bs QD32 | $threads | $conns | $iops | $us_req | $cpu | $fio_cpu |"
    done
    done
done
