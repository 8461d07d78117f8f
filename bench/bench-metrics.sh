#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The request path's cost of metrics: nbd-serverd without and with
# --metrics-listen (scraped once a second by curl during the run, as
# Prometheus would), driven by `nbdc bench` against a 256 MiB image in
# /dev/shm.  Runs alternate (off, on, then on, off, ...) so that drift
# of the machine's load hits both alike.  Prints each run's IOPS and the
# server's CPU time per request (utime+stime of all its threads over the
# run, from /proc/PID/stat), then the median of each setting and on/off.
#
# Usage: bench/bench-metrics.sh [BUILD_DIR]
#   BENCH_RUNS      runs of each setting (default 3)
#   BENCH_RUNTIME   seconds per run (default 5)
#   BENCH_METRICS_WORKLOADS  RW:BS list (default "randread:4k randwrite:4k")
#   BENCH_THREADS   nbd-serverd -t (default 2); nbdc bench uses 1 thread
set -euo pipefail

build=${1:-build}
runs=${BENCH_RUNS:-3}
runtime=${BENCH_RUNTIME:-5}
workloads=${BENCH_METRICS_WORKLOADS:-randread:4k randwrite:4k}
threads=${BENCH_THREADS:-2}
server=$build/nbd-serverd
nbdc=$build/nbdc
for p in "$server" "$nbdc"; do
    [ -x "$p" ] || { echo "bench-metrics: $p not built" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "bench-metrics: curl is required" >&2; exit 1; }

img=/dev/shm/nbd-bench-metrics-$$.img
out=$(mktemp -d)
pid=
scraper=
cleanup()
{
    [ -z "$scraper" ] || kill "$scraper" 2>/dev/null || true
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    rm -rf "$img" "$out"
}
trap cleanup EXIT
head -c 256M /dev/urandom >"$img"

free_port()
{
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ticks PID: utime+stime of the process, all threads.
ticks()
{
    awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' \
        "/proc/$1/stat"
}

# one RW BS MODE: one run; prints "IOPS CPU_US_PER_REQUEST".
one()
{
    local rw=$1 bs=$2 mode=$3 port mport t0 t1 iops
    local -a extra=()
    port=$(free_port)
    if [ "$mode" = on ]; then
        mport=$(free_port)
        extra=(--metrics-listen "127.0.0.1:$mport")
    fi
    "$server" -f -t "$threads" -l "127.0.0.1:$port" -e "bench=$img" \
        "${extra[@]}" 2>/dev/null &
    pid=$!
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
        sleep 0.1
    done
    if [ "$mode" = on ]; then
        (while :; do
            curl -s -o /dev/null "http://127.0.0.1:$mport/metrics" || true
            sleep 1
        done) &
        scraper=$!
    fi
    t0=$(ticks "$pid")
    "$nbdc" bench "nbd://127.0.0.1:$port/bench" --rw "$rw" --bs "$bs" \
        --iodepth 32 --threads 1 --time "$runtime" >"$out/bench.txt"
    t1=$(ticks "$pid")
    if [ -n "$scraper" ]; then
        kill "$scraper" 2>/dev/null || true
        wait "$scraper" 2>/dev/null || true
        scraper=
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    iops=$(sed -n 's/^IOPS: \([0-9]*\)$/\1/p' "$out/bench.txt")
    awk -v i="$iops" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v t="$runtime" \
        'BEGIN { printf "%d %.2f\n", i, d / hz * 1e6 / (i * t) }'
}

median()
{
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "| workload | run | metrics | IOPS | server CPU µs/request |"
echo "|---|---:|---|---:|---:|"
summary=()
for workload in $workloads; do
    rw=${workload%%:*}
    bs=${workload#*:}
    : >"$out/off"
    : >"$out/on"
    for ((r = 1; r <= runs; r++)); do
        order="off on"
        [ $((r % 2)) = 1 ] || order="on off"
        for mode in $order; do
            read -r iops cpu < <(one "$rw" "$bs" "$mode")
            echo "| $rw $bs | $r | $mode | $iops | $cpu |"
            echo "$iops $cpu" >>"$out/$mode"
        done
    done
    off_iops=$(cut -d' ' -f1 "$out/off" | median)
    on_iops=$(cut -d' ' -f1 "$out/on" | median)
    off_cpu=$(cut -d' ' -f2 "$out/off" | median)
    on_cpu=$(cut -d' ' -f2 "$out/on" | median)
    summary+=("$(awk -v w="$rw $bs" -v a="$off_iops" -v b="$on_iops" -v c="$off_cpu" -v d="$on_cpu" \
        'BEGIN { printf "| %s | %d | %d | %.3f | %.2f | %.2f | %.3f |", w, a, b, b / a, c, d, d / c }')")
done
echo
echo "| workload | IOPS off (median) | IOPS on | on/off | CPU µs/req off | on | on/off |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${summary[@]}"
