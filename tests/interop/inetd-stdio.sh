#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# -s/--inetd: one connection on standard input.  libnbd's
# nbd_connect_command (a socketpair on stdin and stdout, as inetd does)
# reads, writes and checksums the image; tests/interop/inetd.py hands the
# daemon a socketpair, the socket as all three standard fds (log lines
# must stay out of the protocol stream), and a pipe pair (ssh), and
# checks the exit status: 0 after NBD_CMD_DISC or a hang-up between
# messages, 1 after a protocol violation.  Bad uses get a clear error:
# no export, two exports, --listen or --pidfile with -s, a listening
# socket on stdin, and a connected socket from socket activation with
# two exports.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate sha256sum
requires_nbd_python
if ! is_our_server; then
    skip "--inetd is nbd-serverd's command line"
fi
here=$(dirname "$0")

make_image "$T/disk.img" 8M
make_random "$T/seed" 2M
write_at "$T/disk.img" 0 "$T/seed"

step "nbd_connect_command: read, write, flush"
cat >"$T/command.py" <<'PY'
import hashlib, sys
import nbd
server, image = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_command([server, "-s", "-e", "disk=" + image])
size = h.get_size()
assert not h.can_multi_conn(), "one connection: no multi-conn"
data = h.pread(size, 0) if size <= (32 << 20) else b""
print(size, hashlib.sha256(data).hexdigest())
h.pwrite(b"\x5a" * 65536, 4 << 20)
h.flush()
h.shutdown()
PY
want="$((8 << 20)) $(sha256_of "$T/disk.img")"
out=$(tmo "$NBD_PYTHON" "$T/command.py" "$SERVER_BIN" "$T/disk.img" \
    2>>"$SERVER_LOG") || fail "nbd_connect_command failed"
dd if=/dev/zero bs=64k count=1 status=none | tr '\0' '\132' >"$T/z"
[ "$out" = "$want" ] || fail "size and sha256: got '$out', want '$want'"
cmp -s <(dd if="$T/disk.img" bs=64k skip=64 count=1 status=none) "$T/z" ||
    fail "the write through --inetd did not reach the image"
check_sanitizer_reports

for mode in socketpair all3 pipes eof garbage pipes-eof; do
    step "inetd.py $mode"
    extra=()
    [ "$mode" != all3 ] || extra=(-v)
    tmo python3 "$here/inetd.py" "$SERVER_BIN" "$T/disk.img" "$mode" \
        "${extra[@]}" 2>>"$SERVER_LOG" || fail "inetd.py $mode"
done
check_sanitizer_reports

# bad_use WHAT STATUS MESSAGE CMD...: CMD exits with STATUS and says MESSAGE.
bad_use()
{
    local what=$1 want=$2 msg=$3 rc=0
    shift 3
    tmo "$@" >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || fail "$what: exit $rc, want $want: $(cat "$T/bad.out")"
    grep -q -- "$msg" "$T/bad.out" ||
        fail "$what: no clear message ('$msg'): $(cat "$T/bad.out")"
    step "$what: exit $rc: $(head -c 200 "$T/bad.out" | tr '\n' ' ')"
}
make_image "$T/other.img" 1M
bad_use "-s without an export" 2 "no export" \
    "$SERVER_BIN" -s </dev/null
bad_use "-s with two exports" 2 \
    "--inetd serves exactly one export, and the configuration has 2 (a, b)" \
    "$SERVER_BIN" -s -e "a=$T/disk.img" -e "b=$T/other.img" </dev/null
bad_use "-s with --listen" 2 "--listen makes no sense" \
    "$SERVER_BIN" -s -l 127.0.0.1:1 -e "a=$T/disk.img" </dev/null
bad_use "-s with --pidfile" 2 "--pidfile makes no sense" \
    "$SERVER_BIN" -s --pidfile "$T/p" -e "a=$T/disk.img" </dev/null
bad_use "--check-config -s with two exports" 2 "exactly one export" \
    "$SERVER_BIN" -s --check-config -e "a=$T/disk.img" -e "b=$T/other.img"
cat >"$T/listening.py" <<'PY'
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
os.dup2(s.fileno(), 0)
os.execv(sys.argv[2], sys.argv[2:])
PY
bad_use "-s on a listening socket" 1 'listening socket (inetd "wait" mode)' \
    python3 "$T/listening.py" "$T/l.sock" "$SERVER_BIN" -s -e "a=$T/disk.img"
cat >"$T/connected.py" <<'PY'
import os, socket, sys
a, b = socket.socketpair()
if a.fileno() != 3:
    os.dup2(a.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[1], sys.argv[1:])
PY
bad_use "a connection from socket activation with two exports" 2 \
    "Accept=yes) serves exactly one export" \
    python3 "$T/connected.py" "$SERVER_BIN" -f -e "a=$T/disk.img" \
    -e "b=$T/other.img"
step pass
