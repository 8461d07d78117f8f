#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Packaging: `make install DESTDIR=... PREFIX=/usr` lays out the programs,
# the manual pages, the configuration example and the systemd units (with
# the installed paths); `systemd-analyze verify` reports nothing on both
# units (a negative control proves it would); the manual pages render
# without a groff warning; --help and nbd-serverd(8) list the same
# options; the example configuration passes --check-config once given an
# export.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires make systemd-analyze groff man truncate

# The build directory the runner tests, and its sanitizer flavour, so
# that make finds everything up to date and builds nothing.
case $BUILD in
*asan*) san=address,undefined ;;
*tsan*) san=thread ;;
*) san= ;;
esac
root=$T/root
step "make install DESTDIR=$root PREFIX=/usr"
make --no-print-directory -s install DESTDIR="$root" PREFIX=/usr \
    SANITIZE="$san" BUILD="$BUILD" >"$T/install.out" 2>&1 ||
    fail "make install failed: $(cat "$T/install.out")"
for f in usr/sbin/nbd-serverd \
    usr/share/man/man8/nbd-serverd.8 \
    usr/share/man/man5/nbd-serverd.conf.5 \
    etc/nbd-serverd/nbd-serverd.conf \
    etc/nbd-serverd/nbd-serverd.conf.example \
    usr/lib/systemd/system/nbd-serverd.service \
    usr/lib/systemd/system/nbd-serverd.socket \
    usr/lib/systemd/system/nbd-serverd@.service \
    usr/lib/systemd/system/nbd-serverd@.socket; do
    [ -f "$root/$f" ] || fail "make install did not create /$f"
done
[ -x "$root/usr/sbin/nbd-serverd" ] || fail "the daemon is not executable"
for p in "$BUILD"/*; do
    case $(basename "$p") in
    nbd-serverd | nbd-serverd-ctl)
        [ -x "$root/usr/sbin/$(basename "$p")" ] ||
            fail "program $(basename "$p") not installed in /usr/sbin"
        continue
        ;;
    esac
    if [ -f "$p" ] && [ -x "$p" ]; then
        [ -x "$root/usr/bin/$(basename "$p")" ] ||
            fail "program $(basename "$p") not installed in /usr/bin"
    fi
done
for u in nbd-serverd.service nbd-serverd@.service; do
    grep -q '^ExecStart=/usr/sbin/nbd-serverd -f -c /etc/nbd-serverd/nbd-serverd.conf\( --control /run/nbd-serverd/control\)\?$' \
        "$root/usr/lib/systemd/system/$u" ||
        fail "ExecStart of $u does not name the installed paths"
done
grep -q '^ExecStart=.* --control /run/nbd-serverd/control$' \
    "$root/usr/lib/systemd/system/nbd-serverd.service" ||
    fail "nbd-serverd.service does not put the control socket in its RuntimeDirectory"
for f in nbd-serverd nbd-serverd-ctl nbdc; do
    [ -f "$root/usr/share/bash-completion/completions/$f" ] ||
        fail "no bash completion for $f"
done
unexpected=$(cd "$root" && find . -type f | sort | grep -v -E \
    '^\./(usr/sbin/nbd-serverd(-ctl)?|usr/bin/[^/]+|usr/share/bash-completion/completions/(nbd-serverd(-ctl)?|nbdc)|usr/share/man/man[158]/[^/]+|etc/nbd-serverd/nbd-serverd\.conf(\.example)?|usr/lib/systemd/system/nbd-serverd@?\.(service|socket))$' ||
    true)
[ -z "$unexpected" ] || fail "unexpected files installed: $unexpected"
step "PREFIX=/usr/local by default"
make --no-print-directory -s install DESTDIR="$T/root2" SANITIZE="$san" \
    BUILD="$BUILD" >"$T/install.out" 2>&1 || fail "make install (default)"
[ -x "$T/root2/usr/local/sbin/nbd-serverd" ] || fail "no /usr/local/sbin/nbd-serverd"
[ -f "$T/root2/etc/nbd-serverd/nbd-serverd.conf.example" ] ||
    fail "no /etc/nbd-serverd/nbd-serverd.conf.example"
grep -q '^ExecStart=/usr/local/sbin/nbd-serverd ' \
    "$T/root2/usr/local/lib/systemd/system/nbd-serverd.service" ||
    fail "ExecStart does not name /usr/local/sbin"

step "systemd-analyze verify"
units=$T/units
mkdir -p "$units"
# The templates are verified as the instances a socket and one of its
# connections would be (systemd finds the template beside them).
cp "$root"/usr/lib/systemd/system/nbd-serverd* "$units/"
# verify wants the ExecStart binary to exist: point it at the installed one.
sed -i "s|/usr/sbin/nbd-serverd|$root/usr/sbin/nbd-serverd|" \
    "$units/"nbd-serverd*.service
export MANPATH=$root/usr/share/man
rc=0
systemd-analyze verify "$units/nbd-serverd.socket" \
    "$units/nbd-serverd.service" "$units/nbd-serverd@10809.socket" \
    "$units/nbd-serverd@0-40000.service" \
    >"$T/verify.out" 2>&1 || rc=$?
if [ "$rc" != 0 ] || [ -s "$T/verify.out" ]; then
    cat "$T/verify.out" >&2
    fail "systemd-analyze verify: exit $rc"
fi
step "negative control: a misspelt directive is reported"
sed 's/^NoNewPrivileges=yes/NoNewPrivilegez=yes/' "$units/nbd-serverd.service" \
    >"$units/broken.service"
systemd-analyze verify "$units/broken.service" >"$T/verify.out" 2>&1 || true
grep -q "NoNewPrivilegez" "$T/verify.out" ||
    fail "systemd-analyze did not report a bad directive: $(cat "$T/verify.out")"

step "manual pages render without warnings"
for m in man/nbd-serverd.8 man/nbd-serverd.conf.5; do
    out=$(groff -ww -z -man "$m" 2>&1) || fail "groff failed on $m"
    [ -z "$out" ] || fail "groff warns on $m: $out"
done
out=$(printf '.TH X 1\n.BOGUS\n' | groff -ww -z -man 2>&1 || true)
[ -n "$out" ] || fail "negative control: groff did not warn on a bad macro"

step "--help and nbd-serverd(8) list the same options"
"$BUILD/nbd-serverd" --help | grep -o -E -- '--[a-z][a-z-]*' | sort -u \
    >"$T/help.opts"
sed 's/\\-/-/g; s/\\f[BIRP]//g' man/nbd-serverd.8 |
    grep -o -E -- '--[a-z][a-z-]*' | sort -u >"$T/man.opts"
diff "$T/help.opts" "$T/man.opts" >&2 ||
    fail "--help and the manual page differ (< help, > man)"
[ "$(wc -l <"$T/help.opts")" -ge 15 ] || fail "too few options found"

step "the example configuration is valid once it has an export"
truncate -s 1M "$T/disk.img"
cp conf/nbd-serverd.conf "$T/example.conf"
printf '[export disk]\npath = disk.img\n[export mem]\nmemory = 1M\n' \
    >>"$T/example.conf"
printf '[export cow]\npath = disk.img\noverlay = cow.ovl\n' >>"$T/example.conf"
printf '[export bm]\npath = disk.img\ndirty-bitmap = nightly\n' \
    >>"$T/example.conf"
printf 'dirty-bitmap-file = bm.bitmaps\n' >>"$T/example.conf"
# --check-config does not connect to a cluster: an rbd export's keys
# are checked and printed without one.
printf '[export vm]\nrbd = rbd/vm1\nceph-conf = ceph.conf\nceph-id = nbd\n' \
    >>"$T/example.conf"
printf 'ceph-keyring = nbd.keyring\n' >>"$T/example.conf"
"$BUILD/nbd-serverd" -c "$T/example.conf" --check-config >"$T/example.out" ||
    fail "the example configuration is rejected"
# Every key of the example (commented out) is documented in the
# manual page, and --check-config prints it.
sed -n 's/^#\([a-z-]*\) = .*/\1/p' conf/nbd-serverd.conf | sort -u \
    >"$T/example.keys"
[ "$(wc -l <"$T/example.keys")" -ge 19 ] || fail "the example lacks keys"
sed 's/\\-/-/g' man/nbd-serverd.conf.5 >"$T/conf5.txt"
while read -r key; do
    grep -q -E "^\.B[IR]? $key( |$)" "$T/conf5.txt" ||
        fail "example key '$key' is not in nbd-serverd.conf(5)"
    case $key in listen | threads | tls* | pidfile | metrics-listen | control* | allow | description) continue ;; esac
    grep -q "^$key = " "$T/example.out" ||
        fail "--check-config does not print '$key'"
done <"$T/example.keys"
step pass
