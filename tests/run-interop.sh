#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every tests/interop/*.sh (or every *.sh in directory $2 but
# lib*.sh: tests/faults, tests/load) against the programs in build
# directory $1.
# Exit 77 from a script means a tool is missing: a skip on a developer
# machine, a failure when CI=true (.ci/run installs every tool).  A script
# that runs longer than NBDSRV_TEST_SCRIPT_TIMEOUT seconds (default 600)
# is killed and fails, so that a hang cannot stall the suite.
set -u
build=${1:-build}
dir=${2:-tests/interop}
passed=0
failed=0
skipped=0
shopt -s nullglob
for t in "$dir"/*.sh; do
    case $(basename "$t") in lib*.sh) continue ;; esac
    BUILD=$build timeout -k 10 "${NBDSRV_TEST_SCRIPT_TIMEOUT:-600}" bash "$t"
    rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        echo "$t: killed after ${NBDSRV_TEST_SCRIPT_TIMEOUT:-600} s" >&2
    fi
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
echo "$(basename "$dir"): $passed passed, $failed failed, $skipped skipped"
[ $failed = 0 ]
