#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc copy with nbd-serverd, nbdkit and qemu-nbd: 64 MiB of random data
# round-trips file -> NBD -> file and NBD -> NBD (sha256); a sparse image
# stays sparse (qemu-img map) both ways and zeroes overwrite old data; a
# destination smaller than the source is refused; a server killed in the
# middle of a copy (the source or the destination) makes the copy fail
# with a message and exit status 1, not hang.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdkit qemu-nbd qemu-img python3 sha256sum truncate dd

MiB=$((1024 * 1024))
src=$T/src.img
make_random "$src" 64M

# serve ARGS...: start the server under test on a Unix socket (the
# server leaves its socket file behind when it stops).
serve()
{
    rm -f "$T/ours.sock"
    start_server -l "unix:$T/ours.sock" "$@"
}

# data_bytes IMAGE: bytes qemu-img map reports as allocated data.
data_bytes()
{
    qemu-img map -f raw --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'
}

# round_trip KIND: src -> export (KIND serves a fresh image) -> new file.
round_trip()
{
    local kind=$1 mid=$T/mid-$1.img back=$T/back-$1.img u
    shift
    make_image "$mid" 64M
    rm -f "$back"
    if [ "$kind" = nbd-serverd ]; then
        serve -e "disk=$mid"
        u=$(uri disk)
    else
        start_peer "$kind" disk "$mid"
        u=$PEER_URI
    fi
    nbdc "$T/copy.out" copy "$src" "$u" "$@"
    # (An ASan build announces at start that it cannot follow makecontext.)
    if grep -v "ASan doesn't fully support makecontext" "$T/copy.out.err" |
        grep -q .; then
        fail "nbdc copy wrote to a stderr that is not a terminal: $(cat "$T/copy.out.err")"
    fi
    nbdc "$T/copy.out" copy "$u" "$back" "$@"
    if [ "$kind" = nbd-serverd ]; then
        stop_server
    else
        stop_peer
    fi
    same_content "$src" "$mid" "$back"
}

round_trip nbd-serverd
round_trip nbd-serverd --connections 1 --requests 2 --threads 1
round_trip nbdkit --connections 2
round_trip qemu-nbd

step "NBD to NBD: nbdkit to nbd-serverd"
dst=$T/dst.img
make_image "$dst" 64M
start_peer nbdkit src "$src"
serve -e "disk=$dst"
nbdc "$T/copy.out" copy "$PEER_URI" "$(uri disk)" --connections 4
stop_server
stop_peer
same_content "$src" "$dst"

step "sparse images stay sparse"
sparse=$T/sparse.img
make_sparse "$sparse" 64M $((1 * MiB)):64K $((40 * MiB)):128K
want=$((192 * 1024))
serve -e "sparse=$sparse"
rm -f "$T/out.img"
nbdc "$T/copy.out" copy "$(uri sparse)" "$T/out.img"
stop_server
same_content "$sparse" "$T/out.img"
got=$(data_bytes "$T/out.img")
[ "$got" -ge "$want" ] && [ "$got" -le $((want + MiB)) ] ||
    fail "NBD -> file: $got bytes of data in the copy, want about $want"
step "NBD -> file: $got bytes of data (source: $want)"

for kind in qemu-nbd nbd-serverd; do
    # The destination starts full of data: zeroes must replace it.
    make_random "$T/full.img" 64M
    if [ "$kind" = nbd-serverd ]; then
        serve -e "full=$T/full.img"
        u=$(uri full)
    else
        start_peer qemu-nbd full "$T/full.img"
        u=$PEER_URI
    fi
    nbdc "$T/copy.out" copy "$sparse" "$u"
    if [ "$kind" = nbd-serverd ]; then stop_server; else stop_peer; fi
    same_content "$sparse" "$T/full.img"
    got=$(data_bytes "$T/full.img")
    [ "$got" -le $((want + MiB)) ] ||
        fail "file -> $kind: $got bytes of data in the copy, want about $want"
    step "file -> $kind over old data: $got bytes of data (source: $want)"
done

step "a progress bar when stderr is a terminal (file to file, under a pty)"
rm -f "$T/tty.img"
tmo python3 - "$BUILD/nbdc" "$src" "$T/tty.img" >"$T/tty.out" <<'PY' ||
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "copy", sys.argv[2], sys.argv[3]])
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
PY
    fail "nbdc copy under a pty failed: $(cat "$T/tty.out")"
grep -q '\] 100% 64/64 MiB' "$T/tty.out" ||
    fail "no progress bar on a terminal: $(cat "$T/tty.out")"
same_content "$src" "$T/tty.img"

step "a destination smaller than the source is refused"
make_image "$T/small.img" 32M
serve -e "small=$T/small.img"
nbdc_fails 1 "is smaller than the source" copy "$src" "$(uri small)"
stop_server
nbdc_fails 1 "is smaller than the source" copy "$src" "$T/small.img"
nbdc_fails 2 "expected SRC and DST" copy "$src"
nbdc_fails 2 "bad URI" copy "$src" "nbd://h:0/x"

# kill_mid_copy WHAT: copy from a rate-limited nbdkit (about 4 s for 64
# MiB) and kill WHAT (source or destination) after one second.
kill_mid_copy()
{
    local what=$1 rc=0 u
    start_peer nbdkit src "$src" --filter=rate rate=128M
    make_image "$T/victim.img" 64M
    serve -e "victim=$T/victim.img"
    u=$(uri victim)
    tmo "$BUILD/nbdc" copy "$PEER_URI" "$u" >"$T/kill.out" 2>&1 &
    local copy_pid=$!
    sleep 1
    kill -0 "$copy_pid" 2>/dev/null ||
        fail "the copy ended within a second; the rate limit did not hold"
    if [ "$what" = source ]; then
        kill -KILL "$PEER_PID"
    else
        kill -KILL "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
    wait "$copy_pid" || rc=$?
    sanitizer_report "$T/kill.out" && fail "sanitizer report: $(head -n 40 "$T/kill.out")"
    [ "$rc" = 1 ] ||
        fail "copy with the $what killed: exit $rc, want 1: $(cat "$T/kill.out")"
    grep -q "copy failed: .*closed the connection\|copy failed: .*connection to the server lost" "$T/kill.out" ||
        fail "copy with the $what killed: unclear message: $(cat "$T/kill.out")"
    step "$what killed mid-copy: exit 1, $(head -c 200 "$T/kill.out")"
    if [ -n "$SERVER_PID" ]; then stop_server; fi
    stop_peer
}
kill_mid_copy source
kill_mid_copy destination
step "pass"
