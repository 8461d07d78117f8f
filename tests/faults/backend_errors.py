#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What a client sees when the storage under the server fails.

    backend_errors.py eio ADDR PID TRIGGER EXPORT...
    backend_errors.py enospc ADDR PID EXPORT...

eio: the exports sit on a FUSE file whose NBD server (nbdkit) fails
every request while the file TRIGGER exists, and only flushes while
TRIGGER-flush exists.  Before the trigger, a write and its read back
work.  With it, READ, WRITE (with and without FUA), WRITE_ZEROES and
FLUSH must each get NBD_EIO, one at a time and 32 pipelined, over simple
and structured replies; every request is answered (a 30 s socket
timeout catches a hang).  With flushes alone failing, a plain WRITE
works, but FLUSH and a WRITE with FUA must get NBD_EIO: the data could
not be made persistent, so the server must not say it was.  Without a
trigger again, the data written before reads back and new writes work.

enospc: the exports are sparse images larger than the tmpfs they are
on.  1 MiB writes at rising offsets must end with NBD_ENOSPC before the
end of the export; then writes (with and without FUA, pipelined) and
WRITE_ZEROES with NO_HOLE get NBD_ENOSPC too, while every write that
was acknowledged reads back and FLUSH works.  A TRIM then frees space
and the next write succeeds: the server kept serving.  The exports
share the tmpfs, so each starts from an empty one: the script trims
what it wrote before the next export.

Each export is tried through libnbd as well, so that the error a real
client reports is checked too.  The server (PID) must be alive at the
end.
"""

import os
import sys

import nbd
import nbdwire as w
from nbdwire import EIO, ENOSPC, fail, log

MiB = 1 << 20


def expect(r, want, what):
    if r.error != want:
        fail("%s: %s, want %s" % (what, w.error_name(r.error),
                                  w.error_name(want)))


PROBLEMS = []


def expect_go_on(r, want, what):
    """expect() that lets the run go on, to fail at the end."""
    if r.error != want:
        PROBLEMS.append("%s: %s, want %s" % (what, w.error_name(r.error),
                                             w.error_name(want)))


def pipelined(c, reqs, want, what):
    """Sends every (cmd, offset, length, payload, flags) at once, then
    reads every reply; each must carry error `want`."""
    cookies = {c.send(*r): r for r in reqs}
    for _ in reqs:
        r = c.reply()
        del cookies[r.cookie]
        expect(r, want, "%s (pipelined)" % what)
    if cookies:
        fail("%s: %d requests not answered" % (what, len(cookies)))


def libnbd_error(uri, op):
    """Runs op(handle); returns the errno of the nbd.Error it raises."""
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        op(h)
    except nbd.Error as e:
        return e.errnum
    finally:
        h.shutdown()
    return 0


def uri_of(addr, name):
    return "nbd+unix:///%s?socket=%s" % (name, addr[5:])


def eio(addr, trigger, names):
    for t in (trigger, trigger + "-flush"):
        if os.path.exists(t):
            os.unlink(t)
    data = {}
    for i, name in enumerate(names):
        c = w.Client(addr, name, structured=True)
        off = i * 4 * MiB
        data[name] = (off, os.urandom(MiB))
        expect(c.write(off, data[name][1], fua=True), 0,
               "%s: write before the fault" % name)
        r = c.read(off, MiB)
        if r.error or r.data != data[name][1]:
            fail("%s: read back before the fault" % name)
        c.disconnect()

    open(trigger, "w").close()
    # Offsets never read before: a page already in the FUSE file's page
    # cache would be served without asking the failing storage.
    fresh = 32 * MiB
    for name in names:
        for structured in (False, True):
            shape = "structured" if structured else "simple"
            what = "%s, %s replies" % (name, shape)
            c = w.Client(addr, name, structured=structured, go=structured)
            expect(c.read(fresh, 65536), EIO, what + ": READ")
            fresh += MiB
            expect(c.write(fresh, os.urandom(65536)), EIO, what + ": WRITE")
            expect(c.write(fresh, os.urandom(65536), fua=True), EIO,
                   what + ": WRITE with FUA")
            expect(c.call(w.CMD_WRITE_ZEROES, fresh, 65536,
                          flags=w.CMD_FLAG_NO_HOLE), EIO,
                   what + ": WRITE_ZEROES")
            expect(c.flush(), EIO, what + ": FLUSH")
            reqs = []
            for k in range(32):
                off = fresh + (k + 1) * 65536
                if k % 2 == 0:
                    reqs.append((w.CMD_READ, off, 65536))
                else:
                    reqs.append((w.CMD_WRITE, off, 0, os.urandom(65536),
                                 w.CMD_FLAG_FUA if k % 4 == 1 else 0))
            pipelined(c, reqs, EIO, what + ": READ and WRITE")
            fresh += 4 * MiB
            c.disconnect()
            log("%s: every request got EIO" % what)
        e = libnbd_error(uri_of(addr, name),
                         lambda h: h.pread(65536, fresh))
        fresh += MiB
        if e != EIO:
            fail("%s: libnbd's pread failed with %s, want EIO"
                 % (name, os.strerror(e) if e else "success"))
        log("%s: libnbd reports EIO" % name)

    os.unlink(trigger)
    open(trigger + "-flush", "w").close()
    for name in names:
        c = w.Client(addr, name, structured=True)
        expect(c.write(fresh, os.urandom(65536)), 0,
               name + ": WRITE while only flushes fail")
        expect(c.flush(), EIO, name + ": FLUSH while flushes fail")
        fresh += MiB
        expect_go_on(c.write(fresh, os.urandom(65536), fua=True), EIO,
                     name + ": WRITE with FUA while flushes fail (the data "
                     "could not be made persistent)")
        fresh += MiB
        c.disconnect()
        log("%s: with flushes failing, FLUSH got EIO" % name)
    os.unlink(trigger + "-flush")
    for name in names:
        c = w.Client(addr, name, structured=True)
        off, want = data[name]
        r = c.read(off, MiB)
        if r.error or r.data != want:
            fail("%s: data written before the fault is lost (%s)"
                 % (name, w.error_name(r.error)))
        buf = os.urandom(65536)
        expect(c.write(fresh, buf, fua=True), 0, name + ": write after")
        r = c.read(fresh, len(buf))
        if r.error or r.data != buf:
            fail("%s: read after the fault" % name)
        expect(c.flush(), 0, name + ": FLUSH after")
        c.disconnect()
    log("after the fault: old data intact, new writes work")


def enospc(addr, names):
    for name in names:
        c = w.Client(addr, name, structured=True)
        size = c.size
        written = []
        err = 0
        for k in range(size // MiB):
            buf = os.urandom(MiB)
            r = c.write(k * MiB, buf)
            if r.error:
                err = r.error
                break
            written.append((k * MiB, buf))
        if err != ENOSPC:
            fail("%s: %d MiB written, then %s; want ENOSPC before the end "
                 "of the %d MiB export" % (name, len(written),
                                           w.error_name(err), size // MiB))
        log("%s: ENOSPC after %d MiB" % (name, len(written)))
        beyond = (len(written) + 1) * MiB
        expect(c.write(beyond, os.urandom(MiB)), ENOSPC, name + ": WRITE")
        expect(c.write(beyond, os.urandom(MiB), fua=True), ENOSPC,
               name + ": WRITE with FUA")
        expect(c.call(w.CMD_WRITE_ZEROES, beyond, 4 * MiB,
                      flags=w.CMD_FLAG_NO_HOLE), ENOSPC,
               name + ": WRITE_ZEROES with NO_HOLE")
        pipelined(c, [(w.CMD_WRITE, beyond + k * MiB, 0, os.urandom(MiB))
                      for k in range(16)], ENOSPC, name + ": WRITE")
        e = libnbd_error(uri_of(addr, name),
                         lambda h: h.pwrite(os.urandom(MiB), beyond))
        if e != ENOSPC:
            fail("%s: libnbd's pwrite failed with %s, want ENOSPC"
                 % (name, os.strerror(e) if e else "success"))
        log("%s: every write got ENOSPC (libnbd too)" % name)
        for off, buf in written:
            r = c.read(off, MiB)
            if r.error or r.data != buf:
                fail("%s: acknowledged data at %d lost when the file "
                     "system filled" % (name, off))
        expect(c.flush(), 0, name + ": FLUSH on a full file system")
        # Free the first 4 MiB: writes fit again.
        expect(c.call(w.CMD_TRIM, 0, 4 * MiB), 0, name + ": TRIM")
        buf = os.urandom(MiB)
        expect(c.write(beyond, buf, fua=True), 0,
               name + ": WRITE after a TRIM freed space")
        r = c.read(beyond, MiB)
        if r.error or r.data != buf:
            fail("%s: read after the TRIM" % name)
        # Leave the tmpfs empty for the next export.
        expect(c.call(w.CMD_TRIM, 0, size), 0, name + ": TRIM all")
        c.disconnect()
        log("%s: acknowledged data intact, FLUSH works, a TRIM makes "
            "room and writes work again" % name)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, addr, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "eio":
        eio(addr, sys.argv[4], sys.argv[5:])
    elif mode == "enospc":
        enospc(addr, sys.argv[4:])
    else:
        sys.exit(__doc__)
    if not w.proc_alive(pid):
        fail("the server died")
    for p in PROBLEMS:
        print("  FAIL: " + p, file=sys.stderr)
    if PROBLEMS:
        sys.exit(1)


if __name__ == "__main__":
    main()
