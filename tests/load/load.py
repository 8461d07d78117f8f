#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""1,000 well-formed connections and 100 hostile ones against one server.

    load.py HOST:PORT PID [--conns N] [--hostile N] [--rounds N]
            [--idle-bound-kib N] [--idle-only] [--label NAME]

One asyncio process, raw sockets (nbdwire's encoders), no libnbd: a
libnbd handle per connection would cost more than the server side.

  1. A warm-up, then the server's VmRSS and fds: the baseline.
  2. --conns connections complete the handshake (NBD_OPT_STRUCTURED_REPLY,
     NBD_OPT_GO) and stay idle.  RSS again: (idle - baseline) / conns is
     the memory per idle connection, which must stay under
     --idle-bound-kib (0: report only).
  3. Every connection runs --rounds rounds, each a WRITE of a fresh
     pattern into its own region pipelined with a READ of a shared region
     whose content is known, then a READ of what it wrote; every reply is
     checked (cookie, error, data).  Meanwhile CHURNERS clients connect,
     do one such round and leave, again and again, and --hostile
     connections send
     garbage instead of a handshake, garbage options and requests, half
     handshakes, half request headers and half payloads, again and
     again, the half ones then waiting until the end.  The highest RSS
     seen gives the memory per busy connection (report only).
  4. Everyone hangs up; the server must be alive and its fds back to the
     baseline.

--idle-only does steps 1, 2 and 4 (for a comparison with another server;
nothing is asserted but that the handshakes work).  Timeouts (30 s per
reply, --time-limit for the whole run) only turn a hang into a failure.
"""

import argparse
import asyncio
import os
import random
import struct
import sys
import time

import nbdwire as w
from nbdwire import log

KiB = 1 << 10
MiB = 1 << 20
SHARED = 1 * MiB      # [0, SHARED): known content, read by everyone
REGION = 64 * KiB     # each connection's own region, after SHARED
BLOCK = 4096
REPLY_TIMEOUT = 30
CHURNERS = 20         # well-formed clients that come and go meanwhile
HELD_MAX = 200        # half-done hostile connections kept open at once


class Failure(Exception):
    pass


def rss_kib(pid):
    return w.proc_status_kib(pid, "VmRSS")


async def settled_rss(pid, seconds=3.0):
    """VmRSS once it stops moving (two readings 0.5 s apart within 64
    KiB), or after `seconds`."""
    prev = rss_kib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - prev) <= 64:
            return now
        prev = now
    return prev


class Conn:
    """One well-formed connection with a pipelining reply reader."""

    def __init__(self, index):
        self.index = index
        self.next_cookie = 1
        self.pending = {}

    async def open(self, host, port, name):
        self.r, self.w = await asyncio.open_connection(host, port)
        hflags = w.parse_greeting(await self.r.readexactly(w.GREETING_SIZE))
        self.w.write(w.pack_client_flags(hflags)
                     + w.pack_option(w.OPT_STRUCTURED_REPLY)
                     + w.pack_go(name))
        opt, rtype, ln = w.parse_option_reply_header(
            await self.r.readexactly(20))
        await self.r.readexactly(ln)
        if rtype != w.REP_ACK:
            raise Failure("NBD_OPT_STRUCTURED_REPLY refused: %#x" % rtype)
        while True:
            opt, rtype, ln = w.parse_option_reply_header(
                await self.r.readexactly(20))
            await self.r.readexactly(ln)
            if rtype == w.REP_ACK:
                break
            if rtype & w.REP_ERR_BIT:
                raise Failure("NBD_OPT_GO refused: %#x" % rtype)

    def send(self, cmd, offset, length, payload=b"", flags=0):
        cookie = self.next_cookie
        self.next_cookie += 1
        self.pending[cookie] = (cmd, offset, length)
        self.w.write(w.pack_request(cmd, cookie, offset, length, flags)
                     + payload)
        return cookie

    async def reply(self):
        """(cookie, error, data) of the next complete reply."""
        data = None
        err = 0
        while True:
            hdr = await asyncio.wait_for(
                self.r.readexactly(w.CHUNK_HEADER_SIZE), REPLY_TIMEOUT)
            flags, ctype, cookie, length = w.parse_chunk_header(hdr)
            if cookie not in self.pending:
                raise Failure("conn %d: reply to unknown cookie %d"
                              % (self.index, cookie))
            cmd, offset, rlen = self.pending[cookie]
            body = await self.r.readexactly(length)
            if cmd == w.CMD_READ and data is None:
                data = bytearray(rlen)
            if ctype == w.CHUNK_OFFSET_DATA:
                (off,) = struct.unpack(">Q", body[:8])
                data[off - offset:off - offset + length - 8] = body[8:]
            elif ctype == w.CHUNK_OFFSET_HOLE:
                off, hlen = struct.unpack(">QI", body)
                data[off - offset:off - offset + hlen] = bytes(hlen)
            elif ctype & w.CHUNK_ERROR_BIT:
                (err,) = struct.unpack(">I", body[:4])
            elif ctype != w.CHUNK_NONE:
                raise Failure("conn %d: chunk type %d" % (self.index, ctype))
            if flags & w.REPLY_FLAG_DONE:
                del self.pending[cookie]
                return cookie, err, data

    async def close(self):
        try:
            self.w.write(w.pack_request(w.CMD_DISC, 0, 0, 0))
            await self.w.drain()
            self.w.close()
            await self.w.wait_closed()
        except OSError:
            pass


def pattern(conn, rnd, length):
    """Distinct content for each connection and round."""
    head = struct.pack(">QQ", conn, rnd)
    return (head * (length // len(head) + 1))[:length]


async def busy(c, rounds, shared, stats):
    base = SHARED + c.index * REGION
    rng = random.Random(c.index)
    for rnd in range(rounds):
        off = base + rng.randrange(0, REGION // BLOCK) * BLOCK
        data = pattern(c.index, rnd, BLOCK)
        soff = rng.randrange(0, SHARED // BLOCK - 4) * BLOCK
        slen = rng.choice((BLOCK, 4 * BLOCK))
        wc = c.send(w.CMD_WRITE, off, len(data), data,
                    w.CMD_FLAG_FUA if rnd % 8 == 7 else 0)
        sc = c.send(w.CMD_READ, soff, slen)
        for _ in range(2):
            cookie, err, got = await c.reply()
            if err:
                raise Failure("conn %d: %s failed: %s"
                              % (c.index, "WRITE" if cookie == wc else "READ",
                                 w.error_name(err)))
            if cookie == sc and got != shared[soff:soff + slen]:
                raise Failure("conn %d: wrong data from the shared region"
                              % c.index)
        rc = c.send(w.CMD_READ, off, len(data))
        cookie, err, got = await c.reply()
        if cookie != rc or err or got != data:
            raise Failure("conn %d: read back of round %d: %s"
                          % (c.index, rnd, w.error_name(err)))
        stats["requests"] += 3


# ---------------------------------------------------------------------
# Hostile clients


def hold(held, wr):
    """Keeps a half-done connection open, closing the oldest beyond
    HELD_MAX so that the descriptors stay bounded."""
    held.append(wr)
    if len(held) > HELD_MAX:
        held.pop(0).close()


async def hostile_one(host, port, name, kind, held):
    """One hostile connection of `kind`; half-done ones are kept open in
    `held` until the end, the others are closed (or closed by the
    server)."""
    r, wr = await asyncio.open_connection(host, port)
    greet = w.pack_client_flags(w.FLAG_NO_ZEROES)

    async def handshake():
        await r.readexactly(w.GREETING_SIZE)
        wr.write(greet + w.pack_go(name))
        while True:
            _, rtype, ln = w.parse_option_reply_header(await r.readexactly(20))
            await r.readexactly(ln)
            if rtype == w.REP_ACK:
                return
            if rtype & w.REP_ERR_BIT:
                raise Failure("hostile handshake refused: %#x" % rtype)

    try:
        if kind == "garbage-greeting":
            wr.write(os.urandom(4096))
        elif kind == "garbage-option":
            await r.readexactly(w.GREETING_SIZE)
            wr.write(greet + os.urandom(2048))
        elif kind == "half-handshake":
            await r.readexactly(w.GREETING_SIZE)
            wr.write(greet + w.pack_go(name)[:9])
            hold(held, wr)
            return
        elif kind == "huge-option":
            await r.readexactly(w.GREETING_SIZE)
            wr.write(greet + struct.pack(">QII", w.IHAVEOPT, w.OPT_GO,
                                         0xFFFFFFF0) + b"x" * 100)
            hold(held, wr)
            return
        elif kind == "garbage-request":
            await handshake()
            wr.write(b"\xba\xad" + os.urandom(1022))
        elif kind == "half-request":
            await handshake()
            wr.write(w.pack_request(w.CMD_READ, 1, 0, 4096)[:11])
            hold(held, wr)
            return
        elif kind == "half-payload":
            # Aimed at the shared region: applying a partial payload
            # would show as wrong data in the well-formed clients' reads.
            await handshake()
            wr.write(w.pack_request(w.CMD_WRITE, 1, SHARED - MiB // 2,
                                    MiB // 2) + b"\x55" * (MiB // 8))
            hold(held, wr)
            return
        await wr.drain()
        # The server should hang up on garbage; do not wait long for it.
        try:
            await asyncio.wait_for(r.read(1 << 16), 2)
        except asyncio.TimeoutError:
            pass
    except (OSError, asyncio.IncompleteReadError):
        pass  # the server hung up first: fine
    wr.close()


HOSTILE_KINDS = ("garbage-greeting", "garbage-option", "half-handshake",
                 "huge-option", "garbage-request", "half-request",
                 "half-payload")


async def hostile(index, host, port, name, stop, held, stats):
    rng = random.Random(1000 + index)
    for _ in range(50):
        if stop.is_set():
            return
        kind = rng.choice(HOSTILE_KINDS)
        await hostile_one(host, port, name, kind, held)
        stats["hostile"] += 1
        await asyncio.sleep(rng.uniform(0.01, 0.2))


async def churn(index, host, port, name, shared, stop, stats):
    """A well-formed client that connects, works a little and leaves,
    again and again: handshakes must succeed under the hostile load."""
    while not stop.is_set():
        c = Conn(index)
        await asyncio.wait_for(c.open(host, port, name), REPLY_TIMEOUT)
        await busy(c, 1, shared, stats)
        await c.close()
        stats["churned"] += 1


# ---------------------------------------------------------------------


async def gather_bounded(coros, limit):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def run(args):
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    pid = args.pid
    name = args.export
    label = args.label

    # Shared region content, and a warm-up of loops and pools.
    shared = os.urandom(SHARED)
    if not args.idle_only:
        c = w.Client(args.addr, name, structured=True)
        for off in range(0, SHARED, 256 * KiB):
            if c.write(off, shared[off:off + 256 * KiB]).error:
                raise Failure("writing the shared region")
        c.disconnect()
    warm = [Conn(-1 - i) for i in range(8)]
    await asyncio.gather(*(x.open(host, port, name) for x in warm))
    for x in warm:
        x.send(w.CMD_READ, 0, 4 * BLOCK)
        await x.reply()
        await x.close()
    await asyncio.sleep(0.5)
    fds0 = w.proc_fd_count(pid)
    rss0 = await settled_rss(pid)

    t0 = time.monotonic()
    conns = [Conn(i) for i in range(args.conns)]
    await gather_bounded((c.open(host, port, name) for c in conns), 64)
    t_open = time.monotonic() - t0
    rss_idle = await settled_rss(pid)
    idle_kib = (rss_idle - rss0) / args.conns
    log("%s: %d connections up in %.1f s; RSS %d KiB before, %d KiB "
        "with them idle: %.1f KiB per idle connection"
        % (label, args.conns, t_open, rss0, rss_idle, idle_kib))

    busy_kib = None
    stats = {"requests": 0, "hostile": 0, "churned": 0}
    if not args.idle_only:
        stop = asyncio.Event()
        held = []
        peak = [rss_idle]

        async def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(pid))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        hostiles = [asyncio.create_task(
            hostile(i, host, port, name, stop, held, stats))
            for i in range(args.hostile)]
        churners = [asyncio.create_task(
            churn(args.conns + i, host, port, name, shared, stop, stats))
            for i in range(CHURNERS)]
        t1 = time.monotonic()
        try:
            await asyncio.gather(*(busy(c, args.rounds, shared, stats)
                                   for c in conns))
        finally:
            stop.set()
            await sampler
            for h in hostiles:
                h.cancel()
            await asyncio.gather(*hostiles, return_exceptions=True)
        # A failure of a churning client fails the run.
        await asyncio.gather(*churners)
        t_busy = time.monotonic() - t1
        busy_kib = (peak[0] - rss0) / args.conns
        log("%s: %d verified requests on %d connections and %d short-lived "
            "ones in %.1f s with %d hostile connections (%d held open half "
            "way); peak RSS %d KiB: %.1f KiB per busy connection"
            % (label, stats["requests"], args.conns, stats["churned"],
               t_busy, stats["hostile"], len(held), peak[0], busy_kib))
        want = 3 * (args.rounds * args.conns + stats["churned"])
        if stats["requests"] != want:
            raise Failure("%d requests answered of %d"
                          % (stats["requests"], want))
        if stats["churned"] == 0 or stats["hostile"] < args.hostile:
            raise Failure("the load was not what it should be: %d "
                          "short-lived clients, %d hostile connections"
                          % (stats["churned"], stats["hostile"]))
        for wr in held:
            wr.close()

    await asyncio.gather(*(c.close() for c in conns))
    if not w.proc_alive(pid):
        raise Failure("the server died")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fds1 = w.proc_fd_count(pid)
        if fds1 <= fds0:
            break
        await asyncio.sleep(0.2)
    rss_end = rss_kib(pid)
    log("%s: after everyone left: fds %d (%d before), RSS %d KiB"
        % (label, fds1, fds0, rss_end))
    if args.report:
        with open(args.report, "a") as f:
            f.write("%s idle_kib_per_conn=%.1f busy_kib_per_conn=%s "
                    "conns=%d\n" % (label, idle_kib,
                                    "%.1f" % busy_kib if busy_kib else "-",
                                    args.conns))
    if args.idle_only:
        return
    if fds1 > fds0:
        raise Failure("the server holds %d fds, %d before the load"
                      % (fds1, fds0))
    if args.idle_bound_kib and idle_kib >= args.idle_bound_kib:
        raise Failure("%.1f KiB per idle connection, bound %d KiB"
                      % (idle_kib, args.idle_bound_kib))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--export", default="")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--hostile", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--idle-bound-kib", type=int, default=16)
    ap.add_argument("--idle-only", action="store_true")
    ap.add_argument("--label", default="server")
    ap.add_argument("--report", default=None)
    ap.add_argument("--time-limit", type=int, default=240)
    args = ap.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.time_limit))
    except asyncio.TimeoutError:
        print("  FAIL: not done within %d s" % args.time_limit,
              file=sys.stderr)
        sys.exit(1)
    except (Failure, w.ProtocolError, OSError,
            asyncio.IncompleteReadError) as e:
        print("  FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
