#!/usr/bin/env bash
# Benchmark nbd-serverd against nbdkit (file plugin) and qemu-nbd with fio's
# nbd engine and nbdc bench on 127.0.0.1, plain and over TLS (X.509 and
# PSK), and print Markdown tables.
#
# Usage: bench/bench-servers.sh [BUILD_DIR]     (default: build; `make bench`)
#
# The measurement and the report live in bench-servers.py (python3 stdlib
# only); its docstring lists the BENCH_* environment variables (BENCH_RUNS,
# BENCH_RUNTIME, BENCH_RAMP, BENCH_SERVERS, BENCH_CLIENTS, BENCH_WORKLOADS,
# BENCH_BASELINE, BENCH_CHROOT, ...).  fio is needed unless BENCH_CLIENTS=nbdc.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build_dir=${1:-build}

for tool in python3; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "bench-servers: $tool is required but not installed" >&2
		exit 1
	fi
done

# Today's nbdkit and qemu-storage-daemon join as peers from the trixie
# chroot when its cache is valid (make chroot-trixie builds it).
chroot=$here/../tests/chroot-trixie.sh
if [ "${BENCH_CHROOT:-1}" != 0 ] && [ "$(id -u)" = 0 ] &&
    "$chroot" check >/dev/null 2>&1; then
	exec "$chroot" exec "$build_dir" python3 "$here/bench-servers.py" "$build_dir"
fi
echo "bench-servers: no valid trixie chroot (make chroot-trixie), or BENCH_CHROOT=0: the host's peers only" >&2
exec python3 "$here/bench-servers.py" "$build_dir"
