#!/usr/bin/env python3
"""Sort the samples of `perf script -F comm,tid,ip,sym` (recorded with -g)
by where the server was: the system call a sample's kernel frames are in,
or user space, or kernel work outside any system call.  Prints one
Markdown row for bench-profile.sh: each share as µs per request.

Usage: profile-split.py PERF_SCRIPT_TXT CPU_SECONDS REQUESTS WORKLOAD TRANSPORT RATE
"""

import sys

# Kernel symbols that name what a sample was doing, looked for from the
# leaf up; the first one found decides.  io_uring runs file reads and
# writes inline when it can (io_read, io_write), also in its io-wq
# workers: those are the backend's, whatever called them.
MARKERS = [
    ("backend", ("io_read", "io_write", "io_fsync", "io_fallocate", "io_splice",
                 "ksys_pread64", "ksys_pwrite64", "__x64_sys_pread64", "__x64_sys_pwrite64",
                 "do_preadv", "do_pwritev",
                 "ksys_fallocate", "do_fsync", "vfs_fallocate")),
    ("loop", ("eventfd_write", "eventfd_read", "io_wq_worker",
              "__do_sys_io_uring_enter")),
    ("receive", ("io_recv", "io_recvmsg", "__sys_recvmsg", "__sys_recvfrom")),
    ("reply", ("io_send", "io_sendmsg", "io_send_zc", "__sys_sendmsg", "__sys_sendto",
               "do_splice")),
]
COLUMNS = ["receive", "backend", "reply", "loop", "other syscalls",
           "kernel, no syscall", "user space"]
KERNEL_MIN = 0xffff800000000000


def classify(frames):
    """frames: [(ip, sym)] leaf first."""
    syms = [s for ip, s in frames if ip >= KERNEL_MIN]
    for name, marks in MARKERS:
        for s in syms:
            if s in marks:
                return name
    if not frames or frames[0][0] < KERNEL_MIN:
        return "user space"
    if "do_syscall_64" in syms:
        return "other syscalls"
    return "kernel, no syscall"


def samples(path):
    frames = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if frames is not None:
                    yield frames
                frames = None
                continue
            if not line[0].isspace():
                if frames is not None:
                    yield frames
                frames = []
                continue
            parts = line.split(None, 1)
            try:
                ip = int(parts[0], 16)
            except ValueError:
                continue
            sym = parts[1].strip() if len(parts) > 1 else "[unknown]"
            sym = sym.split("+0x", 1)[0]
            if frames is not None:
                frames.append((ip, sym))
    if frames is not None:
        yield frames


def main(argv):
    if len(argv) != 7:
        sys.stderr.write(__doc__)
        return 2
    path, cpu_s, reqs, workload, transport, rate = argv[1:]
    cpu_s, reqs = float(cpu_s), int(reqs)
    counts = {c: 0 for c in COLUMNS}
    total = 0
    for frames in samples(path):
        counts[classify(frames)] += 1
        total += 1
    if total == 0 or reqs == 0:
        print(f"profile-split: no samples ({total}) or no requests ({reqs}) in {path}",
              file=sys.stderr)
        return 1
    us_req = 1e6 * cpu_s / reqs
    cells = [workload, transport, rate, f"{us_req:.2f}"]
    cells += [f"{us_req * counts[c] / total:.2f} ({100 * counts[c] / total:.0f}%)"
              for c in COLUMNS]
    print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
