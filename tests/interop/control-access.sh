#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Who may use the control socket: with mode 0600 another uid's connect
# fails with EACCES; with control-group, the socket is 0660 and owned by
# that group, and a member of the group may connect while others still
# may not.  Changing uid needs root: without it the test is skipped
# (exit 77, which the runner reports as a skip, never as a pass).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate setpriv stat
if ! is_our_server; then
    skip "the control socket is nbd-serverd's"
fi
if [ "$(id -u)" != 0 ]; then
    skip "needs root to connect as a second uid (setpriv)"
fi
CTL=$BUILD/nbd-serverd-ctl
sock=$T/control.sock
a=$T/a.img
make_image "$a" 1M
# The socket's directory must be reachable by the other uid: only the
# socket's own mode may stop it.
chmod 755 "$T"

# The first python3 on PATH may live under root's home (pyenv): the
# other uid runs the system's.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# as UID GID CMD...: run CMD as uid:gid with no supplementary group.
as() { setpriv --reuid="$1" --regid="$2" --clear-groups -- "${@:3}"; }

# try_connect UID GID: prints "ok" or the errno name of connect().
try_connect()
{
    as "$1" "$2" "$PY" -c '
import errno, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"{\"command\": \"status\"}\n")
    print("ok" if b"\"ok\":true" in s.recv(65536) else "bad-reply")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))' "$sock"
}

step "mode 0600: root connects, uid 65534 gets EACCES"
start_server -l "unix:$T/nbd.sock" -e "a=$a" --control "$sock"
[ "$(stat -c %a "$sock")" = 600 ] || fail "mode $(stat -c %a "$sock")"
tmo "$CTL" -s "$sock" status >/dev/null || fail "root cannot use it"
got=$(try_connect 65534 65534)
[ "$got" = EACCES ] || fail "uid 65534: $got, want EACCES"
step "uid 65534: $got"
rc=0
as 65534 65534 "$CTL" -s "$sock" status >"$T/ctl.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "nbd-serverd-ctl as uid 65534: exit $rc, want 2"
grep -q "Permission denied" "$T/ctl.out" || fail "$(cat "$T/ctl.out")"
stop_server

step "control-group: mode 0660, the group's members may connect"
gid=$(getent group nogroup | cut -d: -f3)
[ -n "$gid" ] || fail "no group nogroup"
cat >"$T/g.conf" <<CONF
[server]
control = $sock
control-group = nogroup
[export a]
path = $a
CONF
start_server -l "unix:$T/nbd.sock" -c "$T/g.conf"
[ "$(stat -c %a:%g "$sock")" = "660:$gid" ] ||
    fail "mode and group $(stat -c %a:%g "$sock"), want 660:$gid"
got=$(try_connect 65534 "$gid")
[ "$got" = ok ] || fail "a member of nogroup: $got, want ok"
step "uid 65534 in group nogroup: $got"
got=$(try_connect 65534 0)
[ "$got" = EACCES ] || fail "uid 65534 in group 0: $got, want EACCES"
step "uid 65534 in group 0: $got"
stop_server
step "pass"
