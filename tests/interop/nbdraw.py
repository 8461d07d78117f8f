# SPDX-License-Identifier: MIT
"""A raw-socket NBD client for the interop scripts.

It speaks the wire format directly (no libnbd), so that a test can send
what a well-behaved client never would (flags on any command, oversized
options, options in any order) and see exactly what comes back.  The
scripts put tests/interop on sys.path and "import nbdraw".

Conventions: every read has a time limit (socket.timeout propagates, so
a server that hangs fails the test); fail() prints a message and exits 1.
"""

import socket
import struct
import time

# Wire constants and log/fail come from the one module (tests/lib,
# on PYTHONPATH through lib.sh); the names below are this client's.
from nbdwire import (  # noqa: F401 (re-exported to the scripts)
    CHUNK_BLOCK_STATUS as REPLY_TYPE_BLOCK_STATUS,
    CHUNK_BLOCK_STATUS_EXT as REPLY_TYPE_BLOCK_STATUS_EXT,
    CHUNK_ERROR as REPLY_TYPE_ERROR,
    CHUNK_ERROR_OFFSET as REPLY_TYPE_ERROR_OFFSET,
    CHUNK_NONE as REPLY_TYPE_NONE,
    CHUNK_OFFSET_DATA as REPLY_TYPE_OFFSET_DATA,
    CHUNK_OFFSET_HOLE as REPLY_TYPE_OFFSET_HOLE,
    CMD_BLOCK_STATUS, CMD_CACHE, CMD_DISC, CMD_FLAG_DF, CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE, CMD_FLAG_PAYLOAD_LEN, CMD_FLAG_REQ_ONE, CMD_FLUSH,
    CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, EINVAL,
    EXT_REPLY_MAGIC as EXTENDED_REPLY_MAGIC,
    EXT_REQUEST_MAGIC as EXTENDED_REQUEST_MAGIC,
    IHAVEOPT, INFO_EXPORT, NBDMAGIC, OPT_ABORT, OPT_EXPORT_NAME,
    OPT_EXTENDED_HEADERS, OPT_GO, OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT,
    OPT_REPLY_MAGIC, OPT_SET_META_CONTEXT, OPT_STARTTLS,
    OPT_STRUCTURED_REPLY, REP_ACK, REPLY_FLAG_DONE,
    REP_ERR_BIT as REP_ERR,
    REP_ERR_BLOCK_SIZE_REQD, REP_ERR_EXT_HEADER_REQD, REP_ERR_INVALID,
    REP_ERR_PLATFORM, REP_ERR_POLICY, REP_ERR_SHUTDOWN, REP_ERR_TLS_REQD,
    REP_ERR_TOO_BIG, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO,
    REP_META_CONTEXT, REP_SERVER, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
    STRUCTURED_REPLY_MAGIC,
    TFLAG_HAS_FLAGS as FLAG_HAS_FLAGS,
    TFLAG_READ_ONLY as FLAG_READ_ONLY,
    TFLAG_SEND_CACHE as FLAG_SEND_CACHE,
    TFLAG_SEND_FLUSH as FLAG_SEND_FLUSH,
    TFLAG_SEND_FUA as FLAG_SEND_FUA,
    TFLAG_SEND_TRIM as FLAG_SEND_TRIM,
    TFLAG_SEND_WRITE_ZEROES as FLAG_SEND_WRITE_ZEROES,
    fail, log,
)

REP_NAMES = {
    REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO",
    REP_META_CONTEXT: "META_CONTEXT", REP_ERR_UNSUP: "ERR_UNSUP",
    REP_ERR_POLICY: "ERR_POLICY", REP_ERR_INVALID: "ERR_INVALID",
    REP_ERR_PLATFORM: "ERR_PLATFORM", REP_ERR_TLS_REQD: "ERR_TLS_REQD",
    REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_SHUTDOWN: "ERR_SHUTDOWN",
    REP_ERR_BLOCK_SIZE_REQD: "ERR_BLOCK_SIZE_REQD",
    REP_ERR_TOO_BIG: "ERR_TOO_BIG",
    REP_ERR_EXT_HEADER_REQD: "ERR_EXT_HEADER_REQD",
}

CMD_NAMES = {CMD_READ: "READ", CMD_WRITE: "WRITE", CMD_DISC: "DISC",
             CMD_FLUSH: "FLUSH", CMD_TRIM: "TRIM", CMD_CACHE: "CACHE",
             CMD_WRITE_ZEROES: "WRITE_ZEROES",
             CMD_BLOCK_STATUS: "BLOCK_STATUS"}


def rep_name(rtype):
    return REP_NAMES.get(rtype, "0x%x" % rtype)


class Closed(Exception):
    """The server closed the connection."""


class Conn:
    """One connection; each method does one protocol step."""

    def __init__(self, addr, timeout=10.0):
        if addr.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = addr[5:]
        else:
            host, port = addr.rsplit(":", 1)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        self.sock.settimeout(timeout)
        self.sock.connect(target)
        self.extended = False
        self.structured = False

    def close(self):
        self.sock.close()

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def send(self, data):
        self.sock.sendall(data)

    # ---- handshake ----

    def handshake(self, no_zeroes=True):
        """Reads the greeting and sends fixed newstyle client flags."""
        magic, opt_magic, hflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not hflags & 1:
            fail("bad greeting %#x %#x flags %#x" % (magic, opt_magic, hflags))
        self.no_zeroes = no_zeroes and bool(hflags & 2)
        self.send(struct.pack(">I", 1 | (2 if self.no_zeroes else 0)))
        return self

    def send_option(self, opt, data=b"", length=None):
        """Sends an option header (with `length`, default len(data)) and
        data."""
        ln = len(data) if length is None else length
        self.send(struct.pack(">QII", IHAVEOPT, opt, ln) + data)

    def reply(self, opt):
        """Reads one option reply to `opt`: (type, data)."""
        magic, ropt, rtype, ln = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC or ropt != opt:
            fail("bad option reply: magic %#x option %d (sent %d)"
                 % (magic, ropt, opt))
        return rtype, self.recv_exact(ln)

    def replies(self, opt):
        """Reads replies to `opt` up to the final one (ACK or an error):
        returns (final type, [(type, data) of the others])."""
        others = []
        while True:
            rtype, data = self.reply(opt)
            if rtype == REP_ACK or rtype & REP_ERR:
                return rtype, others
            others.append((rtype, data))

    def option(self, opt, data=b""):
        self.send_option(opt, data)
        return self.replies(opt)

    def expect_option(self, opt, data, want, what):
        """Sends an option whose final reply must be `want`."""
        final, others = self.option(opt, data)
        if final != want:
            fail("%s: final reply %s, want %s"
                 % (what, rep_name(final), rep_name(want)))
        log("%s: %s" % (what, rep_name(final)))
        return others

    def expect_closed(self, what, within=10.0):
        """The server must close the connection without sending a byte."""
        self.sock.settimeout(within)
        got = b""
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            fail("%s: the server kept the connection open for %.0f s"
                 % (what, within))
        if got:
            fail("%s: the server sent %d bytes (%s...) before closing, "
                 "want a disconnect without a reply"
                 % (what, len(got), got[:24].hex()))
        log("%s: closed by the server without a reply" % what)

    def structured_reply(self):
        self.expect_option(OPT_STRUCTURED_REPLY, b"", REP_ACK,
                           "STRUCTURED_REPLY")
        self.structured = True

    def extended_headers(self):
        self.expect_option(OPT_EXTENDED_HEADERS, b"", REP_ACK,
                           "EXTENDED_HEADERS")
        self.extended = self.structured = True

    def go(self, name):
        """NBD_OPT_GO; returns (size, transmission flags)."""
        final, others = self.option(OPT_GO, info_data(name))
        if final != REP_ACK:
            fail("GO %r: %s" % (name, rep_name(final)))
        for rtype, data in others:
            if rtype == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                _, size, flags = struct.unpack(">HQH", data)
                return size, flags
        fail("GO %r: no NBD_INFO_EXPORT" % name)

    # ---- transmission ----

    def request(self, cmd, cookie, offset, length, flags=0, payload=b""):
        if self.extended:
            # With extended headers a payload is announced by PAYLOAD_LEN.
            if payload:
                flags |= CMD_FLAG_PAYLOAD_LEN
            hdr = struct.pack(">IHHQQQ", EXTENDED_REQUEST_MAGIC, flags, cmd,
                              cookie, offset, length)
        else:
            hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie,
                              offset, length)
        self.send(hdr + payload)

    def read_reply(self, read_len=0):
        """Reads one reply message.  Returns a dict: magic, cookie, error
        (0 or an NBD error), done (last message of its request), type
        (chunk type, None for a simple reply) and payload (bytes).  A
        simple reply to a successful READ of read_len bytes carries its
        data."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv_exact(12))
            data = self.recv_exact(read_len) if err == 0 and read_len else b""
            return {"magic": magic, "cookie": cookie, "error": err,
                    "done": True, "type": None, "payload": data}
        if magic == STRUCTURED_REPLY_MAGIC:
            flags, rtype, cookie, ln = struct.unpack(">HHQI",
                                                     self.recv_exact(16))
        elif magic == EXTENDED_REPLY_MAGIC:
            flags, rtype, cookie, _, ln = struct.unpack(">HHQQQ",
                                                        self.recv_exact(28))
        else:
            fail("bad reply magic %#x" % magic)
        payload = self.recv_exact(ln)
        err = 0
        if rtype & (1 << 15):
            err = struct.unpack(">I", payload[:4])[0]
        return {"magic": magic, "cookie": cookie, "error": err,
                "done": bool(flags & REPLY_FLAG_DONE), "type": rtype,
                "payload": payload}

    def command(self, cmd, cookie, offset, length, flags=0, payload=b""):
        """Sends one request and reads its whole reply: (error, [chunks])."""
        self.request(cmd, cookie, offset, length, flags, payload)
        chunks = []
        err = 0
        while True:
            r = self.read_reply(length if cmd == CMD_READ else 0)
            if r["cookie"] != cookie:
                fail("reply for cookie %#x, sent %#x" % (r["cookie"], cookie))
            chunks.append(r)
            err = err or r["error"]
            if r["done"]:
                return err, chunks

    def disconnect(self):
        self.request(CMD_DISC, 0xD15C, 0, 0)
        self.expect_closed("NBD_CMD_DISC")


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def info_data(name, infos=()):
    """The data of NBD_OPT_INFO and NBD_OPT_GO."""
    return string(name) + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta_data(name, queries):
    """The data of NBD_OPT_{LIST,SET}_META_CONTEXT."""
    return string(name) + struct.pack(">I", len(queries)) + b"".join(
        string(q) for q in queries)


def meta_contexts(others):
    """[(id, name)] of the NBD_REP_META_CONTEXT replies in `others`."""
    out = []
    for rtype, data in others:
        if rtype != REP_META_CONTEXT:
            fail("reply %s among META_CONTEXT replies" % rep_name(rtype))
        out.append((struct.unpack(">I", data[:4])[0], data[4:].decode()))
    return out


def wait_until(cond, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            fail("timed out waiting for " + what)
        time.sleep(0.02)
