#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Incremental backup through the control socket, end to end: a full
# backup with nbdc copy while the bitmap "b0" (from the configuration)
# records; random writes from fio on two connections and qemu-io; a
# checkpoint (nbd-serverd-ctl checkpoint disk b0 b1: b0 frozen, b1
# records from then on); `nbdc copy --dirty-bitmap b0` onto the full
# backup while fio keeps writing; a second checkpoint and incremental
# (b1) with the writes stopped: the backup equals the live image by
# sha256, and each incremental copied exactly the frozen bitmap's dirty
# bytes (as nbd-serverd-ctl bitmaps and nbdinfo count them), far fewer
# than the image.  Then a kill -9 between rounds: the restarted daemon
# takes every bitmap as all dirty, and the next incremental copies the
# whole image and is still exact.  The same flow on an overlay export.
# Bad bitmap commands get clear errors.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "the control socket is nbd-serverd's"
requires nbdinfo qemu-io fio sha256sum python3

ctl_bin=$BUILD/nbd-serverd-ctl
img=$T/disk.img
make_random "$img" 64M
make_random "$T/base.img" 16M
sock=$T/s.sock
csock=$T/control.sock
cat >"$T/c.conf" <<EOF
[server]
control = $csock
[export disk]
path = $img
dirty-bitmap = b0
dirty-bitmap-file = $T/disk.bitmaps
[export cow]
path = $T/base.img
overlay = $T/cow.ovl
dirty-bitmap = c0
dirty-bitmap-file = $T/cow.bitmaps
EOF
disk="nbd+unix:///disk?socket=$sock"
cow="nbd+unix:///cow?socket=$sock"
start_server -c "$T/c.conf" -l "unix:$sock"

# ctl ARGS...: nbd-serverd-ctl must succeed; its output in $T/ctl.out.
ctl()
{
    tmo "$ctl_bin" -s "$csock" "$@" >"$T/ctl.out" 2>"$T/ctl.err" || {
        cat "$T/ctl.out" "$T/ctl.err" >&2
        fail "nbd-serverd-ctl $*"
    }
}
# frozen_bytes EXPORT BITMAP: the bitmap's dirty bytes, from the control
# socket.
bitmap_bytes()
{
    ctl --json bitmaps "$1"
    python3 - "$T/ctl.out" "$2" <<'PY'
import json
import sys

reply = json.load(open(sys.argv[1]))
for b in reply["bitmaps"]:
    if b["name"] == sys.argv[2]:
        print(b["dirty-bytes"])
        break
else:
    sys.exit("no bitmap " + sys.argv[2])
PY
}
nbdinfo_bytes()
{
    tmo nbdinfo --map="qemu:dirty-bitmap:$2" "$1" |
        awk '$3 == 1 {n += $2} END {print n + 0}'
}
# incremental URI BITMAP BACKUP: nbdc copy --dirty-bitmap; prints the
# bytes it copied.
incremental()
{
    nbdc "$T/incr.out" copy --dirty-bitmap "$2" "$1" "$3"
    awk '/^copied/ {print $2}' "$T/incr.out"
}
fio_writes()
{
    tmo fio --name=w --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k \
        --iodepth=8 --numjobs=2 --size=64M --number_ios="$2" \
        --randrepeat=0 --output="$T/fio-$2.out"
}

step "round 0: a full backup while b0 records"
nbdc "$T/full.out" copy "$disk" "$T/backup.img"
same_content "$img" "$T/backup.img" || fail "the full backup differs"
ctl bitmaps disk
step "nbd-serverd-ctl bitmaps disk: $(tr '\n' '|' <"$T/ctl.out")"
grep -q "b0" "$T/ctl.out" || fail "b0 is not listed"

step "writes from fio (2 connections) and qemu-io"
fio_writes "$disk" 200 || fail "fio"
tmo qemu-io -f raw "$disk" -c 'write -P 3 20M 1M' >/dev/null

step "round 1: checkpoint, then an incremental of b0 while fio writes on"
ctl checkpoint disk b0 b1
ctl --json bitmaps disk
grep -q '"frozen": *true' "$T/ctl.out" || fail "b0 is not frozen"
want=$(bitmap_bytes disk b0)
[ "$want" = "$(nbdinfo_bytes "$disk" b0)" ] ||
    fail "the control socket and nbdinfo count b0 differently"
fio_writes "$disk" 400 &
fio_pid=$!
copied=$(incremental "$disk" b0 "$T/backup.img")
wait "$fio_pid" || fail "fio during the incremental"
step "round 1 copied $copied bytes; b0 has $want dirty"
[ "$copied" = "$want" ] || fail "copied $copied, b0 has $want dirty"
[ "$copied" -lt $((64 << 20)) ] || fail "round 1 copied everything"
ctl bitmap-remove disk b0

step "round 2: checkpoint with the writes stopped, incremental of b1"
ctl checkpoint disk b1 b2
want=$(bitmap_bytes disk b1)
copied=$(incremental "$disk" b1 "$T/backup.img")
step "round 2 copied $copied bytes; b1 has $want dirty"
[ "$copied" = "$want" ] || fail "copied $copied, b1 has $want dirty"
same_content "$img" "$T/backup.img" ||
    fail "after two incrementals the backup differs from the image"
ctl bitmap-remove disk b1

step "kill -9 between rounds: all dirty after the restart"
tmo qemu-io -f raw "$disk" -c 'write -P 5 30M 64k' >/dev/null
signal_server KILL
reap_killed_server "$sock"
start_server -c "$T/c.conf" -l "unix:$sock"
grep -q "disk.bitmaps: the daemon that had it open did not stop cleanly" \
    "$SERVER_LOG" || fail "no warning about the unclean stop"
ctl checkpoint disk b2 b3
copied=$(incremental "$disk" b2 "$T/backup.img")
[ "$copied" = $((64 << 20)) ] ||
    fail "after kill -9 round 3 should copy everything, copied $copied"
same_content "$img" "$T/backup.img" || fail "the backup differs after kill -9"

step "the same flow on an overlay export"
# c0 went all dirty with the kill: a checkpoint at the full backup
# starts c1 clean (nothing writes to the export meanwhile).
ctl checkpoint cow c0 c1
nbdc "$T/cow-full.out" copy "$cow" "$T/cow-backup.img"
tmo qemu-io -f raw "$cow" -c 'write -P 4 1M 128k' -c 'write -z 7M 64k' \
    >/dev/null
ctl checkpoint cow c1 c2
copied=$(incremental "$cow" c1 "$T/cow-backup.img")
[ "$copied" = $((192 << 10)) ] || fail "overlay: copied $copied"
nbdc "$T/cow-now.out" copy "$cow" "$T/cow-now.img"
same_content "$T/cow-now.img" "$T/cow-backup.img" ||
    fail "the overlay's incremental backup differs"

step "bitmap commands: clear, merge, add, and their errors"
ctl bitmap-add disk extra
tmo qemu-io -f raw "$disk" -c 'write -P 6 0 4k' >/dev/null
[ "$(bitmap_bytes disk extra)" = 65536 ] || fail "extra did not record"
step "adding an export live keeps the others and their bitmaps"
ctl add scratch memory=1M
tmo qemu-io -f raw "$disk" -c 'write -P 6 128k 4k' >/dev/null
[ "$(bitmap_bytes disk extra)" = 131072 ] ||
    fail "extra stopped recording after an add"
ctl remove scratch
ctl bitmap-merge disk extra b3
ctl bitmap-clear disk extra
[ "$(bitmap_bytes disk extra)" = 0 ] || fail "extra was not cleared"
# ctl_fails STATUS MESSAGE ARGS...
ctl_fails()
{
    local want=$1 msg=$2 rc=0
    shift 2
    tmo "$ctl_bin" -s "$csock" "$@" >"$T/ctl.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || fail "nbd-serverd-ctl $*: exit $rc, want $want"
    grep -q -- "$msg" "$T/ctl.out" ||
        fail "nbd-serverd-ctl $*: no '$msg' in: $(cat "$T/ctl.out")"
    step "nbd-serverd-ctl $*: $(head -c 160 "$T/ctl.out")"
}
ctl_fails 1 "no dirty bitmap named nope" bitmap-remove disk nope
ctl_fails 1 "a dirty bitmap named extra exists" bitmap-add disk extra
ctl_fails 1 "dirty bitmap name 'a/b'" bitmap-add disk a/b
ctl_fails 1 "no export nope keeps dirty bitmaps" bitmaps nope
ctl_fails 2 "usage" checkpoint disk b3
stop_server

step "the bitmaps and the frozen mark outlive a clean restart"
start_server -c "$T/c.conf" -l "unix:$sock"
ctl --json bitmaps disk
python3 - "$T/ctl.out" <<'PY' || fail "bitmaps after the restart"
import json
import sys

got = {b["name"]: b["frozen"] for b in json.load(open(sys.argv[1]))["bitmaps"]}
# b0 is named in the configuration: made again (empty) at each start.
want = {"b0": False, "b2": True, "b3": False, "extra": False}
assert got == want, got
PY
stop_server
step "ok"
