#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The control socket's connection list shows what TLS each client got:
# a libnbd client over TLS-PSK stays connected while nbd-serverd-ctl
# lists the connections; the JSON reply names the PSK identity, the
# protocol version and the cipher the server logged for that session,
# and the table prints the cipher; a plain client on the same server has
# none of them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

is_our_server || skip "the control socket is nbd-serverd's"
requires python3
requires_nbd_python

make_image "$T/disk.img" 4M
make_psk "$T/keys.psk" alice
sock=$T/s.sock
csock=$T/control.sock
start_server -l "unix:$sock" -e "disk=$T/disk.img" --tls=on \
    --tls-psk="$T/keys.psk" --control "$csock"

cat >"$T/hold.py" <<'PY'
import json
import subprocess
import sys

import nbd

ctl, csock, tls_uri, plain_uri, out = sys.argv[1:6]
tls = nbd.NBD()
tls.set_uri_allow_local_file(True)
tls.connect_uri(tls_uri)
plain = nbd.NBD()
plain.connect_uri(plain_uri)
tls.pread(4096, 0)
reply = subprocess.run([ctl, "-s", csock, "--json", "connections"],
                       check=True, capture_output=True, text=True).stdout
table = subprocess.run([ctl, "-s", csock, "connections"], check=True,
                       capture_output=True, text=True).stdout
conns = json.loads(reply)["connections"]
assert len(conns) == 2, conns
by_tls = {c["tls"]: c for c in conns}
t, p = by_tls[True], by_tls[False]
assert t["tls-identity"] == "alice", t
assert t["tls-version"].startswith("TLS1."), t
assert t["tls-cipher"], t
assert p.get("tls-cipher") is None and p.get("tls-version") is None, p
assert t["tls-cipher"] in table, table
open(out, "w").write(t["tls-version"] + " " + t["tls-cipher"] + "\n")
sys.stdout.write(table)
tls.shutdown()
plain.shutdown()
PY
step "a TLS and a plain client, listed while connected"
tmo "$NBD_PYTHON" "$T/hold.py" "$BUILD/nbd-serverd-ctl" "$csock" \
    "nbds+unix://alice@/disk?socket=$sock&tls-psk-file=$T/keys.psk" \
    "nbd+unix:///disk?socket=$sock" "$T/got" >"$T/table" ||
    fail "the connection list"
cat "$T/table"
got=$(cat "$T/got")
[ "$got" = "$(tls_last_logged)" ] ||
    fail "the control socket says '$got', the server logged '$(tls_last_logged)'"
step "the control socket and the log agree: $got"
stop_server
step ok
