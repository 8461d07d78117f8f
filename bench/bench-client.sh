#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc against the libnbd tools on the same nbd-serverd (images in
# /dev/shm): `nbdc bench` against fio --ioengine=nbd (4 KiB random read at
# QD 32, 1 MiB sequential read at QD 8), and `nbdc copy` against nbdcopy
# (64 MiB and 1 GiB, file -> NBD and NBD -> file).  Runs alternate
# between the two tools (BENCH_RUNS rounds); the table shows each
# tool's median and the ratio nbdc / other (above 1: nbdc is faster).
#
# Usage: bench/bench-client.sh [BUILD]   (make bench-client)
# Knobs: BENCH_RUNS (default 3), BENCH_RUNTIME seconds per load (5),
# BENCH_THREADS nbdc bench threads (1, as fio's one job), SERVER_THREADS (2),
# BENCH_TRANSPORT unix (default) or tcp (127.0.0.1, a free port).
# When the trixie chroot of tests/chroot-trixie.sh is valid (and
# BENCH_CHROOT is not 0), the script runs again through
# `chroot-trixie.sh exec`, and today's fio 3.39 and nbdcopy 1.22 from the
# chroot get a column of their own beside the host's (fio 3.33, nbdcopy
# 1.14), against the same server.
set -euo pipefail
BUILD=${1:-build}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${NBDSRV_CHROOT_SHARED:-}" ] && [ "${BENCH_CHROOT:-1}" != 0 ] &&
    [ "$(id -u)" = 0 ] && "$here/../tests/chroot-trixie.sh" check >/dev/null 2>&1; then
    exec "$here/../tests/chroot-trixie.sh" exec "$BUILD" bash "$0" "$BUILD"
fi
TRIXIE=
if [ -n "${NBDSRV_CHROOT_SHARED:-}" ] && [ -n "${NBDSRV_CHROOT:-}" ]; then
    TRIXIE=$NBDSRV_CHROOT
fi
# trixie CMD...: run CMD in the chroot (clean environment).
trixie()
{
    chroot "$TRIXIE" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}
RUNS=${BENCH_RUNS:-3}
RUNTIME=${BENCH_RUNTIME:-5}
NBDC_THREADS=${BENCH_THREADS:-1}
SERVER_THREADS=${SERVER_THREADS:-2}

for tool in fio nbdcopy python3; do
    command -v "$tool" >/dev/null || { echo "bench-client: $tool is missing" >&2; exit 1; }
done
[ -x "$BUILD/nbdc" ] && [ -x "$BUILD/nbd-serverd" ] ||
    { echo "bench-client: build $BUILD first" >&2; exit 1; }

dir=$(mktemp -d /dev/shm/nbdc-bench.XXXXXX)
server_pid=
cleanup()
{
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    [ -z "$server_pid" ] || wait "$server_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

echo "preparing images in $dir ..."
head -c 1G /dev/urandom >"$dir/big.img"
head -c 64M "$dir/big.img" >"$dir/small.img"
truncate -s 1G "$dir/dst-big.img"
truncate -s 64M "$dir/dst-small.img"
sock=$dir/nbd.sock
listen=unix:$sock
if [ "${BENCH_TRANSPORT:-unix}" = tcp ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    listen=127.0.0.1:$port
fi
"$BUILD/nbd-serverd" -f -t "$SERVER_THREADS" -l "$listen" \
    -e "big=$dir/big.img" -e "small=$dir/small.img" \
    -e "dbig=$dir/dst-big.img" -e "dsmall=$dir/dst-small.img" \
    >"$dir/server.log" 2>&1 &
server_pid=$!
uri()
{
    case $listen in
    unix:*) echo "nbd+unix:///$1?socket=$sock" ;;
    *) echo "nbd://$listen/$1" ;;
    esac
}
for _ in $(seq 100); do
    "$BUILD/nbdc" info "$(uri small)" >/dev/null 2>&1 && break
    sleep 0.1
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# fio_iops [trixie] RW BS QD
fio_iops()
{
    local run=()
    if [ "$1" = trixie ]; then
        run=(trixie)
        shift
    fi
    "${run[@]}" fio --name=bench --ioengine=nbd --uri="$(uri big)" --rw="$1" --bs="$2" \
        --iodepth="$3" --time_based --runtime="$RUNTIME" \
        --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"])'
}

nbdc_iops()
{
    "$BUILD/nbdc" bench "$(uri big)" --rw "$1" --bs "$2" --iodepth "$3" \
        --threads "$NBDC_THREADS" --time "$RUNTIME" | sed -n 's/^IOPS: //p'
}

# seconds CMD...: wall-clock seconds of one run.
seconds()
{
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "bench-client: $* failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

rows=()
# ratio A B: B / A for times, A / B for rates is the caller's choice.
ratio() { echo "$1 / $2" | bc -l; }

bench_row()
{
    local label=$1 rw=$2 bs=$3 qd=$4 a=() b=() c=() i
    for ((i = 0; i < RUNS; i++)); do
        # Rotate which tool goes first.
        if ((i % 2 == 0)); then
            a+=("$(nbdc_iops "$rw" "$bs" "$qd")")
            b+=("$(fio_iops "$rw" "$bs" "$qd")")
            [ -z "$TRIXIE" ] || c+=("$(fio_iops trixie "$rw" "$bs" "$qd")")
        else
            [ -z "$TRIXIE" ] || c+=("$(fio_iops trixie "$rw" "$bs" "$qd")")
            b+=("$(fio_iops "$rw" "$bs" "$qd")")
            a+=("$(nbdc_iops "$rw" "$bs" "$qd")")
        fi
        echo "  $label run $((i + 1)): nbdc ${a[-1]} IOPS, fio ${b[-1]} IOPS${TRIXIE:+, trixie fio ${c[-1]} IOPS}"
    done
    local ma mb mc row
    ma=$(printf '%s\n' "${a[@]}" | median)
    mb=$(printf '%s\n' "${b[@]}" | median)
    row=$(printf '%-34s %12.0f %12.0f %7.2f' "$label (IOPS)" "$ma" "$mb" \
        "$(ratio "$ma" "$mb")")
    if [ -n "$TRIXIE" ]; then
        mc=$(printf '%s\n' "${c[@]}" | median)
        row+=$(printf ' %12.0f %7.2f' "$mc" "$(ratio "$ma" "$mc")")
    fi
    rows+=("$row")
}

copy_row()
{
    local label=$1 src=$2 dst=$3 a=() b=() c=() i
    for ((i = 0; i < RUNS; i++)); do
        if ((i % 2 == 0)); then
            a+=("$(seconds "$BUILD/nbdc" copy "$src" "$dst")")
            b+=("$(seconds nbdcopy "$src" "$dst")")
            [ -z "$TRIXIE" ] || c+=("$(seconds trixie nbdcopy "$src" "$dst")")
        else
            [ -z "$TRIXIE" ] || c+=("$(seconds trixie nbdcopy "$src" "$dst")")
            b+=("$(seconds nbdcopy "$src" "$dst")")
            a+=("$(seconds "$BUILD/nbdc" copy "$src" "$dst")")
        fi
        echo "  $label run $((i + 1)): nbdc ${a[-1]} s, nbdcopy ${b[-1]} s${TRIXIE:+, trixie nbdcopy ${c[-1]} s}"
    done
    local ma mb mc row
    ma=$(printf '%s\n' "${a[@]}" | median)
    mb=$(printf '%s\n' "${b[@]}" | median)
    # Ratio of speeds: other's time / nbdc's time.
    row=$(printf '%-34s %12.3f %12.3f %7.2f' "$label (s)" "$ma" "$mb" \
        "$(ratio "$mb" "$ma")")
    if [ -n "$TRIXIE" ]; then
        mc=$(printf '%s\n' "${c[@]}" | median)
        row+=$(printf ' %12.3f %7.2f' "$mc" "$(ratio "$mc" "$ma")")
    fi
    rows+=("$row")
}

echo "server: nbd-serverd -t $SERVER_THREADS on $listen"
echo "nbdc bench (threads $NBDC_THREADS) against fio --ioengine=nbd, ${RUNTIME}s each, $RUNS rounds"
bench_row "4K randread QD32" randread 4k 32
bench_row "1M read QD8" read 1m 8
echo "nbdc copy against nbdcopy, $RUNS rounds (after one untimed copy each"
echo "way, so that every destination page of /dev/shm is already allocated)"
nbdcopy "$dir/small.img" "$(uri dsmall)"
nbdcopy "$dir/big.img" "$(uri dbig)"
nbdcopy "$(uri small)" "$dir/dst-small.img"
nbdcopy "$(uri big)" "$dir/dst-big.img"
copy_row "copy 64M file->NBD" "$dir/small.img" "$(uri dsmall)"
copy_row "copy 64M NBD->file" "$(uri small)" "$dir/dst-small.img"
copy_row "copy 1G file->NBD" "$dir/big.img" "$(uri dbig)"
copy_row "copy 1G NBD->file" "$(uri big)" "$dir/dst-big.img"
cmp "$dir/big.img" "$dir/dst-big.img" || { echo "bench-client: 1G copy differs" >&2; exit 1; }

echo
if [ -n "$TRIXIE" ]; then
    echo "versions: host $(fio --version), $(nbdcopy --version | head -n 1); trixie $(trixie fio --version), $(trixie nbdcopy --version | head -n 1)"
    printf '%-34s %12s %12s %7s %12s %7s\n' "workload (median)" "nbdc" "other" "ratio" \
        "trixie" "ratio"
else
    echo "(no trixie chroot: make chroot-trixie adds fio 3.39 and nbdcopy 1.22)"
    printf '%-34s %12s %12s %7s\n' "workload (median)" "nbdc" "other" "ratio"
fi
printf '%s\n' "${rows[@]}"
echo "(ratio > 1: nbdc is faster; other = the host's fio for bench rows, its nbdcopy for copies; trixie = the same tools from the chroot)"
