#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/):
# a few small, valid frames per target, laid out by hand from
# doc/proto.md so that they do not depend on the encoders under test.
# Run it from anywhere; it rewrites the seeds it knows and leaves other
# files (crash reproducers added later) alone.
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.dont_write_bytecode = True  # no __pycache__ in tests/lib

import nbdwire as w  # noqa: E402

COOKIE = 0x0102030405060708


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


string32 = w.pack_string
option = w.pack_option
opt_reply = w.pack_option_reply


def handshake():
    t = "fuzz-proto-handshake"
    write(t, "greeting", w.pack_greeting(3))
    write(t, "greeting-oldstyle", struct.pack(">QQ", w.NBDMAGIC, w.CLISERV_MAGIC))
    write(t, "client-flags", struct.pack(">I", 3))
    write(t, "export-name-reply", struct.pack(">QH", 1 << 30, 0x4D))
    write(t, "opt-export-name", option(1, b"disk"))
    write(t, "opt-too-long", struct.pack(">QII", w.IHAVEOPT, 3, 0x10001))
    write(t, "opt-go", option(7, string32(b"disk") + struct.pack(">HHH", 2, 1, 3)))
    write(t, "opt-info-empty", option(6, string32(b"") + struct.pack(">H", 0)))
    queries = string32(b"base:allocation") + string32(b"qemu:")
    write(t, "opt-list-meta",
          option(9, string32(b"disk") + struct.pack(">I", 2) + queries))
    write(t, "opt-set-meta",
          option(10, string32(b"") + struct.pack(">I", 1) +
                 string32(b"base:allocation")))
    write(t, "rep-ack", opt_reply(8, 1))
    write(t, "rep-too-long", struct.pack(">QIII", w.OPT_REPLY_MAGIC, 3, 2, 0x10001))
    write(t, "rep-server", opt_reply(3, 2, string32(b"disk") + b"first disk"))
    write(t, "rep-info-export",
          opt_reply(7, 3, struct.pack(">HQH", 0, 1 << 20, 0x4D)))
    write(t, "rep-info-name", opt_reply(6, 3, struct.pack(">H", 1) + b"disk"))
    write(t, "rep-info-block-size",
          opt_reply(7, 3, struct.pack(">HIII", 3, 1, 4096, 1 << 25)))
    write(t, "rep-meta-context",
          opt_reply(10, 4, struct.pack(">I", 1) + b"base:allocation"))
    write(t, "rep-err-unsup", opt_reply(5, 0x80000001, b"no TLS here"))


def request():
    t = "fuzz-proto-request"
    write(t, "read", w.pack_request(0, COOKIE, 0, 4096))
    write(t, "write-fua", w.pack_request(1, COOKIE, 512, 512, flags=1))
    write(t, "disc", w.pack_request(2, COOKIE, 0, 0))
    write(t, "payload-len-compact", w.pack_request(7, COOKIE, 0, 16, flags=0x20))
    write(t, "ext-trim", w.pack_ext_request(4, COOKIE, 0, 1 << 33))
    write(t, "ext-block-status-payload",
          w.pack_ext_request(7, COOKIE, 0, 16, flags=0x28))


def chunk(rtype, payload, flags=0, extended=False, offset=0):
    if extended:
        return w.pack_ext_chunk(flags, rtype, COOKIE, offset, payload)
    return w.pack_chunk(flags, rtype, COOKIE, payload)


def reply():
    t = "fuzz-proto-reply"
    write(t, "simple-ok", w.pack_simple_reply(0, COOKIE))
    write(t, "simple-eio", w.pack_simple_reply(5, COOKIE))
    write(t, "simple-unknown-error", w.pack_simple_reply(0x1234, COOKIE))
    write(t, "none-done", chunk(0, b"", flags=1))
    write(t, "offset-data", chunk(1, struct.pack(">Q", 4096) + b"data"))
    write(t, "offset-hole", chunk(2, struct.pack(">QI", 0, 65536), flags=1))
    write(t, "block-status",
          chunk(5, struct.pack(">IIIII", 1, 4096, 0, 8192, 3), flags=1))
    write(t, "error", chunk(0x8001, struct.pack(">IH", 5, 2) + b"io"))
    write(t, "error-offset",
          chunk(0x8002, struct.pack(">IH", 5, 0) + struct.pack(">Q", 512)))
    write(t, "ext-block-status",
          chunk(6, struct.pack(">IIQQ", 1, 1, 1 << 33, 3), flags=1,
                extended=True, offset=4096))
    write(t, "ext-offset-data",
          chunk(1, struct.pack(">Q", 0) + b"x", extended=True))
    write(t, "ext-error",
          chunk(0x8001, struct.pack(">IH", 22, 0), flags=1, extended=True))


def client_uri():
    t = "fuzz-client-uri"
    write(t, "tcp", "nbd://localhost/disk")
    write(t, "tcp-port-query", "nbd://example.com:10810/a%20b?tls-type=anon&x-y=1")
    write(t, "ipv6", "nbds://alice@[::1]:10809/?tls-verify-peer=false")
    write(t, "unix", "nbd+unix:///disk?socket=/run/nbd.sock")
    write(t, "unix-tls",
          "nbds+unix://bob@/?socket=%00abstract&tls-type=psk"
          "&tls-psk-file=keys.psk;tls-hostname=srv")


def config():
    t = "fuzz-config"
    write(t, "server",
          "[server]\nlisten = 127.0.0.1:10809\nlisten = unix:/run/n.sock\n"
          "threads = 4\ntls = off\nhandshake-timeout = 2.5\n"
          "max-connections = 10\nlog-level = debug\npidfile = n.pid\n")
    write(t, "exports",
          "; comment\n[export disk0]\npath = disk0.img\nread-only = yes\n"
          "description = the first disk ; inline\ncache = none\ntrim = off\n"
          "allow = 127.0.0.1, ::1/128 unix\ntls-identities = alice\n"
          "\n[export disk1]\npath = /srv/disk1.img\n")


# fuzz-server-conn: a configuration byte (bits 0-1 TLS off/on/require,
# 2 read-only, 3 trim off, 4 max-requests 2, 5 minimal max-payload), a
# byte choosing the write cuts (below 128: one write), then what a
# client sends.
def session(cfg, cuts, *parts):
    return bytes([cfg, cuts]) + b"".join(parts)


def server_conn():
    t = "fuzz-server-conn"
    flags = w.pack_client_flags(w.FLAG_FIXED_NEWSTYLE | w.FLAG_NO_ZEROES)
    meta = string32(b"disk") + struct.pack(">I", 1) + string32(b"base:allocation")
    io = (w.pack_request(w.CMD_READ, 1, 0, 4096) +
          w.pack_request(w.CMD_WRITE, 2, 512, 512) + b"x" * 512 +
          w.pack_request(w.CMD_BLOCK_STATUS, 3, 0, 65536) +
          w.pack_request(w.CMD_FLUSH, 4, 0, 0) +
          w.pack_request(w.CMD_WRITE_ZEROES, 5, 4096, 8192) +
          w.pack_request(w.CMD_TRIM, 6, 0, 4096) +
          w.pack_request(w.CMD_READ, 7, 1 << 20, 1))
    disc = w.pack_request(w.CMD_DISC, 9, 0, 0)
    write(t, "structured",
          session(0, 0, flags, option(w.OPT_STRUCTURED_REPLY),
                  option(w.OPT_SET_META_CONTEXT, meta),
                  w.pack_go(b"disk", infos=(w.INFO_BLOCK_SIZE,)), io, disc))
    ext_io = (w.pack_ext_request(w.CMD_READ, 1, 0, 4096) +
              w.pack_ext_request(w.CMD_WRITE, 2, 0, 100) + b"y" * 100 +
              w.pack_ext_request(w.CMD_BLOCK_STATUS, 3, 0, 1 << 20) +
              w.pack_ext_request(w.CMD_DISC, 9, 0, 0))
    write(t, "extended-cut",
          session(0x80 | 0x10, 0xC5, flags, option(w.OPT_EXTENDED_HEADERS),
                  option(w.OPT_SET_META_CONTEXT, meta), w.pack_go(b""),
                  ext_io))
    write(t, "export-name-simple-ro",
          session(4, 0, w.pack_client_flags(w.FLAG_FIXED_NEWSTYLE),
                  option(w.OPT_LIST), option(w.OPT_INFO, string32(b"disk") +
                                             struct.pack(">H", 0)),
                  option(w.OPT_EXPORT_NAME, b"disk"), io, disc))
    write(t, "tls-require-refused",
          session(2, 0, flags, option(w.OPT_LIST),
                  w.pack_go(b"disk"), option(w.OPT_ABORT)))
    write(t, "tls-off-starttls",
          session(0, 0, flags, option(w.OPT_STARTTLS),
                  option(w.OPT_LIST_META_CONTEXT, meta), option(w.OPT_ABORT)))


def control_request():
    t = "fuzz-control-request"
    for name, line in [
        ("exports", '{"command": "exports"}'),
        ("connections", '{"command": "connections"}'),
        ("status", '{"command": "status"}'),
        ("reload", '{"command": "reload"}'),
        ("add", '{"command": "add", "name": "disk", "settings": '
                '{"path": "/srv/disk.img", "read-only": "yes", '
                '"allow": ["127.0.0.1", "unix"]}}'),
        ("change", '{"command": "change", "name": "disk", "settings": '
                   '{"description": "x"}}'),
        ("remove", '{"command": "remove", "name": "disk"}'),
        ("disconnect", '{"command": "disconnect", "id": 7}'),
        ("bad-id", '{"command": "disconnect", "id": -1}'),
        ("nested", '{"command": "add", "name": "a", "settings": '
                   '{"allow": [["x"]]}}'),
        # A finding: add with no setting was accepted.
        ("empty-settings", '{"command": "add", "name": "", "settings": {}}'),
    ]:
        write(t, name, line)


handshake()
request()
reply()
client_uri()
config()
server_conn()
control_request()
