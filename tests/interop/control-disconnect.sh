#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# nbd-serverd-ctl connections and disconnect of a busy client: a raw
# client sends READs and stops reading the replies, so that requests are
# in flight; `connections` shows it (export, requests in flight, bytes
# read); `disconnect ID` then makes the server answer the READs that
# come after it with ESHUTDOWN while the ones in flight complete with
# their data, and close the connection.  A connection with qemu-io shows
# the WRITE bytes counted, and a client still haggling is closed at once.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate qemu-io
if ! is_our_server; then
    skip "the control socket is nbd-serverd's"
fi
CTL=$BUILD/nbd-serverd-ctl
sock=$T/control.sock
nbd=$T/nbd.sock
disk=$T/disk.img
make_random "$disk" 64M
start_server -l "unix:$nbd" -e "disk=$disk" --control "$sock"

step "a qemu-io connection's READ and WRITE bytes are counted"
tmo qemu-io -f raw -c "write -P 9 0 1M" -c "read 0 512K" -c "sleep 4000" \
    "$(uri_for "unix:$nbd" disk)" >/dev/null &
qio=$!
tmo python3 - "$CTL" "$sock" <<'PY'
import json, subprocess, sys, time
ctl, sock = sys.argv[1:3]
def get(what):
    return json.loads(subprocess.run([ctl, "-s", sock, "--json", what],
                      check=True, capture_output=True, text=True).stdout)
for _ in range(200):
    c = get("connections")["connections"]
    if c and c[0]["bytes-written"] == 1 << 20 and c[0]["bytes-read"] == 1 << 19:
        break
    time.sleep(0.05)
else:
    raise SystemExit("counters never reached 1M written, 512K read: %r" % c)
e = get("exports")["exports"][0]
assert e["connections"] == 1 and e["bytes-written"] == 1 << 20, e
print("  connection %d: %d bytes written, %d read; export: %d connection"
      % (c[0]["id"], c[0]["bytes-written"], c[0]["bytes-read"],
         e["connections"]))
PY
wait "$qio" || fail "qemu-io failed"

cat >"$T/busy.py" <<'PY'
import json, os, struct, subprocess, sys, time

import nbdwire as w

nbd, ctl, sock, disk = sys.argv[1:5]
N, SIZE = 12, 4 << 20
s = w.connect("unix:" + nbd, timeout=30)
w.handshake(s)
s.sendall(w.pack_go("disk"))
while True:
    rtype, _ = w.option_reply(s, w.OPT_GO)
    if rtype == w.REP_ACK:
        break
for i in range(N):
    w.send_request(s, w.CMD_READ, i + 1, i * SIZE, SIZE)

def ctl_json(*args):
    out = subprocess.run([ctl, "-s", sock, "--json"] + list(args),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)

# Wait until the server has taken the READs: they are in flight, their
# replies stuck behind the socket buffer we do not read.
for _ in range(100):
    conns = ctl_json("connections")["connections"]
    if conns and conns[0]["requests-in-flight"] > 0:
        break
    time.sleep(0.05)
c = conns[0]
assert c["export"] == "disk" and c["tls"] is False, c
assert c["requests-in-flight"] > 0, c
print("  busy: id %d, %d requests in flight, %d bytes read" %
      (c["id"], c["requests-in-flight"], c["bytes-read"]))
table = subprocess.run([ctl, "-s", sock, "connections"], check=True,
                       capture_output=True, text=True).stdout
print(table, end="")
open(os.environ["T"] + "/connections.txt", "w").write(table)
ctl_json("disconnect", str(c["id"]))
assert ctl_json("connections")["connections"][0]["disconnecting"] is True

# New requests after the disconnect: ESHUTDOWN.
for i in range(3):
    w.send_request(s, w.CMD_READ, 100 + i, 0, 4096)
data = open(disk, "rb").read()
# Replies come in any order (requests run in parallel).
done, late = set(), set()
while len(done) + len(late) < N + 3:
    magic, err, cookie = struct.unpack(">IIQ", w.recv_exact(s, 16))
    assert magic == w.SIMPLE_REPLY_MAGIC, hex(magic)
    if cookie <= N:
        assert err == 0, "in-flight READ %d: error %d" % (cookie, err)
        got = w.recv_exact(s, SIZE)
        i = cookie - 1
        assert got == data[i * SIZE:(i + 1) * SIZE], "READ %d: data" % cookie
        done.add(cookie)
    else:
        assert err == w.ESHUTDOWN, "READ %d after disconnect: error %d (done %r)" % (cookie, err, sorted(done))
        late.add(cookie)
assert done == set(range(1, N + 1)) and late == {100, 101, 102}
print("  the %d READs in flight completed with their data" % N)
print("  the 3 READs sent after the disconnect: ESHUTDOWN")
s.settimeout(15)
assert s.recv(100) == b"", "the server did not close the connection"
print("  then the server closed the connection")
assert ctl_json("connections")["connections"] == []
PY
step "disconnect of a busy client"
T=$T tmo python3 "$T/busy.py" "$nbd" "$CTL" "$sock" "$disk" ||
    fail "the busy client's disconnect went wrong"

step "disconnect of a client still haggling closes it at once"
tmo python3 - "$nbd" "$CTL" "$sock" <<'PY'
import json, subprocess, sys, time
import nbdwire as w
nbd, ctl, sock = sys.argv[1:4]
s = w.connect("unix:" + nbd, timeout=10)
w.handshake(s)
for _ in range(100):
    c = json.loads(subprocess.run([ctl, "-s", sock, "--json", "connections"],
                   check=True, capture_output=True, text=True).stdout)
    if c["connections"]:
        break
    time.sleep(0.05)
c = c["connections"][0]
assert c["export"] is None, c
subprocess.run([ctl, "-s", sock, "disconnect", str(c["id"])], check=True)
assert s.recv(100) == b"", "still open"
print("  closed")
PY
stop_server
step "pass"
