#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A client that queues large READs and never reads the replies.

    stalled_reader.py ADDR PID --bound-mib N --slack-mib N [options]

The server cannot send the replies, so unless it bounds what it keeps
for them, every READ's data waits in its memory.  The script measures
the server's resident set (VmRSS of PID) before, while the hostile
client waits, and after it has gone, and fails when

  - the growth while it waits exceeds --bound-mib (the per-connection
    cap on reply bytes) plus --slack-mib, or
  - the RSS does not come back to within --slack-mib of the start within
    --settle seconds after the client hangs up, or
  - a well-behaved client on another connection is not served correctly
    (verified writes and reads) while the hostile one waits.

Both reply shapes are tried in turn: simple replies (after
NBD_OPT_EXPORT_NAME) and structured replies (NBD_OPT_GO).  The export
must hold data (not holes) so that every READ needs a buffer.
"""

import argparse
import os
import random
import socket
import sys
import time

import nbdwire as w
from nbdwire import log

MiB = 1 << 20


def rss_mib(pid):
    return w.proc_status_kib(pid, "VmRSS") / 1024.0


def settle(pid, seconds=0.5):
    time.sleep(seconds)
    return rss_mib(pid)


def good_client_round(addr, rng, size, rounds):
    """Verified writes and reads on a connection of its own; returns the
    number of round trips done.  Any wrong answer fails the test."""
    c = w.Client(addr, structured=True, timeout=30)
    done = 0
    region = size // 2  # the upper half is the good client's
    for _ in range(rounds):
        off = region + rng.randrange(0, (size - region) // 4096 - 16) * 4096
        data = os.urandom(rng.choice((4096, 16384, 65536)))
        r = c.write(off, data, fua=rng.random() < 0.2)
        if r.error:
            sys.exit("  FAIL: the good client's write: %s"
                     % w.error_name(r.error))
        r = c.read(off, len(data))
        if r.error or r.data != data:
            sys.exit("  FAIL: the good client read back wrong data (%s)"
                     % w.error_name(r.error))
        done += 2
    c.disconnect()
    return done


def hostile(args, structured):
    pid = args.pid
    rng = random.Random()
    shape = "structured" if structured else "simple"
    fds0 = w.proc_fd_count(pid)
    before = settle(pid)
    s_opts = dict(structured=structured, go=structured, timeout=30)
    c = w.Client(args.addr, **s_opts)
    # A small receive buffer: the kernel takes little of the replies.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    size = c.size
    span = size // 2 - args.read_mib * MiB  # reads stay in the lower half
    # A server that stops reading requests at its cap may leave the rest
    # in our socket buffer, or refuse them once that is full: queue what
    # the socket takes within a few seconds.
    c.sock.settimeout(3)
    queued = 0
    try:
        for _ in range(args.count):
            off = rng.randrange(0, span // 4096) * 4096
            c.send(w.CMD_READ, off, args.read_mib * MiB)
            queued += 1
    except socket.timeout:
        pass
    asked = queued * args.read_mib
    log("%s replies: %d READs of %d MiB (%d MiB) sent, none read"
        % (shape, queued, args.read_mib, asked))

    # Watch the RSS while a good client works; stop early once it is flat.
    peak = before
    t0 = time.monotonic()
    last_change = t0
    served = 0
    while time.monotonic() - t0 < args.watch:
        served += good_client_round(args.addr, rng, size, 10)
        now = rss_mib(pid)
        if now > peak + 1:
            last_change = time.monotonic()
        peak = max(peak, now)
        if time.monotonic() - last_change > 1.5 and \
                time.monotonic() - t0 > 2:
            break
        time.sleep(0.1)
    if not w.proc_alive(pid):
        sys.exit("  FAIL: the server died")
    w.set_abortive_close(c.sock)
    c.close()

    deadline = time.monotonic() + args.settle
    after = rss_mib(pid)
    while time.monotonic() < deadline:
        after = rss_mib(pid)
        if after <= before + args.slack_mib:
            break
        time.sleep(0.2)
    time.sleep(0.3)
    fds1 = w.proc_fd_count(pid)
    growth = peak - before
    bound = args.bound_mib + args.slack_mib
    log("%s replies: RSS %.1f MiB before, %.1f MiB peak while stalled "
        "(+%.1f MiB; bound %d + %d slack), %.1f MiB %d s after; "
        "%d good requests served meanwhile; fds %d -> %d"
        % (shape, before, peak, growth, args.bound_mib, args.slack_mib,
           after, args.settle, served, fds0, fds1))
    problems = []
    if growth > bound:
        problems.append(
            "%s replies: the server grew by %.1f MiB for a client that "
            "reads nothing (%d MiB asked), more than the %d MiB "
            "per-connection cap plus %d MiB slack"
            % (shape, growth, asked, args.bound_mib, args.slack_mib))
    if after > before + args.slack_mib:
        problems.append(
            "%s replies: %d s after the client left, RSS is %.1f MiB, "
            "%.1f MiB above the start (slack %d MiB)"
            % (shape, args.settle, after, after - before, args.slack_mib))
    if fds1 > fds0:
        problems.append("%s replies: fds %d -> %d after the client left"
                        % (shape, fds0, fds1))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--bound-mib", type=int, required=True)
    ap.add_argument("--slack-mib", type=int, required=True)
    ap.add_argument("--read-mib", type=int, default=8)
    ap.add_argument("--count", type=int, default=128)
    ap.add_argument("--watch", type=float, default=8.0)
    ap.add_argument("--settle", type=int, default=10)
    args = ap.parse_args()
    problems = []
    for structured in (False, True):
        problems += hostile(args, structured)
    if problems:
        for p in problems:
            print("  FAIL: " + p, file=sys.stderr)
        sys.exit(1)
    log("memory stayed bounded and came back; the good client was served")


if __name__ == "__main__":
    main()
