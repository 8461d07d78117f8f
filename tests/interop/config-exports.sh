#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The daemon run from a configuration file with three exports (one
# read-only, one restricted by allow, one with cache=none and trim=off):
# nbdinfo --list shows what this client may see, data round trips through
# qemu-io and nbdcopy, a write to the read-only export fails, the
# restricted export is unknown to a client outside its allow list (and
# served to one inside it), cache=none answers unaligned reads and writes
# correctly.  Then --check-config, configuration errors (exit 2 with
# FILE:LINE) and TLS settings taken from the file.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo nbdcopy qemu-io python3 truncate cmp
requires_nbd_python
if ! is_our_server; then
    skip "configuration files are specific to nbd-serverd"
fi

# Images: in a directory on the worktree's file system (not tmpfs), since
# cache=none needs O_DIRECT.
mkdir -p "$BUILD/tmp"
D=$(mktemp -d "$(realpath "$BUILD")/tmp/config-exports.XXXXXX")
trap 'rc=$?; rm -rf "$D"; (exit $rc); cleanup' EXIT

make_image "$D/rw.img" 8M
make_random "$T/seed" 1M
write_at "$D/rw.img" 0 "$T/seed"
make_image "$D/ro.img" 4M
make_random "$T/roseed" 64K
write_at "$D/ro.img" 0 "$T/roseed"
make_image "$D/secret.img" 4M
make_image "$D/direct.img" 3000001 # not a multiple of 512 or 4096

port=$(free_port)
cat >"$D/nbd-serverd.conf" <<EOF
# Three exports and a cache=none one; relative paths are relative to
# this file's directory.
[server]
listen = 127.0.0.1:$port
threads = 2
log-level = debug

[export rw]
path = rw.img
description = read-write disk

[export ro]
path = $D/ro.img
read-only = yes

[export secret]
path = secret.img
allow = 10.0.0.0/8, 192.168.0.0/16 ; not 127.0.0.1

[export near]
path = secret.img
read-only = yes
allow = 127.0.0.0/8, ::1

[export direct]
path = direct.img
cache = none
trim = off

[export local]
path = ro.img
read-only = yes
allow = unix
EOF

step "--check-config prints the effective configuration"
"$BUILD/nbd-serverd" -c "$D/nbd-serverd.conf" --check-config >"$T/check.out" ||
    fail "--check-config failed: $(cat "$T/check.out")"
grep -q "^\[export secret\]" "$T/check.out" || fail "no [export secret] in output"
grep -q "^allow = 10.0.0.0/8, 192.168.0.0/16" "$T/check.out" ||
    fail "allow list not printed: $(cat "$T/check.out")"
grep -q "^path = $D/rw.img" "$T/check.out" || fail "relative path not resolved"
grep -q "^cache = none" "$T/check.out" || fail "cache = none not printed"

start_server -c "$D/nbd-serverd.conf" -l "127.0.0.1:$port" -l "unix:$T/s.sock"

step "nbdinfo --list shows the exports this client may see"
tmo nbdinfo --list --json "nbd://127.0.0.1:$port" >"$T/list.json" ||
    fail "nbdinfo --list failed"
python3 - "$T/list.json" <<'EOF' || fail "wrong export list"
import json, sys
j = json.load(open(sys.argv[1]))
names = sorted(e["export-name"] for e in j["exports"])
assert names == ["direct", "near", "ro", "rw"], names  # not secret, local
desc = {e["export-name"]: e.get("description") for e in j["exports"]}
assert desc["rw"] == "read-write disk", desc
ro = [e for e in j["exports"] if e["export-name"] == "ro"][0]
assert ro["is_read_only"], ro
d = [e for e in j["exports"] if e["export-name"] == "direct"][0]
assert not d["can_trim"], d
rw = [e for e in j["exports"] if e["export-name"] == "rw"][0]
assert rw["can_trim"], rw
EOF

step "the restricted export is unknown to 127.0.0.1"
expect_fail "nbdinfo secret" nbdinfo "nbd://127.0.0.1:$port/secret"
grep -qi "unknown\|not found\|No such" "$T/expect_fail.out" ||
    fail "refusal does not say unknown export: $(cat "$T/expect_fail.out")"
grep -q "export 'secret' is not allowed to this client" "$SERVER_LOG" ||
    fail "the refusal is not logged"
tmo nbdinfo "nbd://127.0.0.1:$port/near" >/dev/null ||
    fail "an export whose allow list has 127.0.0.0/8 is refused"
server_alive

step "allow = unix: only unix-socket clients see 'local'"
tmo nbdinfo --list --json "nbd+unix:///?socket=$T/s.sock" >"$T/ulist.json" ||
    fail "nbdinfo --list over the unix socket failed"
python3 - "$T/ulist.json" <<'EOF' || fail "wrong export list over the unix socket"
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == ["direct", "local", "ro", "rw"], names
EOF
tmo nbdinfo "nbd+unix:///local?socket=$T/s.sock" >/dev/null ||
    fail "'local' refused over the unix socket"
expect_fail "nbdinfo local over TCP" nbdinfo "nbd://127.0.0.1:$port/local"

step "data round trips"
tmo nbdcopy "nbd://127.0.0.1:$port/rw" "$T/rw.copy" || fail "nbdcopy out"
cmp "$T/rw.copy" "$D/rw.img" || fail "rw export differs from its image"
make_random "$T/new" 8M
tmo nbdcopy "$T/new" "nbd://127.0.0.1:$port/rw" || fail "nbdcopy in"
cmp "$T/new" "$D/rw.img" || fail "written data did not reach the image"
tmo nbdcopy "nbd://127.0.0.1:$port/ro" "$T/ro.copy" || fail "nbdcopy ro"
cmp "$T/ro.copy" "$D/ro.img" || fail "ro export differs from its image"
expect_fail "write to the read-only export" \
    qemu-io -f raw "nbd://127.0.0.1:$port/ro" -c 'write -P 1 0 4k'
cmp "$T/ro.copy" "$D/ro.img" || fail "the read-only image changed"

step "cache=none: aligned and unaligned I/O through O_DIRECT"
# The server holds direct.img open with O_DIRECT (octal 040000 in flags).
python3 - "$SERVER_PID" "$D/direct.img" <<'EOF' || fail "direct.img is not open with O_DIRECT"
import os, sys
pid, path = sys.argv[1], sys.argv[2]
direct = 0
for fd in os.listdir("/proc/%s/fd" % pid):
    try:
        if os.readlink("/proc/%s/fd/%s" % (pid, fd)) != path:
            continue
    except OSError:
        continue
    with open("/proc/%s/fdinfo/%s" % (pid, fd)) as f:
        flags = [l for l in f if l.startswith("flags:")][0].split()[1]
    direct += (int(flags, 8) & 0o40000) != 0
sys.exit(0 if direct == 1 else 1)
EOF
qio_ok()
{
    local rc=0
    tmo qemu-io -f raw "nbd://127.0.0.1:$port/direct" "$@" >"$T/qio.out" 2>&1 ||
        rc=$?
    if [ "$rc" != 0 ] || grep -qi 'failed\|error' "$T/qio.out"; then
        cat "$T/qio.out" >&2
        fail "qemu-io on direct: exit $rc"
    fi
}
qio_ok -c 'write -P 0x11 0 64k' -c 'read -P 0x11 0 64k' \
    -c 'write -P 0x22 4097 5000' -c 'read -P 0x22 4097 5000' \
    -c 'read -P 0x11 0 4097' -c 'read -P 0x11 9097 56439' \
    -c 'write -P 0x33 1M 1M' -c 'write -P 0x44 1000 1' -c 'flush'
# The tail of an image whose size is not a multiple of 4096.
qio_ok -c 'write -P 0x55 2999000 1001' -c 'read -P 0x55 2999000 1001'
python3 - "$D/direct.img" <<'EOF' || fail "cache=none: the image holds wrong data"
import sys
d = open(sys.argv[1], "rb").read()
assert len(d) == 3000001, len(d)
def want(off, n, b):
    assert d[off:off + n] == bytes([b]) * n, (off, n, b)
want(0, 1000, 0x11); want(1000, 1, 0x44); want(1001, 3096, 0x11)
want(4097, 5000, 0x22); want(9097, 65536 - 9097, 0x11)
want(1 << 20, 1 << 20, 0x33); want(2999000, 1001, 0x55)
EOF
expect_fail "trim on a trim=off export" \
    "$NBD_PYTHON" -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.trim(4096, 0)' "nbd://127.0.0.1:$port/direct"
stop_server

step "configuration errors: FILE:LINE and exit status 2"
printf '[server]\nthreads = 2\n[export a]\npath = rw.img\nbogus = 1\n' \
    >"$D/bad.conf"
rc=0
"$BUILD/nbd-serverd" -f -c "$D/bad.conf" >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "bad configuration: exit $rc, not 2"
grep -q "bad.conf:5: unknown key 'bogus' in \[export a\]" "$T/bad.out" ||
    fail "no FILE:LINE message: $(cat "$T/bad.out")"
rc=0
"$BUILD/nbd-serverd" -c "$D/bad.conf" --check-config >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--check-config of a bad file: exit $rc, not 2"
printf '[export a]\npath = missing.img\n' >"$D/bad.conf"
rc=0
"$BUILD/nbd-serverd" -f -c "$D/bad.conf" >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "missing image: exit $rc, not 2"
grep -q "bad.conf:2: \[export a\]: image .*missing.img" "$T/bad.out" ||
    fail "missing image message: $(cat "$T/bad.out")"

step "TLS from the configuration file: PSK, require mode"
make_psk "$D/psk.txt" alice
printf '[server]\ntls = require\ntls-psk = psk.txt\n[export a]\npath = rw.img\n' \
    >"$D/tls.conf"
"$BUILD/nbd-serverd" -c "$D/tls.conf" --check-config >"$T/tls.out" ||
    fail "--check-config refused a valid TLS configuration"
grep -q "^tls = require" "$T/tls.out" || fail "tls not printed"
start_server -c "$D/tls.conf" -l "127.0.0.1:$port"
tmo nbdinfo --size "$(tls_uri "127.0.0.1:$port" a "tls-psk-file=$D/psk.txt" alice)" \
    >"$T/tls-size" || fail "nbds:// with the configured PSK failed"
[ "$(cat "$T/tls-size")" = "$(stat -c %s "$D/rw.img")" ] ||
    fail "size over TLS: $(cat "$T/tls-size")"
expect_fail "plain client in require mode" nbdinfo --size "nbd://127.0.0.1:$port/a"

step "SIGHUP reloads the TLS credentials"
cp "$D/psk.txt" "$D/old.psk"
make_psk "$D/psk.txt" alice
cmp -s "$D/psk.txt" "$D/old.psk" && fail "psktool made the same key twice"
kill -HUP "$SERVER_PID"
new_uri=$(tls_uri "127.0.0.1:$port" a "tls-psk-file=$D/psk.txt" alice)
for _ in $(seq 100); do
    tmo nbdinfo --size "$new_uri" >/dev/null 2>&1 && break
    sleep 0.1
done
tmo nbdinfo --size "$new_uri" >/dev/null || fail "the new key is not accepted after SIGHUP"
expect_fail "the old key after the reload" \
    nbdinfo --size "$(tls_uri "127.0.0.1:$port" a "tls-psk-file=$D/old.psk" alice)"
stop_server

step "tls-identities: an export only some TLS identities may use"
make_psk "$D/psk.txt" alice bob
make_pki "$D/pki"
dn=$(certtool -i --infile "$D/pki/client/client-cert.pem" |
    sed -n 's/^[[:space:]]*Subject: //p' | head -n 1)
[ -n "$dn" ] || fail "no subject in the client certificate"
step "client certificate DN: $dn"
cat >"$D/ids.conf" <<CONF
[server]
tls = on
tls-psk = psk.txt
[export a]
path = rw.img
[export b]
path = rw.img
tls-identities = bob
tls-identities = $dn
CONF
start_server -c "$D/ids.conf" -l "127.0.0.1:$port"
as_alice=$(tls_uri "127.0.0.1:$port" "" "tls-psk-file=$D/psk.txt" alice)
as_bob=$(tls_uri "127.0.0.1:$port" "" "tls-psk-file=$D/psk.txt" bob)
tmo nbdinfo --list --json "$as_alice" >"$T/ids-alice.json" ||
    fail "alice: --list failed"
tmo nbdinfo --list --json "$as_bob" >"$T/ids-bob.json" || fail "bob: --list failed"
names()
{
    python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])))' "$1"
}
[ "$(names "$T/ids-alice.json")" = "a" ] ||
    fail "alice sees: $(names "$T/ids-alice.json")"
[ "$(names "$T/ids-bob.json")" = "a b" ] ||
    fail "bob sees: $(names "$T/ids-bob.json")"
tmo nbdinfo --size "$(tls_uri "127.0.0.1:$port" b "tls-psk-file=$D/psk.txt" bob)" \
    >/dev/null || fail "bob cannot use export b"
expect_fail "alice asks for export b" \
    nbdinfo --size "$(tls_uri "127.0.0.1:$port" b "tls-psk-file=$D/psk.txt" alice)"
expect_fail "a plain client asks for export b" \
    nbdinfo --size "nbd://127.0.0.1:$port/b"
tmo nbdinfo --size "nbd://127.0.0.1:$port/a" >/dev/null ||
    fail "a plain client cannot use export a"
stop_server

step "tls-identities: a certificate's DN"
cat >"$D/dn.conf" <<CONF
[server]
tls = require
tls-certs = $D/pki/server
tls-verify-peer = yes
[export b]
path = rw.img
tls-identities = $dn
[export c]
path = rw.img
tls-identities = CN=somebody else
CONF
start_server -c "$D/dn.conf" -l "127.0.0.1:$port"
tmo nbdinfo --size "$(tls_uri "127.0.0.1:$port" b "tls-certificates=$D/pki/client")" \
    >/dev/null || fail "the certificate named in tls-identities cannot use b"
expect_fail "a certificate not named in tls-identities" \
    nbdinfo --size "$(tls_uri "127.0.0.1:$port" c "tls-certificates=$D/pki/client")"
stop_server
step pass
