#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Garbage and broken negotiation from a raw client: garbage instead of a
# handshake or a request, unknown client flags, a bad option magic, an
# unknown option (must get NBD_REP_ERR_UNSUP and the haggling goes on),
# NBD_OPT_EXPORT_NAME of an unknown export, oversized requests, export
# names and options, NBD_OPT_LIST with data, and a client without
# NO_ZEROES.  Afterwards the server must still serve, hold no more file
# descriptors, exit 0 on SIGTERM, and the image must hold nothing the
# server refused.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib-robustness.sh
. "$(dirname "$0")/lib-robustness.sh"

requires python3 nbdinfo truncate

# argv: ADDR NAME.
cat >"$T/garbage.py" <<'EOF'
import os
import socket
import struct
import sys

import nbdwire as w
from nbdwire import fail, log

LIMIT = 5.0    # seconds for each reply, and for the server to hang up
addr, name = sys.argv[1], sys.argv[2]

# (a1) garbage instead of the client flags, greeting not even read.
s = w.connect(addr, LIMIT)
w.send_quietly(s, os.urandom(65536))
w.expect_eof(s, "garbage before reading the greeting", LIMIT)
# (a2) garbage after the greeting.
s = w.connect(addr, LIMIT)
w.greeting(s)
w.send_quietly(s, os.urandom(4096))
w.expect_eof(s, "garbage after the greeting", LIMIT)
# (a3) client flags with an unknown bit: the server must hang up.
s = w.connect(addr, LIMIT)
hflags = w.greeting(s)
s.sendall(struct.pack(">I", 0x80000000 | w.FLAG_FIXED_NEWSTYLE
                      | (hflags & w.FLAG_NO_ZEROES)))
w.send_quietly(s, w.pack_option(w.OPT_LIST))
w.expect_eof(s, "unknown client flag", LIMIT)
# (a4) an option header with a wrong magic.
s = w.connect(addr, LIMIT)
w.handshake(s)
w.send_quietly(s, struct.pack(">QII", 0x1122334455667788, w.OPT_LIST, 0))
w.expect_eof(s, "bad option magic", LIMIT)
# (a5) garbage in place of a request, after a good handshake.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
w.send_quietly(s, b"\xde\xad\xbe\xef" + os.urandom(4092))
w.expect_eof(s, "garbage instead of a request", LIMIT)
# (a6) an unknown option gets NBD_REP_ERR_UNSUP, then LIST and ABORT
# still work on the same connection.
s = w.connect(addr, LIMIT)
w.handshake(s)
w.send_option(s, 0x4242, b"whatever")
rtype, _ = w.option_reply(s, 0x4242)
if rtype != w.REP_ERR_UNSUP:
    fail("unknown option: reply type %#x, want NBD_REP_ERR_UNSUP" % rtype)
w.send_option(s, w.OPT_LIST)
names = []
while True:
    rtype, data = w.option_reply(s, w.OPT_LIST)
    if rtype == w.REP_ACK:
        break
    if rtype != w.REP_SERVER:
        fail("NBD_OPT_LIST: reply type %#x" % rtype)
    (ln,) = struct.unpack(">I", data[:4])
    names.append(data[4:4 + ln].decode())
if name not in names:
    fail("NBD_OPT_LIST after an unknown option: %r" % names)
w.send_option(s, w.OPT_ABORT)
try:
    rtype, _ = w.option_reply(s, w.OPT_ABORT)
    if rtype != w.REP_ACK:
        fail("NBD_OPT_ABORT: reply type %#x" % rtype)
except (EOFError, ConnectionResetError):
    pass    # the specification lets the server just hang up
w.expect_eof(s, "NBD_OPT_ABORT", LIMIT)
log("unknown option: NBD_REP_ERR_UNSUP, the haggling went on")
# (a7) NBD_OPT_EXPORT_NAME cannot fail with an error reply: for an
# unknown name the server must hang up.
s = w.connect(addr, LIMIT)
w.handshake(s)
w.send_option(s, w.OPT_EXPORT_NAME, b"nosuch")
w.expect_eof(s, "NBD_OPT_EXPORT_NAME of an unknown export", LIMIT)
# (a8) a WRITE announcing a 4 GiB payload: far above any limit.  The
# server may answer with an error or hang up, but must not try to take
# it all in memory or die.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
w.send_request(s, w.CMD_WRITE, 0x2001, 0, 0xFFFFFFFF)
w.send_quietly(s, b"\x00" * 65536)
s.close()
# (a9) a READ of 4 GiB - 1 bytes at offset 0: beyond the export and the
# maximum payload.  An error reply or a hang-up, never data.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
w.send_request(s, w.CMD_READ, 0x2002, 0, 0xFFFFFFFF)
try:
    err = w.simple_reply(s, 0x2002)
    if err == 0:
        fail("a READ of 4 GiB - 1 bytes succeeded")
    log("READ of 4 GiB - 1 bytes: error %d" % err)
    w.send_quietly(s, w.pack_request(w.CMD_DISC, 0x2003, 0, 0))
except (EOFError, ConnectionResetError, BrokenPipeError):
    log("READ of 4 GiB - 1 bytes: the server hung up")
w.expect_eof(s, "oversized READ", LIMIT)
# (a10) a WRITE of 33 MiB (above the 32 MiB maximum payload) with the
# whole payload sent: an error reply, or a hang-up.
s = w.connect(addr, LIMIT)
w.export_name(s, name)
w.send_request(s, w.CMD_WRITE, 0x2004, 0, 33 * 1024 * 1024)
w.send_quietly(s, b"\x33" * (33 * 1024 * 1024))
try:
    err = w.simple_reply(s, 0x2004)
    # Success is allowed too (nbdkit takes up to 64 MiB): the image
    # check accepts 0x33 in [32 MiB, 33 MiB).
    log("WRITE of 33 MiB: %s" % ("error %d" % err if err else "done"))
    w.send_quietly(s, w.pack_request(w.CMD_DISC, 0x2005, 0, 0))
except (EOFError, ConnectionResetError, BrokenPipeError):
    log("WRITE of 33 MiB: the server hung up")
w.expect_eof(s, "oversized WRITE", LIMIT)
# (a11) NBD_OPT_GO with a 5000-byte export name (over the 4096 limit of
# the specification): an error reply, or a hang-up.
s = w.connect(addr, LIMIT)
w.handshake(s)
s.sendall(w.pack_go("n" * 5000))
try:
    rtype, _ = w.option_reply(s, w.OPT_GO)
    if not rtype & w.REP_ERR_BIT:
        fail("NBD_OPT_GO with a 5000-byte name: reply %#x" % rtype)
    log("NBD_OPT_GO with a 5000-byte name: error %#x" % rtype)
    w.send_option(s, w.OPT_ABORT)
except (EOFError, ConnectionResetError, BrokenPipeError):
    log("NBD_OPT_GO with a 5000-byte name: the server hung up")
w.expect_eof(s, "overlong export name", LIMIT)
# (a12) an option announcing 4 GiB - 1 bytes of data: the server must
# not wait for (or allocate) all that; an error reply or a hang-up.
s = w.connect(addr, LIMIT)
w.handshake(s)
s.sendall(struct.pack(">QII", w.IHAVEOPT, w.OPT_GO, 0xFFFFFFFF) + b"x" * 100)
try:
    rtype, _ = w.option_reply(s, w.OPT_GO)
    if not rtype & w.REP_ERR_BIT:
        fail("a 4 GiB option: reply %#x" % rtype)
    log("a 4 GiB option: error %#x" % rtype)
except (EOFError, ConnectionResetError):
    log("a 4 GiB option: the server hung up")
except socket.timeout:
    fail("a 4 GiB option: no answer within 5 s; the server waits "
         "for 4 GiB of option data")
w.expect_eof(s, "4 GiB option", LIMIT)
# (a13) NBD_OPT_LIST with data: NBD_REP_ERR_INVALID, then go on.
s = w.connect(addr, LIMIT)
w.handshake(s)
w.send_option(s, w.OPT_LIST, b"junk")
rtype, _ = w.option_reply(s, w.OPT_LIST)
if rtype != w.REP_ERR_INVALID:
    fail("NBD_OPT_LIST with data: reply %#x, want NBD_REP_ERR_INVALID"
         % rtype)
w.send_option(s, w.OPT_ABORT)
w.expect_eof(s, "NBD_OPT_LIST with data, then NBD_OPT_ABORT", LIMIT)
# (a14) a client without NO_ZEROES gets the 124 zero bytes after
# NBD_OPT_EXPORT_NAME, and the transmission phase is in step.
s = w.connect(addr, LIMIT)
w.greeting(s)
s.sendall(struct.pack(">I", w.FLAG_FIXED_NEWSTYLE))
w.send_option(s, w.OPT_EXPORT_NAME, name.encode())
w.recv_exact(s, w.EXPORT_NAME_REPLY_SIZE)
if w.recv_exact(s, w.EXPORT_NAME_ZEROES) != bytes(w.EXPORT_NAME_ZEROES):
    fail("the 124 bytes after NBD_OPT_EXPORT_NAME are not zero")
w.send_request(s, w.CMD_READ, 0x3001, 0, 512)
if w.simple_reply(s, 0x3001):
    fail("READ without NO_ZEROES failed")
w.recv_exact(s, 512)
w.send_request(s, w.CMD_DISC, 0x3002, 0, 0)
w.expect_eof(s, "client without NO_ZEROES", LIMIT)
EOF

robust_start
step "(a) garbage"
tmo python3 "$T/garbage.py" "$addr" disk || fail "garbage checks failed"
robust_finish

# (a8) and (a10) write at offset 0; a 33 MiB write from (a10) that the
# server accepted reaches 1 MiB past the first 32 MiB.
image_holds $((32 * MiB)) $((33 * MiB)) '0x33|zero' \
    $((33 * MiB)) $((48 * MiB)) zero
step "pass"
