#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Debian trixie chroot that holds today's NBD clients and servers
# (libnbd 1.22, qemu 10, nbdkit 1.42, fio 3.39) and, built from Debian's
# nbd source package, the reference test client nbd-tester-client.  The
# host (Debian 12) ships older ones; the tests in tests/modern and
# tests/nbd-tester run these against the nbd-serverd built on the host.
#
#   chroot-trixie.sh ensure [tester]   build the chroot unless the cache is valid
#                               (with "tester": nbd-tester-client too)
#   chroot-trixie.sh check [tester]    validate the cache only: exit 0 valid, 1 not
#   chroot-trixie.sh run BUILD DIR...  run the test scripts in each DIR with
#                               tests/run-interop.sh, the chroot mounted
#   chroot-trixie.sh exec BUILD CMD... run one command (one test script) on the
#                               host as run does, the chroot mounted
#   chroot-trixie.sh shell             an interactive shell in the chroot, mounted
#   chroot-trixie.sh remove            delete the cache
#
# The cache lives outside the repository (a CI clone is fresh every time):
# $NBDSRV_CHROOT, default /var/cache/nbd-serverd-tests/trixie.  Next to it:
# ROOT.stamp, written only once the packages are installed, lists what the
# chroot was built with; ROOT.tester names the nbd-tester-client build;
# ROOT.lock is held shared while the chroot is in use, exclusively while
# it is built or removed, so that runs on one machine do not disturb each
# other.  Before reuse, each stage is validated: the stamp must match what
# this script would build, every package must be installed, the programs
# must run and be at least the versions the tests rely on, and the stamp
# must be younger than NBDSRV_CHROOT_MAX_AGE days (default 30: point
# releases and security updates come in).  An invalid cache is rebuilt.
#
# Mounts (/proc, /dev, /dev/shm and the shared directory, at the same path
# inside) are made only inside a private mount namespace (unshare -m) that
# lives as long as the run, so the kernel undoes them whatever happens
# (even kill -9); they are also unmounted in order on a normal exit.  The
# host's mount table never sees them, which is what makes deleting a stale
# cache with rm safe.
#
# Needs root, debootstrap and unshare; without them it exits 77 (a skip,
# or a failure under CI=true, as tests/run-interop.sh treats it).
set -euo pipefail

ROOT=${NBDSRV_CHROOT:-/var/cache/nbd-serverd-tests/trixie}
SUITE=trixie
MAX_AGE=${NBDSRV_CHROOT_MAX_AGE:-30}
STAMP=$ROOT.stamp
TESTER_STAMP=$ROOT.tester
LOCK=$ROOT.lock
# Bump when the way the chroot is built changes: older caches then fail
# validation and are rebuilt.
FORMAT=1
PACKAGES="libnbd-bin python3-libnbd qemu-utils nbdkit fio gnutls-bin file"
# Minimum versions the tests rely on: extended headers from libnbd and
# qemu, qemu-storage-daemon in qemu-utils, nbdkit without extended headers
# (checked by the tests themselves, not here).
MIN_LIBNBD=1.22
MIN_QEMU=10.0
MIN_NBDKIT=1.42
MIN_FIO=3.39
TESTER_SRC=nbd
TESTER_DIR=/opt/nbd-tester
TESTER_BIN=$TESTER_DIR/nbd-tester-client
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say()
{
    printf '[chroot] %s\n' "$*" >&2
}

die()
{
    printf '[chroot] FAIL: %s\n' "$*" >&2
    exit 1
}

# unavailable WHY: this machine cannot build or enter the chroot.
unavailable()
{
    if [ "${CI:-}" = true ]; then
        die "$* (CI=true: the chroot tests must run)"
    fi
    printf '[chroot] SKIP: %s\n' "$*" >&2
    exit 77
}

preflight()
{
    [ "$(id -u)" = 0 ] || unavailable "the chroot needs root (chroot, mounts)"
    local c
    for c in debootstrap unshare chroot flock mount umount; do
        command -v "$c" >/dev/null 2>&1 ||
            unavailable "'$c' is not installed (apt-get install debootstrap util-linux)"
    done
    mkdir -p "$(dirname "$ROOT")"
}

# in_root ROOTDIR CMD...: run CMD in ROOTDIR with a clean environment.
in_root()
{
    local r=$1
    shift
    chroot "$r" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# version_ge A B: version A >= version B (dpkg ordering).
version_ge()
{
    dpkg --compare-versions "$1" ge "$2"
}

# tool_versions ROOTDIR: "name version" lines of the tools, read from the
# programs themselves (so a binary that no longer runs is noticed).
tool_versions()
{
    local r=$1 v
    v=$(in_root "$r" nbdinfo --version 2>/dev/null | awk '/^nbdinfo/ {print $2; exit}') || true
    echo "libnbd ${v:-none}"
    v=$(in_root "$r" qemu-img --version 2>/dev/null | awk '/^qemu-img/ {print $3; exit}') || true
    echo "qemu ${v:-none}"
    v=$(in_root "$r" nbdkit --version 2>/dev/null | awk '{print $2; exit}') || true
    echo "nbdkit ${v:-none}"
    v=$(in_root "$r" fio --version 2>/dev/null | sed -n 's/^fio-//p') || true
    echo "fio ${v:-none}"
}

expected_stamp_head()
{
    printf 'format %s\nsuite %s\npackages %s\n' "$FORMAT" "$SUITE" "$PACKAGES"
}

# check_base: is the cached chroot usable as it is?  Prints why not.
check_base()
{
    local age p name ver min
    [ -d "$ROOT" ] || { echo "no chroot at $ROOT"; return 1; }
    [ -f "$STAMP" ] || { echo "no stamp $STAMP (an unfinished build?)"; return 1; }
    if [ "$(head -n 3 "$STAMP")" != "$(expected_stamp_head)" ]; then
        echo "stamp $STAMP does not match this script's package list or format"
        return 1
    fi
    age=$((($(date +%s) - $(stat -c %Y "$STAMP")) / 86400))
    if [ "$MAX_AGE" -gt 0 ] && [ "$age" -ge "$MAX_AGE" ]; then
        echo "the chroot is $age days old (NBDSRV_CHROOT_MAX_AGE=$MAX_AGE)"
        return 1
    fi
    for p in $PACKAGES; do
        in_root "$ROOT" dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'ok installed' || { echo "package $p is not installed"; return 1; }
    done
    while read -r name ver; do
        case $name in
        libnbd) min=$MIN_LIBNBD ;;
        qemu) min=$MIN_QEMU ;;
        nbdkit) min=$MIN_NBDKIT ;;
        fio) min=$MIN_FIO ;;
        esac
        if [ "$ver" = none ] || ! version_ge "$ver" "$min"; then
            echo "$name is $ver, the tests need at least $min"
            return 1
        fi
    done < <(tool_versions "$ROOT")
    in_root "$ROOT" test -x /usr/bin/qemu-storage-daemon ||
        { echo "qemu-storage-daemon is missing"; return 1; }
    in_root "$ROOT" python3 -c 'import nbd' 2>/dev/null ||
        { echo "python3 cannot import nbd"; return 1; }
    return 0
}

# check_tester: is the cached nbd-tester-client usable?
check_tester()
{
    local want got
    [ -f "$TESTER_STAMP" ] || { echo "nbd-tester-client was never built"; return 1; }
    [ -x "$ROOT$TESTER_BIN" ] || { echo "$ROOT$TESTER_BIN is missing"; return 1; }
    want=$(sed -n 's/^sha256 //p' "$TESTER_STAMP")
    got=$(sha256sum "$ROOT$TESTER_BIN" | cut -d' ' -f1)
    [ "$want" = "$got" ] || { echo "nbd-tester-client differs from the one built"; return 1; }
    [ "$(sed -n 's/^format //p' "$TESTER_STAMP")" = "$FORMAT" ] ||
        { echo "nbd-tester-client stamp has an old format"; return 1; }
    [ "$TESTER_STAMP" -nt "$STAMP" ] ||
        { echo "nbd-tester-client is older than the chroot"; return 1; }
    # It prints its usage and exits non-zero without arguments; a missing
    # library would make the loader fail with 127 instead.
    local rc=0
    in_root "$ROOT" "$TESTER_BIN" >/dev/null 2>&1 || rc=$?
    [ "$rc" != 127 ] && [ "$rc" != 126 ] ||
        { echo "nbd-tester-client does not run (exit $rc)"; return 1; }
    return 0
}

# mounts_under DIR: mount points at or below DIR in this namespace.
mounts_under()
{
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo
}

safe_remove()
{
    local d=$1
    [ -e "$d" ] || return 0
    if [ -n "$(mounts_under "$d")" ]; then
        die "refusing to delete $d: something is mounted below it: $(mounts_under "$d" | tr '\n' ' ')"
    fi
    rm -rf --one-file-system "$d"
}

# with_mounts ROOTDIR SHARED CMD...: in a private mount namespace, mount
# /proc, /dev, /dev/shm and SHARED (if not empty) into ROOTDIR and run CMD
# (on the host, not in the chroot); unmount everything afterwards.
with_mounts()
{
    unshare -m --propagation private -- bash "$0" __mounted "$@"
}

mounted_main()
{
    local r=$1 shared=$2 rc=0 m
    shift 2
    local -a done_mounts=()
    # Never in the host's namespace: the mounts must die with the run.
    [ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
        die "__mounted must run in a private mount namespace (use with_mounts)"
    # shellcheck disable=SC2317
    undo()
    {
        local i
        for ((i = ${#done_mounts[@]} - 1; i >= 0; i--)); do
            umount "${done_mounts[i]}" 2>/dev/null ||
                umount -l "${done_mounts[i]}" 2>/dev/null || true
        done
        [ -z "$shared" ] || rmdir "$r$shared" 2>/dev/null || true
    }
    trap undo EXIT
    for m in /proc /dev /dev/pts /dev/shm $shared; do
        mkdir -p "$r$m"
        mount --bind "$m" "$r$m"
        done_mounts+=("$r$m")
    done
    "$@" || rc=$?
    exit "$rc"
}

build_base()
{
    local new=$ROOT.new t0=$SECONDS
    safe_remove "$new"
    safe_remove "$ROOT"
    rm -f "$STAMP" "$TESTER_STAMP"
    say "debootstrap --variant=minbase $SUITE $new (Debian's default mirror)"
    debootstrap --variant=minbase "$SUITE" "$new" >"$new.log" 2>&1 || {
        tail -n 30 "$new.log" >&2
        die "debootstrap failed (log: $new.log)"
    }
    say "debootstrap took $((SECONDS - t0)) s"
    # Nothing installed may start a service in the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$new/usr/sbin/policy-rc.d"
    chmod 755 "$new/usr/sbin/policy-rc.d"
    # Source packages, for nbd-tester-client.
    sed -n 's/^deb /deb-src /p' "$new/etc/apt/sources.list" >"$new/etc/apt/sources.list.d/src.list"
    [ -s "$new/etc/apt/sources.list.d/src.list" ] ||
        die "no deb line in $new/etc/apt/sources.list to derive deb-src from"
    cp /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
    say "apt-get install $PACKAGES"
    with_mounts "$new" "" in_root "$new" sh -c \
        "apt-get update -q && apt-get install -y -q --no-install-recommends $PACKAGES && apt-get clean" \
        >>"$new.log" 2>&1 || {
        tail -n 30 "$new.log" >&2
        die "installing the packages failed (log: $new.log)"
    }
    mv "$new" "$ROOT"
    mv "$new.log" "$ROOT.log"
    { expected_stamp_head; tool_versions "$ROOT"; } >"$STAMP.new"
    mv "$STAMP.new" "$STAMP"
    say "chroot built in $((SECONDS - t0)) s, $(du -sh --one-file-system "$ROOT" | cut -f1)"
}

# The build dependencies of the nbd source package but those for its
# documentation (docbook2man is slow to install, and --disable-manpages
# needs none of it) and debhelper; autoreconf because Debian's patch
# changes Makefile.am.
TESTER_SKIP_DEPS="debhelper-compat docbook-utils docbook po-debconf"
TESTER_EXTRA_DEPS="build-essential autoconf automake libtool pkgconf"

build_tester()
{
    local t0=$SECONDS log=$ROOT.tester.log
    rm -f "$TESTER_STAMP"
    say "building nbd-tester-client from Debian's $TESTER_SRC source package"
    # The nbd-tester-client code stays in the chroot: it is not ours to
    # commit.  --enable-syslog because its inetd test wants it.
    with_mounts "$ROOT" "" in_root "$ROOT" bash -ec "
        apt-get update -q
        apt-get install -y -q --no-install-recommends dpkg-dev
        rm -rf /usr/src/nbd-tester && mkdir -p /usr/src/nbd-tester
        cd /usr/src/nbd-tester
        apt-get source -q --download-only $TESTER_SRC
        dsc=\$(ls ${TESTER_SRC}_*.dsc)
        deps=\$(sed -n '/^Build-Depends:/,/^[^ ]/p' \$dsc | sed '\$d' |
            sed 's/^Build-Depends://' | tr '\n' ' ' | tr ',' '\n' |
            awk -v skip='$TESTER_SKIP_DEPS' '
                BEGIN { n = split(skip, s, \" \"); for (i = 1; i <= n; i++) drop[s[i]] = 1 }
                { sub(/^ +/, \"\"); sub(/ +\$/, \"\"); split(\$0, w, /[ (\\[]/) }
                \$0 != \"\" && !(w[1] in drop) { printf \"%s%s\", sep, \$0; sep = \", \" }')
        echo \"build dependencies: \$deps\"
        apt-get satisfy -y -q --no-install-recommends \"\$deps\"
        apt-get install -y -q --no-install-recommends $TESTER_EXTRA_DEPS
        dpkg-source -x \$dsc src
        cd src
        autoreconf -fi >autoreconf.log 2>&1 || { tail -n 40 autoreconf.log; exit 1; }
        ./configure --enable-syslog --disable-manpages >configure.log 2>&1 ||
            { tail -n 40 configure.log; exit 1; }
        grep -q '#define ISSERVER 1' config.h || { echo 'configure: no syslog (ISSERVER)'; exit 1; }
        make -j2 >make.log 2>&1 || { tail -n 40 make.log; exit 1; }
        make -C tests/run nbd-tester-client >>make.log 2>&1 || { tail -n 40 make.log; exit 1; }
        rm -rf $TESTER_DIR && mkdir -p $TESTER_DIR
        cp tests/run/nbd-tester-client tests/run/simple_test tests/run/*.tr \
            nbd-client $TESTER_DIR/
        dpkg-parsechangelog -S Version >$TESTER_DIR/version
        apt-get clean
    " >"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        die "building nbd-tester-client failed (log: $log)"
    }
    {
        echo "format $FORMAT"
        echo "source $TESTER_SRC $(cat "$ROOT$TESTER_DIR/version")"
        echo "sha256 $(sha256sum "$ROOT$TESTER_BIN" | cut -d' ' -f1)"
    } >"$TESTER_STAMP.new"
    mv "$TESTER_STAMP.new" "$TESTER_STAMP"
    say "nbd-tester-client built in $((SECONDS - t0)) s ($(sed -n 's/^source //p' "$TESTER_STAMP"))"
}

ensure()
{
    local want_tester=${1:-} why
    preflight
    exec 9>"$LOCK"
    flock -x 9
    if why=$(check_base); then
        say "reusing $ROOT: $(tail -n +4 "$STAMP" | tr '\n' ' ')"
    else
        say "rebuilding the chroot: $why"
        build_base
    fi
    if [ "$want_tester" = tester ]; then
        if why=$(check_tester); then
            say "reusing nbd-tester-client: $(sed -n 's/^source //p' "$TESTER_STAMP")"
        else
            say "building nbd-tester-client: $why"
            build_tester
        fi
    fi
    exec 9>&-
}

check_only()
{
    local why
    preflight
    exec 9>"$LOCK"
    flock -s 9
    why=$(check_base) || { say "invalid: $why"; exit 1; }
    if [ "${1:-}" = tester ]; then
        why=$(check_tester) || { say "invalid: $why"; exit 1; }
    fi
    say "valid: $ROOT ($(tail -n +4 "$STAMP" | tr '\n' ' '))"
}

# run BUILD DIR...: the test scripts of each DIR, with the chroot mounted
# and a shared temporary directory (TMPDIR, the same path inside) for the
# images and sockets.  The shared lock keeps the chroot from being rebuilt
# under a run.
run_tests()
{
    local build=$1 shared rc=0
    shift
    preflight
    exec 9>"$LOCK"
    flock -s 9
    local why
    why=$(check_base) || die "the chroot is not valid: $why (run: $0 ensure)"
    shared=$(mktemp -d /tmp/nbdsrv-chroot.XXXXXX)
    with_mounts "$ROOT" "$shared" env TMPDIR="$shared" NBDSRV_CHROOT="$ROOT" \
        NBDSRV_CHROOT_SHARED="$shared" bash "$0" __run_dirs "$build" "$@" || rc=$?
    rm -rf "$shared"
    return "$rc"
}

# exec_cmd BUILD CMD...: as run_tests, for one command.
exec_cmd()
{
    local build=$1 shared rc=0
    shift
    preflight
    exec 9>"$LOCK"
    flock -s 9
    local why
    why=$(check_base) || die "the chroot is not valid: $why (run: $0 ensure)"
    shared=$(mktemp -d /tmp/nbdsrv-chroot.XXXXXX)
    with_mounts "$ROOT" "$shared" env TMPDIR="$shared" NBDSRV_CHROOT="$ROOT" \
        NBDSRV_CHROOT_SHARED="$shared" BUILD="$build" "$@" || rc=$?
    rm -rf "$shared"
    return "$rc"
}

run_dirs()
{
    local build=$1 rc=0 d
    shift
    for d in "$@"; do
        "$(dirname "$0")/run-interop.sh" "$build" "$d" || rc=1
    done
    return "$rc"
}

case ${1:-} in
ensure) ensure "${2:-}" ;;
check) check_only "${2:-}" ;;
run)
    shift
    run_tests "$@"
    ;;
exec)
    shift
    exec_cmd "$@"
    ;;
shell)
    preflight
    exec 9>"$LOCK"
    flock -s 9
    with_mounts "$ROOT" "" in_root "$ROOT" bash -i
    ;;
remove)
    preflight
    exec 9>"$LOCK"
    flock -x 9
    safe_remove "$ROOT"
    safe_remove "$ROOT.new"
    rm -f "$STAMP" "$TESTER_STAMP" "$ROOT.log" "$ROOT.new.log" "$ROOT.tester.log"
    say "removed $ROOT"
    ;;
__mounted)
    shift
    mounted_main "$@"
    ;;
__run_dirs)
    shift
    run_dirs "$@"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
    exit 2
    ;;
esac
