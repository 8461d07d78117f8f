#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc info against nbd-serverd, nbdkit and qemu-nbd: --json agrees with
# nbdinfo --json on the size and every flag; --map agrees with nbdinfo
# --map; --list names every export; bad URIs and nbds:// fail with a
# message naming the cause and the documented exit status.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo nbdkit qemu-nbd python3 truncate dd

MiB=$((1024 * 1024))
disk=$T/disk.img
make_image "$disk" 8M
make_random "$T/d1" 64K
write_at "$disk" $((1 * MiB)) "$T/d1"
write_at "$disk" $((5 * MiB)) "$T/d1"
make_image "$T/small.img" 1000448

# compare_info URI: nbdc info --json and nbdinfo --json agree.
compare_info()
{
    local u=$1
    nbdc "$T/nbdc.json" info --json "$u"
    tmo nbdinfo --json "$u" >"$T/nbdinfo.json" || fail "nbdinfo --json $u"
    python3 - "$T/nbdc.json" "$T/nbdinfo.json" <<'PY' || fail "nbdc info --json $u disagrees with nbdinfo"
import json, sys
ours = json.load(open(sys.argv[1]))["exports"][0]
theirs = json.load(open(sys.argv[2]))["exports"][0]
keys = ["export-size", "is_rotational", "is_read_only", "can_cache",
        "can_df", "can_fast_zero", "can_flush", "can_fua", "can_multi_conn",
        "can_trim", "can_zero"]
keys += [k for k in ("block_size_minimum", "block_size_preferred",
                     "block_size_maximum") if k in theirs]
bad = [k for k in keys if ours.get(k) != theirs.get(k)]
for k in bad:
    print("  %s: nbdc %r, nbdinfo %r" % (k, ours.get(k), theirs.get(k)),
          file=sys.stderr)
if ("base:allocation" in ours["contexts"]) != \
        ("base:allocation" in theirs.get("contexts", [])):
    print("  contexts differ", file=sys.stderr)
    bad.append("contexts")
sys.exit(1 if bad else 0)
PY
    step "nbdc info --json $u agrees with nbdinfo"
}

# compare_map URI: nbdc info --map --json and nbdinfo --map --json agree
# (adjacent extents of one type merged).
compare_map()
{
    local u=$1
    nbdc "$T/nbdc-map.json" info --map --json "$u"
    tmo nbdinfo --map --json "$u" >"$T/nbdinfo-map.json" ||
        fail "nbdinfo --map $u"
    python3 - "$T/nbdc-map.json" "$T/nbdinfo-map.json" <<'PY' || fail "nbdc info --map $u disagrees with nbdinfo"
import json, sys
def merged(path):
    out = []
    for x in json.load(open(path)):
        o, l, t = x["offset"], x["length"], x["type"]
        if out and out[-1][2] == t and out[-1][0] + out[-1][1] == o:
            out[-1][1] += l
        else:
            out.append([o, l, t])
    return out
a, b = merged(sys.argv[1]), merged(sys.argv[2])
if a != b:
    print("  nbdc:    %s\n  nbdinfo: %s" % (a, b), file=sys.stderr)
    sys.exit(1)
PY
    step "nbdc info --map $u agrees with nbdinfo"
}

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" -e "small=$T/small.img"
compare_info "$(uri disk)"
compare_info "$(uri small)"
compare_map "$(uri disk)"
nbdc "$T/list.json" info --list --json "$(uri '')"
python3 - "$T/list.json" <<'PY' || fail "nbdc info --list: wrong export list"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
if names != ["disk", "small"]:
    print("  got %s" % names, file=sys.stderr)
    sys.exit(1)
PY
step "nbdc info --list names both exports"
nbdc "$T/plain.txt" info "$(uri disk)"
grep -q 'export-size: 8388608' "$T/plain.txt" ||
    fail "plain nbdc info lacks the size: $(cat "$T/plain.txt")"
nbdc_fails 1 "export 'nosuch'" info "$(uri nosuch)"
# (nbdc-tls.sh tests TLS; here only that a plain server is named as such.)
printf 'alice:00112233445566778899aabbccddeeff\n' >"$T/alice.psk"
nbdc_fails 1 "the server does not offer TLS" info \
    "nbds://alice@127.0.0.1:$port/disk?tls-psk-file=$T/alice.psk"
nbdc "$T/after-tls.json" info --json "$(uri disk)"
stop_server

start_peer nbdkit disk "$disk"
compare_info "$PEER_URI"
compare_map "$PEER_URI"
stop_peer

start_peer qemu-nbd disk "$disk"
compare_info "$PEER_URI"
compare_map "$PEER_URI"
stop_peer

start_peer qemu-nbd ro "$disk" -r
compare_info "$PEER_URI"
stop_peer

step "bad URIs and TLS"
nbdc_fails 2 "scheme 'http'" info "http://127.0.0.1/x"
nbdc_fails 2 "port '99999'" info "nbd://127.0.0.1:99999/x"
nbdc_fails 2 "socket=PATH" info "nbd+unix:///x"
nbdc_fails 2 "unknown query parameter 'bogus'" info "nbd://127.0.0.1/x?bogus=1"
nbdc_fails 1 "Connection refused" info "nbd://127.0.0.1:$port/x"
nbdc_fails 2 "expected one URI" info

step "a server that accepts but never greets: nbdc gives up after 30 s"
sock=$T/silent.sock
python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(4)
conns = []
while True:
    conns.append(s.accept()[0])
' "$sock" &
track_pid $!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
nbdc_fails 1 "did not complete the handshake within 30.000 s" \
    info "nbd+unix:///x?socket=$sock"
nbdc_fails 1 "did not complete the handshake within 30.000 s" \
    info --list "nbd+unix:///?socket=$sock"
step "pass"
