#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Soak: one nbd-serverd under mixed load for SOAK_TIME seconds (default
# 600), watched for leaks.  `make soak` (SANITIZE=... for a sanitizer
# build, whose exit-time leak report then fails the run).
#
# Load, all at once until the deadline:
#  - fio (nbd engine) rounds on export "verify": 64 MiB of 4 KiB random
#    writes at QD 16, then every block read back and checked (crc32c);
#  - nbdc copy rounds: a random 32 MiB file to export "copy" and back over
#    two connections, sha256 compared;
#  - nbdc bench rounds on export "bench" (randrw, 2 connections, 4 KiB and
#    1 MiB alternately) over the unix socket;
#  - churn: clients that hang up after the greeting, in the middle of an
#    option, after NBD_OPT_GO and in the middle of a write payload, plus
#    nbdinfo --list;
#  - a reload (SIGHUP) every 10 s that adds or removes export "extra".
# Every 5 s the server's RSS, open fds and threads go to soak.csv.
#
# Pass: every round of every load succeeded, the server never died, once
# the clients are gone it holds as many fds as before the load, its RSS
# at the end is within max(16 MiB, 25%) of its RSS after the first
# quarter (the warm-up fills the buffer pools), and it exits 0 on SIGTERM
# with no sanitizer report.  Under a sanitizer build the RSS bound is not
# checked (ASan keeps freed memory in quarantine, hundreds of MiB); the
# leak report at exit takes its place.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"

SOAK_TIME=${SOAK_TIME:-600}
requires fio nbdinfo python3 sha256sum truncate
is_our_server || fail "the soak runs nbd-serverd only"

# Images live in /dev/shm when it exists, so that the disk is not the test.
img_dir=$T
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    img_dir=$(mktemp -d /dev/shm/nbdsrv-soak.XXXXXX)
    trap 'rc=$?; rm -rf "$img_dir"; (exit $rc); cleanup' EXIT
fi
make_image "$img_dir/verify.img" 256M
make_image "$img_dir/copy.img" 64M
make_image "$img_dir/bench.img" 256M
make_image "$img_dir/extra.img" 16M
make_random "$T/payload" 32M
want=$(sha256sum <"$T/payload" | cut -d' ' -f1)

port=$(free_port)
sock=$T/nbd.sock
conf=$T/soak.conf
# write_conf WITH_EXTRA: the configuration, with or without "extra".
write_conf()
{
    {
        # The listen addresses come from -l (start_server needs them).
        printf '[server]\nthreads = 2\nlog-level = info\n'
        for e in verify copy bench; do
            printf '[export %s]\npath = %s/%s.img\n' "$e" "$img_dir" "$e"
        done
        if [ "$1" = 1 ]; then
            printf '[export extra]\npath = %s/extra.img\n' "$img_dir"
        fi
    } >"$conf.new"
    mv "$conf.new" "$conf"
}
write_conf 0
start_server -c "$conf" -l "127.0.0.1:$port" -l "unix:$sock"
tcp=nbd://127.0.0.1:$port
unix_uri() { printf 'nbd+unix:///%s?socket=%s\n' "$1" "$sock"; }

status_field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
fds_before=$(server_fds)
step "soak for $SOAK_TIME s; server pid $SERVER_PID, $fds_before fds"
deadline=$((SECONDS + SOAK_TIME))
results=$T/results
mkdir -p "$results"

# Each load loop writes one line per round to results/NAME: "ok ..." or
# "FAIL ...", and stops at the first failure.
fio_loop()
{
    local n=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        n=$((n + 1))
        if fio --name=soak --ioengine=nbd --uri="$tcp/verify" \
            --rw=randwrite --bs=4k --size=64m --offset=$(((n % 3) * 64))m \
            --iodepth=16 --numjobs=1 --nrfiles=1 --verify=crc32c \
            --verify_fatal=1 --verify_state_save=0 --randrepeat=0 --output="$T/fio.$n.out" \
            >/dev/null 2>&1; then
            echo "ok fio round $n" >>"$results/fio"
            rm -f "$T/fio.$n.out"
        else
            echo "FAIL fio round $n: $(tail -5 "$T/fio.$n.out" | tr '\n' ' ')" \
                >>"$results/fio"
            return
        fi
    done
}

copy_loop()
{
    local n=0 got
    while [ "$SECONDS" -lt "$deadline" ]; do
        n=$((n + 1))
        rm -f "$T/back"
        if ! tmo "$BUILD/nbdc" copy --connections 2 "$T/payload" \
            "$tcp/copy" >"$T/copy.out" 2>&1 ||
            ! tmo "$BUILD/nbdc" copy --connections 2 "$tcp/copy" \
                "$T/back" >>"$T/copy.out" 2>&1; then
            echo "FAIL copy round $n: $(tr '\n' ' ' <"$T/copy.out")" \
                >>"$results/copy"
            return
        fi
        got=$(head -c 32M "$T/back" | sha256sum | cut -d' ' -f1)
        if [ "$got" != "$want" ]; then
            echo "FAIL copy round $n: sha256 $got, want $want" >>"$results/copy"
            return
        fi
        echo "ok copy round $n" >>"$results/copy"
    done
}

bench_loop()
{
    local n=0 bs
    while [ "$SECONDS" -lt "$deadline" ]; do
        n=$((n + 1))
        bs=4K
        [ $((n % 2)) = 0 ] && bs=1M
        if tmo "$BUILD/nbdc" bench "$(unix_uri bench)" --rw randrw \
            --bs "$bs" --connections 2 --time 5 >"$T/bench.out" 2>&1; then
            echo "ok bench round $n: $(grep '^IOPS' "$T/bench.out")" \
                >>"$results/bench"
        else
            echo "FAIL bench round $n: $(tr '\n' ' ' <"$T/bench.out")" \
                >>"$results/bench"
            return
        fi
    done
}

cat >"$T/churn.py" <<'PY'
import random
import struct
import sys
import time

import nbdwire as w

port, deadline = int(sys.argv[1]), float(sys.argv[2])
rounds = 0
while time.time() < deadline:
    s = w.connect("127.0.0.1:%d" % port, timeout=10)
    kind = random.randrange(4)
    try:
        hflags = w.greeting(s)
        if kind >= 1:
            w.send_client_flags(s, hflags)
        if kind == 1:
            # Half an NBD_OPT_GO, then gone.
            s.sendall(struct.pack(">QII", w.IHAVEOPT, w.OPT_GO, 100)
                      + b"\0\0")
        elif kind >= 2:
            w.opt_go(s, "verify")
            if kind == 3:
                # A 64 KiB write with 1 KiB of its payload, then gone.
                s.sendall(w.pack_request(w.CMD_WRITE, 1, 192 * 1024 * 1024,
                                         65536) + b"x" * 1024)
    except (OSError, EOFError, w.ProtocolError) as e:
        sys.exit("churn: %s" % e)
    s.close()
    rounds += 1
print(rounds)
PY
churn_loop()
{
    local n=0 out
    while [ "$SECONDS" -lt "$deadline" ]; do
        n=$((n + 1))
        if out=$(tmo python3 "$T/churn.py" "$port" "$(($(date +%s) + 5))" 2>&1) &&
            tmo nbdinfo --list "$tcp" >/dev/null 2>&1; then
            echo "ok churn round $n: $out connections" >>"$results/churn"
        else
            echo "FAIL churn round $n: $out" >>"$results/churn"
            return
        fi
    done
}

reload_loop()
{
    local n=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        sleep 10
        n=$((n + 1))
        write_conf $((n % 2))
        kill -HUP "$SERVER_PID" 2>/dev/null || {
            echo "FAIL reload $n: the server is gone" >>"$results/reload"
            return
        }
        echo "ok reload $n" >>"$results/reload"
    done
}

echo "seconds,rss_kib,fds,threads" >"$T/soak.csv"
loads=()
for l in fio_loop copy_loop bench_loop churn_loop reload_loop; do
    "$l" &
    loads+=($!)
    track_pid "$!"
done
quarter_rss=
start=$SECONDS
while [ "$SECONDS" -lt "$deadline" ]; do
    sleep 5
    server_alive
    rss=$(status_field VmRSS)
    echo "$((SECONDS - start)),$rss,$(server_fds),$(status_field Threads)" >>"$T/soak.csv"
    if [ -z "$quarter_rss" ] && [ $((SECONDS - start)) -ge $((SOAK_TIME / 4)) ]; then
        quarter_rss=$rss
        step "RSS after the warm-up: $rss KiB"
    fi
    if grep -h '^FAIL' "$results"/* 2>/dev/null | head -1 | grep -q .; then
        break
    fi
done
for pid in "${loads[@]}"; do
    wait "$pid" || true
done
cat "$T/soak.csv"
for l in fio copy bench churn reload; do
    step "$l: $(grep -c '^ok' "$results/$l" 2>/dev/null || echo 0) rounds ok"
done
if grep -h '^FAIL' "$results"/* 2>/dev/null | head -3 | grep .; then
    fail "a load failed (above)"
fi
for l in fio copy bench churn reload; do
    grep -q '^ok' "$results/$l" 2>/dev/null || fail "no $l round completed"
done
server_alive

# Clients are gone; the server may still be closing the last ones.
wait_fds_at_most "$fds_before" 5
fds_after=$(server_fds)
end_rss=$(status_field VmRSS)
[ -n "$quarter_rss" ] || quarter_rss=$end_rss
limit=$((quarter_rss / 4 > 16384 ? quarter_rss / 4 : 16384))
step "RSS: $quarter_rss KiB after the warm-up, $end_rss KiB at the end (allowed growth $limit KiB); fds $fds_before -> $fds_after"
if ldd "$BUILD/nbd-serverd" 2>/dev/null | grep -E -q 'lib(a|t)san'; then
    step "sanitizer build: RSS not bounded; the exit-time leak report decides"
elif [ $((end_rss - quarter_rss)) -gt "$limit" ]; then
    fail "RSS grew by $((end_rss - quarter_rss)) KiB after the warm-up"
fi
stop_server
step "pass"
