#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdinfo against the server: export size and transmission flags
# (--json), the export list (--list), the allocation map of a sparse image
# (--map), the default export "", an unknown export name, a read-only run,
# and the same over a Unix socket.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo python3 truncate dd

MiB=$((1024 * 1024))
disk=$T/disk.img
other=$T/other.img
odd=$T/odd.img

# disk: 8 MiB, data at [1 MiB, +64 KiB) and [5 MiB, +128 KiB), holes
# elsewhere.  other: 4 MiB, all hole.  odd: a size that is not a multiple
# of 512.
make_sparse "$disk" 8M $((1 * MiB)):64K $((5 * MiB)):128K
make_image "$other" 4M
make_image "$odd" 1000001
disk_map="0:$MiB:3 $MiB:65536:0 $((MiB + 65536)):$((4 * MiB - 65536)):3"
disk_map="$disk_map $((5 * MiB)):131072:0"
disk_map="$disk_map $((5 * MiB + 131072)):$((3 * MiB - 131072)):3"

# check_json FILE EXPR...: evaluate each Python expression with e = the
# first export of nbdinfo's JSON output and j = the whole document; fail
# naming every expression that is false.
check_json()
{
    python3 - "$@" <<'EOF' || fail "nbdinfo --json: unexpected values (see above)"
import json, sys
with open(sys.argv[1]) as f:
    j = json.load(f)
e = j["exports"][0]
bad = [x for x in sys.argv[2:] if not eval(x)]
for x in bad:
    print("  not true: %s" % x, file=sys.stderr)
if bad:
    print("  export: %s" % json.dumps(e), file=sys.stderr)
    sys.exit(1)
EOF
}

# check_map URI EXPECTED: nbdinfo --map --json of URI, with adjacent
# extents of the same type merged, must equal EXPECTED, a list of
# offset:length:type.
check_map()
{
    local u=$1 want=$2
    tmo nbdinfo --map --json "$u" >"$T/map.json" ||
        fail "nbdinfo --map $u failed"
    python3 - "$T/map.json" "$want" <<'EOF' || fail "nbdinfo --map $u: wrong allocation map"
import json, sys
with open(sys.argv[1]) as f:
    extents = json.load(f)
merged = []
for x in extents:
    off, ln, ty = x["offset"], x["length"], x["type"]
    if merged and merged[-1][2] == ty and merged[-1][0] + merged[-1][1] == off:
        merged[-1][1] += ln
    else:
        merged.append([off, ln, ty])
want = [[int(v) for v in w.split(":")] for w in sys.argv[2].split()]
if merged != want:
    print("  got:  %s" % merged, file=sys.stderr)
    print("  want: %s" % want, file=sys.stderr)
    sys.exit(1)
EOF
    step "map of $u is as expected"
}

# check_list URI NAME...: nbdinfo --list shows exactly these exports.
check_list()
{
    local u=$1
    shift
    tmo nbdinfo --list --json "$u" >"$T/list.json" ||
        fail "nbdinfo --list $u failed"
    python3 - "$T/list.json" "$@" <<'EOF' || fail "nbdinfo --list $u: wrong export list"
import json, sys
with open(sys.argv[1]) as f:
    j = json.load(f)
got = sorted(e["export-name"] for e in j["exports"])
want = sorted(sys.argv[2:])
if got != want:
    print("  got:  %s" % got, file=sys.stderr)
    print("  want: %s" % want, file=sys.stderr)
    sys.exit(1)
sizes = {e["export-name"]: e.get("export-size") for e in j["exports"]}
print("  exports: %s" % sizes)
EOF
    step "export list of $u is: $*"
}

# check_info URI SIZE: the common read-write checks of one export.
check_info()
{
    local u=$1 size=$2
    local -a extra=()
    tmo nbdinfo --json "$u" >"$T/info.json" || fail "nbdinfo --json $u failed"
    if is_our_server; then
        # What our server advertises on top of what nbdkit's file plugin
        # does: fast zeroes and the block size constraints.
        extra=('e["can_fast_zero"] is True'
            'e.get("block_size_minimum") == 1'
            'e.get("block_size_preferred") == 4096'
            'e.get("block_size_maximum") == 32 * 1024 * 1024')
    fi
    check_json "$T/info.json" \
        "e['export-size'] == $size" \
        'j["protocol"] == "newstyle-fixed"' \
        'j["structured"] is True' \
        'e["is_read_only"] is False' \
        'e["can_flush"] is True' \
        'e["can_fua"] is True' \
        'e["can_trim"] is True' \
        'e["can_zero"] is True' \
        'e["can_multi_conn"] is True' \
        'e["can_cache"] is True' \
        'e["can_df"] is True' \
        '"base:allocation" in e.get("contexts", [])' \
        "${extra[@]}"
    step "nbdinfo --json $u: size $size and flags as expected"
}

port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$disk" -e "other=$other" \
    -e "odd=$odd"

check_info "$(uri disk)" $((8 * MiB))
check_info "$(uri other)" $((4 * MiB))
check_info "$(uri odd)" 1000001

step "the empty export name is the first export"
tmo nbdinfo --json "$(uri '')" >"$T/info.json" || fail "nbdinfo of \"\" failed"
check_json "$T/info.json" "e['export-size'] == $((8 * MiB))"

check_list "$(uri '')" disk odd other
check_map "$(uri disk)" "$disk_map"
check_map "$(uri other)" "0:$((4 * MiB)):3"
check_map "$(uri odd)" "0:1000001:3"

step "nbdinfo --size and plain nbdinfo"
size=$(tmo nbdinfo --size "$(uri disk)") || fail "nbdinfo --size failed"
[ "$size" = $((8 * MiB)) ] || fail "nbdinfo --size said $size"
tmo nbdinfo "$(uri disk)" >"$T/plain.txt" || fail "nbdinfo (text) failed"
grep -q 'export-size: 8388608' "$T/plain.txt" ||
    fail "plain nbdinfo output lacks the size: $(cat "$T/plain.txt")"

expect_fail "nbdinfo of an unknown export" nbdinfo "$(uri nosuch)"
expect_fail "nbdinfo of an export name with a slash" nbdinfo "$(uri disk/x)"
server_alive
tmo nbdinfo --size "$(uri disk)" >/dev/null ||
    fail "server does not serve after the unknown export name"
stop_server

# Our server may listen on TCP and a Unix socket at once; nbdkit cannot.
if is_our_server; then
    port=$(free_port)
    start_server -l "127.0.0.1:$port" -l "unix:$T/both.sock" \
        -e "disk=$disk" -e "other=$other" -e "odd=$odd"
    for addr in "127.0.0.1:$port" "unix:$T/both.sock"; do
        size=$(tmo nbdinfo --size "$(uri_for "$addr" other)") ||
            fail "nbdinfo on $addr failed"
        [ "$size" = $((4 * MiB)) ] || fail "size on $addr is $size"
    done
    step "both listeners serve"
    stop_server
fi

step "read-only run (-r)"
port=$(free_port)
start_server -l "127.0.0.1:$port" -r -e "disk=$disk" -e "other=$other" \
    -e "odd=$odd"
for name in disk other; do
    tmo nbdinfo --json "$(uri $name)" >"$T/info.json" ||
        fail "nbdinfo --json of $name failed"
    check_json "$T/info.json" 'e["is_read_only"] is True' \
        'e["can_df"] is True' '"base:allocation" in e.get("contexts", [])'
done
check_list "$(uri '')" disk odd other
check_map "$(uri disk)" "$disk_map"
stop_server

step "Unix socket"
sock=$T/nbd.sock
start_server -l "unix:$sock" -e "disk=$disk" -e "other=$other" \
    -e "odd=$odd"
check_info "$(uri disk)" $((8 * MiB))
check_info "$(uri '')" $((8 * MiB))
check_list "$(uri '')" disk odd other
check_map "$(uri disk)" "$disk_map"
expect_fail "nbdinfo of an unknown export over the socket" \
    nbdinfo "$(uri nosuch)"
tmo nbdinfo --size "$(uri other)" >/dev/null ||
    fail "server does not serve after the unknown export name"
stop_server

# The images are unchanged: nothing above writes.
cmp -s -n 65536 -i "0:$MiB" "$disk.d1" "$disk" || fail "disk image changed"
step "pass"
