#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Clients that vanish in the middle of a write payload or of a reply.

    vanishing_clients.py ADDR PID [--rounds N] [--slack-mib N]

Each round opens connections that
  - send a WRITE header for 4 MiB and part of its payload (with and
    without FUA), then hang up;
  - send half a request header, then hang up;
  - ask for READs of 8 MiB, read part of the first reply, then hang up;
  - pipeline several READs and a FLUSH, read nothing, then hang up;
half of them with a FIN, half with a TCP RST (SO_LINGER 0), over simple
and structured replies.  A WRITE cut short must change nothing: the
region it aimed at keeps the data written (and acknowledged) before.
Afterwards the server must still be running, answer a well-behaved
client, hold no more file descriptors than before, and (unless
--slack-mib is 0) its RSS must not grow by more than --slack-mib from
the first half of the rounds to the end of the second.
"""

import argparse
import os
import random
import time

import nbdwire as w
from nbdwire import fail, log

MiB = 1 << 20
KiB = 1 << 10


def vanish(c, rng):
    """Hangs up, abruptly half of the time."""
    if rng.random() < 0.5:
        w.set_abortive_close(c.sock)
    c.close()


def cut_write(addr, rng, structured, off):
    c = w.Client(addr, structured=structured, go=structured)
    length = 4 * MiB
    flags = w.CMD_FLAG_FUA if rng.random() < 0.5 else 0
    part = rng.choice((0, 1, 4 * KiB, 1 * MiB, length - 1))
    hdr = w.pack_request(w.CMD_WRITE, 1, off, length, flags)
    try:
        c.sock.sendall(hdr + b"\xee" * part)
    except OSError:
        pass
    vanish(c, rng)


def cut_header(addr, rng, structured):
    c = w.Client(addr, structured=structured, go=structured)
    hdr = w.pack_request(w.CMD_READ, 2, 0, 4096)
    c.sock.sendall(hdr[:rng.randrange(1, len(hdr))])
    vanish(c, rng)


def cut_reply(addr, rng, structured, size):
    c = w.Client(addr, structured=structured, go=structured)
    for i in range(rng.randint(1, 4)):
        c.send(w.CMD_READ, rng.randrange(0, (size - 8 * MiB) // 4096) * 4096,
               8 * MiB)
    want = rng.choice((1, 20, 64 * KiB, 3 * MiB))
    try:
        w.recv_exact(c.sock, want)
    except (EOFError, OSError) as e:
        fail("reading the start of a reply: %s" % e)
    vanish(c, rng)


def unread_pipeline(addr, rng, structured, size):
    c = w.Client(addr, structured=structured, go=structured)
    for i in range(16):
        c.send(w.CMD_READ, rng.randrange(0, (size - MiB) // 4096) * 4096, MiB)
    c.send(w.CMD_FLUSH)
    vanish(c, rng)


def check_good(addr, guard_off, guard):
    """A well-behaved client: the guard region is intact, and a fresh
    write reads back."""
    c = w.Client(addr, structured=True, timeout=30)
    r = c.read(guard_off, len(guard))
    if r.error or r.data != guard:
        fail("a WRITE cut short changed the region it aimed at (%s)"
             % w.error_name(r.error))
    data = os.urandom(64 * KiB)
    off = c.size - len(data)
    if c.write(off, data, fua=True).error:
        fail("a write after the vanishing clients failed")
    r = c.read(off, len(data))
    if r.error or r.data != data:
        fail("a read after the vanishing clients returned wrong data")
    c.disconnect()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--slack-mib", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random()
    pid = args.pid

    # The guard: 4 MiB that every cut-short WRITE aims at.
    c = w.Client(args.addr, structured=True, timeout=30)
    size = c.size
    guard_off = 8 * MiB
    guard = os.urandom(4 * MiB)
    if c.write(guard_off, guard, fua=True).error:
        fail("writing the guard region")
    c.disconnect()
    check_good(args.addr, guard_off, guard)
    time.sleep(0.5)
    fds0 = w.proc_fd_count(pid)

    def rounds(n, first):
        for i in range(first, first + n):
            structured = i % 2 == 1
            cut_write(args.addr, rng, structured, guard_off)
            cut_header(args.addr, rng, structured)
            cut_reply(args.addr, rng, structured, size)
            unread_pipeline(args.addr, rng, structured, size)
            if not w.proc_alive(pid):
                fail("the server died in round %d" % i)
            if i % 10 == 9:
                check_good(args.addr, guard_off, guard)

    def quiet_rss(limit_mib):
        """RSS once the server has noticed the last hang-ups (fds back)
        and, if it can, freed what they held (at most 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            fds = w.proc_fd_count(pid)
            rss = w.proc_status_kib(pid, "VmRSS") / 1024.0
            if fds <= fds0 and (limit_mib is None or rss <= limit_mib) or \
                    time.monotonic() > deadline:
                return fds, rss
            time.sleep(0.2)

    # The first half fills the buffer pools (the server may keep freed
    # buffers for reuse); the second half must not add to that.  A
    # buffer kept per vanished client would grow the RSS by megabytes a
    # round.
    half = args.rounds // 2
    rounds(half, 0)
    fds_mid, rss_mid = quiet_rss(None)
    rounds(args.rounds - half, half)
    fds1, rss1 = quiet_rss(rss_mid + args.slack_mib if args.slack_mib
                           else None)
    check_good(args.addr, guard_off, guard)
    log("%d rounds of 4 vanishing clients each; fds %d before, %d, %d "
        "after each half; RSS %.1f MiB after the first half, %.1f MiB "
        "after the second" % (args.rounds, fds0, fds_mid, fds1, rss_mid,
                              rss1))
    if max(fds_mid, fds1) > fds0:
        fail("the server holds %d fds, %d before: a connection leaked"
             % (max(fds_mid, fds1), fds0))
    if args.slack_mib and rss1 > rss_mid + args.slack_mib:
        fail("RSS grew by %.1f MiB over the second half of the rounds "
             "(slack %d MiB): memory of vanished clients is kept"
             % (rss1 - rss_mid, args.slack_mib))
    log("the server survived, freed what the clients held, and serves")


if __name__ == "__main__":
    main()
