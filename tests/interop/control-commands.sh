#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The control socket and nbd-serverd-ctl: every command, the exit
# status (0, 1 for a server error, 2 for usage or no connection), the
# socket's mode and its removal on exit, a stale socket replaced and a
# live one refused, malformed and oversized lines answered with an
# error while the daemon keeps serving, and exports added, changed and
# removed while qemu-io and nbdcopy clients run, checked by sha256.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate qemu-io nbdcopy nbdinfo sha256sum stat
if ! is_our_server; then
    skip "the control socket is nbd-serverd's"
fi
CTL=$BUILD/nbd-serverd-ctl
[ -x "$CTL" ] || fail "$CTL does not exist (run make first)"
sock=$T/control.sock
ctl() { tmo "$CTL" -s "$sock" "$@"; }

# ctl_status WANT ARGS...: nbd-serverd-ctl must exit with WANT.
ctl_status()
{
    local want=$1 rc=0
    shift
    tmo "$CTL" -s "$sock" "$@" >"$T/ctl.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || {
        cat "$T/ctl.out" >&2
        fail "nbd-serverd-ctl $*: exit $rc, want $want"
    }
    step "nbd-serverd-ctl $*: exit $rc: $(head -c 160 "$T/ctl.out" | tr '\n' ' ')"
}

a=$T/a.img b=$T/b.img c=$T/c.img
make_random "$a" 8M
make_random "$b" 4M
make_random "$c" 4M
nbd=$T/nbd.sock

step "a stale socket file is replaced"
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$sock"
[ -S "$sock" ] || fail "no stale socket made"
start_server -l "unix:$nbd" -e "a=$a" --control "$sock"
grep -q "removing the stale socket file" "$T/server.log" ||
    fail "the stale socket was not reported"
mode=$(stat -c %a "$sock")
[ "$mode" = 600 ] || fail "control socket mode $mode, want 600"
step "control socket mode $mode"

step "a second daemon on the same control socket is refused"
rc=0
tmo "$SERVER_BIN" -f -l "unix:$T/other.sock" -e "a=$a" --control "$sock" \
    >"$T/second.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "second daemon: exit $rc, want 2"
grep -q "another process listens on it" "$T/second.log" ||
    fail "second daemon: $(cat "$T/second.log")"
[ -S "$sock" ] || fail "the second daemon removed the live socket"

step "status, exports"
ctl status | grep -q '^version  *0\.' || fail "status: no version"
ctl --json status | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["ok"] and r["threads"] >= 1 and r["exports"] == 1, r
assert r["limits"]["max-connections"] == 1024, r
assert "buffer-memory-used" in r and "uptime" in r, r'
ctl --json exports | python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["exports"]
assert [x["name"] for x in e] == ["a"], e
assert e[0]["size"] == 8 << 20 and e[0]["backend"] == "file", e
assert e[0]["read-only"] is False, e'

step "exit statuses: usage 2, server error 1, no server 2"
ctl_status 2 frobnicate
ctl_status 2 remove
ctl_status 2 disconnect notanumber
ctl_status 1 remove nosuch
ctl_status 1 disconnect 12345
ctl_status 1 add bad path="$b" read-only=maybe
grep -q "read-only = maybe: expected yes or no" "$T/ctl.out" ||
    fail "the bad value is not named: $(cat "$T/ctl.out")"
ctl_status 1 add bad path="$T/missing.img"
grep -q "missing.img" "$T/ctl.out" || fail "the missing image is not named"
ctl_status 1 add bad frob=1
grep -q "unknown key 'frob' in \[export bad\]" "$T/ctl.out" ||
    fail "the unknown key is not named"
ctl_status 1 add bad path="$b" memory=1M
grep -q "has more than one of path, memory and rbd" "$T/ctl.out" || fail "path+memory"
ctl_status 1 add a path="$b"
ctl_status 2 -s "$T/nosuch.sock" status

step "malformed and oversized lines get error replies"
tmo python3 - "$sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rb")
def ask(line):
    s.sendall(line + b"\n")
    return json.loads(f.readline())
cases = [
    (b"{bad", "request: not JSON"),
    (b"[1,2]", "request: expected a JSON object"),
    (b'{"command": 3}', "command: expected a string"),
    (b'{"command": "nope"}', "command: unknown command"),
    (b'{"command": "remove"}', "name: missing"),
    (b'{"command": "add", "name": "x"}', "settings: missing"),
    (b'{"command": "add", "name": "x", "settings": {"path": 1}}',
     "settings.path: expected a string"),
    (b'{"command": "disconnect", "id": "x"}', "id: expected"),
    (b'{"command": "change", "name": "a", "settings": {}}',
     "settings: no key given"),
    (b'{"command": "status", "extra": 1}', "extra: not a field"),
    (b'{"command": "status"} trailing', "text after the JSON object"),
    (b"[" * 100000, "longer than 65536 bytes"),
    (b"\x00\xff\xfe", "request: not JSON"),
]
for line, want in cases:
    r = ask(line)
    assert "error" in r and want in r["error"], (line[:40], r)
    print("  %-40r -> %s" % (line[:40], r["error"]))
r = ask(b'{"command": "status"}')
assert r.get("ok") is True, r
print("  and the same client is still served")
PY
server_alive || fail "the daemon died on malformed input"

step "too many control clients: the extra one is told so"
tmo python3 - "$sock" <<'PY'
import json, socket, sys, time
held = []
for i in range(8):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.settimeout(10)
r = json.loads(s.makefile("rb").readline())
assert "too many control clients" in r["error"], r
print("  the ninth client:", r["error"])
PY

step "add, change and remove under load (qemu-io, nbdcopy)"
cp "$a" "$T/a.orig"
ctl add b path="$b" read-only=yes description=first
nbdinfo --list "$(uri_for "unix:$nbd" "")" | grep -q 'export="b"' ||
    fail "export b not listed after add"
# A reader of b and a writer of a run through the changes.
(for i in 1 2 3 4 5; do
    tmo nbdcopy "$(uri_for "unix:$nbd" b)" "$T/b.copy$i" || exit 1
done) &
copier=$!
(for i in $(seq 0 31); do
    tmo qemu-io -f raw -c "write -P $((i % 250 + 1)) $((i * 65536)) 65536" \
        "$(uri_for "unix:$nbd" a)" >/dev/null || exit 1
done) &
writer=$!
ctl change b description=second
ctl add c path="$c"
ctl remove c
ctl add c path="$c" read-only=yes
wait "$copier" || fail "nbdcopy of b failed during the changes"
wait "$writer" || fail "qemu-io on a failed during the changes"
for i in 1 2 3 4 5; do
    same_content "$b" "$T/b.copy$i"
done
python3 - "$T/a.orig" "$T/a.want" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
for i in range(32):
    data[i * 65536:(i + 1) * 65536] = bytes([i % 250 + 1]) * 65536
open(sys.argv[2], "wb").write(data)
PY
tmo nbdcopy "$(uri_for "unix:$nbd" a)" "$T/a.copy"
same_content "$T/a.want" "$T/a.copy" "$a"
nbdinfo "$(uri_for "unix:$nbd" b)" | grep -q "description: second" ||
    fail "change did not replace the description"
nbdinfo "$(uri_for "unix:$nbd" b)" | grep -q "is_read_only: true" ||
    fail "change lost read-only = yes (keys not named must stay)"
ctl --json exports | python3 -c '
import json, sys
e = {x["name"]: x for x in json.load(sys.stdin)["exports"]}
assert sorted(e) == ["a", "b", "c"], e
assert e["b"]["read-only"] and e["c"]["read-only"], e'
ctl remove b
if nbdinfo --list "$(uri_for "unix:$nbd" "")" | grep -q 'export="b"'; then
    fail "export b still offered after remove"
fi
tmo nbdcopy "$(uri_for "unix:$nbd" c)" "$T/c.copy"
same_content "$c" "$T/c.copy"

step "reload: the file's exports stand again"
ctl reload
ctl --json exports | python3 -c '
import json, sys
e = [x["name"] for x in json.load(sys.stdin)["exports"]]
assert e == ["a"], e'

stop_server
[ ! -e "$sock" ] || fail "the control socket was not removed on exit"

step "control-group: an unknown group is a configuration error"
cat >"$T/bad.conf" <<CONF
[server]
control = $sock
control-group = no-such-group-here
[export a]
path = $a
CONF
rc=0
tmo "$SERVER_BIN" -f -c "$T/bad.conf" >"$T/bad.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "unknown group: exit $rc, want 2"
grep -q "bad.conf:3: control-group = no-such-group-here: no such group" \
    "$T/bad.log" || fail "unknown group: $(cat "$T/bad.log")"
step "pass"
