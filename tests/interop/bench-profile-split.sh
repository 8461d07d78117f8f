#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/profile-split.py files each perf sample under the system call
# its kernel frames are in (io_uring's inline file I/O counting as the
# backend's), user space or kernel work outside a system call, and turns
# the shares into µs per request.  Made-up samples, so the split is known.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

sample()
{
    printf 'loop0 100 \n'
    local f
    for f in "$@"; do
        case $f in
        u:*) printf '\t            %x %s\n' 4096 "${f#u:}" ;;
        *) printf '\tffffffff81%06x %s+0x10\n' $RANDOM "$f" ;;
        esac
    done
    printf '\n'
}
{
    # 4 backend: pread, and an io_uring read run inline under io_uring_enter.
    for _ in 1 2 3; do
        sample filemap_get_entry __x64_sys_pread64 do_syscall_64 u:__libc_pread
    done
    sample io_read io_issue_sqe __do_sys_io_uring_enter do_syscall_64
    # 2 reply, 1 receive, 1 loop (a wait), 1 other system call.
    sample _copy_from_iter tcp_sendmsg __sys_sendmsg do_syscall_64 u:__libc_sendmsg
    sample _copy_from_iter tcp_sendmsg __sys_sendmsg do_syscall_64 u:__libc_sendmsg
    sample _copy_to_iter tcp_recvmsg __sys_recvmsg do_syscall_64 u:__libc_recvmsg
    sample schedule io_cqring_wait __do_sys_io_uring_enter do_syscall_64
    sample do_tcp_setsockopt __sys_setsockopt do_syscall_64 u:setsockopt
    # 2 user space, 1 kernel outside any system call (an interrupt).
    sample u:transmit_request u:request_entry
    sample u:bufpool_get
    sample net_rx_action handle_softirqs irq_exit_rcu
} >"$T/perf.txt"
# 12 samples, 0.012 s of CPU, 1000 requests: 12 µs per request, 1 µs a sample.
out=$(python3 bench/profile-split.py "$T/perf.txt" 0.012 1000 "randread 4k" tcp "1 IOPS")
want="| randread 4k | tcp | 1 IOPS | 12.00 | 1.00 (8%) | 4.00 (33%) | 2.00 (17%) | 1.00 (8%) | 1.00 (8%) | 1.00 (8%) | 2.00 (17%) |"
[ "$out" = "$want" ] || fail "split: got '$out', want '$want'"
: >"$T/empty.txt"
if python3 bench/profile-split.py "$T/empty.txt" 1 1 x tcp y 2>"$T/err"; then
    fail "no samples gave a row"
fi
grep -q "no samples" "$T/err" || fail "no clear error: $(cat "$T/err")"
