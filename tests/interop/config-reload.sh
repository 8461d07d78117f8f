#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SIGHUP reload under load, with systemd's notification protocol watched
# on a test datagram socket (NOTIFY_SOCKET):
#  - READY=1 once listening; RELOADING=1 with MONOTONIC_USEC, then
#    READY=1, around each reload; STOPPING=1 at the end;
#  - a reload that adds export c and removes export b while an nbdsh
#    client keeps reading export a: no read fails, a keeps its open image;
#  - a client connected to b before the reload goes on reading it;
#  - b is gone for new clients, c is there, a changed description shows;
#  - a reload with a broken file keeps the old configuration and says why.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo nbdcopy python3 truncate cmp
requires_nbd_python
if ! is_our_server; then
    skip "reloading a configuration file is specific to nbd-serverd"
fi

make_image "$T/a.img" 8M
make_random "$T/seed" 8M
write_at "$T/a.img" 0 "$T/seed"
make_image "$T/b.img" 4M
make_random "$T/bseed" 4M
write_at "$T/b.img" 0 "$T/bseed"
make_image "$T/c.img" 2M
port=$(free_port)
conf=$T/nbd-serverd.conf

write_conf()
{
    local c_section=$1 b_section=$2 extra=${3:-}
    {
        printf '[server]\nlisten = 127.0.0.1:%s\nthreads = 2\n%s\n' "$port" "$extra"
        printf '[export a]\npath = a.img\ndescription = disk a\n'
        [ -z "$b_section" ] || printf '[export b]\npath = b.img\n'
        [ -z "$c_section" ] || printf '[export c]\npath = c.img\ndescription = %s\n' "$c_section"
    } >"$conf"
}

# The notification socket: every datagram becomes one line of
# notify.log, its newlines shown as '|'.
cat >"$T/notify.py" <<'EOF'
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(log, "a") as f:
    f.write("listening\n")
    f.flush()
    while True:
        msg = s.recv(4096).decode()
        f.write(msg.replace("\n", "|") + "\n")
        f.flush()
EOF
python3 "$T/notify.py" "$T/notify.sock" "$T/notify.log" &
track_pid $!
for ((i = 0; i < 100; i++)); do
    [ -s "$T/notify.log" ] && break
    sleep 0.05
done
export NOTIFY_SOCKET=$T/notify.sock

# wait_notify PATTERN COUNT: until notify.log has COUNT lines matching.
wait_notify()
{
    local i
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c -- "$1" "$T/notify.log" || true)" -ge "$2" ] && return 0
        sleep 0.05
    done
    cat "$T/notify.log" >&2
    fail "no $2 notification(s) matching '$1'"
}

# fds_of FILE: the server's descriptors open on FILE.
fds_of()
{
    local fd
    for fd in /proc/"$SERVER_PID"/fd/*; do
        if [ "$(readlink "$fd" || true)" = "$1" ]; then
            basename "$fd"
        fi
    done | sort | tr '\n' ' '
}

list_names()
{
    tmo nbdinfo --list --json "nbd://127.0.0.1:$port" |
        python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))'
}

write_conf "" yes
start_server -c "$conf" -l "127.0.0.1:$port"
wait_notify '^READY=1' 1
unset NOTIFY_SOCKET
[ "$(list_names)" = "a b" ] || fail "exports before the reload: $(list_names)"
a_fds=$(fds_of "$T/a.img")
[ -n "$a_fds" ] || fail "a.img is not open"

step "start a reader on a, and a client on b"
cat >"$T/reader.py" <<'EOF'
import os, random, sys, time
import nbd
uri, seed, stop, progress = sys.argv[1:5]
want = open(seed, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
n = 0
while not os.path.exists(stop):
    off = random.randrange(0, len(want) - 65536) & ~511
    got = h.pread(65536, off)
    if got != want[off:off + 65536]:
        sys.exit("wrong data at %d" % off)
    n += 1
    if n % 20 == 0:
        # Write then rename: the shell never sees a half-written file.
        with open(progress + ".tmp", "w") as f:
            f.write("%d\n" % n)
        os.replace(progress + ".tmp", progress)
h.shutdown()
print("reads: %d" % n)
EOF
"$NBD_PYTHON" "$T/reader.py" "nbd://127.0.0.1:$port/a" "$T/seed" \
    "$T/stop" "$T/progress" >"$T/reader.out" 2>&1 &
reader=$!
track_pid $reader
cat >"$T/holder.py" <<'EOF'
import os, sys, time
import nbd
uri, seed, go = sys.argv[1:4]
want = open(seed, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
assert h.pread(4096, 0) == want[:4096]
open(go + ".connected", "w").close()
while not os.path.exists(go):
    time.sleep(0.05)
assert h.pread(1 << 20, 1 << 20) == want[1 << 20:2 << 20], "b changed"
h.shutdown()
print("b still served after the reload")
EOF
"$NBD_PYTHON" "$T/holder.py" "nbd://127.0.0.1:$port/b" "$T/bseed" \
    "$T/go" >"$T/holder.out" 2>&1 &
holder=$!
track_pid $holder

progress()
{
    cat "$T/progress" 2>/dev/null || echo 0
}
for ((i = 0; i < 200; i++)); do
    [ "$(progress)" -ge 40 ] && [ -e "$T/go.connected" ] && break
    sleep 0.05
done
[ "$(progress)" -ge 40 ] || fail "the reader does not progress: $(cat "$T/reader.out")"
[ -e "$T/go.connected" ] || fail "the client of b did not connect: $(cat "$T/holder.out")"

step "reload: add c, remove b, while a is being read"
before=$(progress)
write_conf "disk c" ""
kill -HUP "$SERVER_PID"
wait_notify '^RELOADING=1|MONOTONIC_USEC=[0-9][0-9]*' 1
wait_notify '^READY=1' 2
[ "$(list_names)" = "a c" ] || fail "exports after the reload: $(list_names)"
expect_fail "nbdinfo of the removed export b" \
    nbdinfo "nbd://127.0.0.1:$port/b"
tmo nbdinfo "nbd://127.0.0.1:$port/c" >/dev/null || fail "new export c is not served"
[ "$(fds_of "$T/a.img")" = "$a_fds" ] ||
    fail "a.img was reopened (fds $a_fds, now $(fds_of "$T/a.img"))"
grep -q "reloaded: 2 exports" "$SERVER_LOG" || fail "the reload is not logged"

step "the client connected to b goes on"
touch "$T/go"
wait "$holder" || fail "client of b failed: $(cat "$T/holder.out")"

step "a changed export applies to new connections"
write_conf "disk c, changed" ""
kill -HUP "$SERVER_PID"
wait_notify '^READY=1' 3
tmo nbdinfo --json "nbd://127.0.0.1:$port/c" >"$T/c.json"
grep -q '"description": "disk c, changed"' "$T/c.json" ||
    fail "description of c did not change: $(cat "$T/c.json")"

step "an image replaced under the same name is reopened"
make_random "$T/cseed" 2M
cp "$T/cseed" "$T/c.new"
mv "$T/c.new" "$T/c.img"
kill -HUP "$SERVER_PID"
wait_notify '^READY=1' 4
grep -q "export 'c' changed: image reopened" "$SERVER_LOG" ||
    fail "the replaced image of c was not reopened"
tmo nbdcopy "nbd://127.0.0.1:$port/c" "$T/c.copy" || fail "nbdcopy c"
cmp "$T/c.copy" "$T/cseed" || fail "c does not serve the new image"

step "a broken file keeps the running configuration"
write_conf "disk c" "" "bogus-key = 1"
kill -HUP "$SERVER_PID"
wait_notify '^READY=1' 5
grep -q "reload failed, the running configuration stays: .*nbd-serverd.conf:4: unknown key 'bogus-key'" \
    "$SERVER_LOG" || fail "the failed reload is not logged with FILE:LINE"
[ "$(list_names)" = "a c" ] || fail "exports after a failed reload: $(list_names)"
printf '[export a]\npath = a.img\n[export z]\npath = missing.img\n' >"$conf"
kill -HUP "$SERVER_PID"
wait_notify '^READY=1' 6
[ "$(list_names)" = "a c" ] || fail "exports after a failed reload: $(list_names)"
server_alive

step "new limits apply to new connections, not to the reader's"
write_conf "disk c" "" "max-connections = 1"
kill -HUP "$SERVER_PID"
wait_notify '^READY=1' 7
expect_fail "a second client over max-connections = 1" \
    nbdinfo "nbd://127.0.0.1:$port/c"
grep -q "refused: already 1 connections (max-connections)" "$SERVER_LOG" ||
    fail "the new limit is not applied"
grep -q "export 'b' removed" "$SERVER_LOG" || fail "removal of b not logged"
grep -q "export 'c' added" "$SERVER_LOG" || fail "addition of c not logged"
grep -q "export 'c' changed: new settings" "$SERVER_LOG" ||
    fail "change of c not logged"

step "the reader never failed"
after=$(progress)
for ((i = 0; i < 200; i++)); do
    after=$(progress)
    [ "$after" -gt $((before + 40)) ] && break
    sleep 0.05
done
[ "$after" -gt $((before + 40)) ] || fail "the reader stalled ($before, then $after)"
touch "$T/stop"
wait "$reader" || fail "the reader failed: $(cat "$T/reader.out")"
step "$(cat "$T/reader.out") (before the first reload: $before)"

stop_server
grep -q '^STOPPING=1' "$T/notify.log" || fail "no STOPPING=1"
step "notifications: $(tr '\n' ' ' <"$T/notify.log")"
step pass
