#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS with qemu-img and qemu-io: --object tls-creds-x509 (with and
# without a client certificate, and with --tls-verify-peer) and
# --object tls-creds-psk, through --image-opts; data written with
# qemu-io (plain and asynchronous writes) reads back with pattern checks
# and lands in the image file; qemu-img convert copies an image in and
# out over TLS.  A plain client is refused in require mode.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires qemu-img qemu-io certtool psktool truncate cmp
is_our_server || skip "TLS options are specific to nbd-serverd"

disk=$T/disk.img
make_image "$disk" 16M
pki=$T/pki
make_pki "$pki"
mkdir -p "$T/pskdir"
make_psk "$T/pskdir/keys.psk" alice

# img_opts PORT CREDS-ID: qemu's --image-opts for export "disk".
img_opts()
{
    printf 'driver=nbd,host=127.0.0.1,port=%s,export=disk,tls-creds=%s\n' \
        "$1" "$2"
}

x509_obj="tls-creds-x509,id=tls0,endpoint=client,dir=$pki/client"
nocert_obj="tls-creds-x509,id=tls0,endpoint=client,dir=$pki/nocert"
psk_obj="tls-creds-psk,id=tls0,endpoint=client,dir=$T/pskdir,username=alice"

# qio OBJECT PORT CMD...: qemu-io over TLS; each command must succeed.
qio()
{
    local obj=$1 port=$2
    shift 2
    qemu_io_ok --object "$obj" --image-opts "$(img_opts "$port" tls0)" \
        -- "$@"
}

port=$(free_port)
start_server -l "127.0.0.1:$port" -t 2 -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-psk "$T/pskdir/keys.psk"

step "qemu-img info with X.509 and with PSK"
for obj in "$x509_obj" "$nocert_obj" "$psk_obj"; do
    tmo qemu-img info --object "$obj" --image-opts "$(img_opts "$port" tls0)" \
        >"$T/info.out" 2>&1 || {
        cat "$T/info.out" >&2
        fail "qemu-img info with $obj failed"
    }
    grep -q 'virtual size: 16 MiB' "$T/info.out" ||
        fail "qemu-img info: $(cat "$T/info.out")"
done
expect_fail "qemu-img info without TLS in require mode" \
    qemu-img info "nbd://127.0.0.1:$port/disk"

step "qemu-io: writes and reads with pattern checks (X.509)"
mapfile -t aw < <(aio_cmds aio_write 64 $((1024 * 1024)))
mapfile -t ar < <(aio_cmds aio_read 64 $((1024 * 1024)))
qio "$x509_obj" "$port" 'write -P 0xab 0 64k' 'read -P 0xab 0 64k' \
    'write -P 0x5a 1001 3333' 'read -P 0x5a 1001 3333' \
    'write -z 128k 64k' 'read -P 0 128k 64k' 'flush'
qio "$psk_obj" "$port" "${aw[@]}" aio_flush "${ar[@]}" aio_flush
qio "$psk_obj" "$port" 'read -P 0xab 0 1001' 'read -P 1 1M 4k' \
    'read -P 64 1276k 4k'
step "the image file holds what qemu-io wrote"
head -c 4096 /dev/zero | tr '\0' '\100' >"$T/blk64"
cmp -s -n 4096 -i "0:$((1024 * 1024 + 63 * 4096))" "$T/blk64" "$disk" ||
    fail "block 63 of the aio writes is not in the image"

step "qemu-img convert in and out over TLS"
make_random "$T/src.raw" 16M
tmo qemu-img convert -n -f raw --object "$psk_obj" "$T/src.raw" \
    --target-image-opts "$(img_opts "$port" tls0)" ||
    fail "qemu-img convert into the export failed"
tmo qemu-img convert --object "$x509_obj" --image-opts \
    "$(img_opts "$port" tls0)" -O raw "$T/out.raw" ||
    fail "qemu-img convert out of the export failed"
same_content "$T/src.raw" "$T/out.raw" "$disk"
stop_server

step "--tls-verify-peer: qemu with a client certificate"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server" --tls-verify-peer
qio "$x509_obj" "$port" 'read -P 0 0 0' 'write -P 0x11 0 4k' \
    'read -P 0x11 0 4k'
expect_fail "qemu without a client certificate" \
    qemu-io --object "$nocert_obj" --image-opts "$(img_opts "$port" tls0)" \
    -c 'read 0 4k'
stop_server
step "pass"
