#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Debian packages, end to end on this machine (make check-deb):
#   - make deb builds them (build/deb/), with dpkg-buildflags' hardening
#     flags on the compiler line and the project's warnings, -Werror
#     included, after them;
#   - lintian reports no error and no warning;
#   - dpkg -i installs both; /etc/nbd-serverd/nbd-serverd.conf is a
#     conffile, no unit is enabled and no daemon is started, and
#     systemd-analyze verify accepts every installed unit;
#   - debian/tests/serve-image (the autopkgtest) runs against the
#     installed programs: the shipped configuration is refused for having
#     no export, and with one given on the command line the installed
#     daemon serves a temporary image on 127.0.0.1 that nbdinfo, nbdcopy
#     and nbdc read back and nbdcopy overwrites;
#   - dpkg --purge removes both, and a list of /usr, /etc and /var/lib
#     taken before the installation is the same afterwards.
# Needs root (dpkg -i): without it the test skips, and fails under
# CI=true.  Refuses to run when either package is already installed, so
# that it never purges an installation it did not make.
set -euo pipefail
cd "$(dirname "$0")/../.."

NAME=check-deb
PKGS=(nbd-serverd nbdc)
step() { printf '[%s] %s\n' "$NAME" "$*"; }
fail()
{
    printf '[%s] FAIL: %s\n' "$NAME" "$*" >&2
    exit 1
}
skip()
{
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: this test must run)"
    fi
    printf '[%s] SKIP: %s\n' "$NAME" "$*"
    exit 77
}

[ "$(id -u)" = 0 ] || skip "not root: dpkg -i needs root"
for cmd in dpkg dpkg-buildpackage dh lintian nbdinfo nbdcopy; do
    command -v "$cmd" >/dev/null 2>&1 || skip "'$cmd' is not installed (make deps)"
done
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q -v 'not-installed'; then
        fail "package $p is already on this machine ($(dpkg-query -W -f='${Status}' "$p")): purge it first"
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/nbdsrv-check-deb.XXXXXX")
installed=0
cleanup()
{
    local rc=$?
    trap - EXIT
    set +e
    if [ "$installed" = 1 ]; then
        echo "[$NAME] purging ${PKGS[*]} after a failure" >&2
        dpkg --purge "${PKGS[@]}" >"$T/purge-on-fail.out" 2>&1 ||
            cat "$T/purge-on-fail.out" >&2
    fi
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "make deb"
make --no-print-directory deb >"$T/deb.out" 2>&1 ||
    fail "make deb failed: $(tail -n 40 "$T/deb.out")"
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
debs=()
for p in "${PKGS[@]}"; do
    f=build/deb/${p}_${version}_${arch}.deb
    [ -f "$f" ] || fail "make deb did not make $f"
    debs+=("$f")
done
changes=build/deb/nbd-serverd_${version}_${arch}.changes
[ -f "$changes" ] || fail "make deb did not make $changes"
# Nothing is written next to the checkout.
for f in ../nbd-serverd_"$version"_* ../nbdc_"$version"_*; do
    [ ! -e "$f" ] || fail "make deb left $f outside the tree"
done

step "the build used dpkg-buildflags and kept the project's warnings"
log=build/deb/build.log
line=$(grep -E -- ' -c -o build/src/server/conn\.o ' "$log" | head -n 1)
[ -n "$line" ] || fail "no compiler line for conn.o in $log"
read -r -a words <<<"$line"
# -ffile-prefix-map names the directory of the build: any value will do.
want_cflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS)
want_cppflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
for w in $want_cppflags $want_cflags -Werror -Wall -Wextra; do
    case $w in -ffile-prefix-map=*) w='-ffile-prefix-map=*' ;; esac
    found=0
    for x in "${words[@]}"; do
        # shellcheck disable=SC2053 # $w may be a pattern
        if [[ $x == $w ]]; then
            found=1
            break
        fi
    done
    [ "$found" = 1 ] || fail "'$w' is not on the compiler line: $line"
done
last_format=
for x in "${words[@]}"; do
    case $x in -Wformat | -Wformat=*) last_format=$x ;; esac
done
[ "$last_format" = -Wformat=2 ] ||
    fail "the last -Wformat option is '$last_format', not -Wformat=2: $line"
link=$(grep -E -- ' -o build/nbd-serverd ' "$log" | head -n 1)
for w in $(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS); do
    grep -q -F -- " $w " <<<"$link " || fail "'$w' is not on the link line: $link"
done

step "lintian"
rc=0
lintian --fail-on error,warning "$changes" >"$T/lintian.out" 2>&1 || rc=$?
sed 's/^/    /' "$T/lintian.out"
if [ "$rc" != 0 ] || grep -q -E '^[EW]: ' "$T/lintian.out"; then
    fail "lintian reports errors or warnings (exit $rc)"
fi

# Everything under these directories, before and after; the installation
# must leave no path behind once purged.  dpkg's own journal and backups
# (/var/lib/dpkg/updates, *-old) come and go with every dpkg run.
snapshot()
{
    find /usr /etc /var/lib -xdev 2>/dev/null |
        grep -v -E '^/var/lib/dpkg/(updates/|[^/]*-old$|lock|triggers/Lock$)' |
        sort
}
snapshot >"$T/before.list"

step "dpkg -i ${debs[*]}"
installed=1
dpkg -i "${debs[@]}" >"$T/install.out" 2>&1 ||
    fail "dpkg -i failed: $(cat "$T/install.out")"
for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p")
    [ "$st" = "install ok installed" ] || fail "$p: status '$st'"
    dpkg -L "$p" >"$T/$p.files"
done
for f in /usr/sbin/nbd-serverd /usr/share/man/man8/nbd-serverd.8.gz \
    /usr/share/man/man5/nbd-serverd.conf.5.gz /etc/nbd-serverd/nbd-serverd.conf; do
    grep -q -x -F "$f" "$T/nbd-serverd.files" || fail "nbd-serverd lacks $f"
done
for f in /usr/bin/nbdc /usr/share/man/man1/nbdc.1.gz; do
    grep -q -x -F "$f" "$T/nbdc.files" || fail "nbdc lacks $f"
done
# The file list sees the installation (so that the comparison after the
# purge can fail): the programs, the conffile, dpkg's own records.
snapshot >"$T/installed.list"
for f in /usr/sbin/nbd-serverd /usr/bin/nbdc /etc/nbd-serverd/nbd-serverd.conf \
    /var/lib/dpkg/info/nbd-serverd.list /var/lib/dpkg/info/nbdc.list; do
    if grep -q -x -F "$f" "$T/before.list" ||
        ! grep -q -x -F "$f" "$T/installed.list"; then
        fail "the file list does not see $f come with the installation"
    fi
done
dpkg-query -W -f='${Conffiles}\n' nbd-serverd |
    grep -q '^ /etc/nbd-serverd/nbd-serverd.conf ' ||
    fail "/etc/nbd-serverd/nbd-serverd.conf is not a conffile"
cmp /etc/nbd-serverd/nbd-serverd.conf conf/nbd-serverd.conf ||
    fail "the conffile is not conf/nbd-serverd.conf"
# One release number: debian/changelog, -V and the manual pages.
upstream=${version%%-*}
[ "$(/usr/sbin/nbd-serverd -V)" = "nbd-serverd $upstream" ] ||
    fail "nbd-serverd -V says '$(/usr/sbin/nbd-serverd -V)', not $upstream"
[ "$(nbdc -V)" = "nbdc $upstream" ] ||
    fail "nbdc -V says '$(nbdc -V)', not $upstream"
for m in man/*.[158]; do
    grep -q -E "^\.TH .* \"nbd-serverd $upstream\" " "$m" ||
        fail "the .TH line of $m does not name nbd-serverd $upstream"
done

step "no unit enabled, no daemon started"
mapfile -t units < <(grep -E '^/(usr/)?lib/systemd/system/[^/]+\.(service|socket)$' \
    "$T/nbd-serverd.files")
[ "${#units[@]}" -ge 2 ] || fail "fewer than two units installed: ${units[*]}"
for u in "${units[@]}"; do
    b=$(basename "$u")
    wants=$(find /etc/systemd/system -name "$b" 2>/dev/null)
    [ -z "$wants" ] || fail "$b is enabled: $wants"
done
for e in /proc/[0-9]*/exe; do
    if [ "$(readlink "$e" 2>/dev/null)" = /usr/sbin/nbd-serverd ]; then
        fail "an installed nbd-serverd runs: ${e%/exe}"
    fi
done

if command -v systemd-analyze >/dev/null 2>&1; then
    # A template is verified as an instance (systemd finds the template
    # beside the name): a socket on port 10809, one of its connections.
    verify=()
    for u in "${units[@]}"; do
        case $u in
        *@.socket) verify+=("${u%@.socket}@10809.socket") ;;
        *@.service) verify+=("${u%@.service}@0-40000.service") ;;
        *) verify+=("$u") ;;
        esac
    done
    step "systemd-analyze verify ${verify[*]}"
    rc=0
    systemd-analyze verify "${verify[@]}" >"$T/verify.out" 2>&1 || rc=$?
    if [ "$rc" != 0 ] || [ -s "$T/verify.out" ]; then
        fail "systemd-analyze verify: exit $rc: $(cat "$T/verify.out")"
    fi
elif [ "${CI:-}" = true ]; then
    fail "systemd-analyze is not installed"
fi

step "debian/tests/serve-image against the installed programs"
mkdir "$T/autopkgtest"
AUTOPKGTEST_TMP=$T/autopkgtest debian/tests/serve-image ||
    fail "debian/tests/serve-image failed"

step "dpkg --purge ${PKGS[*]}"
dpkg --purge "${PKGS[@]}" >"$T/purge.out" 2>&1 ||
    fail "dpkg --purge failed: $(cat "$T/purge.out")"
installed=0
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q -v 'not-installed'; then
        fail "$p is still known to dpkg: $(dpkg-query -W -f='${Status}' "$p")"
    fi
    # A directory may stay if it was there before (by its real path:
    # /lib is /usr/lib on a merged-/usr system).
    while read -r f; do
        [ "$f" != /. ] || continue
        if [ -e "$f" ] || [ -L "$f" ]; then
            grep -q -x -F "$(readlink -f "$f")" "$T/before.list" ||
                fail "$f of $p is still there"
        fi
    done <"$T/$p.files"
done
snapshot >"$T/after.list"
if ! diff "$T/before.list" "$T/after.list" >"$T/diff.out"; then
    cat "$T/diff.out" >&2
    fail "the purge left the file list changed (< before, > after)"
fi
step "pass ($(wc -l <"$T/before.list") paths compared)"
