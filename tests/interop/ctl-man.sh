#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# man/nbd-serverd-ctl.8 renders without warnings, and nbd-serverd-ctl
# --help and the manual name the same options, commands and exit codes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires groff
man=man/nbd-serverd-ctl.8
groff -ww -z -man "$man" 2>"$T/groff.err" || fail "groff failed on $man"
[ ! -s "$T/groff.err" ] || fail "groff warns about $man: $(cat "$T/groff.err")"
"$BUILD/nbd-serverd-ctl" --help >"$T/help.txt"
groff -man -Tutf8 -P-c -P-b -P-u "$man" 2>/dev/null | sed 's/‐/-/g' >"$T/man.txt"
for opt in $(grep -o -- '--[a-z][a-z-]*' "$T/help.txt" | sort -u); do
    grep -q -- "$opt" "$T/man.txt" || fail "--help names $opt, the manual does not"
done
for opt in $(grep -o -- '--[a-z][a-z-]*' "$T/man.txt" | sort -u); do
    # The daemon's option, named where the manual says where PATH is.
    [ "$opt" != --control ] || continue
    grep -q -- "$opt" "$T/help.txt" || fail "the manual names $opt, --help does not"
done
for cmd in exports connections status add change remove disconnect reload \
    bitmaps bitmap-add checkpoint bitmap-clear bitmap-remove bitmap-merge; do
    grep -q "^  $cmd" "$T/help.txt" || fail "--help lacks $cmd"
    grep -E -q "^ +$cmd( |$)" "$T/man.txt" || fail "the manual lacks $cmd"
done
for code in "0 success" "1 the server reported an error" "2 bad usage"; do
    grep -q "$code" "$T/help.txt" || fail "--help lacks exit status '$code'"
    grep -E -q "^ +${code%% *} +${code#* }" "$T/man.txt" ||
        fail "the manual lacks exit status '$code'"
done
rc=0
"$BUILD/nbd-serverd-ctl" frobnicate >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "an unknown command: exit $rc, want 2"
step "pass"
