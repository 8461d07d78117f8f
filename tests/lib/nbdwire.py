# SPDX-License-Identifier: MIT
"""A small NBD client over raw sockets, for tests that must misbehave.

libnbd (python3-libnbd) is the well-behaved client of the test suite.  This
module is for what libnbd will not do on purpose: stop reading replies,
hang up in the middle of a payload or a reply, send garbage, or keep a
thousand connections open from one process.  It speaks fixed newstyle
negotiation with NBD_OPT_EXPORT_NAME or NBD_OPT_GO (optionally after
NBD_OPT_STRUCTURED_REPLY), compact request headers, and simple and
structured replies (doc/proto.md in the NBD repository).

The pack_* and parse_* functions do no I/O, so that the asyncio load test
can share them; Client wraps a blocking socket.
"""

import errno
import os
import socket
import struct
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8

REP_ACK = 1
REP_INFO = 3
REP_ERR_BIT = 1 << 31
INFO_EXPORT = 0

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_CAN_MULTI_CONN = 1 << 8

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1

REPLY_FLAG_DONE = 1 << 0
CHUNK_NONE = 0
CHUNK_OFFSET_DATA = 1
CHUNK_OFFSET_HOLE = 2
CHUNK_ERROR_BIT = 1 << 15

REQUEST_SIZE = 28
SIMPLE_REPLY_SIZE = 16
CHUNK_HEADER_SIZE = 20
GREETING_SIZE = 18

# NBD error values are Linux errno values for the ones the protocol
# defines (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP,
# ESHUTDOWN), so errno.errorcode names them.


def error_name(nbd_error):
    """ENOSPC, EIO, ... for an NBD error value; 0 is "ok"."""
    if nbd_error == 0:
        return "ok"
    return errno.errorcode.get(nbd_error, "error %d" % nbd_error)


class ProtocolError(Exception):
    """The server broke the protocol (or we got out of step)."""


# ---------------------------------------------------------------------
# Encoding and decoding, no I/O


def pack_option(opt, data=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def pack_go(name, option=OPT_GO):
    """NBD_OPT_GO (or NBD_OPT_INFO) data for export `name`, no info
    requests."""
    raw = name.encode()
    return pack_option(option, struct.pack(">I", len(raw)) + raw
                       + struct.pack(">H", 0))


def pack_request(cmd, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset,
                       length)


def parse_greeting(buf):
    """Returns the handshake flags of an 18-byte newstyle greeting."""
    magic, opt_magic, hflags = struct.unpack(">QQH", buf)
    if magic != NBDMAGIC or opt_magic != IHAVEOPT:
        raise ProtocolError("not a newstyle greeting: %#x %#x"
                            % (magic, opt_magic))
    if not hflags & FLAG_FIXED_NEWSTYLE:
        raise ProtocolError("server lacks FIXED_NEWSTYLE")
    return hflags


def pack_client_flags(hflags):
    return struct.pack(">I", FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES))


def parse_option_reply_header(buf):
    """(option, reply type, data length) of a 20-byte option reply."""
    magic, opt, rtype, length = struct.unpack(">QIII", buf)
    if magic != OPT_REPLY_MAGIC:
        raise ProtocolError("bad option reply magic %#x" % magic)
    return opt, rtype, length


def parse_simple_reply(buf):
    """(error, cookie) of a 16-byte simple reply."""
    magic, err, cookie = struct.unpack(">IIQ", buf)
    if magic != SIMPLE_REPLY_MAGIC:
        raise ProtocolError("bad simple reply magic %#x" % magic)
    return err, cookie


def parse_chunk_header(buf):
    """(flags, type, cookie, length) of a 20-byte structured chunk."""
    magic, flags, ctype, cookie, length = struct.unpack(">IHHQI", buf)
    if magic != STRUCTURED_REPLY_MAGIC:
        raise ProtocolError("bad structured reply magic %#x" % magic)
    return flags, ctype, cookie, length


# ---------------------------------------------------------------------
# Blocking client


def connect(addr, timeout=30.0):
    """A connected socket to "unix:PATH" or "HOST:PORT"."""
    if addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr[5:]
    else:
        host, port = addr.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (host.strip("[]"), int(port))
    s.settimeout(timeout)
    s.connect(target)
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("end of file after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


class Reply:
    """One command's outcome: error (an NBD error value, 0 for success)
    and, for READ, the data."""

    def __init__(self, cookie, error, data=None):
        self.cookie = cookie
        self.error = error
        self.data = data

    def __repr__(self):
        return "Reply(cookie=%d, %s)" % (self.cookie, error_name(self.error))


class Client:
    """One NBD connection over a blocking socket.

    Requests may be pipelined: send() returns at once, and reply() reads
    the next reply, whichever cookie it carries.  Cookies are allocated
    here; the length of each outstanding READ is remembered because a
    simple reply does not carry it.
    """

    def __init__(self, addr, name="", structured=False, go=True,
                 timeout=30.0):
        self.sock = connect(addr, timeout)
        self.structured = False
        self.next_cookie = 1
        self.pending = {}  # cookie -> (cmd, offset, length)
        hflags = parse_greeting(recv_exact(self.sock, GREETING_SIZE))
        self.sock.sendall(pack_client_flags(hflags))
        if structured:
            self._option(OPT_STRUCTURED_REPLY)
            self.structured = True
        if go:
            self._go(name)
        else:
            self.sock.sendall(pack_option(OPT_EXPORT_NAME, name.encode()))
            self.size, self.tflags = struct.unpack(
                ">QH", recv_exact(self.sock, 10))
            if not hflags & FLAG_NO_ZEROES:
                recv_exact(self.sock, 124)

    def _option(self, opt, data=b""):
        self.sock.sendall(pack_option(opt, data))
        ropt, rtype, length = parse_option_reply_header(
            recv_exact(self.sock, 20))
        body = recv_exact(self.sock, length)
        if ropt != opt or rtype != REP_ACK:
            raise ProtocolError("option %d: reply %#x to option %d %r"
                                % (opt, rtype, ropt, body[:80]))

    def _go(self, name):
        self.sock.sendall(pack_go(name))
        self.size = None
        while True:
            ropt, rtype, length = parse_option_reply_header(
                recv_exact(self.sock, 20))
            body = recv_exact(self.sock, length)
            if ropt != OPT_GO:
                raise ProtocolError("reply to option %d after NBD_OPT_GO"
                                    % ropt)
            if rtype == REP_ACK:
                break
            if rtype & REP_ERR_BIT:
                raise ProtocolError("NBD_OPT_GO refused (%#x): %r"
                                    % (rtype, body[:200]))
            if rtype == REP_INFO and len(body) >= 12:
                (itype,) = struct.unpack(">H", body[:2])
                if itype == INFO_EXPORT:
                    self.size, self.tflags = struct.unpack(">QH", body[2:12])
        if self.size is None:
            raise ProtocolError("NBD_OPT_GO without NBD_INFO_EXPORT")

    def fileno(self):
        return self.sock.fileno()

    def send(self, cmd, offset=0, length=0, payload=b"", flags=0):
        """Sends one request; returns its cookie."""
        cookie = self.next_cookie
        self.next_cookie += 1
        if cmd == CMD_WRITE:
            length = len(payload)
        if cmd != CMD_DISC:
            self.pending[cookie] = (cmd, offset, length)
        self.sock.sendall(pack_request(cmd, cookie, offset, length, flags)
                          + payload)
        return cookie

    def reply(self):
        """Reads the next complete reply and returns a Reply."""
        if self.structured:
            return self._structured_reply()
        err, cookie = parse_simple_reply(
            recv_exact(self.sock, SIMPLE_REPLY_SIZE))
        if cookie not in self.pending:
            raise ProtocolError("reply with unknown cookie %d" % cookie)
        cmd, _, length = self.pending.pop(cookie)
        data = None
        if cmd == CMD_READ and err == 0:
            data = recv_exact(self.sock, length)
        return Reply(cookie, err, data)

    def _structured_reply(self):
        data = None
        err = 0
        while True:
            flags, ctype, cookie, length = parse_chunk_header(
                recv_exact(self.sock, CHUNK_HEADER_SIZE))
            if cookie not in self.pending:
                raise ProtocolError("chunk with unknown cookie %d" % cookie)
            cmd, offset, rlen = self.pending[cookie]
            body = recv_exact(self.sock, length)
            if cmd == CMD_READ and data is None:
                data = bytearray(rlen)
            if ctype == CHUNK_OFFSET_DATA:
                (off,) = struct.unpack(">Q", body[:8])
                data[off - offset:off - offset + length - 8] = body[8:]
            elif ctype == CHUNK_OFFSET_HOLE:
                off, hlen = struct.unpack(">QI", body)
                data[off - offset:off - offset + hlen] = bytes(hlen)
            elif ctype & CHUNK_ERROR_BIT:
                (err,) = struct.unpack(">I", body[:4])
            elif ctype != CHUNK_NONE:
                raise ProtocolError("unexpected chunk type %d" % ctype)
            if flags & REPLY_FLAG_DONE:
                del self.pending[cookie]
                if err != 0:
                    data = None
                return Reply(cookie, err, bytes(data) if data else data)

    def call(self, cmd, offset=0, length=0, payload=b"", flags=0):
        """send() then reply(); only when nothing else is in flight."""
        cookie = self.send(cmd, offset, length, payload, flags)
        r = self.reply()
        if r.cookie != cookie:
            raise ProtocolError("reply to cookie %d, expected %d"
                                % (r.cookie, cookie))
        return r

    def read(self, offset, length):
        return self.call(CMD_READ, offset, length)

    def write(self, offset, data, fua=False):
        return self.call(CMD_WRITE, offset, payload=data,
                         flags=CMD_FLAG_FUA if fua else 0)

    def flush(self):
        return self.call(CMD_FLUSH)

    def disconnect(self):
        """NBD_CMD_DISC, then close."""
        try:
            self.send(CMD_DISC)
        except OSError:
            pass
        self.close()

    def close(self):
        self.sock.close()


def wait_eof(s, limit):
    """Reads and drops until end of file; True if it came within limit
    seconds (or the connection was reset), False otherwise."""
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            s.settimeout(left)
            if not s.recv(1 << 16):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def set_abortive_close(s):
    """Makes close() send a TCP RST instead of a FIN (SO_LINGER 0): the
    client vanishes the way a crashed or unplugged host does."""
    if s.family != socket.AF_UNIX:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))


# ---------------------------------------------------------------------
# The server process, from /proc


def proc_status_kib(pid, field):
    """A "kB" field of /proc/PID/status (VmRSS, VmHWM, ...) in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def proc_fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
