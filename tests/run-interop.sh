#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every tests/interop/*.sh against the programs in build directory $1.
# Exit 77 from a script means a tool is missing: a skip on a developer
# machine, a failure when CI=true (.ci/run installs every tool).
set -u
build=${1:-build}
passed=0
failed=0
skipped=0
shopt -s nullglob
for t in tests/interop/*.sh; do
    case $(basename "$t") in lib.sh) continue ;; esac
    BUILD=$build bash "$t"
    rc=$?
    if [ $rc = 0 ]; then
        echo "PASS: $t"
        passed=$((passed + 1))
    elif [ $rc = 77 ] && [ "${CI:-}" != true ]; then
        echo "SKIP: $t"
        skipped=$((skipped + 1))
    else
        echo "FAIL: $t (exit $rc)"
        failed=$((failed + 1))
    fi
done
echo "interop: $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
