#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Storage that fails: the client gets EIO and ENOSPC, the server neither
# crashes nor hangs, and goes on serving (backend_errors.py).
#
# EIO: there is no filter layer in the server to inject errors with, and
# device-mapper (dm-error, dm-flakey) is not available everywhere (not in
# this sandbox, where CI runs, either), so the failing storage is a FUSE
# file: nbdfuse serves an NBD disk from nbdkit's eval plugin, whose
# methods fail while a trigger file exists.  The server sees real EIO
# from the kernel on read, write and fsync, the way it would from a
# dying disk; no test hook in the server is needed.
# Both cache=writeback and cache=none (O_DIRECT) are exported.
#
# ENOSPC: a 16 MiB tmpfs mounted by the test holds sparse 64 MiB images;
# writes fill it.  cache=none is exported too when the kernel's tmpfs
# takes O_DIRECT (Linux 6.6 and later).
#
# Both need root (mount, /dev/fuse): without them the test skips on a
# developer machine and fails under CI=true (CI runs as root on a
# machine that has both).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-faults.sh
. "$(dirname "$0")/lib-faults.sh"

requires python3 truncate nbdkit nbdfuse
requires_nbd_python

sock=$T/nbd.sock
addr=unix:$sock

# ---- EIO
# nbdkit's eval plugin over a sparse file: each method fails with EIO
# while $trigger exists, and flush also while $trigger-flush exists (the
# error filter of nbdkit 1.32 cannot fail a flush).
trigger=$T/eio-on
nsock=$T/nbdkit.sock
mnt=$T/fuse
back=$T/eio-back.img
mkdir -p "$mnt"
make_image "$back" 64M
chk="if [ -e '$trigger' ]; then echo 'EIO injected by the test' >&2; exit 1; fi"
nbdkit -f --exit-with-parent -U "$nsock" eval \
    get_size="echo $(stat -c %s "$back")" can_write='exit 0' \
    can_flush='exit 0' \
    pread="$chk; dd if='$back' skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
    pwrite="$chk; dd of='$back' seek=\$4 conv=notrunc oflag=seek_bytes status=none" \
    flush="$chk; if [ -e '$trigger-flush' ]; then echo 'EIO injected by the test' >&2; exit 1; fi" \
    >>"$SERVER_LOG" 2>&1 &
nk_pid=$!
fault_track_pid "$nk_pid"
wait_nbdkit "$nk_pid" "$nsock"
[ -e /dev/fuse ] || cannot "/dev/fuse does not exist"
nbdfuse_mount "$mnt" "$nsock" ||
    cannot "nbdfuse could not mount $mnt (FUSE not usable here?)"

printf '[export eio]\npath = %s\n[export eio-direct]\npath = %s\ncache = none\n' \
    "$mnt/disk" "$mnt/disk" >"$T/eio.conf"
start_server -c "$T/eio.conf" -l "$addr"
fds=$(server_fds)
eio_rc=0
pyrun backend_errors.py eio "$addr" "$SERVER_PID" "$trigger" eio eio-direct \
    2>&1 | tee "$T/eio.out" || eio_rc=$?
rm -f "$trigger" "$trigger-flush"
server_alive
wait_fds_at_most "$fds"
stop_server
unmount "$mnt"

# ---- ENOSPC
small=$T/small
mount_tmpfs "$small" 16m
make_image "$small/a.img" 64M
exports=(full)
printf '[export full]\npath = %s\n' "$small/a.img" >"$T/full.conf"
if python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT))' \
    "$small/a.img" 2>/dev/null; then
    printf '[export full-direct]\npath = %s\ncache = none\n' "$small/a.img" \
        >>"$T/full.conf"
    exports+=(full-direct)
else
    step "this kernel's tmpfs refuses O_DIRECT: cache=none is not tried"
fi
start_server -c "$T/full.conf" -l "$addr"
fds=$(server_fds)
pyrun backend_errors.py enospc "$addr" "$SERVER_PID" "${exports[@]}"
server_alive
wait_fds_at_most "$fds"
stop_server
if [ "$eio_rc" != 0 ]; then
    grep -q "eio-direct: WRITE with FUA while flushes fail" "$T/eio.out" &&
        hint_fuse_direct_dsync
    fail "the EIO checks failed (status $eio_rc), see above"
fi
step "PASS"
