# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Shared helpers for the interop scripts: tool checks, a temporary
# directory removed on exit, starting and stopping the server under test,
# images and checksums.
#
# Each tests/interop/<tool>-<feature>.sh sources this file first.  The
# runner (tests/run-interop.sh) calls every script from the repository root
# with BUILD set to the build directory.  Exit status: 0 pass, 77 skip (a
# tool is missing; a failure instead when CI=true), anything else fails.
#
# NBDSRV_TEST_SERVER picks the server: "nbd-serverd" (the default) runs
# $BUILD/nbd-serverd; "nbdkit" runs nbdkit's file plugin in directory mode
# with the exportname filter, so that the scripts can be checked against a
# known-good peer.  Our own command line (man/nbd-serverd.8; the tests
# rely on it) is the one the scripts speak; start_server translates it for
# nbdkit where nbdkit has an equivalent, and is_our_server lets a script
# keep the checks that only our server promises.
#
# Other knobs: NBDSRV_TEST_KEEP=1 keeps the temporary directory,
# NBDSRV_TEST_TIMEOUT bounds each client command (seconds, default 60).
# A script sets SERVER_BIN=$BUILD/tests/nbd-serverd-test (the daemon with
# the fault-injection hook, see tests/support/fault-hook.c) before
# start_server to make storage fail on purpose.

set -euo pipefail

BUILD=${BUILD:-build}
SERVER_BIN=$BUILD/nbd-serverd
NBDSRV_TEST_SERVER=${NBDSRV_TEST_SERVER:-nbd-serverd}
NBDSRV_TEST_TIMEOUT=${NBDSRV_TEST_TIMEOUT:-60}
TEST_NAME=$(basename "$0" .sh)
# The raw-socket NBD client (tests/lib/nbdwire.py) for every Python the
# scripts run, without a __pycache__ in the source tree.
TESTS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)
export PYTHONPATH="$TESTS_LIB${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

case $NBDSRV_TEST_SERVER in
nbd-serverd | nbdkit) ;;
*)
    echo "$TEST_NAME: NBDSRV_TEST_SERVER must be nbd-serverd or nbdkit" >&2
    exit 1
    ;;
esac

# ---------------------------------------------------------------------
# Messages

step()
{
    printf '[%s] %s\n' "$TEST_NAME" "$*"
}

fail()
{
    printf '[%s] FAIL: %s\n' "$TEST_NAME" "$*" >&2
    exit 1
}

skip()
{
    printf '[%s] SKIP: %s\n' "$TEST_NAME" "$*"
    exit 77
}

# missing WHAT: a tool the test needs is absent: skip (exit 77), or fail
# when CI=true, since CI installs every tool.
missing()
{
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: every tool must be installed)"
    fi
    skip "$*"
}

is_our_server()
{
    [ "$NBDSRV_TEST_SERVER" = nbd-serverd ]
}

# requires CMD...: every command must be on PATH (see missing).
requires()
{
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 ||
            missing "required tool '$cmd' is not installed"
    done
}

# requires_nbd_python: find a Python interpreter that can "import nbd"
# (python3-libnbd) and put it in NBD_PYTHON.  The first python3 on PATH may
# be a private one (pyenv, a virtualenv) without the Debian module, so
# /usr/bin/python3 is tried too.
requires_nbd_python()
{
    local py
    NBD_PYTHON=
    for py in "$(command -v python3 || true)" /usr/bin/python3; do
        if [ -n "$py" ] && [ -x "$py" ] &&
            "$py" -c 'import nbd' >/dev/null 2>&1; then
            NBD_PYTHON=$py
            return 0
        fi
    done
    missing "no python3 with the nbd module (python3-libnbd)"
}

# nbdsh_run ARGS...: what the nbdsh wrapper does ("python3 -m nbd"), with
# the interpreter found by requires_nbd_python rather than whichever
# python3 is first on PATH.
nbdsh_run()
{
    tmo "$NBD_PYTHON" -m nbd "$@"
}

# tmo CMD...: run a command with a time limit so that a hung server fails
# the test instead of hanging the suite.
tmo()
{
    timeout -k 5 "$NBDSRV_TEST_TIMEOUT" "$@"
}

# qemu_io_ok ARG... -- CMD...: run qemu-io with ARGs (the image and how
# to open it) and one -c per CMD; every command must succeed and every
# pattern must match (a wrong one makes qemu-io print "Pattern
# verification failed").  Its output stays in $T/qio.out.
qemu_io_ok()
{
    local c rc=0
    local -a args=()
    while [ "$1" != -- ]; do
        args+=("$1")
        shift
    done
    shift
    for c in "$@"; do
        args+=(-c "$c")
    done
    tmo qemu-io "${args[@]}" >"$T/qio.out" 2>&1 || rc=$?
    if [ "$rc" != 0 ] || grep -qi 'failed\|error' "$T/qio.out"; then
        cat "$T/qio.out" >&2
        fail "qemu-io exited $rc or reported a failure (commands: $*)"
    fi
    step "qemu-io: $# commands ok ($(printf '%s; ' "$@" | head -c 100)...)"
}

# qio [-r] URI CMD...: qemu_io_ok on the raw image at URI (read-only
# with -r).
qio()
{
    local -a ro=()
    if [ "$1" = -r ]; then
        ro=(-r)
        shift
    fi
    qemu_io_ok "${ro[@]}" -f raw "$1" -- "${@:2}"
}

# aio_cmds VERB N BASE: N asynchronous commands on 4 KiB blocks from byte
# BASE, block i with pattern i+1 (qemu-io issues every aio_ command
# before it waits, so they are all in flight together).
aio_cmds()
{
    local verb=$1 n=$2 base=$3 i
    for ((i = 0; i < n; i++)); do
        printf '%s -P %d %d 4k\n' "$verb" $((i + 1)) $((base + i * 4096))
    done
}

# ---------------------------------------------------------------------
# Temporary directory and cleanup

T=$(mktemp -d "${TMPDIR:-/tmp}/nbdsrv-interop.XXXXXX")
SERVER_PID=
SERVER_ADDRS=()
SERVER_LOG=$T/server.log
SERVER_RUNS=0
BG_PIDS=()
: >"$SERVER_LOG"

# track_pid PID: kill this background process on exit if it still runs.
track_pid()
{
    BG_PIDS+=("$1")
}

show_server_log()
{
    if [ -s "$SERVER_LOG" ]; then
        echo "----- last lines of the server log ($SERVER_LOG) -----" >&2
        tail -n 40 "$SERVER_LOG" >&2
        echo "----- end of server log -----" >&2
    fi
}

cleanup()
{
    local rc=$? pid i
    trap - EXIT
    set +e
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
        show_server_log
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if [ "${NBDSRV_TEST_KEEP:-}" = 1 ]; then
        echo "[$TEST_NAME] keeping $T" >&2
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------
# Addresses

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port()
{
    python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# uri_for ADDR NAME: the NBD URI of export NAME behind listen address ADDR
# ("HOST:PORT" or "unix:PATH").
uri_for()
{
    local addr=$1 name=$2
    case $addr in
    unix:*) printf 'nbd+unix:///%s?socket=%s\n' "$name" "${addr#unix:}" ;;
    *) printf 'nbd://%s/%s\n' "$addr" "$name" ;;
    esac
}

# uri NAME: the URI of export NAME on the first address of the running
# server.
uri()
{
    [ -n "${SERVER_ADDRS[0]:-}" ] || fail "uri: no server is running"
    uri_for "${SERVER_ADDRS[0]}" "$1"
}

# probe ADDR: succeed when something at ADDR greets like a fixed newstyle
# NBD server.  The probe then ends the handshake politely with
# NBD_OPT_ABORT so the server has nothing to complain about.
probe()
{
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys

import nbdwire as w

s = w.connect(sys.argv[1], timeout=2)
w.handshake(s)
w.send_option(s, w.OPT_ABORT)
try:
    s.recv(20)
except OSError:
    pass
s.close()
EOF
}

# ---------------------------------------------------------------------
# The server under test

# start_server ARGS...: start the server in the foreground (-f) with our
# command line plus a pid file, wait until every listen address answers
# with an NBD greeting, and record the pid in SERVER_PID.  SERVER_ADDRS
# lists the -l addresses in order; uri uses the first.
start_server()
{
    local pidfile=$T/server.pid i pid addr deadline
    local -a argv
    [ -z "$SERVER_PID" ] || fail "start_server: a server is already running"
    SERVER_ADDRS=()
    SERVER_RUNS=$((SERVER_RUNS + 1))
    rm -f "$pidfile"

    if is_our_server; then
        [ -x "$SERVER_BIN" ] ||
            fail "$SERVER_BIN does not exist (run make first)"
        argv=("$SERVER_BIN" -f --pidfile "$pidfile" "$@")
        parse_listen_addrs "$@"
    else
        requires nbdkit
        nbdkit_argv "$pidfile" "$@"
        argv=("${NBDKIT_ARGV[@]}")
    fi
    [ "${#SERVER_ADDRS[@]}" -gt 0 ] || fail "start_server: no -l address"

    step "start server (run $SERVER_RUNS): ${argv[*]}"
    printf '===== server run %d: %s\n' "$SERVER_RUNS" "${argv[*]}" \
        >>"$SERVER_LOG"
    "${argv[@]}" >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!

    deadline=$((SECONDS + 20))
    for addr in "${SERVER_ADDRS[@]}"; do
        until probe "$addr"; do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                local rc=0
                wait "$SERVER_PID" || rc=$?
                SERVER_PID=
                fail "server exited with status $rc before listening on $addr"
            fi
            [ "$SECONDS" -lt "$deadline" ] ||
                fail "server does not answer on $addr after 20 s"
            sleep 0.1
        done
    done

    # The pid file must name the process we started.
    for ((i = 0; i < 50; i++)); do
        [ -s "$pidfile" ] && break
        sleep 0.1
    done
    [ -s "$pidfile" ] || fail "pid file $pidfile was not written"
    pid=$(tr -d ' \n' <"$pidfile")
    [ "$pid" = "$SERVER_PID" ] ||
        fail "pid file says '$pid', but the server's pid is $SERVER_PID"
    step "server is up (pid $SERVER_PID) on ${SERVER_ADDRS[*]}"
}

parse_listen_addrs()
{
    while [ $# -gt 0 ]; do
        case $1 in
        -l | --listen)
            SERVER_ADDRS+=("$2")
            shift
            ;;
        --listen=*) SERVER_ADDRS+=("${1#--listen=}") ;;
        esac
        shift
    done
}

# nbdkit_argv PIDFILE ARGS...: translate our command line into an nbdkit
# command line in NBDKIT_ARGV.  Exports become symlinks in a directory
# served by the file plugin's dir= mode (so names, NBD_OPT_LIST and unknown
# names behave as with several -e), and the exportname filter makes the
# first export the default one, as our server does.
nbdkit_argv()
{
    local pidfile=$1 dir=$T/nbdkit-exports.$SERVER_RUNS first='' name path
    local -a opts=()
    shift
    rm -rf "$dir"
    mkdir -p "$dir"
    while [ $# -gt 0 ]; do
        case $1 in
        -l | --listen)
            [ "${#SERVER_ADDRS[@]}" = 0 ] ||
                fail "nbdkit listens on one address only"
            SERVER_ADDRS+=("$2")
            case $2 in
            unix:*) opts+=(-U "${2#unix:}") ;;
            *:*) opts+=(-i "${2%:*}" -p "${2##*:}") ;;
            *) fail "cannot map listen address '$2' onto nbdkit" ;;
            esac
            shift
            ;;
        -e | --export)
            name=${2%%=*}
            path=${2#*=}
            [ -n "$first" ] || first=$name
            ln -s "$(realpath "$path")" "$dir/$name"
            shift
            ;;
        -r | --read-only) opts+=(-r) ;;
        -t | --threads)
            opts+=(-t "$2")
            shift
            ;;
        -v | --verbose) opts+=(-v) ;;
        *) fail "option '$1' has no nbdkit equivalent; guard it with is_our_server" ;;
        esac
        shift
    done
    [ -n "$first" ] || fail "start_server: no -e export"
    NBDKIT_ARGV=(nbdkit -f --exit-with-parent -P "$pidfile" "${opts[@]}"
        --filter=exportname file "dir=$dir" "default-export=$first")
}

# stop_server: SIGTERM, then expect a clean exit with status 0.
stop_server()
{
    signal_server TERM
    wait_server_exit
}

# signal_server SIGNAL: send the server SIGNAL (TERM, INT, ...).
signal_server()
{
    [ -n "$SERVER_PID" ] || fail "signal_server: no server is running"
    step "stop server (SIG$1 to $SERVER_PID)"
    kill -"$1" "$SERVER_PID" 2>/dev/null ||
        fail "server $SERVER_PID had already exited"
}

# reap_killed_server [UNIX_SOCKET]: the server was sent SIGKILL; collect
# it (it must have died of the signal), then wait until nothing answers
# on UNIX_SOCKET: the kernel tears a dead process's io_uring down
# asynchronously, and its pending accept keeps the listening socket open a
# little longer.
reap_killed_server()
{
    local rc=0 i
    wait "$SERVER_PID" 2>/dev/null || rc=$?
    [ "$rc" = 137 ] || fail "the server exited with status $rc, not by SIGKILL"
    SERVER_PID=
    [ $# -gt 0 ] || return 0
    for ((i = 0; i < 100; i++)); do
        python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1" 2>/dev/null ||
            return 0
        sleep 0.1
    done
    fail "$1 still answers 10 s after the server was killed"
}

# wait_server_exit: the server, already told to stop, must exit with
# status 0 within 15 s, and its log must hold no sanitizer report.
wait_server_exit()
{
    local i rc=0
    [ -n "$SERVER_PID" ] || fail "wait_server_exit: no server is running"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        fail "server did not exit within 15 s of the signal"
    fi
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=
    check_sanitizer_reports
    [ "$rc" = 0 ] || fail "server exited with status $rc after the signal"
}

# check_sanitizer_reports: fail if the server log holds a report from
# ASan, LSan, UBSan or TSan (when $BUILD is a sanitizer build).
check_sanitizer_reports()
{
    if grep -E -q 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer|SUMMARY: [A-Za-z]*Sanitizer' \
        "$SERVER_LOG"; then
        grep -E -n -A 20 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer' \
            "$SERVER_LOG" | head -n 80 >&2
        fail "the server log holds a sanitizer report"
    fi
}

# server_alive: fail unless the server process still runs.
server_alive()
{
    if [ -z "$SERVER_PID" ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        fail "the server is no longer running"
    fi
}

# server_fds: how many file descriptors the running server holds.
server_fds()
{
    find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l
}

# wait_fds_at_most N [SECONDS]: the server's fd count falls to N or below
# within SECONDS (default 10: closing the sockets of departed clients takes
# a loop turn or two), or the test fails: fds leak.
wait_fds_at_most()
{
    local want=$1 tenths=$((${2:-10} * 10)) i n
    for ((i = 0; i < tenths; i++)); do
        n=$(server_fds)
        [ "$n" -le "$want" ] && return 0
        sleep 0.1
    done
    ls -l "/proc/$SERVER_PID/fd" >&2 || true
    fail "the server holds $n fds, more than $want: fds leak"
}

# ---------------------------------------------------------------------
# Images and checksums

# make_image PATH SIZE: a sparse file of SIZE (truncate syntax: 64M = MiB).
make_image()
{
    rm -f "$1"
    truncate -s "$2" "$1"
}

# make_random PATH SIZE: SIZE bytes from /dev/urandom (head -c syntax).
make_random()
{
    head -c "$2" /dev/urandom >"$1"
}

# write_at PATH OFFSET SRC: copy file SRC into PATH at byte OFFSET,
# keeping the rest of PATH and its size (unless SRC reaches past its end).
write_at()
{
    dd if="$3" of="$1" bs=64k seek="$2" oflag=seek_bytes conv=notrunc \
        status=none
}

# make_sparse PATH SIZE OFFSET:LEN...: a sparse file of SIZE (truncate
# syntax), holes but for LEN random bytes (head -c syntax) at each byte
# OFFSET; the data of the Nth range is also kept in PATH.dN.
make_sparse()
{
    local path=$1 r n=0
    make_image "$path" "$2"
    shift 2
    for r in "$@"; do
        n=$((n + 1))
        make_random "$path.d$n" "${r#*:}"
        write_at "$path" "${r%%:*}" "$path.d$n"
    done
}

sha256_of()
{
    sha256sum "$1" | cut -d' ' -f1
}

# same_content A B...: every file has the sha256 of A.
same_content()
{
    local want f got
    want=$(sha256_of "$1")
    for f in "${@:2}"; do
        got=$(sha256_of "$f")
        [ "$got" = "$want" ] ||
            fail "$f (sha256 $got) differs from $1 (sha256 $want)"
    done
    step "same sha256 ($want): $*"
}

# expect_fail DESCRIPTION CMD...: the command must exit non-zero (not by
# the time limit).
expect_fail()
{
    local what=$1 rc=0
    shift
    tmo "$@" >"$T/expect_fail.out" 2>&1 || rc=$?
    if [ "$rc" = 0 ]; then
        cat "$T/expect_fail.out" >&2
        fail "$what: succeeded but should have failed"
    fi
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        cat "$T/expect_fail.out" >&2
        fail "$what: timed out instead of failing"
    fi
    step "$what: failed as expected (exit $rc): $(head -c 200 "$T/expect_fail.out" | tr '\n' ' ')"
}

# ---------------------------------------------------------------------
# TLS material, made with certtool and psktool at test time

# make_pki DIR: a test PKI.  DIR/server holds what --tls-certs wants
# (ca-cert.pem, server-cert.pem for 127.0.0.1 and localhost,
# server-key.pem, ca-crl.pem revoking the "revoked" client) and DIR/client
# what libnbd's tls-certificates= wants (ca-cert.pem, client-cert.pem,
# client-key.pem).  Other client directories, each with ca-cert.pem:
# DIR/nocert (no client certificate), DIR/expired (a client certificate
# that expired), DIR/revoked (a revoked one), DIR/othca (a client
# certificate from another CA).  DIR/badkey is a server directory whose
# key does not match its certificate.
make_pki()
{
    local d=$1 name
    requires certtool
    mkdir -p "$d/tmpl" "$d/server" "$d/client" "$d/nocert" "$d/expired" \
        "$d/revoked" "$d/othca" "$d/badkey"
    certtool --generate-privkey --key-type=ecdsa --outfile "$d/ca-key.pem" \
        2>/dev/null
    printf 'cn = "nbdsrv test CA"\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 30\n' \
        >"$d/tmpl/ca"
    certtool --generate-self-signed --load-privkey "$d/ca-key.pem" \
        --template "$d/tmpl/ca" --outfile "$d/ca-cert.pem" 2>/dev/null
    certtool --generate-privkey --key-type=ecdsa --outfile "$d/oca-key.pem" \
        2>/dev/null
    printf 'cn = "another CA"\nca\ncert_signing_key\nexpiration_days = 30\n' \
        >"$d/tmpl/oca"
    certtool --generate-self-signed --load-privkey "$d/oca-key.pem" \
        --template "$d/tmpl/oca" --outfile "$d/oca-cert.pem" 2>/dev/null

    # server: for 127.0.0.1 and localhost
    certtool --generate-privkey --key-type=ecdsa \
        --outfile "$d/server/server-key.pem" 2>/dev/null
    printf 'cn = "localhost"\ndns_name = "localhost"\nip_address = "127.0.0.1"\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n' \
        >"$d/tmpl/server"
    certtool --generate-certificate --load-privkey "$d/server/server-key.pem" \
        --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --template "$d/tmpl/server" \
        --outfile "$d/server/server-cert.pem" 2>/dev/null

    # clients
    printf 'cn = "client"\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n' \
        >"$d/tmpl/client"
    printf 'cn = "expired client"\ntls_www_client\nencryption_key\nsigning_key\nactivation_date = "2020-01-01 00:00:00"\nexpiration_date = "2020-02-01 00:00:00"\n' \
        >"$d/tmpl/expired"
    for name in client expired revoked othca; do
        certtool --generate-privkey --key-type=ecdsa \
            --outfile "$d/$name/client-key.pem" 2>/dev/null
    done
    certtool --generate-certificate --load-privkey "$d/client/client-key.pem" \
        --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --template "$d/tmpl/client" \
        --outfile "$d/client/client-cert.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$d/expired/client-key.pem" \
        --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --template "$d/tmpl/expired" \
        --outfile "$d/expired/client-cert.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$d/revoked/client-key.pem" \
        --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --template "$d/tmpl/client" \
        --outfile "$d/revoked/client-cert.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$d/othca/client-key.pem" \
        --load-ca-certificate "$d/oca-cert.pem" \
        --load-ca-privkey "$d/oca-key.pem" --template "$d/tmpl/client" \
        --outfile "$d/othca/client-cert.pem" 2>/dev/null
    printf 'crl_next_update = 30\ncrl_number = 1\n' >"$d/tmpl/crl"
    certtool --generate-crl --load-ca-privkey "$d/ca-key.pem" \
        --load-ca-certificate "$d/ca-cert.pem" \
        --load-certificate "$d/revoked/client-cert.pem" \
        --template "$d/tmpl/crl" --outfile "$d/server/ca-crl.pem" 2>/dev/null

    for name in server client nocert expired revoked othca badkey; do
        cp "$d/ca-cert.pem" "$d/$name/ca-cert.pem"
    done
    cp "$d/server/server-cert.pem" "$d/badkey/server-cert.pem"
    cp "$d/client/client-key.pem" "$d/badkey/server-key.pem"
    [ -s "$d/server/server-cert.pem" ] && [ -s "$d/server/ca-crl.pem" ] &&
        [ -s "$d/expired/client-cert.pem" ] &&
        [ -s "$d/othca/client-cert.pem" ] || fail "certtool did not make the PKI"
    step "made a test PKI in $d"
}

# tls_fixture SIZE USER...: what most TLS tests start from: disk, an
# image of SIZE at $T/disk.img; pki, a test PKI at $T/pki (make_pki);
# psk, a key file at $T/keys.psk with one key per USER (make_psk).
tls_fixture()
{
    local size=$1
    shift
    # shellcheck disable=SC2034 # read by the scripts that source this
    disk=$T/disk.img pki=$T/pki psk=$T/keys.psk
    make_image "$disk" "$size"
    make_pki "$pki"
    make_psk "$psk" "$@"
}

# make_psk FILE USER...: a psktool key file with one key per user.
make_psk()
{
    local f=$1 u
    shift
    requires psktool
    rm -f "$f"
    for u in "$@"; do
        psktool -u "$u" -p "$f" >/dev/null 2>&1 || fail "psktool failed"
    done
    [ -s "$f" ] || fail "psktool did not write $f"
}

# tls_uri ADDR NAME QUERY [USER]: the nbds:// URI of export NAME at ADDR
# ("HOST:PORT") with the query string QUERY, e.g.
# tls-certificates=DIR or tls-psk-file=FILE (then USER is the identity).
tls_uri()
{
    local addr=$1 name=$2 query=$3 user=${4:-}
    printf 'nbds://%s%s/%s?%s\n' "${user:+$user@}" "$addr" "$name" "$query"
}

# ---------------------------------------------------------------------
# Other servers and our client (nbdc)

# start_peer KIND NAME IMAGE [ARGS...]: serve IMAGE as export NAME with
# KIND (nbdkit or qemu-nbd) on a fresh Unix socket, next to (not instead
# of) the server under test.  Extra ARGS go to qemu-nbd, or to nbdkit:
# --filter=... before the plugin, the rest (filter parameters) after it.  Sets PEER_URI and PEER_PID; the peer is
# killed on exit.
PEER_RUNS=0
start_peer()
{
    local kind=$1 name=$2 image=$3 sock pid
    shift 3
    PEER_RUNS=$((PEER_RUNS + 1))
    sock=$T/peer.$PEER_RUNS.sock
    printf '===== peer %d: %s %s\n' "$PEER_RUNS" "$kind" "$image" \
        >>"$SERVER_LOG"
    case $kind in
    nbdkit)
        requires nbdkit
        local -a filters=() params=()
        local a
        for a in "$@"; do
            case $a in
            --filter=*) filters+=("$a") ;;
            *) params+=("$a") ;;
            esac
        done
        nbdkit -f --exit-with-parent -U "$sock" -e "$name" \
            "${filters[@]}" file "$image" "${params[@]}" \
            >>"$SERVER_LOG" 2>&1 &
        ;;
    qemu-nbd)
        requires qemu-nbd
        qemu-nbd -f raw -t -e 8 -x "$name" -k "$sock" "$@" "$image" \
            >>"$SERVER_LOG" 2>&1 &
        ;;
    *) fail "start_peer: unknown server '$kind'" ;;
    esac
    pid=$!
    track_pid "$pid"
    local deadline=$((SECONDS + 20))
    until probe "unix:$sock"; do
        kill -0 "$pid" 2>/dev/null || fail "$kind exited before listening"
        [ "$SECONDS" -lt "$deadline" ] || fail "$kind does not answer on $sock"
        sleep 0.1
    done
    PEER_PID=$pid
    PEER_URI="nbd+unix:///$name?socket=$sock"
    step "$kind is up (pid $pid): $PEER_URI"
}

# stop_peer: stop the last peer started.
stop_peer()
{
    kill "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
}

# sanitizer_report FILE: true when FILE holds a sanitizer report.
sanitizer_report()
{
    grep -E -q 'ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer|SUMMARY: [A-Za-z]*Sanitizer' "$1"
}

# nbdc OUT ARGS...: run $BUILD/nbdc ARGS with a time limit, stdout to OUT
# and stderr to OUT.err; fail if it fails or reports a sanitizer error.
nbdc()
{
    local out=$1 rc=0
    shift
    tmo "$BUILD/nbdc" "$@" >"$out" 2>"$out.err" || rc=$?
    if sanitizer_report "$out.err"; then
        head -n 60 "$out.err" >&2
        fail "nbdc $*: sanitizer report"
    fi
    if [ "$rc" != 0 ]; then
        cat "$out.err" >&2
        fail "nbdc $*: exit status $rc"
    fi
}

# nbdc_fails WANT_RC MESSAGE ARGS...: nbdc ARGS must exit with WANT_RC
# (not by the time limit) and print MESSAGE (an extended regexp) on stderr.
nbdc_fails()
{
    local want=$1 msg=$2 rc=0
    shift 2
    tmo "$BUILD/nbdc" "$@" >"$T/nbdc-fail.out" 2>"$T/nbdc-fail.err" || rc=$?
    if sanitizer_report "$T/nbdc-fail.err"; then
        head -n 60 "$T/nbdc-fail.err" >&2
        fail "nbdc $*: sanitizer report"
    fi
    [ "$rc" = "$want" ] ||
        fail "nbdc $*: exit status $rc, want $want: $(cat "$T/nbdc-fail.err")"
    grep -E -q "$msg" "$T/nbdc-fail.err" ||
        fail "nbdc $*: message lacks /$msg/: $(cat "$T/nbdc-fail.err")"
    step "nbdc $1...: failed as expected ($rc): $(head -c 200 "$T/nbdc-fail.err")"
}

# ---------------------------------------------------------------------
# Generic TLS clients (gnutls-cli) against the server

# starttls_relay ADDR: a relay on a free 127.0.0.1 port that does the NBD
# part of the upgrade for a TLS client that knows nothing of NBD: for
# each connection it reads the greeting of the server at ADDR
# ("HOST:PORT"), sends the client flags and NBD_OPT_STARTTLS, checks for
# NBD_REP_ACK, then copies bytes both ways, so the client's TLS handshake
# reaches the server's STARTTLS.  Sets RELAY_ADDR; killed on exit.
starttls_relay()
{
    local portfile=$T/relay.port pid i
    rm -f "$portfile"
    python3 - "$1" "$portfile" <<'PY' >>"$T/relay.log" 2>&1 &
import os, socket, struct, sys, threading

host, port = sys.argv[1].rsplit(":", 1)
portfile = sys.argv[2]
OPT_MAGIC = 0x49484156454F5054  # "IHAVEOPT"
REP_MAGIC = 0x3E889045565A9
NBD_OPT_STARTTLS, NBD_REP_ACK = 5, 1

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"server closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf

def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def serve(client):
    try:
        srv = socket.create_connection((host, int(port)))
        magic, opt_magic, hflags = struct.unpack(">QQH", recv_exact(srv, 18))
        if magic != 0x4E42444D41474943 or opt_magic != OPT_MAGIC:
            raise ValueError("not a fixed newstyle NBD server")
        srv.sendall(struct.pack(">I", hflags & 3))
        srv.sendall(struct.pack(">QII", OPT_MAGIC, NBD_OPT_STARTTLS, 0))
        rmagic, opt, rtype, rlen = struct.unpack(">QIII", recv_exact(srv, 20))
        recv_exact(srv, rlen)
        if rmagic != REP_MAGIC or opt != NBD_OPT_STARTTLS or rtype != NBD_REP_ACK:
            raise ValueError(f"STARTTLS answered with type {rtype:#x}")
    except (OSError, EOFError, ValueError) as e:
        print(f"relay: {e}", file=sys.stderr, flush=True)
        client.close()
        return
    t = threading.Thread(target=pump, args=(srv, client), daemon=True)
    t.start()
    pump(client, srv)
    t.join()
    srv.close()
    client.close()

ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(portfile + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
    pid=$!
    track_pid "$pid"
    for ((i = 0; i < 100; i++)); do
        [ -s "$portfile" ] && break
        kill -0 "$pid" 2>/dev/null || fail "the STARTTLS relay exited: $(cat "$T/relay.log")"
        sleep 0.1
    done
    [ -s "$portfile" ] || fail "the STARTTLS relay did not start"
    RELAY_ADDR=127.0.0.1:$(cat "$portfile")
    step "STARTTLS relay on $RELAY_ADDR for $1"
}

# gnutls_cli_cipher OUT ARGS...: connect gnutls-cli (its own default
# priority unless ARGS say otherwise) through the relay, complete the
# handshake, hang up, and print the cipher it reports ("AES-128-GCM").
# The whole output goes to OUT.
gnutls_cli_cipher()
{
    local out=$1 rc=0 desc
    shift
    tmo gnutls-cli -p "${RELAY_ADDR##*:}" "${RELAY_ADDR%:*}" "$@" \
        </dev/null >"$out" 2>&1 || rc=$?
    [ "$rc" = 0 ] || fail "gnutls-cli $*: exit status $rc: $(tail -n 5 "$out")"
    desc=$(sed -n 's/^- Description: //p' "$out")
    [ -n "$desc" ] || fail "gnutls-cli $*: no session description: $(tail -n 5 "$out")"
    # (TLS1.3-PSK)-(ECDHE-SECP256R1)-(AES-128-GCM): the last part.
    desc=${desc##*(}
    printf '%s\n' "${desc%)}"
}

# tls_logged: the number of "TLS established" lines in the server log.
tls_logged()
{
    grep -c 'TLS established: ' "$SERVER_LOG" || true
}

# tls_last_logged: the version and cipher of the last "TLS established"
# line of the server log ("TLS1.3 AES-128-GCM").
tls_last_logged()
{
    grep 'TLS established: ' "$SERVER_LOG" | tail -n 1 |
        sed 's/.*TLS established: \([^ ]* [^,]*\),.*/\1/'
}

# expect_tls_cipher WHAT REGEX CIPHER BEFORE: CIPHER, what a client said
# it negotiated, matches the extended regexp REGEX (anchored), and the
# server has logged a session beyond the BEFORE it had (tls_logged), the
# last with the same cipher.  The server logs once its side of the
# handshake is done, which may be just after the client has hung up.
expect_tls_cipher()
{
    local what=$1 re=$2 cipher=$3 before=$4 i
    [[ $cipher =~ ^($re)$ ]] || fail "$what negotiated '$cipher', want $re"
    for ((i = 0; i < 100; i++)); do
        [ "$(tls_logged)" -gt "$before" ] && break
        sleep 0.1
    done
    [ "$(tls_logged)" -gt "$before" ] ||
        fail "$what: the server logged no TLS session"
    [[ $(tls_last_logged) == "TLS1."*" $cipher" ]] ||
        fail "$what: the client says $cipher, the server logged '$(tls_last_logged)'"
    step "$what: $cipher, and the server logged $(tls_last_logged)"
}

# json_tls_cipher FILE: TLS-cipher of an `nbdc info --json` output.
json_tls_cipher()
{
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["TLS-cipher"])' "$1"
}
