#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdinfo --json from libnbd 1.22 against nbd-serverd: the JSON says
# fixed newstyle, structured replies and extended headers; the export's
# size, name, flags, block sizes and base:allocation match what the
# server was started with; --list shows every export; a read-only server
# says is_read_only and no trim or zero; --map over 16 GiB shows the data
# written above 4 GiB.  Over TCP and a Unix socket.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate dd python3
chroot_requires nbdinfo

img=$T/disk.img
make_image "$img" 16G
make_random "$T/chunk" 1M
write_at "$img" $((5 * 1024 * 1024 * 1024)) "$T/chunk"

# check_json FILE EXPORT SIZE READONLY: nbdinfo --json output for EXPORT.
check_json()
{
    python3 - "$@" <<'PY' || fail "nbdinfo --json output: $(cat "$1")"
import json, sys
path, name, size, ro = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
j = json.load(open(path))
def want(cond, msg):
    if not cond:
        print("  " + msg, file=sys.stderr)
        sys.exit(1)
want(j.get("protocol") == "newstyle-fixed", "protocol %r" % j.get("protocol"))
want(j.get("TLS") is False, "TLS %r" % j.get("TLS"))
want(j.get("structured") is True, "structured %r" % j.get("structured"))
want(j.get("extended") is True, "extended headers %r" % j.get("extended"))
ex = [e for e in j["exports"] if e["export-name"] == name]
want(len(ex) == 1, "export %s not listed once" % name)
e = ex[0]
want(e["export-size"] == size, "export-size %r, want %d" % (e["export-size"], size))
want(e["is_read_only"] is ro, "is_read_only %r" % e["is_read_only"])
want("base:allocation" in e.get("contexts", []), "no base:allocation")
for k in ("can_flush", "can_fua", "can_multi_conn", "can_df"):
    want(e[k] is True, "%s %r" % (k, e[k]))
for k in ("can_trim", "can_zero", "can_fast_zero"):
    want(e[k] is (not ro), "%s %r on a %s export" % (k, e[k], "read-only" if ro else "writable"))
mn, pref, mx = e["block_size_minimum"], e["block_size_preferred"], e["block_size_maximum"]
want(mn >= 1 and mn & (mn - 1) == 0 and mn <= 65536, "minimum %d" % mn)
want(pref & (pref - 1) == 0 and pref >= max(mn, 512), "preferred %d" % pref)
want(mx >= pref and mx >= 1 << 20, "maximum %d" % mx)
print("  %s: %d bytes, ro=%s, block sizes %d/%d/%d" % (name, size, ro, mn, pref, mx))
PY
}

port=$(free_port)
sock=$T/nbd.sock
start_server -l "127.0.0.1:$port" -l "unix:$sock" -e "disk=$img" \
    -e "mem=memory:3G"

for u in "nbd://127.0.0.1:$port/disk" "nbd+unix:///disk?socket=$sock"; do
    step "nbdinfo $(chroot_version nbdinfo) --json $u"
    in_chroot nbdinfo --json "$u" >"$T/info.json" || fail "nbdinfo --json $u"
    check_json "$T/info.json" disk $((16 * 1024 * 1024 * 1024)) 0
done

step "nbdinfo --json --list"
in_chroot nbdinfo --json --list "nbd://127.0.0.1:$port/" >"$T/list.json" ||
    fail "nbdinfo --json --list"
check_json "$T/list.json" disk $((16 * 1024 * 1024 * 1024)) 0
check_json "$T/list.json" mem $((3 * 1024 * 1024 * 1024)) 0
python3 -c 'import json,sys; n=len(json.load(open(sys.argv[1]))["exports"]); sys.exit(n != 2)' \
    "$T/list.json" || fail "--list does not show exactly 2 exports"

step "nbdinfo --map (16 GiB, data at 5 GiB)"
in_chroot nbdinfo --map --json "nbd://127.0.0.1:$port/disk" >"$T/map.json" ||
    fail "nbdinfo --map"
python3 - "$T/map.json" <<'PY' || fail "nbdinfo --map: $(cat "$T/map.json")"
import json, sys
m = json.load(open(sys.argv[1]))
G = 1 << 30
end = 0
for e in m:
    assert e["offset"] == end, "gap at %d" % end
    end += e["length"]
assert end == 16 * G, "map ends at %d" % end
data = [e for e in m if not (e["type"] & 1)]
assert data, "no data extent"
assert all(e["offset"] <= 5 * G and e["offset"] + e["length"] >= 5 * G + (1 << 20) for e in data), data
assert any(e["length"] > 4 * G for e in m), "no extent over 4 GiB"
print("  %d extents, data at %s" % (len(m), [(e["offset"], e["length"]) for e in data]))
PY
stop_server

step "read-only server"
start_server -r -l "unix:$sock" -e "disk=$img"
in_chroot nbdinfo --json "nbd+unix:///disk?socket=$sock" >"$T/ro.json" ||
    fail "nbdinfo --json (read-only)"
check_json "$T/ro.json" disk $((16 * 1024 * 1024 * 1024)) 1
stop_server
