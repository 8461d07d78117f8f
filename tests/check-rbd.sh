#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make check-rbd: starts a throwaway Ceph cluster (tests/ceph-cluster.sh)
# in a temporary directory, runs every tests/rbd/*.sh against it with
# CEPH_CONF set (tests/run-interop.sh), and stops the cluster.  Without
# Ceph's daemons, or a build without the RBD backend, it skips (exit
# 77); under CI=true that, and a cluster that does not start, fail.
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)

why=
for t in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd; do
    command -v "$t" >/dev/null 2>&1 || why="$why $t"
done
[ -z "$why" ] || why="missing:$why"
# The Makefile builds the backend exactly when this header exists.
if [ -z "$why" ] && [ ! -f /usr/include/rbd/librbd.h ]; then
    why="this build has no RBD backend (librbd-dev is not installed)"
fi
if [ -n "$why" ]; then
    if [ "${CI:-}" = true ]; then
        echo "check-rbd: FAIL: $why" >&2
        exit 1
    fi
    echo "check-rbd: SKIP: $why"
    exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/nbdsrv-ceph.XXXXXX")
stop() {
    "$here/ceph-cluster.sh" stop "$dir"
    if [ "${NBDSRV_TEST_KEEP:-}" = 1 ]; then
        echo "check-rbd: cluster kept in $dir"
    else
        rm -rf "$dir"
    fi
}
trap stop EXIT
if ! "$here/ceph-cluster.sh" start "$dir"; then
    echo "check-rbd: FAIL: the Ceph cluster did not start; logs:" >&2
    tail -n 20 "$dir"/log/*.log >&2
    exit 1
fi
export CEPH_CONF=$dir/ceph.conf
export NBDSRV_CEPH_DIR=$dir
"$here/run-interop.sh" "$build" "$here/rbd"
