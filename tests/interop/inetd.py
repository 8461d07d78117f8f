# SPDX-License-Identifier: MIT
"""nbd-serverd --inetd driven over what inetd, ssh and launchers hand it.

Usage: inetd.py SERVER IMAGE MODE [ARGS...]

Runs SERVER -s -e disk=IMAGE ARGS with stdin and stdout set up by MODE,
speaks NBD to it over its other end, and checks its exit status:

  socketpair  one end of a socketpair as stdin and stdout (inetd style)
  all3        the socket as stdin, stdout and stderr (inetd gives all
              three): the protocol stream must hold nothing but NBD, so
              log lines (the test passes -v) must not reach it
  pipes       a pipe to read and another to write (ssh): the relay
  eof         socketpair; the client hangs up after the handshake
              without NBD_CMD_DISC: still a clean end (exit 0)
  garbage     socketpair; a bad option magic: exit 1
  pipes-eof   pipes; the client closes its end mid-haggling: exit 0

A READ of the first MiB must match IMAGE, and a WRITE must reach it.
"""
import os
import socket
import struct
import subprocess
import sys

import nbdwire as w

server, image, mode = sys.argv[1], sys.argv[2], sys.argv[3]
extra = sys.argv[4:]
argv = [server, "-s", "-e", "disk=" + image] + extra


class PipeEnd:
    """recv/sendall over two pipe fds, for nbdwire."""

    def __init__(self, proc):
        self.proc = proc
        self.rfd, self.wfd = proc.stdout.fileno(), proc.stdin.fileno()

    def recv(self, n):
        return os.read(self.rfd, n)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def close_write(self):
        self.proc.stdin.close()
        self.proc.stdin = None


def start():
    if mode.startswith("pipes"):
        p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return p, PipeEnd(p)
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    err = theirs if mode == "all3" else subprocess.PIPE
    p = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=err)
    theirs.close()
    return p, ours


def finish(p, want):
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        w.fail("%s: the server did not exit once the client was done" % mode)
    err = (err or b"").decode(errors="replace")
    sys.stderr.write(err)
    if p.returncode != want:
        w.fail("%s: exit status %d, expected %d" % (mode, p.returncode, want))


p, s = start()
hflags = w.handshake(s)
if mode == "garbage":
    s.sendall(b"\0" * 16)
    finish(p, 1)
    sys.exit(0)
if mode == "pipes-eof":
    s.close_write()
    finish(p, 0)
    sys.exit(0)
size = None
for rtype, body in w.opt_go(s, "disk"):
    if rtype == w.REP_INFO and len(body) >= 12:
        (itype,) = struct.unpack(">H", body[:2])
        if itype == w.INFO_EXPORT:
            size = struct.unpack(">Q", body[2:10])[0]
if size != os.path.getsize(image):
    w.fail("%s: export size %r, image %d" % (mode, size,
                                             os.path.getsize(image)))
if mode == "eof":
    if isinstance(s, PipeEnd):
        s.close_write()
    else:
        s.shutdown(socket.SHUT_WR)
    finish(p, 0)
    sys.exit(0)
n = 1 << 20
w.send_request(s, w.CMD_READ, 1, 0, n)
if w.simple_reply(s, 1) != 0:
    w.fail("%s: READ failed" % mode)
data = w.recv_exact(s, n)
with open(image, "rb") as f:
    if data != f.read(n):
        w.fail("%s: READ returned other data than the image" % mode)
payload = (mode.encode() * 4096)[:4096]
w.send_request(s, w.CMD_WRITE, 2, n, len(payload), payload)
if w.simple_reply(s, 2) != 0:
    w.fail("%s: WRITE failed" % mode)
w.send_request(s, w.CMD_DISC, 3, 0, 0)
finish(p, 0)
with open(image, "rb") as f:
    f.seek(n)
    if f.read(len(payload)) != payload:
        w.fail("%s: the WRITE did not reach the image" % mode)
w.log("%s: ok" % mode)
