# SPDX-License-Identifier: MIT
"""A small NBD client over raw sockets, for tests that must misbehave.

libnbd (python3-libnbd) is the well-behaved client of the test suite.  This
module is for what libnbd will not do on purpose: stop reading replies,
hang up in the middle of a payload or a reply, send garbage, or keep a
thousand connections open from one process, and for tests that check
every byte on the wire.  It speaks fixed newstyle negotiation with
NBD_OPT_EXPORT_NAME or NBD_OPT_GO (optionally after
NBD_OPT_STRUCTURED_REPLY, NBD_OPT_EXTENDED_HEADERS or NBD_OPT_STARTTLS,
the last with Python's ssl module), compact and extended request headers,
and simple, structured and extended replies (doc/proto.md in the NBD
repository).

The pack_* and parse_* functions do no I/O, so that the asyncio load test
and the fuzzing seeds (tests/fuzz/make-seeds.py) can share them; the
functions that take a socket do blocking I/O on it, and Client wraps a
whole connection.  A server that breaks the protocol raises
ProtocolError, one that hangs up early EOFError; log() and fail() are for
the test's own messages and verdicts.  The tests find the module through
PYTHONPATH, which tests/interop/lib.sh sets.
"""

import errno
import os
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
CLISERV_MAGIC = 0x00420281861253  # oldstyle negotiation
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_BIT = 1 << 31
REP_ERR_UNSUP = REP_ERR_BIT | 1
REP_ERR_POLICY = REP_ERR_BIT | 2
REP_ERR_INVALID = REP_ERR_BIT | 3
REP_ERR_PLATFORM = REP_ERR_BIT | 4
REP_ERR_TLS_REQD = REP_ERR_BIT | 5
REP_ERR_UNKNOWN = REP_ERR_BIT | 6
REP_ERR_SHUTDOWN = REP_ERR_BIT | 7
REP_ERR_BLOCK_SIZE_REQD = REP_ERR_BIT | 8
REP_ERR_TOO_BIG = REP_ERR_BIT | 9
REP_ERR_EXT_HEADER_REQD = REP_ERR_BIT | 10
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_CAN_MULTI_CONN = 1 << 8
TFLAG_SEND_CACHE = 1 << 10

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_PAYLOAD_LEN = 1 << 5

REPLY_FLAG_DONE = 1 << 0
CHUNK_NONE = 0
CHUNK_OFFSET_DATA = 1
CHUNK_OFFSET_HOLE = 2
CHUNK_BLOCK_STATUS = 5
CHUNK_BLOCK_STATUS_EXT = 6
CHUNK_ERROR_BIT = 1 << 15
CHUNK_ERROR = CHUNK_ERROR_BIT | 1
CHUNK_ERROR_OFFSET = CHUNK_ERROR_BIT | 2

GREETING_SIZE = 18
OPTION_REPLY_SIZE = 20
EXPORT_NAME_REPLY_SIZE = 10   # then 124 zero bytes without NO_ZEROES
EXPORT_NAME_ZEROES = 124
REQUEST_SIZE = 28
EXT_REQUEST_SIZE = 32
SIMPLE_REPLY_SIZE = 16
CHUNK_HEADER_SIZE = 20
EXT_REPLY_SIZE = 32

# NBD error values are Linux errno values for the ones the protocol
# defines, so errno.errorcode names them.
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108


def error_name(nbd_error):
    """ENOSPC, EIO, ... for an NBD error value; 0 is "ok"."""
    if nbd_error == 0:
        return "ok"
    return errno.errorcode.get(nbd_error, "error %d" % nbd_error)


class ProtocolError(Exception):
    """The server broke the protocol (or we got out of step)."""


def log(msg):
    """A line of the test's progress, indented under the script's steps."""
    print("  " + msg, flush=True)


def fail(msg):
    """The test failed: says why on stderr and exits with status 1."""
    print("  FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------
# Encoding and decoding, no I/O: what a client sends and parses, then what
# a server sends (for the fuzzing seeds)


def pack_string(raw):
    """A string with its 32-bit length in front, as in option data."""
    return struct.pack(">I", len(raw)) + raw


def pack_option(opt, data=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def pack_go(name, option=OPT_GO, infos=()):
    """NBD_OPT_GO (or NBD_OPT_INFO) for export `name` (str or bytes),
    with the NBD_INFO_* requests `infos`."""
    raw = name.encode() if isinstance(name, str) else name
    return pack_option(option, pack_string(raw)
                       + struct.pack(">H", len(infos))
                       + b"".join(struct.pack(">H", i) for i in infos))


def pack_request(cmd, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset,
                       length)


def pack_ext_request(cmd, cookie, offset, length, flags=0):
    """An extended request header (after NBD_OPT_EXTENDED_HEADERS)."""
    return struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, flags, cmd, cookie,
                       offset, length)


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


def parse_ext_reply_header(buf):
    """(flags, type, cookie, offset, length) of a 32-byte extended
    reply."""
    magic, flags, ctype, cookie, offset, length = struct.unpack(">IHHQQQ",
                                                                buf)
    if magic != EXT_REPLY_MAGIC:
        raise ProtocolError("bad extended reply magic %#x" % magic)
    return flags, ctype, cookie, offset, length


def pack_greeting(hflags):
    return struct.pack(">QQH", NBDMAGIC, IHAVEOPT, hflags)


def pack_option_reply(opt, rtype, data=b""):
    return struct.pack(">QIII", OPT_REPLY_MAGIC, opt, rtype, len(data)) + data


def pack_simple_reply(error, cookie):
    return struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, cookie)


def pack_chunk(flags, ctype, cookie, payload=b""):
    """A structured reply chunk: header and payload."""
    return struct.pack(">IHHQI", STRUCTURED_REPLY_MAGIC, flags, ctype, cookie,
                       len(payload)) + payload


def pack_ext_chunk(flags, ctype, cookie, offset, payload=b""):
    """An extended reply chunk: header and payload."""
    return struct.pack(">IHHQQQ", EXT_REPLY_MAGIC, flags, ctype, cookie,
                       offset, len(payload)) + payload


# ---------------------------------------------------------------------
# Blocking I/O on a socket


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


def send_quietly(s, data):
    """Sends, where the server may hang up half way (and should)."""
    try:
        s.sendall(data)
    except OSError:
        pass


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


def expect_eof(s, what, limit=10.0):
    """The server must close the connection within limit seconds (what it
    sends before is dropped); fails otherwise.  Closes s."""
    t0 = time.monotonic()
    if not wait_eof(s, limit):
        fail("%s: the server kept the connection open for %.0f s"
             % (what, limit))
    s.close()
    log("%s: connection closed by the server after %.1f s"
        % (what, time.monotonic() - t0))


def set_abortive_close(s):
    """Makes close() send a TCP RST instead of a FIN (SO_LINGER 0): the
    client vanishes the way a crashed or unplugged host does."""
    if s.family != socket.AF_UNIX:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))


# ---------------------------------------------------------------------
# Negotiation, one step at a time


def greeting(s):
    """Reads the greeting; returns its handshake flags."""
    return parse_greeting(recv_exact(s, GREETING_SIZE))


def send_client_flags(s, hflags):
    """FIXED_NEWSTYLE, and NO_ZEROES if the server offers it."""
    s.sendall(pack_client_flags(hflags))


def handshake(s):
    """Greeting and client flags; returns the server's handshake flags."""
    hflags = greeting(s)
    send_client_flags(s, hflags)
    return hflags


def send_option(s, opt, data=b""):
    s.sendall(pack_option(opt, data))


def option_reply(s, opt=None):
    """Reads one option reply; returns (reply type, data).  With opt, the
    reply must be to that option."""
    ropt, rtype, length = parse_option_reply_header(
        recv_exact(s, OPTION_REPLY_SIZE))
    data = recv_exact(s, length)
    if opt is not None and ropt != opt:
        raise ProtocolError("reply to option %d, sent %d" % (ropt, opt))
    return rtype, data


def option_replies(s, opt):
    """The replies to option opt up to the final one (NBD_REP_ACK or an
    error), as a list of (reply type, data)."""
    replies = []
    while True:
        rtype, data = option_reply(s, opt)
        replies.append((rtype, data))
        if rtype == REP_ACK or rtype & REP_ERR_BIT:
            return replies


def option_ack(s, opt, data=b""):
    """Sends option opt, which must be answered by NBD_REP_ACK alone."""
    send_option(s, opt, data)
    ropt, rtype, length = parse_option_reply_header(
        recv_exact(s, OPTION_REPLY_SIZE))
    body = recv_exact(s, length)
    if ropt != opt or rtype != REP_ACK:
        raise ProtocolError("option %d: reply %#x to option %d %r"
                            % (opt, rtype, ropt, body[:80]))


def opt_export_name(s, name, hflags):
    """NBD_OPT_EXPORT_NAME for `name` (str or bytes): returns the export's
    (size, transmission flags), after reading the 124 zero bytes if the
    handshake flags hflags lack NO_ZEROES."""
    send_option(s, OPT_EXPORT_NAME,
                name.encode() if isinstance(name, str) else name)
    size, tflags = struct.unpack(">QH", recv_exact(s, EXPORT_NAME_REPLY_SIZE))
    if not hflags & FLAG_NO_ZEROES:
        recv_exact(s, EXPORT_NAME_ZEROES)
    return size, tflags


def export_name(s, name):
    """The whole negotiation, with NBD_OPT_EXPORT_NAME: returns (size,
    transmission flags)."""
    return opt_export_name(s, name, handshake(s))


def opt_go(s, name, infos=(), option=OPT_GO):
    """NBD_OPT_GO (or NBD_OPT_INFO) for export `name` with the NBD_INFO_*
    requests `infos`: returns the replies, as option_replies; the final
    one must be NBD_REP_ACK."""
    s.sendall(pack_go(name, option, infos))
    replies = option_replies(s, option)
    rtype, body = replies[-1]
    if rtype != REP_ACK:
        raise ProtocolError("option %d refused (%#x): %r"
                            % (option, rtype, body[:200]))
    return replies


def starttls(s, cafile, server_hostname="127.0.0.1"):
    """NBD_OPT_STARTTLS, then a TLS handshake that verifies the server
    against the CA certificate in cafile; returns the TLS socket."""
    import ssl  # only here: the other tests need not pay for it

    option_ack(s, OPT_STARTTLS)
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx.wrap_socket(s, server_hostname=server_hostname)


# ---------------------------------------------------------------------
# Transmission, one step at a time


def send_request(s, cmd, cookie, offset, length, payload=b"", flags=0):
    """A compact request header and its payload."""
    s.sendall(pack_request(cmd, cookie, offset, length, flags) + payload)


def simple_reply(s, cookie=None):
    """Reads a simple reply (not its data); returns its error.  With
    cookie, the reply must be to that request."""
    err, rcookie = parse_simple_reply(recv_exact(s, SIMPLE_REPLY_SIZE))
    if cookie is not None and rcookie != cookie:
        raise ProtocolError("simple reply to cookie %#x, sent %#x"
                            % (rcookie, cookie))
    return err


# ---------------------------------------------------------------------
# A whole connection


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
        hflags = handshake(self.sock)
        if structured:
            option_ack(self.sock, OPT_STRUCTURED_REPLY)
            self.structured = True
        if go:
            self._go(name)
        else:
            self.size, self.tflags = opt_export_name(self.sock, name, hflags)

    def _go(self, name):
        self.size = None
        for rtype, body in opt_go(self.sock, name):
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
