#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc bench for two seconds against nbd-serverd, nbdkit and qemu-nbd:
# a progress line a second, then non-zero IOPS and the latency line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdkit qemu-nbd truncate

disk=$T/disk.img
make_image "$disk" 64M

# check_bench URI ARGS...: run nbdc bench and check its report.
check_bench()
{
    local u=$1 iops
    shift
    nbdc "$T/bench.out" bench "$u" --time 2 "$@"
    [ "$(grep -c '^\[ *[0-9]*s\] IOPS: ' "$T/bench.out")" = 2 ] ||
        fail "nbdc bench $*: want two progress lines: $(cat "$T/bench.out")"
    iops=$(sed -n 's/^IOPS: \([0-9]*\)$/\1/p' "$T/bench.out")
    [ -n "$iops" ] && [ "$iops" -gt 0 ] ||
        fail "nbdc bench $*: no IOPS: $(cat "$T/bench.out")"
    grep -q '^latency (us): p50 [0-9.]*, p99 [0-9.]*, p99.9 [0-9.]*$' \
        "$T/bench.out" || fail "nbdc bench $*: no latency line"
    step "nbdc bench $u $*: $iops IOPS"
}

# bench_threads: the threads= of the last run's header line.
bench_threads()
{
    sed -n '1s/.* threads=\([0-9]*\) .*/\1/p' "$T/bench.out"
}
ncpu=$(nproc)

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk"
check_bench "$(uri disk)"
[ "$(bench_threads)" = 1 ] ||
    fail "one connection: want one thread by default: $(head -1 "$T/bench.out")"
check_bench "$(uri disk)" --rw randwrite --bs 64K --connections 2
want=$((ncpu < 2 ? ncpu : 2))
[ "$(bench_threads)" = "$want" ] ||
    fail "two connections on $ncpu CPUs: want $want threads: $(head -1 "$T/bench.out")"
check_bench "$(uri disk)" --rw randread --threads 3
[ "$(bench_threads)" = 3 ] || fail "--threads 3 not honoured: $(head -1 "$T/bench.out")"
check_bench "$(uri disk)" --rw read --bs 1M --iodepth 4
check_bench "$(uri disk)" --rw randrw --threads 1
stop_server

start_peer nbdkit disk "$disk"
check_bench "$PEER_URI" --rw randrw --connections 2
stop_peer

start_peer qemu-nbd disk "$disk"
check_bench "$PEER_URI" --rw randrw
stop_peer

nbdc_fails 2 "bad value 'sideways'" bench --rw sideways "nbd://127.0.0.1/x"
step "pass"
