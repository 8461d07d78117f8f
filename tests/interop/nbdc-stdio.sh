#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbdc copy endpoints: "-" (standard input or output, streamed) and
# "null:" (a destination that discards).  An export with data and holes
# piped to sha256sum matches the image; a pipe into an export of the
# same size, and one shorter than it, read back right; "null:" reads a
# whole export; nbdkit serves as a source too.  Mistakes get a clear
# message and status: a pipe longer than the destination, a missing
# destination file for a pipe (its length is unknown), "-" on both
# sides, "null:" as a source, a terminal as the pipe, and a source
# server that dies mid-stream.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdkit python3 sha256sum truncate script
NBDC=$BUILD/nbdc

make_image "$T/disk.img" 16M
make_random "$T/a" 3M
make_random "$T/b" 1M
write_at "$T/disk.img" 0 "$T/a"
write_at "$T/disk.img" $((12 << 20)) "$T/b"
make_image "$T/dst.img" 16M
start_server -l "unix:$T/s.sock" -e "disk=$T/disk.img" -e "dst=$T/dst.img" \
    -e "small=memory:1M"
src=$(uri disk)
dst=$(uri dst)

step "export -> '-' | sha256sum"
got=$(tmo "$NBDC" copy "$src" - | sha256sum | cut -d' ' -f1)
[ "$got" = "$(sha256_of "$T/disk.img")" ] ||
    fail "nbdc copy URI - | sha256sum: $got, the image $(sha256_of "$T/disk.img")"

step "pipe -> export (whole size), read back"
make_random "$T/in" 16M
tmo "$NBDC" copy - "$dst" <"$T/in" >"$T/out" 2>&1 ||
    fail "nbdc copy - URI: $(cat "$T/out")"
# ASan builds warn about swapcontext on stderr once; that is not nbdc's.
grep -v "ASan doesn't fully support makecontext/swapcontext" "$T/out" \
    >"$T/out.own" || true
[ ! -s "$T/out.own" ] || fail "nbdc copy - printed: $(cat "$T/out.own")"
tmo "$NBDC" copy "$dst" - >"$T/back"
same_content "$T/in" "$T/back" "$T/dst.img"

step "a shorter pipe (with a zero block) writes its length only"
{ head -c 1M "$T/b"; head -c 1M /dev/zero; head -c 100000 "$T/a"; } \
    >"$T/short"
cat "$T/short" | tmo "$NBDC" copy - "$dst"
head -c "$(stat -c %s "$T/short")" "$T/dst.img" >"$T/prefix"
same_content "$T/short" "$T/prefix"
tail -c +$(($(stat -c %s "$T/short") + 1)) "$T/dst.img" >"$T/rest"
tail -c +$(($(stat -c %s "$T/short") + 1)) "$T/in" >"$T/rest-want"
same_content "$T/rest-want" "$T/rest"

step "pipe -> a file that exists"
make_image "$T/file.img" 4M
head -c 3M "$T/a" | tmo "$NBDC" copy - "$T/file.img"
cmp -s <(head -c 3M "$T/file.img") "$T/a" || fail "pipe -> file"

step "null: reads the whole export"
tmo "$NBDC" copy "$src" null: || fail "nbdc copy URI null:"
tmo "$NBDC" copy - null: <"$T/a" || fail "nbdc copy - null:"

step "nbdkit as the source of a stream"
nbdkit -U "$T/k.sock" -P "$T/k.pid" -f --exit-with-parent \
    file "$T/disk.img" >>"$SERVER_LOG" 2>&1 &
track_pid $!
for ((i = 0; i < 100; i++)); do
    [ -S "$T/k.sock" ] && break
    sleep 0.1
done
got=$(tmo "$NBDC" copy "nbd+unix:///?socket=$T/k.sock" - | sha256sum |
    cut -d' ' -f1)
[ "$got" = "$(sha256_of "$T/disk.img")" ] || fail "nbdkit -> '-': $got"

# bad STATUS MESSAGE CMD...: CMD (stdin from $BAD_IN) exits STATUS, says so.
bad()
{
    local want=$1 msg=$2 rc=0
    shift 2
    tmo "$@" <"${BAD_IN:-/dev/null}" >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || fail "$*: exit $rc, want $want: $(cat "$T/bad.out")"
    grep -q -- "$msg" "$T/bad.out" ||
        fail "$*: no clear message '$msg': $(cat "$T/bad.out")"
    step "refused (exit $rc): $(head -c 160 "$T/bad.out" | tr '\n' ' ')"
}
BAD_IN=$T/a bad 1 "standard input is longer than the destination" \
    "$NBDC" copy - "$(uri small)"
BAD_IN=$T/a bad 1 "the length of standard input is not known" \
    "$NBDC" copy - "$T/missing.img"
[ ! -e "$T/missing.img" ] || fail "a destination file was created for a pipe"
bad 2 "cannot be both source and destination" "$NBDC" copy - -
bad 2 "null: is only a destination" "$NBDC" copy null: "$T/file.img"
bad 2 "null: is only a destination" "$NBDC" copy null: -
# A terminal on either side: script(1) gives the command one.
script -qec "$NBDC copy - $dst" /dev/null >"$T/tty.out" 2>&1 </dev/null || true
grep -q "standard input is a terminal" "$T/tty.out" ||
    fail "a terminal as standard input: $(cat "$T/tty.out")"
script -qec "$NBDC copy $src -" /dev/null >"$T/tty.out" 2>&1 </dev/null || true
grep -q "refusing to write binary data" "$T/tty.out" ||
    fail "a terminal as standard output: $(cat "$T/tty.out")"

step "the source server dies mid-stream: exit 1 with a message"
{ tmo "$NBDC" copy "$src" - 2>"$T/die.err" || echo "rc=$?" >"$T/die.rc"; } |
    { head -c 1M >/dev/null; signal_server KILL; sleep 0.5; cat >/dev/null; }
wait_rc=$(cat "$T/die.rc" 2>/dev/null || echo rc=0)
SERVER_PID=
[ "$wait_rc" = rc=1 ] || fail "copy from a killed server: $wait_rc $(cat "$T/die.err")"
grep -q "copy failed: " "$T/die.err" || fail "no message: $(cat "$T/die.err")"
step pass
