#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Running as a service: the pidfile (a live daemon's file is not
# clobbered, a stale one is replaced, the file goes away on exit), the
# daemon mode without -f, socket activation (LISTEN_FDS/LISTEN_PID with a
# TCP and a unix socket, which replace the configured listen addresses),
# max-connections (the extra client is closed and logged, and served once
# a place is free) and SIGTERM with --shutdown-timeout.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo python3 truncate
requires_nbd_python
if ! is_our_server; then
    skip "pidfile locking, socket activation and limits are nbd-serverd's"
fi

make_image "$T/disk.img" 4M
make_random "$T/seed" 1M
write_at "$T/disk.img" 0 "$T/seed"
pidfile=$T/server.pid

step "pidfile: a running daemon's file is not clobbered"
port=$(free_port)
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img"
port2=$(free_port)
rc=0
"$BUILD/nbd-serverd" -f --pidfile "$pidfile" -l "127.0.0.1:$port2" \
    -e "disk=$T/disk.img" >"$T/second.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a second daemon on the same pidfile: exit $rc"
grep -q "locked by a running daemon (pid $SERVER_PID)" "$T/second.out" ||
    fail "no clear message: $(cat "$T/second.out")"
[ "$(tr -d '\n' <"$pidfile")" = "$SERVER_PID" ] ||
    fail "the pidfile was overwritten: $(cat "$pidfile")"
probe "127.0.0.1:$port" || fail "the first daemon stopped answering"
stop_server
[ ! -e "$pidfile" ] || fail "the pidfile was not removed on exit"

step "pidfile: a stale file is replaced"
echo 999999 >"$pidfile"
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img"
stop_server

step "a unix socket is removed on exit, so a restart binds it again"
start_server -l "unix:$T/u.sock" -e "disk=$T/disk.img"
stop_server
[ ! -e "$T/u.sock" ] || fail "the unix socket file was left behind"
start_server -l "unix:$T/u.sock" -e "disk=$T/disk.img"
stop_server

step "daemon mode (no -f): the parent returns once the daemon is ready"
"$BUILD/nbd-serverd" --pidfile "$T/daemon.pid" -l "127.0.0.1:$port" \
    -e "disk=$T/disk.img" >"$T/daemon.out" 2>&1 ||
    fail "daemon start failed: $(cat "$T/daemon.out")"
[ -s "$T/daemon.pid" ] || fail "no pidfile once the parent returned"
dpid=$(tr -d '\n' <"$T/daemon.pid")
kill -0 "$dpid" || fail "the daemon $dpid is not running"
track_pid "$dpid"
probe "127.0.0.1:$port" || fail "the daemon does not answer at once"
tmo nbdinfo "nbd://127.0.0.1:$port/disk" >/dev/null || fail "nbdinfo"
[ "$(awk '{print $7}' "/proc/$dpid/stat")" = 0 ] ||
    fail "the daemon still has a controlling terminal"
kill -TERM "$dpid"
for ((i = 0; i < 100; i++)); do
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$dpid" 2>/dev/null && fail "the daemon did not stop"
[ ! -e "$T/daemon.pid" ] || fail "the daemon left its pidfile"

step "socket activation: LISTEN_FDS with a TCP and a unix socket"
cat >"$T/activate.py" <<'EOF'
# Binds the sockets, then becomes the server: exec keeps the pid, so
# LISTEN_PID is ours.  Sockets at fds 3 and 4, as systemd passes them.
import os, socket, sys
portfile, sockpath, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.bind(("127.0.0.1", 0))
tcp.listen(16)
ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ux.bind(sockpath)
ux.listen(16)
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % tcp.getsockname()[1])
os.rename(portfile + ".tmp", portfile)
a, b = os.dup(tcp.fileno()), os.dup(ux.fileno())
os.dup2(a, 3)
os.dup2(b, 4)
os.set_inheritable(3, True)
os.set_inheritable(4, True)
env = dict(os.environ, LISTEN_FDS="2", LISTEN_PID=str(os.getpid()))
os.execve(argv[0], argv, env)
EOF
unused=$(free_port)
printf '[server]\nlisten = 127.0.0.1:%s\n[export disk]\npath = %s\n' \
    "$unused" "$T/disk.img" >"$T/act.conf"
rm -f "$T/act.port"
python3 "$T/activate.py" "$T/act.port" "$T/act.sock" "$BUILD/nbd-serverd" \
    -f --pidfile "$pidfile" -c "$T/act.conf" >>"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 100; i++)); do
    [ -s "$T/act.port" ] && break
    sleep 0.05
done
act_port=$(cat "$T/act.port")
SERVER_ADDRS=("127.0.0.1:$act_port" "unix:$T/act.sock")
for addr in "${SERVER_ADDRS[@]}"; do
    for ((i = 0; i < 100; i++)); do
        probe "$addr" && break
        server_alive
        sleep 0.1
    done
    probe "$addr" || fail "no answer on the activated socket $addr"
done
tmo nbdcopy "nbd://127.0.0.1:$act_port/disk" "$T/tcp.copy" || fail "nbdcopy tcp"
cmp "$T/tcp.copy" "$T/disk.img" || fail "wrong data over the TCP socket"
tmo nbdinfo "nbd+unix:///disk?socket=$T/act.sock" >/dev/null ||
    fail "nbdinfo over the activated unix socket"
probe "127.0.0.1:$unused" && fail "the configured listen address is used too"
grep -q "socket activation, fd 3" "$SERVER_LOG" || fail "activation not logged"
stop_server
[ -S "$T/act.sock" ] || fail "an activated socket's file was removed"

step "max-connections: the extra client is closed and logged"
cat >"$T/hold.py" <<'EOF'
import os, sys, time
import nbd
uri, ready, release = sys.argv[1:4]
h = nbd.NBD()
h.connect_uri(uri)
h.pread(512, 0)
open(ready, "w").close()
while not os.path.exists(release):
    time.sleep(0.05)
h.pread(512, 0)
h.shutdown()
EOF
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img" --max-connections 2
for n in 1 2; do
    "$NBD_PYTHON" "$T/hold.py" "$(uri disk)" "$T/ready$n" "$T/release$n" \
        >"$T/hold$n.out" 2>&1 &
    eval "hold$n=\$!"
    track_pid $!
done
for ((i = 0; i < 200; i++)); do
    [ -e "$T/ready1" ] && [ -e "$T/ready2" ] && break
    sleep 0.05
done
[ -e "$T/ready1" ] && [ -e "$T/ready2" ] || fail "the two clients did not connect"
expect_fail "a third client" nbdinfo "$(uri disk)"
grep -q "refused: already 2 connections (max-connections)" "$SERVER_LOG" ||
    fail "the refusal is not logged"
server_alive
touch "$T/release1"
wait "$hold1" || fail "client 1 failed: $(cat "$T/hold1.out")"
ok=0
for ((i = 0; i < 50; i++)); do
    if tmo nbdinfo "$(uri disk)" >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.1
done
[ "$ok" = 1 ] || fail "no client served after a place became free"
touch "$T/release2"
wait "$hold2" || fail "client 2 failed: $(cat "$T/hold2.out")"
stop_server

step "stderr is the journal (JOURNAL_STREAM): <N> priority prefixes"
JOURNAL_STREAM=$(stat -c '%d:%i' "$SERVER_LOG")
export JOURNAL_STREAM
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img"
unset JOURNAL_STREAM
stop_server
tail -n 3 "$SERVER_LOG" | grep -q '^<6>stopped$' ||
    fail "no <6> prefix under JOURNAL_STREAM: $(tail -n 3 "$SERVER_LOG")"
grep -q '^<6>listening on 127.0.0.1:' "$SERVER_LOG" || fail "no <6>listening"

step "SIGTERM drains within --shutdown-timeout, then exits 0"
start_server -l "127.0.0.1:$port" -e "disk=$T/disk.img" --shutdown-timeout 1
rm -f "$T/ready1" "$T/release1"
"$NBD_PYTHON" "$T/hold.py" "$(uri disk)" "$T/ready1" "$T/release1" \
    >"$T/hold1.out" 2>&1 &
track_pid $!
for ((i = 0; i < 200; i++)); do
    [ -e "$T/ready1" ] && break
    sleep 0.05
done
start=$SECONDS
stop_server
[ $((SECONDS - start)) -le 4 ] || fail "stop took $((SECONDS - start)) s"
step pass
