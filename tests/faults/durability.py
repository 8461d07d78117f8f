#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Durability verifier: writes from several connections, a SIGKILL in
the middle, then a check of what the image holds after a restart.

    durability.py write URI JOURNAL --kill PID[,PID...] [options]
    durability.py check URI JOURNAL [--base FILE]

"write" opens --conns libnbd connections and keeps --depth writes in
flight on each: 1 to 4 pages (4 KiB) at random page offsets, a fraction
with NBD_CMD_FLAG_FUA, and now and then an NBD_CMD_FLUSH.  Every page of
every write has its own content: a header naming the write and the page,
then bytes drawn from a generator seeded by both, so that any page of
the image tells which write put it there, or that it is garbage.  Once
--ops writes have been sent it SIGKILLs the listed processes in order
(the server, or the storage under it first and then the server), with
writes still in flight, collects what the dying connections still
deliver, and saves a journal: for every write and flush when it was
sent and when (and how) it was answered, on one logical clock.

What "acknowledged" buys (doc/proto.md, "Ordering of messages and
writes"): a write answered with success while it carried FUA is
persistent; a write answered before a FLUSH was *sent*, when that FLUSH
is then answered with success, is persistent too (on any connection,
since the server advertises NBD_FLAG_CAN_MULTI_CONN; on the same
connection otherwise).  A write answered after the FLUSH was sent may
or may not be covered by it, so it is not counted.

"check" reads the whole image back and, for every page, finds the
writes that covered it in the order they were sent (two writes to one
page are never in flight at once, so that order is well defined).  If
any of them is persistent by the rules above, the page must hold the
last persistent one or a write sent after it (later writes may or may
not have reached the disk); if none is, it may also still hold zeroes,
its state before the run.  Anything else, an older write, another
page's write, a torn or unknown pattern, fails.

With --base FILE (a copy-on-write overlay over FILE), a page's state
before the run is FILE's bytes at that page instead of zeroes: a page
never written must read exactly them, and a page whose writes were
never persistent may read them or one of its writes.

Exit status: 0 the image is consistent, 3 a persistent write was lost
or a page holds garbage (the output says which), 1 any other failure
(the run itself went wrong: an error reply before the kill, a dead
server before it, a bad journal).
"""

import argparse
import json
import os
import random
import select
import signal
import struct
import sys
import time

import nbd

PAGE = 4096
MAGIC = 0x6E62647372764450  # "nbdsrvDP"
HEADER = struct.Struct(">QQQ")  # magic, write id, page number


# --mix: (fraction of writes with FUA, FLUSH requests per write issued).
# In a power cut every sync reaches the whole disk, so a later FLUSH
# makes an earlier FUA write persistent even if its FUA was ignored, and
# the other way round: "fua" and "flush" runs test each promise alone.
MIXES = {
    "mixed": (0.25, 0.02),
    "fua": (0.3, 0.0),
    "flush": (0.0, 0.03),
}


def log(msg):
    print("  " + msg, flush=True)


def die(msg, status=1):
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(status)


def page_content(wid, page):
    """The 4096 bytes write `wid` puts at page `page`."""
    gen = random.Random((wid << 32) | page)
    return HEADER.pack(MAGIC, wid, page) + gen.randbytes(PAGE - HEADER.size)


class Clock:
    """A logical clock: one tick per event, in the order we saw them."""

    def __init__(self):
        self.now = 0

    def tick(self):
        self.now += 1
        return self.now


# ---------------------------------------------------------------------
# write


class Conn:
    def __init__(self, index, uri):
        self.index = index
        self.h = nbd.NBD()
        self.h.set_handle_name("conn%d" % index)
        self.h.connect_uri(uri)
        self.inflight = 0
        self.dead = False


def run_writes(args):
    rng = random.Random(args.seed)
    clock = Clock()
    conns = [Conn(i, args.uri) for i in range(args.conns)]
    h0 = conns[0].h
    if not (h0.can_fua() and h0.can_flush()):
        die("the export must offer FUA and FLUSH (can_fua %s, can_flush %s)"
            % (h0.can_fua(), h0.can_flush()))
    multi_conn = all(c.h.can_multi_conn() for c in conns)
    pages = min(h0.get_size() // PAGE, args.pages)
    if pages < 64:
        die("export too small: %d pages" % pages)
    kill_pids = [int(p) for p in args.kill.split(",") if p]

    writes = []   # [wid, conn, first page, pages, fua, sent, ack, error]
    flushes = []  # [conn, sent, ack, error]
    busy = set()
    state = {"killed_at": None, "errors_before_kill": []}

    def write_done(rec, conn):
        def cb(err):
            rec[6] = clock.tick()
            rec[7] = err.value if err.value != 0 else None
            conn.inflight -= 1
            for p in range(rec[2], rec[2] + rec[3]):
                busy.discard(p)
            if rec[7] is not None and state["killed_at"] is None:
                state["errors_before_kill"].append(
                    "write %d: %s" % (rec[0], os.strerror(rec[7])))
            return 1
        return cb

    def flush_done(rec, conn):
        def cb(err):
            rec[2] = clock.tick()
            rec[3] = err.value if err.value != 0 else None
            conn.inflight -= 1
            if rec[3] is not None and state["killed_at"] is None:
                state["errors_before_kill"].append(
                    "flush: %s" % os.strerror(rec[3]))
            return 1
        return cb

    def pick_range():
        for _ in range(32):
            n = rng.randint(1, 4)
            first = rng.randrange(0, pages - n + 1)
            if not any(p in busy for p in range(first, first + n)):
                return first, n
        return None

    def issue(conn):
        if rng.random() < args.flush_ratio:
            rec = [conn.index, None, None, None]
            rec[1] = clock.tick()
            conn.h.aio_flush(completion=flush_done(rec, conn))
            flushes.append(rec)
            conn.inflight += 1
            return True
        rng_range = pick_range()
        if rng_range is None:
            return False
        first, n = rng_range
        wid = len(writes) + 1
        fua = rng.random() < args.fua_ratio
        buf = b"".join(page_content(wid, p) for p in range(first, first + n))
        rec = [wid, conn.index, first, n, fua, None, None, None]
        rec[5] = clock.tick()
        conn.h.aio_pwrite(buf, first * PAGE, completion=write_done(rec, conn),
                          flags=nbd.CMD_FLAG_FUA if fua else 0)
        writes.append(rec)
        conn.inflight += 1
        for p in range(first, first + n):
            busy.add(p)
        return True

    def pump(timeout):
        """One select round over the live connections."""
        rd, wr, by_fd = [], [], {}
        for c in conns:
            if c.dead:
                continue
            try:
                if c.h.aio_is_dead() or c.h.aio_is_closed():
                    c.dead = True
                    continue
                fd = c.h.aio_get_fd()
                d = c.h.aio_get_direction()
            except nbd.Error:
                c.dead = True
                continue
            by_fd[fd] = c
            if d & nbd.AIO_DIRECTION_READ:
                rd.append(fd)
            if d & nbd.AIO_DIRECTION_WRITE:
                wr.append(fd)
        if not by_fd:
            return
        r, w, _ = select.select(rd, wr, [], timeout)
        for fd in set(r) | set(w):
            c = by_fd[fd]
            try:
                if fd in r:
                    c.h.aio_notify_read()
                if fd in w and not c.dead:
                    c.h.aio_notify_write()
            except nbd.Error:
                c.dead = True

    deadline = time.monotonic() + args.time_limit
    inflight_at_kill = 0
    while state["killed_at"] is None:
        if time.monotonic() > deadline:
            die("%d writes in %d s: too slow, the server may be stuck"
                % (len(writes), args.time_limit))
        if state["errors_before_kill"]:
            die("error replies before the kill: %s"
                % "; ".join(state["errors_before_kill"][:5]))
        if any(c.dead for c in conns):
            die("a connection died before the kill (did the server crash?)")
        for c in conns:
            while c.inflight < args.depth and len(writes) < args.ops:
                if not issue(c):
                    break
        if len(writes) >= args.ops:
            inflight_at_kill = sum(c.inflight for c in conns)
            state["killed_at"] = clock.tick()
            for pid in kill_pids:
                os.kill(pid, signal.SIGKILL)
            break
        pump(1.0)

    # Replies the server sent before it died may still be on their way;
    # then every connection ends.  libnbd fails what is left in flight.
    drain_end = time.monotonic() + 20
    while any(not c.dead for c in conns) and time.monotonic() < drain_end:
        pump(0.2)
    for c in conns:
        try:
            c.h.shutdown()
        except nbd.Error:
            pass
    journal = {
        "pages": pages,
        "multi_conn": multi_conn,
        "killed_at": state["killed_at"],
        "inflight_at_kill": inflight_at_kill,
        "writes": writes,
        "flushes": flushes,
    }
    with open(args.journal, "w") as f:
        json.dump(journal, f)
    acked = sum(1 for w in writes if w[6] is not None and w[7] is None)
    log("sent %d writes (%d with FUA) and %d flushes on %d connections "
        "(multi-conn: %s); %d writes answered with success; killed with "
        "%d requests in flight"
        % (len(writes), sum(1 for w in writes if w[4]), len(flushes),
           args.conns, multi_conn, acked, inflight_at_kill))
    if inflight_at_kill == 0:
        die("nothing was in flight at the kill")


# ---------------------------------------------------------------------
# check


def persistent_writes(journal):
    """Set of write ids the server promised are persistent."""
    multi_conn = journal["multi_conn"]
    last_flush_sent = {}  # conn or None (any) -> tick of the last good flush
    for conn, sent, ack, err in journal["flushes"]:
        if ack is None or err is not None:
            continue
        key = None if multi_conn else conn
        last_flush_sent[key] = max(last_flush_sent.get(key, 0), sent)
    out = {}
    for wid, conn, _, _, fua, _, ack, err in journal["writes"]:
        if ack is None or err is not None:
            continue
        if fua:
            out[wid] = "FUA"
        elif ack < last_flush_sent.get(None if multi_conn else conn, 0):
            out[wid] = "FLUSH"
    return out


def run_check(args):
    with open(args.journal) as f:
        journal = json.load(f)
    pages = journal["pages"]
    durable = persistent_writes(journal)
    # Writes per page, in the order they were sent.
    by_page = [[] for _ in range(pages)]
    for w in sorted(journal["writes"], key=lambda w: w[5]):
        for p in range(w[2], w[2] + w[3]):
            by_page[p].append(w[0])
    acked = {w[0] for w in journal["writes"]
             if w[6] is not None and w[7] is None}

    h = nbd.NBD()
    h.connect_uri(args.uri)
    zero_page = bytes(PAGE)
    base_bytes = None
    if args.base:
        with open(args.base, "rb") as f:
            base_bytes = f.read(pages * PAGE)
        if len(base_bytes) < pages * PAGE:
            die("--base %s is shorter than %d pages" % (args.base, pages))

    def before(p):
        """What page p held before the run."""
        if base_bytes is None:
            return zero_page
        return base_bytes[p * PAGE:(p + 1) * PAGE]

    problems = []
    what = "zeroes" if base_bytes is None else "the base"
    stats = {"last persistent": 0, "later than the last persistent": 0,
             what + " (never persistent)": 0, "untouched": 0}
    for base in range(0, pages, 256):
        n = min(256, pages - base)
        data = h.pread(n * PAGE, base * PAGE)
        for i in range(n):
            p = base + i
            got = data[i * PAGE:(i + 1) * PAGE]
            seq = by_page[p]
            if not seq:
                if got != before(p):
                    problems.append("page %d: never written, but does not "
                                    "hold %s" % (p, what))
                else:
                    stats["untouched"] += 1
                continue
            last_durable = max((k for k, wid in enumerate(seq)
                                if wid in durable), default=None)
            allowed = seq if last_durable is None else seq[last_durable:]
            if got == before(p):
                if last_durable is None:
                    stats[what + " (never persistent)"] += 1
                    continue
                wid = seq[last_durable]
                problems.append(
                    "page %d: %s, but write %d (persistent by %s) "
                    "covered it" % (p, what, wid, durable[wid]))
                continue
            magic, wid, page = HEADER.unpack_from(got)
            if magic != MAGIC or page != p or wid not in seq or \
                    got != page_content(wid, p):
                problems.append("page %d: garbage (header %#x, write %d, "
                                "page %d)" % (p, magic, wid, page))
                continue
            if wid not in allowed:
                lost = seq[last_durable]
                problems.append(
                    "page %d: holds write %d, but write %d (persistent by "
                    "%s, sent later) is lost" % (p, wid, lost, durable[lost]))
                continue
            if last_durable is not None and wid == seq[last_durable]:
                stats["last persistent"] += 1
            else:
                stats["later than the last persistent"] += 1
    h.shutdown()
    nfua = sum(1 for v in durable.values() if v == "FUA")
    log("%d writes answered with success, %d persistent by the rules "
        "(%d by FUA, %d by a later FLUSH)"
        % (len(acked), len(durable), nfua, len(durable) - nfua))
    log("pages: " + ", ".join("%s %d" % kv for kv in stats.items()))
    if problems:
        for line in problems[:20]:
            print("  " + line, file=sys.stderr)
        die("%d of %d pages are inconsistent with what the server "
            "acknowledged" % (len(problems), pages), status=3)
    if not durable:
        die("no write was persistent: the run proved nothing")
    log("every persistent write reads back; no page holds garbage")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("write", "check"))
    ap.add_argument("uri")
    ap.add_argument("journal")
    ap.add_argument("--kill", default="",
                    help="pids to SIGKILL, in this order (write mode)")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--ops", type=int, default=4000)
    ap.add_argument("--pages", type=int, default=8192)
    ap.add_argument("--mix", choices=sorted(MIXES), default="mixed",
                    help="which durability requests the writes carry")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--time-limit", type=int, default=120)
    ap.add_argument("--base", default=None,
                    help="check mode: the base file of an overlay export")
    args = ap.parse_args()
    args.fua_ratio, args.flush_ratio = MIXES[args.mix]
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    if args.mode == "write":
        if not args.kill:
            die("write needs --kill")
        log("seed %d, mix %s" % (args.seed, args.mix))
        run_writes(args)
    else:
        run_check(args)


if __name__ == "__main__":
    main()
