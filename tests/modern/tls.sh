#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS from the trixie clients (libnbd 1.22, qemu 10, gnutls 3.8) to
# nbd-serverd --tls=require:
#   X.509 with client certificates (--tls-verify-peer): nbdinfo --json
#   says TLS and extended headers; nbdsh writes and reads above 4 GiB;
#   nbdcopy round-trips with 4 connections; qemu-img reads and compares
#   through tls-creds-x509.  Refused: no client certificate, one from
#   another CA, and a plain-text client.
#   PSK: nbdinfo and nbdcopy with the right key; qemu-img with
#   tls-creds-psk; a wrong key and an unknown user are refused.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires certtool psktool truncate sha256sum
chroot_requires nbdinfo nbdcopy nbdsh qemu-img python3

GiB=$((1024 * 1024 * 1024))
img=$T/disk.img
make_image "$img" 6G
make_random "$T/data" 8M
write_at "$img" $((5 * GiB)) "$T/data"
cp --sparse=always "$img" "$T/orig.img"
pki=$T/pki
make_pki "$pki"
port=$(free_port)
addr=127.0.0.1:$port

# json_is FILE KEY VALUE: top-level KEY of nbdinfo's JSON is VALUE.
json_is()
{
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; sys.exit(json.dumps(v) != sys.argv[3])' \
        "$@" || fail "nbdinfo JSON $2 is not $3: $(cat "$1")"
}

cat >"$T/rw.py" <<'PY'
import sys
import nbd
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
assert h.get_tls_negotiated(), "TLS not negotiated"
assert h.get_extended_headers_negotiated(), "no extended headers over TLS"
buf = bytes(range(256)) * 256
h.pwrite(buf, (5 << 30) + (9 << 20), nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), (5 << 30) + (9 << 20)) == buf, "read back over TLS"
h.zero(5 << 30, 0)
h.shutdown()
print("  TLS + extended headers: wrote 64 KiB at 5 GiB + 9 MiB, zeroed 5 GiB")
PY

# ---------------------------------------------------------------
step "X.509, client certificates required"
start_server -l "$addr" --tls=require --tls-certs "$pki/server" \
    --tls-verify-peer -e "disk=$img"
u=$(tls_uri "$addr" disk "tls-certificates=$pki/client")
in_chroot nbdinfo --json "$u" >"$T/x509.json" || fail "nbdinfo over X.509"
json_is "$T/x509.json" TLS true
json_is "$T/x509.json" extended true
in_chroot python3 "$T/rw.py" "$u" || fail "nbdsh-style writes over X.509"
python3 - "$img" <<'PY' || fail "the TLS write is not in the image"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek((5 << 30) + (9 << 20))
    sys.exit(f.read(65536) != bytes(range(256)) * 256)
PY
cp --sparse=always "$T/orig.img" "$T/src.img"
in_chroot nbdcopy --connections=4 "$T/src.img" "$u" || fail "nbdcopy into the export over TLS"
in_chroot nbdcopy --connections=4 "$u" "$T/back.img" || fail "nbdcopy from the export over TLS"
same_sparse "$T/src.img" "$img" "$T/back.img"

step "qemu-img over X.509"
q_obj="tls-creds-x509,id=tls0,dir=$pki/client,endpoint=client"
q_img="driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=disk,tls-creds=tls0,tls-hostname=localhost"
in_chroot qemu-img info --object "$q_obj" --image-opts "$q_img" >"$T/qinfo.out" 2>&1 ||
    fail "qemu-img info over TLS: $(cat "$T/qinfo.out")"
grep -q "virtual size: 6 GiB" "$T/qinfo.out" || fail "qemu-img info: $(cat "$T/qinfo.out")"
in_chroot qemu-img compare --object "$q_obj" --image-opts "$q_img" \
    "driver=raw,file.driver=file,file.filename=$T/src.img" >"$T/qcmp.out" 2>&1 ||
    fail "qemu-img compare over TLS: $(cat "$T/qcmp.out")"

step "refused: no client certificate, another CA, plain text"
chroot_fails "no client certificate" nbdinfo "$(tls_uri "$addr" disk "tls-certificates=$pki/nocert")"
chroot_fails "a client certificate from another CA" nbdinfo "$(tls_uri "$addr" disk "tls-certificates=$pki/othca")"
chroot_fails "plain text to --tls=require" nbdinfo "nbd://$addr/disk"
in_chroot nbdinfo "$u" >/dev/null || fail "the server no longer serves after the refusals"
stop_server

# ---------------------------------------------------------------
step "PSK"
make_psk "$T/keys.psk" alice bob
mkdir -p "$T/qpsk" "$T/wrong"
cp "$T/keys.psk" "$T/qpsk/keys.psk"
# Keys the server does not have: alice's with other bytes, and carol's.
psktool -u alice -p "$T/wrong/keys.psk" >/dev/null 2>&1
psktool -u carol -p "$T/wrong/keys.psk" >/dev/null 2>&1
start_server -l "$addr" --tls=require --tls-psk "$T/keys.psk" -e "disk=$img"
u=$(tls_uri "$addr" disk "tls-psk-file=$T/keys.psk" alice)
in_chroot nbdinfo --json "$u" >"$T/psk.json" || fail "nbdinfo over PSK"
json_is "$T/psk.json" TLS true
json_is "$T/psk.json" extended true
in_chroot python3 "$T/rw.py" "$u" || fail "writes over PSK"
in_chroot nbdcopy --connections=4 "$u" "$T/back2.img" || fail "nbdcopy over PSK"
same_sparse "$img" "$T/back2.img"
in_chroot qemu-img info --object "tls-creds-psk,id=tls0,dir=$T/qpsk,username=bob,endpoint=client" \
    --image-opts "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$port,export=disk,tls-creds=tls0" \
    >"$T/qpsk.out" 2>&1 || fail "qemu-img info over PSK: $(cat "$T/qpsk.out")"
grep -q "virtual size: 6 GiB" "$T/qpsk.out" || fail "qemu-img info (PSK): $(cat "$T/qpsk.out")"
chroot_fails "a wrong PSK" nbdinfo "$(tls_uri "$addr" disk "tls-psk-file=$T/wrong/keys.psk" alice)"
chroot_fails "an unknown PSK user" nbdinfo "$(tls_uri "$addr" disk "tls-psk-file=$T/wrong/keys.psk" carol)"
in_chroot nbdinfo "$u" >/dev/null || fail "the server no longer serves after the refusals"
stop_server
