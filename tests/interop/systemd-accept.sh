#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Per-connection activation, as systemd's Accept=yes does it:
# systemd-socket-activate --accept listens and starts one nbd-serverd per
# connection with the connected socket as fd 3 (LISTEN_FDS=1).
# Sequential clients: nbdsh writes and reads back, nbdcopy (a new daemon)
# sees its data, nbdinfo reads the size.  A daemon serving one connection
# does not offer multi-conn, so nbdcopy opens one connection: three
# daemons in all, each exiting 0 when its client is done.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires systemd-socket-activate nbdinfo nbdcopy truncate sha256sum
if ! is_our_server; then
    skip "per-connection activation is nbd-serverd's"
fi

make_image "$T/disk.img" 8M
make_random "$T/seed" 1M
write_at "$T/disk.img" 0 "$T/seed"
port=$(free_port)
step "systemd-socket-activate --accept on 127.0.0.1:$port"
systemd-socket-activate --accept -l "127.0.0.1:$port" \
    "$SERVER_BIN" -e "disk=$T/disk.img" >>"$SERVER_LOG" 2>&1 &
track_pid $!
for ((i = 0; i < 100; i++)); do
    grep -q "Listening on 127.0.0.1:$port" "$SERVER_LOG" && break
    sleep 0.1
done
grep -q "Listening on 127.0.0.1:$port" "$SERVER_LOG" ||
    fail "systemd-socket-activate does not listen"

step "client 1: nbdsh writes 1 MiB at 4 MiB and reads it back"
make_random "$T/data" 1M
cp "$T/disk.img" "$T/want.img"
write_at "$T/want.img" $((4 << 20)) "$T/data"
cat >"$T/client1.sh" <<SH
h.pwrite(open("$T/data", "rb").read(), 4 << 20)
h.flush()
assert h.pread(1 << 20, 4 << 20) == open("$T/data", "rb").read()
SH
requires_nbd_python
nbdsh_run -u "nbd://127.0.0.1:$port/disk" -c "$(cat "$T/client1.sh")" ||
    fail "client 1 failed"
step "client 2: a new daemon reads the whole image"
tmo nbdcopy "nbd://127.0.0.1:$port/" "$T/copy.img" || fail "client 2 failed"
same_content "$T/want.img" "$T/copy.img"
size=$(tmo nbdinfo --size "nbd://127.0.0.1:$port/disk") ||
    fail "client 3 (nbdinfo) failed"
[ "$size" = $((8 << 20)) ] || fail "nbdinfo --size says $size"

# Each connection had its own daemon, and each exited 0.
for ((i = 0; i < 50; i++)); do
    [ "$(grep -c 'died with code' "$SERVER_LOG")" -ge 3 ] && break
    sleep 0.1
done
spawned=$(grep -c '^Spawned ' "$SERVER_LOG" || true)
[ "$spawned" = 3 ] || fail "$spawned daemons were started for 3 connections"
[ "$(grep -c 'died with code 0' "$SERVER_LOG")" = 3 ] ||
    fail "a daemon did not exit 0: $(grep 'died with' "$SERVER_LOG")"
check_sanitizer_reports
step pass
