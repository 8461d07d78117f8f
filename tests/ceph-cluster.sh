#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A throwaway single-node Ceph cluster for the RBD tests, all state in DIR.
#
#   tests/ceph-cluster.sh start DIR   one ceph-mon and one BlueStore
#                                     ceph-osd (on a sparse file) on
#                                     127.0.0.1, cephx, a pool "rbd" with
#                                     the rbd application; writes
#                                     DIR/ceph.conf and DIR/client.keyring
#   tests/ceph-cluster.sh stop DIR    stops the daemons by PID (OSD first)
#   tests/ceph-cluster.sh env DIR     prints CEPH_CONF=... CEPH_KEYRING=...
#   tests/ceph-cluster.sh stop-osd DIR / start-osd DIR
#                                     the OSD alone (the outage test)
#
# No systemd and nothing outside DIR.  Memory is kept small (a 64 MiB
# BlueStore cache, osd memory target 512 MiB).  No ceph-mgr: no test
# needs one (the cluster reports HEALTH_WARN for it, harmlessly).
set -euo pipefail

cmd=${1:?usage: ceph-cluster.sh start|stop|env|stop-osd|start-osd DIR}
dir=${2:?usage: ceph-cluster.sh start|stop|env|stop-osd|start-osd DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf

ceph_cmd() { timeout 30 ceph --conf "$conf" "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {
    local f=$1 p i
    pid_alive "$f" || { rm -f "$f"; return 0; }
    p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$f"
}

start_osd() {
    ceph-osd --conf "$conf" -i 0 --pid-file "$dir/osd.pid" \
        2>>"$dir/log/osd-stderr.log"
    local i
    for i in $(seq 300); do
        if ceph_cmd osd dump 2>/dev/null | grep -q '^osd.0 up'; then
            return 0
        fi
        sleep 0.1
    done
    echo "ceph-cluster: osd.0 did not come up (log: $dir/log/osd.0.log)" >&2
    return 1
}

case $cmd in
start)
    t0=$(date +%s.%N)
    port=${CEPH_TEST_MON_PORT:-$((20000 + RANDOM % 20000))}
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$dir/mon" "$dir/osd" "$dir/log" "$dir/run" "$dir/crash"
    cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = 127.0.0.1:$port
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/client.keyring
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
run dir = $dir/run
admin socket = $dir/run/\$name.\$pid.asok
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
paxos propose interval = 0.05
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $dir/mon
public addr = 127.0.0.1:$port
keyring = $dir/mon/keyring
admin socket = $dir/run/mon.a.asok
[osd.0]
osd data = $dir/osd
keyring = $dir/osd/keyring
admin socket = $dir/run/osd.0.asok
osd objectstore = bluestore
bluestore block path = $dir/osd-block.img
bluestore block create = true
bluestore block size = 4294967296
bluestore cache size = 67108864
osd memory target = 536870912
osd max object name len = 256
osd max object namespace len = 64
CONF
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. \
        --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/client.keyring" --gen-key \
        -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
        --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/client.keyring" \
        >/dev/null
    monmaptool --create --add a "127.0.0.1:$port" --fsid "$fsid" \
        "$dir/monmap" >/dev/null
    ceph-mon --conf "$conf" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$dir/mon.keyring"
    ceph-mon --conf "$conf" -i a --pid-file "$dir/mon.pid" \
        2>>"$dir/log/mon-stderr.log"
    # The OSD's key first, then mkfs with it (not --mkkey).
    ceph_cmd auth get-or-create osd.0 mon 'allow profile osd' \
        osd 'allow *' mgr 'allow profile osd' -o "$dir/osd/keyring"
    # The same uuid for the map and the store, or the mon ignores its boot.
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    ceph_cmd osd new "$osd_uuid" 0 >/dev/null
    ceph-osd --conf "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        2>>"$dir/log/osd-mkfs.log"
    start_osd
    ceph_cmd osd pool create rbd 8 8 >/dev/null 2>&1
    ceph_cmd osd pool application enable rbd rbd >/dev/null 2>&1
    timeout 60 rbd --conf "$conf" pool init rbd
    t1=$(date +%s.%N)
    printf 'ceph-cluster: started in %.1f s (mon 127.0.0.1:%s, dir %s)\n' \
        "$(echo "$t1 - $t0" | bc)" "$port" "$dir"
    ;;
stop)
    stop_pidfile "$dir/osd.pid"
    stop_pidfile "$dir/mgr.pid"
    stop_pidfile "$dir/mon.pid"
    ;;
stop-osd)
    stop_pidfile "$dir/osd.pid"
    ;;
start-osd)
    start_osd
    ;;
env)
    echo "CEPH_CONF=$conf"
    echo "CEPH_KEYRING=$dir/client.keyring"
    ;;
*)
    echo "ceph-cluster: unknown command $cmd" >&2
    exit 2
    ;;
esac
