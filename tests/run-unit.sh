#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs each Check binary given as an argument and sums up their results.
# Check prints "NN%: Checks: N, Failures: F, Errors: E" per binary; this
# script adds a closing "unit: N passed, N failed" line and fails if any
# binary failed or did not report.
set -u
# A UBSan report fails the test that caused it (sanitizer builds), as a
# sanitizer report in the interop scripts does.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# UNIT_WRAPPER, if set, is a command line each binary runs under (make
# check-valgrind sets it to valgrind and its options).
read -r -a wrapper <<<"${UNIT_WRAPPER:-}"
passed=0
failed=0
status=0
for bin in "$@"; do
    name=$(basename "$bin")
    out=$("${wrapper[@]}" "$bin" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed "s|^|$name: |"
    summary=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n 1)
    if [ -z "$summary" ]; then
        echo "$name: no Check summary (exit $rc)"
        failed=$((failed + 1))
        status=1
        continue
    fi
    checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$summary")
    fails=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$summary")
    errs=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<<"$summary")
    bad=$((fails + errs))
    passed=$((passed + checks - bad))
    failed=$((failed + bad))
    if [ "$rc" != 0 ] || [ "$bad" != 0 ]; then
        status=1
    fi
done
echo "unit: $passed passed, $failed failed"
exit $status
