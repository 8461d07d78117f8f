#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# man/nbdc.1 renders without warnings, and nbdc --help and the manual
# name the same options and exit codes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires groff

man=man/nbdc.1
groff -ww -z -man "$man" 2>"$T/groff.err" || fail "groff failed on $man"
[ ! -s "$T/groff.err" ] || fail "groff warns about $man: $(cat "$T/groff.err")"
step "$man renders without warnings"

nbdc "$T/help.txt" --help
groff -man -Tutf8 -P-c -P-b -P-u "$man" 2>/dev/null | sed 's/‐/-/g' >"$T/man.txt"
for opt in $(grep -o -- '--[a-z][a-z-]*' "$T/help.txt" | sort -u); do
    grep -q -- "$opt" "$T/man.txt" || fail "--help names $opt, the manual does not"
done
for opt in $(grep -o -- '--[a-z][a-z-]*' "$T/man.txt" | sort -u); do
    grep -q -- "$opt" "$T/help.txt" || fail "the manual names $opt, --help does not"
done
for code in "0 success" "1 the operation failed" "2 bad usage"; do
    grep -q "$code" "$T/help.txt" || fail "--help lacks exit status '$code'"
    grep -E -q "^ +${code%% *} +${code#* }" "$T/man.txt" ||
        fail "the manual lacks exit status '$code'"
done
step "--help and the manual agree on the options"
nbdc_fails 2 "unknown command 'frobnicate'" frobnicate
step "pass"
