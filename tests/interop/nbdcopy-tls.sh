#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Bulk data over TLS: nbdcopy --connections=4 of 64 MiB of random data
# into the export and back out (X.509 and PSK), checked by sha256; then
# one TLS connection with hundreds of requests in flight (libnbd's aio
# calls from nbdsh's Python), on a server with two loops so that request
# coroutines run on both while the receive side reads on its home loop:
# every write is acknowledged, every read returns what was written.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdcopy certtool psktool sha256sum truncate
requires_nbd_python
is_our_server || skip "TLS options are specific to nbd-serverd"

pki=$T/pki
make_pki "$pki"
psk=$T/keys.psk
make_psk "$psk" alice
src=$T/src.img
disk=$T/disk.img
make_random "$src" 64M
make_image "$disk" 64M

port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-psk "$psk"

step "file -> export over TLS (X.509), 4 connections"
tmo nbdcopy --connections=4 --flush "$src" \
    "$(tls_uri "$addr" disk "tls-certificates=$pki/client")" ||
    fail "nbdcopy into the export failed"
step "export -> file over TLS (PSK), 4 connections"
make_image "$T/out.img" 64M
tmo nbdcopy --connections=4 \
    "$(tls_uri "$addr" disk "tls-psk-file=$psk" alice)" "$T/out.img" ||
    fail "nbdcopy out of the export failed"
same_content "$src" "$T/out.img" "$disk"

step "one TLS connection, many requests in flight"
cat >"$T/aio.py" <<'EOF'
import hashlib
import os
import sys

import nbd

port, psk = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(psk)
h.set_tls_username("alice")
h.set_export_name("disk")
h.connect_tcp("127.0.0.1", port)
assert h.get_tls_negotiated(), "TLS was not negotiated"

BLOCK = 64 * 1024
COUNT = 512          # 32 MiB
MAX_IN_FLIGHT = 128
blocks = [os.urandom(BLOCK) for _ in range(COUNT)]


def run(submit):
    """Submit COUNT requests keeping up to MAX_IN_FLIGHT in flight."""
    cookies = {}
    peak = 0
    i = 0
    while i < COUNT or cookies:
        while i < COUNT and len(cookies) < MAX_IN_FLIGHT:
            cookies[submit(i)] = i
            i += 1
        peak = max(peak, h.aio_in_flight())
        h.poll(-1)
        for c in [c for c in cookies if h.aio_command_completed(c)]:
            del cookies[c]
    return peak


# Scattered order, so that neighbouring requests are not adjacent.
order = list(range(COUNT))
order = order[::2] + order[1::2]
peak = run(lambda i: h.aio_pwrite(blocks[order[i]], order[i] * BLOCK))
print("  writes done, peak %d in flight" % peak)
h.flush()
bufs = [nbd.Buffer(BLOCK) for _ in range(COUNT)]
peak = run(lambda i: h.aio_pread(bufs[order[i]], order[i] * BLOCK))
print("  reads done, peak %d in flight" % peak)
bad = [i for i in range(COUNT) if bufs[i].to_bytearray() != blocks[i]]
if bad:
    print("  FAIL: %d blocks differ, first %d" % (len(bad), bad[0]),
          file=sys.stderr)
    sys.exit(1)
if peak < 32:
    print("  FAIL: only %d requests were ever in flight" % peak,
          file=sys.stderr)
    sys.exit(1)
h.shutdown()
with open(sys.argv[3], "wb") as f:
    for b in blocks:
        f.write(b)
EOF
# loop_cpu_us NAME: CPU time in microseconds of the server's thread NAME
# (/proc/.../schedstat counts nanoseconds; utime/stime only 10 ms ticks).
loop_cpu_us()
{
    local t
    for t in /proc/"$SERVER_PID"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = "$1" ]; then
            awk '{ printf "%d\n", $1 / 1000 }' "$t/schedstat"
            return
        fi
    done
    fail "the server has no thread named $1"
}
before0=$(loop_cpu_us loop0)
before1=$(loop_cpu_us loop1)
tmo "$NBD_PYTHON" "$T/aio.py" "$port" "$psk" "$T/expect.img" ||
    fail "many requests in flight over one TLS connection failed"
used0=$(($(loop_cpu_us loop0) - before0))
used1=$(($(loop_cpu_us loop1) - before1))
step "CPU time during the run: loop0 $used0 us, loop1 $used1 us"
# The connection's home loop reads and decrypts 32 MiB of writes; the
# other loop must have served a share of the requests too (encrypting
# read replies, writing to the image): at least 1 ms of CPU.
[ "$used0" -ge 1000 ] && [ "$used1" -ge 1000 ] ||
    fail "requests of one connection did not run on both loops"
head -c $((32 * 1024 * 1024)) "$disk" >"$T/head.img"
same_content "$T/expect.img" "$T/head.img"
server_alive
stop_server
step "pass"
