#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A cluster that does not answer (a ceph.conf whose monitor address
# nobody listens on): the daemon gives up within librados's mount
# timeout (10 s, set by the backend), exits 2 and names the cluster
# (its ceph.conf) and the cause.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../interop/lib.sh
. "$(dirname "$0")/../interop/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib-rbd.sh
. "$(dirname "$0")/lib-rbd.sh"

dead=$(free_port)
keyring=$(sed -n 's/^keyring = \(.*client.keyring\)$/\1/p' "$CEPH_CONF" | head -n 1)
[ -n "$keyring" ] || fail "no client keyring in $CEPH_CONF"
cat >"$T/dead.conf" <<CONF
[global]
mon host = 127.0.0.1:$dead
auth client required = cephx
CONF
port=$(free_port)
cat >"$T/conf" <<CONF
[export gone]
rbd = rbd/whatever
ceph-conf = $T/dead.conf
ceph-keyring = $keyring
CONF
rc=0
start=$SECONDS
timeout 60 "$SERVER_BIN" -f -c "$T/conf" -l "127.0.0.1:$port" \
    >"$T/out.log" 2>&1 || rc=$?
took=$((SECONDS - start))
cat "$T/out.log"
[ "$rc" = 2 ] || fail "exit status $rc, expected 2"
grep -q "ceph cluster ($T/dead.conf" "$T/out.log" ||
    fail "the message does not name the cluster's ceph.conf"
grep -q "connecting" "$T/out.log" || fail "the message does not say what failed"
step "exit status 2 after $took s, naming the cluster and the cause"
