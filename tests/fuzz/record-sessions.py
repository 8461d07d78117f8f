#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Records real NBD sessions as seeds of the connection fuzz targets:
# starts build/nbd-serverd with a 1 MiB memory export "disk" (the one
# fuzz-server-conn serves) on a unix socket, puts a recording proxy in
# front of it, and runs nbdinfo, qemu-io, nbdcopy and nbdc through the
# proxy.  What each client sent becomes
# tests/fuzz/corpus/fuzz-server-conn/rec-NAME (after the configuration
# and cut bytes, see make-seeds.py), what the server answered nbdc
# becomes tests/fuzz/corpus/fuzz-client-conn/rec-NAME (after the options
# and commands bytes, see fuzz-client-conn.c).  A client that is not
# installed is skipped with a message.  Run from the top of the tree
# after `make all`; the seeds are committed, so this is run by hand.
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.join(HERE, "..", "..")


def pump(src, dst, log):
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        log.append(data)
        try:
            dst.sendall(data)
        except OSError:
            return


class Proxy:
    """Accepts one client at a time on `path`, forwarding to `upstream`;
    keeps the last session's two byte streams."""

    def __init__(self, path, upstream):
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sessions = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            up, down = [], []
            self.sessions.append((up, down))
            threading.Thread(target=self.session, args=(c, up, down),
                             daemon=True).start()

    def session(self, c, up, down):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.upstream)
        t1 = threading.Thread(target=pump, args=(c, s, up))
        t2 = threading.Thread(target=pump, args=(s, c, down))
        t1.start()
        t2.start()
        t1.join()
        t2.join()
        c.close()
        s.close()


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    tmp = tempfile.mkdtemp(prefix="nbdsrv-record.")
    srv_sock = os.path.join(tmp, "srv.sock")
    proxy_sock = os.path.join(tmp, "proxy.sock")
    server = subprocess.Popen(
        [os.path.join(TOP, "build", "nbd-serverd"), "-f", "-t", "1",
         "-l", "unix:" + srv_sock, "-e", "disk=memory:1M"])
    for _ in range(100):
        if os.path.exists(srv_sock):
            break
        time.sleep(0.05)
    proxy = Proxy(proxy_sock, srv_sock)
    uri = "nbd+unix:///disk?socket=" + proxy_sock
    img = os.path.join(tmp, "copy.img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    nbdc = os.path.join(TOP, "build", "nbdc")
    # name, server-conn config byte (0: TLS off, writable), command,
    # fuzz-client-conn options and commands bytes (or None: not recorded)
    runs = [
        ("nbdinfo", 0, ["nbdinfo", uri], None),
        ("nbdinfo-map", 0, ["nbdinfo", "--map", uri], None),
        ("nbdinfo-list", 0, ["nbdinfo", "--list", uri], None),
        ("qemu-io", 0, ["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k",
                        "-c", "read -P 0x55 0 4k", "-c", "discard 0 4k",
                        "-c", "write -z 8k 8k", "-c", "flush", uri], None),
        ("nbdcopy-out", 0, ["nbdcopy", uri, img], None),
        ("nbdcopy-in", 0, ["nbdcopy", img, uri], None),
        ("nbdc-info", 0, [nbdc, "info", "--map", uri], (0, 0x41)),
        ("nbdc-copy", 0, [nbdc, "copy", "--connections", "1", uri, img],
         (0, 0x01)),
        ("nbdc-info-list", 0, [nbdc, "info", "--list", uri], (0, 0)),
    ]
    for name, cfg, cmd, client in runs:
        if shutil.which(cmd[0]) is None:
            print("record-sessions: %s not installed, skipped" % cmd[0])
            continue
        before = len(proxy.sessions)
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=60)
        time.sleep(0.5)
        new = proxy.sessions[before:]
        print("record-sessions: %s: exit %d, %d connections"
              % (name, r.returncode, len(new)))
        for i, (up, down) in enumerate(new):
            suffix = "" if len(new) == 1 else "-%d" % i
            write("fuzz-server-conn", "rec-" + name + suffix,
                  bytes([cfg, 0]) + b"".join(up))
            if client is not None:
                write("fuzz-client-conn", "rec-" + name + suffix,
                      bytes(client) + b"".join(down))
    server.terminate()
    server.wait()
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
