#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The cluster lost while serving: with the OSD stopped, a read fails with
# an error after rados_osd_op_timeout (5 s here, from the export's
# ceph.conf) while the connection stays up; once the OSD is back, the
# same connection reads the data again.  The OSD is started again
# whatever happens (the other scripts need it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

requires_nbd_python
[ -n "${NBDSRV_CEPH_DIR:-}" ] || fail "NBDSRV_CEPH_DIR is not set"
cluster="$(cd "$(dirname "$0")/.." && pwd)/ceph-cluster.sh"

cp "$CEPH_CONF" "$T/short.conf"
printf '[client]\nrados osd op timeout = 5\n' >>"$T/short.conf"
new_image 16M
port=$(free_port)
cat >"$T/conf" <<CONF
[export disk]
rbd = $IMG
ceph-conf = $T/short.conf
CONF
start_server -c "$T/conf" -l "127.0.0.1:$port"
# Whatever happens, the OSD runs again afterwards.
trap '"$cluster" start-osd "$NBDSRV_CEPH_DIR" >/dev/null 2>&1 || true; cleanup' EXIT

cat >"$T/outage.py" <<'PY'
import subprocess
import sys
import time

import nbd

port, cluster, cdir = sys.argv[1], sys.argv[2], sys.argv[3]
h = nbd.NBD()
h.set_export_name("disk")
h.connect_tcp("127.0.0.1", port)
M = 1024 * 1024
h.pwrite(b"\x42" * M, 8 * M)
h.flush()
subprocess.run([cluster, "stop-osd", cdir], check=True)
print("OSD stopped")
t0 = time.monotonic()
try:
    h.pread(M, 8 * M)
    sys.exit("a read succeeded with the OSD stopped")
except nbd.Error as e:
    took = time.monotonic() - t0
    print("read failed after %.1f s: %s" % (took, e))
    assert took < 25, "the export's rados osd op timeout was not used"
subprocess.run([cluster, "start-osd", cdir], check=True)
print("OSD started")
deadline = time.monotonic() + 60
while True:
    try:
        got = h.pread(M, 8 * M)
        break
    except nbd.Error as e:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
assert got == b"\x42" * M, "wrong data after the outage"
h.shutdown()
print("the same connection reads the data again")
PY
tmo "$NBD_PYTHON" "$T/outage.py" "$port" "$cluster" "$NBDSRV_CEPH_DIR" ||
    fail "the outage check failed"
step "error during the outage, service resumed on the same connection"
stop_server
