#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The NBD reference test suite: nbd-tester-client, built from Debian's nbd
# source package in the trixie chroot (tests/chroot-trixie.sh ensure
# tester; its code stays there), run against nbd-serverd.  The cases are
# those of the package's tests/run/simple_test that do not depend on
# nbd-server itself, each with the same nbd-tester-client arguments as
# there, but with our server, started here, instead of nbd-server:
#
#   plain (cfg1)          read test on a named export over TCP
#   multiple (cfgmulti)   two exports, one read-only, read test on each
#   readonly (rowrite)    writes to a read-only export must fail (-w -F)
#   list                  nbd-client -l lists the exports (NBD_OPT_LIST),
#                         then a read test
#   handshake             the handshake test (-h)
#   write                 write test (-w)
#   flush                 writes with flush and FUA (-w -f)
#   integrity             the integrity transaction log (-i -t)
#   integrityhuge         the same with 48 MiB requests
#   tls                   integrity over TLS with a client certificate
#   tlshuge               integrityhuge over TLS, server name checked (-H)
#   tlswrongcert          a self-signed client certificate is refused (-F)
#   unix                  read test over a Unix socket (-u)
#   oversize (cfgsize)    oversize reads (-o)
#   inetd                 the server on the client's socket (-I): the
#                         tester's socketpair relayed to a fresh
#                         `nbd-serverd -s` per connection (see c_inetd)
#
# Not applicable, reported as SKIP with the reason: cfgnew (the same wire
# exchange as plain; it tests nbd-server's config), dirconfig (nbd-server's
# includedir), tree and rotree (nbd-server's treefiles backend).
#
# Each case prints PASS, FAIL or SKIP with its reason; a SKIP never counts
# as a pass.  Exit 1 if any case failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../modern/lib.sh
. "$(dirname "$0")/../modern/lib.sh"

requires certtool truncate
TESTER_DIR=/opt/nbd-tester
[ -x "$ROOT$TESTER_DIR/nbd-tester-client" ] ||
    missing "nbd-tester-client is not built in $ROOT (tests/chroot-trixie.sh ensure tester)"
TESTER_VERSION=$(cat "$ROOT$TESTER_DIR/version")

PASSED=()
FAILED=()
SKIPPED=()
img=$T/nbd.dd
port=
sock=$T/unix.sock

pki=$T/pki
make_pki "$pki" >/dev/null
# A self-signed client certificate (no CA of the server's).
certtool --generate-privkey --key-type=ecdsa --outfile "$pki/selfsigned-key.pem" 2>/dev/null
printf 'cn = "self-signed client"\ntls_www_client\nsigning_key\nexpiration_days = 30\n' \
    >"$pki/tmpl/selfsigned"
certtool --generate-self-signed --load-privkey "$pki/selfsigned-key.pem" \
    --template "$pki/tmpl/selfsigned" --outfile "$pki/selfsigned-cert.pem" 2>/dev/null
[ -s "$pki/selfsigned-cert.pem" ] || fail "certtool made no self-signed certificate"

# serve ARGS...: a fresh server on a new port and the Unix socket.
serve()
{
    port=$(free_port)
    rm -f "$sock"
    start_server -l "127.0.0.1:$port" -l "unix:$sock" "$@" >>"$T/steps.log"
}

# tester NAME ARGS...: run nbd-tester-client in the chroot; its output
# goes to $T/NAME.out.
tester()
{
    local name=$1 rc=0
    shift
    echo "+ nbd-tester-client $*" >"$T/$name.out"
    in_chroot "$TESTER_DIR/nbd-tester-client" "$@" >>"$T/$name.out" 2>&1 || rc=$?
    return $rc
}

# run_case NAME FUNCTION: run one case in a subshell (a failing step
# fails the case, not the script), stop its server, record the result.
run_case()
{
    local name=$1 fn=$2 rc=0
    (
        set -e
        "$fn"
    ) >"$T/$name.log" 2>&1 || rc=$?
    if [ -n "$SERVER_PID" ] || [ -f "$T/server.pid" ]; then
        kill_case_server
    fi
    if [ $rc = 0 ]; then
        PASSED+=("$name")
        echo "PASS: nbd-tester/$name"
    elif [ $rc = 77 ]; then
        SKIPPED+=("$name")
        echo "SKIP: nbd-tester/$name ($(cat "$T/$name.skip" 2>/dev/null || echo 'no reason given'))"
    else
        FAILED+=("$name")
        echo "FAIL: nbd-tester/$name (exit $rc)"
        sed 's/^/    /' "$T/$name.log" | tail -n 25
        if [ -f "$T/$name.out" ]; then
            sed 's/^/    | /' "$T/$name.out" | tail -n 25
        fi
        echo "    --- server log (last lines) ---"
        tail -n 15 "$SERVER_LOG" | sed 's/^/    | /'
    fi
    printf '===== end of case %s\n' "$name" >>"$SERVER_LOG"
}

# The server of a case runs in the case's subshell; stop it from here
# through its pid file.
kill_case_server()
{
    local pid i
    pid=$(cat "$T/server.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$T/server.pid"
}

# this_run: the server log of the last server started.
this_run()
{
    tail -n +"$(grep -n '^===== server run' "$SERVER_LOG" | tail -n 1 | cut -d: -f1)" "$SERVER_LOG"
}

case_skip()
{
    echo "$1" >"$T/$CASE.skip"
    exit 77
}

fresh_image()
{
    rm -f "$img"
    truncate -s "${1:-4M}" "$img"
}

# 50 MiB, as simple_test's filesize for the integrity cases.
BIG=50M
TLS_ARGS=(--tls=require --tls-certs "$pki/server" --tls-verify-peer)
CLIENT_CERT=(-C "$pki/client/client-cert.pem" -K "$pki/client/client-key.pem"
    -A "$pki/client/ca-cert.pem")

c_plain() { fresh_image; serve -e "export=$img"; tester plain -N export 127.0.0.1 "$port"; }
c_multiple()
{
    fresh_image
    local ro=$T/nbd-ro.dd
    truncate -s 4M "$ro"
    printf '[export export2]\npath = %s\nread-only = yes\n' "$ro" >"$T/multi.conf"
    serve -e "export1=$img" -c "$T/multi.conf"
    tester multiple -N export1 localhost "$port"
    tester multiple -N export2 localhost "$port"
}
c_readonly() { fresh_image; serve -r -e "export1=$img"; tester readonly -N export1 -w -F localhost "$port"; }
c_list()
{
    fresh_image
    serve -r -e "export1=$img" -e "export2=$img"
    in_chroot "$TESTER_DIR/nbd-client" -l 127.0.0.1 "$port" >"$T/list.out" 2>&1 ||
        { cat "$T/list.out"; exit 1; }
    if ! grep -q '^export1$' "$T/list.out" || ! grep -q '^export2$' "$T/list.out"; then
        echo "nbd-client -l did not list export1 and export2:"
        cat "$T/list.out"
        exit 1
    fi
    tester list -N export1 localhost "$port"
}
c_handshake() { fresh_image; serve -e "export1=$img"; tester handshake -h -N export1 localhost "$port"; }
c_write() { fresh_image; serve -e "export1=$img"; tester write -N export1 -w localhost "$port"; }
c_flush() { fresh_image; serve -e "export1=$img"; tester flush -N export1 -w -f localhost "$port"; }
c_integrity()
{
    fresh_image $BIG
    serve -e "export1=$img"
    tester integrity -N export1 -i -t "$TESTER_DIR/integrity-test.tr" localhost "$port"
}
c_integrityhuge()
{
    fresh_image $BIG
    serve -e "export1=$img"
    tester integrityhuge -N export1 -i -t "$TESTER_DIR/integrityhuge-test.tr" localhost "$port"
}
c_tls()
{
    fresh_image $BIG
    serve "${TLS_ARGS[@]}" -e "export1=$img"
    tester tls -N export1 -i -t "$TESTER_DIR/integrity-test.tr" "${CLIENT_CERT[@]}" localhost "$port"
}
c_tlshuge()
{
    fresh_image $BIG
    serve "${TLS_ARGS[@]}" -e "export1=$img"
    tester tlshuge -N export1 -i -t "$TESTER_DIR/integrityhuge-test.tr" "${CLIENT_CERT[@]}" \
        -H localhost 127.0.0.1 "$port"
}
c_tlswrongcert()
{
    fresh_image $BIG
    serve "${TLS_ARGS[@]}" -e "export1=$img"
    tester tlswrongcert -N export1 -t "$TESTER_DIR/integrity-test.tr" \
        -C "$pki/selfsigned-cert.pem" -K "$pki/selfsigned-key.pem" -F localhost "$port"
    # -F makes the tester succeed when the connection fails; the server
    # must have refused it for the certificate.
    this_run | grep -q -i 'tls.*\(fail\|certificate\|verif\)' ||
        { echo "the server log does not show the refused certificate"; exit 1; }
    # And a good certificate still works on that server.
    tester tlswrongcert-control -N export1 -i -t "$TESTER_DIR/integrity-test.tr" \
        "${CLIENT_CERT[@]}" localhost "$port"
}
c_unix() { fresh_image; serve -e "export1=$img"; tester unix -N export1 -u "$sock"; }
c_oversize() { fresh_image; serve -e "export=$img"; tester oversize -o -N export 127.0.0.1 "$port"; }
c_inetd()
{
    # The tester runs in the chroot and execs its server there with a
    # socketpair on stdin; a host program cannot run there.  So it execs a
    # relay (the chroot's python3) that joins that socketpair to
    # 127.0.0.1:PORT, where systemd-socket-activate --inetd hands each
    # connection to a fresh `nbd-serverd -s` as stdin and stdout: the
    # daemon serves one connected socket on fd 0 and exits, inetd's nowait
    # way.
    command -v systemd-socket-activate >/dev/null ||
        case_skip "systemd-socket-activate is not installed (Debian: systemd)"
    fresh_image
    port=$(free_port)
    cat >"$T/relay.py" <<'PY'
import selectors
import socket
import sys

inner = socket.socket(fileno=0)
outer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sel = selectors.DefaultSelector()
sel.register(inner, selectors.EVENT_READ, outer)
sel.register(outer, selectors.EVENT_READ, inner)
while True:
    for key, _ in sel.select():
        data = key.fileobj.recv(1 << 16)
        if not data:
            sys.exit(0)
        key.data.sendall(data)
PY
    printf '===== server run inetd: systemd-socket-activate --inetd\n' >>"$SERVER_LOG"
    systemd-socket-activate --inetd -a -l "127.0.0.1:$port" \
        "$SERVER_BIN" -s -e "export1=$img" >>"$SERVER_LOG" 2>&1 &
    local activator=$!
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    local rc=0
    tester inetd -N export1 -I -- python3 "$T/relay.py" "$port" || rc=$?
    kill "$activator" 2>/dev/null || true
    wait "$activator" 2>/dev/null || true
    [ "$rc" = 0 ] || { cat "$T/inetd.out"; exit "$rc"; }
    # Two connections: the probe above and the tester's; each its own
    # daemon, each gone again.
    grep -c 'serving one connection' "$SERVER_LOG" | grep -q -v '^0$' ||
        { echo "no nbd-serverd -s served the tester"; exit 1; }
}
c_cfgnew() { case_skip "cfgnew tests nbd-server's configuration file; its wire exchange is that of plain"; }
c_dirconfig() { case_skip "dirconfig tests nbd-server's includedir configuration"; }
c_tree() { case_skip "tree tests nbd-server's treefiles backend"; }
c_rotree() { case_skip "rotree tests nbd-server's treefiles backend"; }

step "nbd-tester-client from nbd $TESTER_VERSION against $SERVER_BIN"
for CASE in plain multiple readonly list handshake write flush integrity \
    integrityhuge tls tlshuge tlswrongcert unix oversize inetd cfgnew \
    dirconfig tree rotree; do
    SERVER_PID=
    run_case "$CASE" "c_$CASE"
done
SERVER_PID=

echo "nbd-tester: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped (${SKIPPED[*]:-none})"
[ ${#FAILED[@]} = 0 ]
