#!/usr/bin/env python3
"""Compare nbd-serverd with nbdkit (file plugin) and qemu-nbd, driven by fio's nbd
engine and by `nbdc bench`, plain, over TLS with X.509 and over TLS with PSK.

Usage: bench/bench-servers.py [BUILD_DIR]     (normally through bench-servers.sh)

Everything runs on 127.0.0.1.  For every run, every workload, every server and
every client (server order rotated from run to run so that drift hits all of
them alike) the script starts the server on a fresh port, waits until the port
accepts connections, runs one client job against it and stops it with SIGTERM.
Server CPU time is read from /proc/PID/stat (utime + stime, all threads) at the
end of the ramp and again at the end of the measured window, and is divided by
the requests (µs per request) and by the bytes (s per GiB) the client moved in
that window.  fio: the ramp is fio's ramp_time, counted from the first
connection the server accepts, and the window ends when fio exits.  nbdc bench
runs ramp + runtime seconds and prints a line per second; the window runs from
its line for second `ramp` to its last one, and the requests are the sum of
the lines in between.

Environment (all optional):
  BENCH_RUNS=3             repetitions of the whole matrix
  BENCH_RUNTIME=5          measured seconds per client run
  BENCH_RAMP=1             seconds before the measured window
  BENCH_SIZE_MIB=1024      image size in MiB (created in /dev/shm)
  BENCH_SERVERS=nbd-serverd,nbdkit,qemu-nbd[,nbdkit-trixie,qsd-trixie][,...-tls,...-psk,...-unix]
  BENCH_TLS=1              1: also the -tls (X.509) and -psk (PSK) servers, TLS
                           required; 0: not; only: nothing else
  BENCH_UNIX=1             1: also every server on a unix socket (the -unix
                           rows) for the 1 MiB workloads; all: for every
                           workload; 0: not
  BENCH_CLIENTS=fio,nbdc   the load generators (fio's nbd engine, nbdc bench)
  BENCH_WORKLOADS=...      comma list of workload names (default: all)
  BENCH_THREADS=$(nproc)   nbd-serverd --threads
  BENCH_NBDKIT_THREADS=16  nbdkit --threads (16 is nbdkit's own default)
  BENCH_QEMU_AIO=io_uring  qemu-nbd --aio
  BENCH_QEMU_CACHE=writeback  qemu-nbd --cache
  BENCH_SERVERD_ARGS=...   extra nbd-serverd arguments (shlex syntax), e.g.
                           "--tls-priority NORMAL" to measure another priority
  BENCH_REQUIRE_ALL=0      1: fail instead of skipping a server that is missing
  BENCH_REPORT=FILE        also write the Markdown report to FILE
  BENCH_JSON=FILE          also write every single measurement as JSON
  BENCH_OUT=DIR            where every run leaves bench-STAMP.md (the report),
                           .json (every measurement) and .png (the chart, by
                           bench-chart.py with gnuplot); default bench/results,
                           which git ignores
  BENCH_BASELINE=FILE      a BENCH_JSON file of an earlier run: adds a column
                           "vs baseline" (median / that run's median of the same
                           workload, server and client), e.g. to compare builds
  BENCH_OTHER_BUILD=DIR    also run DIR/nbd-serverd as "nbd-serverd.b" (and its
                           -tls, -psk rows), interleaved with everything else and
                           driven by the same clients: on a machine whose load
                           drifts, the fair way to compare two builds; its rows
                           get "this build / .b" (this build's median / DIR's)
  BENCH_OTHER_CLIENT=1     nbdc bench drives the nbd-serverd.b rows with DIR/nbdc,
                           so that they stand for DIR's client and server together
                           (a before/after of both); default: this build's nbdc

TLS rows: each server requires TLS; every one runs with its own defaults
(priority strings included), with material made for this run.  "-tls": X.509,
ECDSA certificates made by certtool (nbd-serverd --tls=require --tls-certs DIR;
nbdkit --tls=require --tls-certificates=DIR; qemu-nbd --object
tls-creds-x509,...,verify-peer=off --tls-creds).  "-psk": a psktool key
(nbd-serverd --tls-psk FILE; nbdkit --tls-psk=FILE; qemu-nbd --object
tls-creds-psk,dir=DIR).  fio's nbd engine hands the URI to libnbd's
nbd_connect_uri without nbd_set_uri_allow_local_file, so a tls-certificates= or
tls-psk-file= query is refused ("local file access is not allowed"): for X.509
fio runs with HOME pointing at a directory whose .pki/libnbd holds the CA and
client certificate, libnbd's default X.509 location; libnbd has no default PSK
file, so fio does not run the -psk rows.  nbdc takes both from the URI.  "vs
best peer" compares with the best of the peers over the same transport
(plain, -tls or -psk) with the same client.

Peers from the trixie chroot: when bench-servers.sh finds the cached chroot of
tests/chroot-trixie.sh valid (BENCH_CHROOT=0 turns this off), it runs this
script through `chroot-trixie.sh exec`, which mounts the chroot (and /dev/shm
and a shared TMPDIR at the same paths) and sets NBDSRV_CHROOT.  Then
"nbdkit-trixie" (nbdkit 1.42, file plugin, as the host's nbdkit) and
"qsd-trixie" (qemu-storage-daemon 10: file driver with aio=io_uring and
cache.direct=off, raw on top, the NBD export in its own iothread) run in the
chroot beside the host's servers, and count among the peers.
"""

import ctypes
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 1 << 30
MIB = 1 << 20
# The trixie chroot (tests/chroot-trixie.sh exec sets both variables when
# bench-servers.sh runs this script through it): today's nbdkit and
# qemu-storage-daemon join the peers.
CHROOT = (os.environ.get("NBDSRV_CHROOT")
          if os.environ.get("NBDSRV_CHROOT_SHARED") else None)
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_PEERS = ("nbdkit", "qemu-nbd")
CHROOT_PEERS = ("nbdkit-trixie", "qsd-trixie") if CHROOT else ()
PEERS = HOST_PEERS + CHROOT_PEERS
PLAIN_SERVERS = ("nbd-serverd",) + PEERS
TLS_KINDS = ("tls", "psk")  # X.509, PSK
TLS_SERVERS = tuple(f"{s}-{k}" for k in TLS_KINDS for s in PLAIN_SERVERS)
UNIX_SERVERS = tuple(f"{s}-unix" for s in PLAIN_SERVERS)  # plain NBD on a unix socket
ALL_SERVERS = PLAIN_SERVERS + TLS_SERVERS + UNIX_SERVERS
CLIENTS = ("fio", "nbdc")
PSK_USER = "bench"


def kind_of(name):
    """'plain', 'tls' (X.509), 'psk' or 'unix'."""
    for k in TLS_KINDS + ("unix",):
        if name.endswith(f"-{k}"):
            return k
    return "plain"


def base_of(name):
    k = kind_of(name)
    return name if k == "plain" else name[:-len(k) - 1]


OTHER = "nbd-serverd.b"  # BENCH_OTHER_BUILD's server


def peers_of(name):
    """The servers a row is compared with: the peers over the same transport."""
    k = kind_of(name)
    return PEERS if k == "plain" else tuple(f"{p}-{k}" for p in PEERS)

# name, title, fio rw, block size, iodepth, numjobs (= connections), metric
WORKLOADS = [
    ("randread-4k-1c", "4 KiB random read, QD 32, 1 connection",
     "randread", "4k", 32, 1, "iops"),
    ("randwrite-4k-1c", "4 KiB random write, QD 32, 1 connection",
     "randwrite", "4k", 32, 1, "iops"),
    ("randread-4k-2c", "4 KiB random read, QD 32 per connection, 2 connections",
     "randread", "4k", 32, 2, "iops"),
    ("randwrite-4k-2c", "4 KiB random write, QD 32 per connection, 2 connections",
     "randwrite", "4k", 32, 2, "iops"),
    ("seqread-1m", "1 MiB sequential read, QD 8, 1 connection",
     "read", "1m", 8, 1, "mibs"),
    ("seqwrite-1m", "1 MiB sequential write, QD 8, 1 connection",
     "write", "1m", 8, 1, "mibs"),
]


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def env_int(name, default, minimum):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        val = int(raw)
    except ValueError:
        raise BenchError(f"{name}={raw!r} is not an integer") from None
    if val < minimum:
        raise BenchError(f"{name}={val} is below the minimum {minimum}")
    return val


def env_list(name, default, allowed):
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return list(default)
    items = [x.strip() for x in raw.split(",") if x.strip()]
    for x in items:
        if x not in allowed:
            raise BenchError(f"{name}: unknown entry {x!r} (known: {', '.join(allowed)})")
    return items


# ---------------------------------------------------------------- /proc helpers

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread, live or exited)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        data = f.read()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field 14 (utime) is rest[11], 15 (stime) rest[12].
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def connected_to(path):
    """Number of connected unix stream sockets bound to PATH: the server's ends
    (an accepted socket carries its listener's name; a client's is unnamed)."""
    n = 0
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[5] == "03" and fields[7] == path:
                n += 1
    return n


def established_to(port):
    """Number of ESTABLISHED IPv4 TCP sockets whose local port is PORT (server side)."""
    n = 0
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Servers get SIGTERM if this script dies, even by SIGKILL.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- servers

class Server:
    """One server process on one port."""

    live = []  # every started, not yet reaped Server: cleaned up on exit

    def __init__(self, name, argv, logpath):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.port = None
        self.sock = None  # the socket's path for a -unix server
        self.proc = None

    def start(self, port):
        """port: a free TCP port, or for a -unix server the number that names
        its socket (in the directory of its log)."""
        self.port = port
        if kind_of(self.name) == "unix":
            self.sock = os.path.join(os.path.dirname(self.logpath), f"sock-{port}")
        argv = [a.replace("{PORT}", str(port)).replace("{SOCK}", self.sock or "")
                for a in self.argv]
        logf = open(self.logpath, "ab")
        logf.write(f"\n=== {shlex.join(argv)}\n".encode())
        logf.flush()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        finally:
            logf.close()
        Server.live.append(self)
        self._wait_listening(timeout=15.0)

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive("while starting")
            try:
                if self.sock:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.settimeout(1.0)
                        s.connect(self.sock)
                        return
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not accept connections on "
                                 f"{self.address()} within {timeout:.0f} s\n"
                                 f"--- {self.logpath}\n{tail(self.logpath)}")
            time.sleep(0.02)

    def address(self):
        return self.sock or f"127.0.0.1:{self.port}"

    def connections(self):
        """Clients connected now, counted at the server's end."""
        return connected_to(self.sock) if self.sock else established_to(self.port)

    def check_alive(self, when):
        rc = self.proc.poll()
        if rc is not None:
            Server.live.remove(self)
            raise BenchError(f"{self.name} (pid {self.proc.pid}) died {when}: "
                             f"exit status {rc}\n--- {self.logpath}\n{tail(self.logpath)}")

    def stop(self):
        """SIGTERM; returns a warning string or None."""
        if self.proc is None or self.proc.poll() is not None:
            if self in Server.live:
                Server.live.remove(self)
            return None
        warn = None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
            if rc not in (0, -signal.SIGTERM):
                warn = f"{self.name} exited with status {rc} after SIGTERM"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            warn = f"{self.name} ignored SIGTERM for 10 s and was killed"
        Server.live.remove(self)
        return warn

    @classmethod
    def kill_all(cls):
        for s in list(cls.live):
            try:
                s.proc.kill()
                s.proc.wait(timeout=5)
            except Exception:  # pylint: disable=broad-except
                pass
        cls.live.clear()


def in_chroot(argv):
    """argv run in the trixie chroot; chroot and env exec, so the pid is the
    program's own (its CPU time is what /proc/PID/stat shows)."""
    return (["chroot", CHROOT, "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}",
             "HOME=/root", "LANG=C.UTF-8"] + argv)


def qsd_argv(image):
    """qemu-storage-daemon serving image as "bench": io_uring, no O_DIRECT
    (as qemu-nbd's --cache=writeback here), the export in its own iothread."""
    return ["qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image},"
                          "aio=io_uring,cache.direct=off",
            "--blockdev", "driver=raw,node-name=disk0,file=file0",
            "--object", "iothread,id=iothread0",
            "--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port={PORT}",
            "--export", "type=nbd,id=exp0,node-name=disk0,name=bench,"
                        "writable=on,iothread=iothread0"]


def server_specs(build_dir, image, cfg):
    """name -> (argv template with {PORT}, export name) for every available server."""
    specs, missing = {}, {}
    serverd = os.path.join(build_dir, "nbd-serverd")
    if os.access(serverd, os.X_OK):
        specs["nbd-serverd"] = (
            [serverd, "-f", "-l", "127.0.0.1:{PORT}", "-e", f"bench={image}",
             "-t", str(cfg["threads"])] + cfg["serverd_args"], "bench")
    else:
        missing["nbd-serverd"] = f"{serverd} is not built yet"
    if cfg.get("other_build"):
        other = os.path.join(cfg["other_build"], "nbd-serverd")
        if os.access(other, os.X_OK):
            specs[OTHER] = ([other] + specs.get("nbd-serverd", ([serverd], ""))[0][1:],
                            "bench")
        else:
            missing[OTHER] = f"{other} is not built"
    if shutil.which("nbdkit"):
        specs["nbdkit"] = (
            ["nbdkit", "-f", "-p", "{PORT}", "-i", "127.0.0.1",
             "-t", str(cfg["nbdkit_threads"]), "file", f"file={image}"], "")
    else:
        missing["nbdkit"] = "nbdkit is not installed"
    if shutil.which("qemu-nbd"):
        specs["qemu-nbd"] = (
            ["qemu-nbd", "-f", "raw", f"--aio={cfg['qemu_aio']}",
             f"--cache={cfg['qemu_cache']}", "--shared=8", "-t",
             "-b", "127.0.0.1", "-p", "{PORT}", image], "")
    else:
        missing["qemu-nbd"] = "qemu-nbd is not installed"
    if CHROOT:
        specs["nbdkit-trixie"] = (in_chroot(
            ["nbdkit", "-f", "-p", "{PORT}", "-i", "127.0.0.1",
             "-t", str(cfg["nbdkit_threads"]), "file", f"file={image}"]), "")
        specs["qsd-trixie"] = (in_chroot(qsd_argv(image)), "bench")
    tls = cfg.get("tls_dir")
    for name in PLAIN_SERVERS + ((OTHER,) if cfg.get("other_build") else ()):
        for kind in TLS_KINDS:
            tname = f"{name}-{kind}"
            if name not in specs:
                missing[tname] = missing[name]
                continue
            if tls is None:
                missing[tname] = cfg.get("tls_missing", "no TLS material")
                continue
            argv, export = specs[name]
            if name in ("nbd-serverd", OTHER):
                argv = argv + (["--tls=require", f"--tls-certs={tls}/server"] if kind == "tls"
                               else ["--tls=require", f"--tls-psk={tls}/psk/keys.psk"])
            elif name == "qsd-trixie":
                i = argv.index("--nbd-server")
                obj = (f"tls-creds-x509,id=tls0,endpoint=server,dir={tls}/server,verify-peer=off"
                       if kind == "tls" else
                       f"tls-creds-psk,id=tls0,endpoint=server,dir={tls}/psk")
                argv = (argv[:i] + ["--object", obj, "--nbd-server",
                                    argv[i + 1] + ",tls-creds=tls0"] + argv[i + 2:])
            elif base_of(name).startswith("nbdkit"):
                # Options go before the plugin name.
                i = argv.index("file")
                extra = ([f"--tls-certificates={tls}/server"] if kind == "tls"
                         else [f"--tls-psk={tls}/psk/keys.psk"])
                argv = argv[:i] + ["--tls=require"] + extra + argv[i:]
            else:
                i = argv.index(image)
                obj = (f"tls-creds-x509,id=tls0,endpoint=server,dir={tls}/server,verify-peer=off"
                       if kind == "tls" else
                       f"tls-creds-psk,id=tls0,endpoint=server,dir={tls}/psk")
                argv = argv[:i] + ["--object", obj, "--tls-creds=tls0"] + argv[i:]
            specs[tname] = (argv, export)
        uname = f"{name}-unix"
        if name not in specs:
            missing[uname] = missing[name]
            continue
        specs[uname] = (unix_argv(name, specs[name][0]), specs[name][1])
    return specs, missing


def unix_argv(name, argv):
    """A server's TCP argv turned into one listening on {SOCK}."""
    def swap(old, new):
        for i in range(len(argv) - len(old) + 1):
            if argv[i:i + len(old)] == old:
                return argv[:i] + new + argv[i + len(old):]
        raise BenchError(f"{name}: no {old} in {argv} to turn into a unix socket")
    if base_of(name) in ("nbd-serverd", OTHER):
        return swap(["127.0.0.1:{PORT}"], ["unix:{SOCK}"])
    if base_of(name).startswith("nbdkit"):
        return swap(["-p", "{PORT}", "-i", "127.0.0.1"], ["-U", "{SOCK}"])
    if base_of(name) == "qsd-trixie":
        return swap(["addr.type=inet,addr.host=127.0.0.1,addr.port={PORT}"],
                    ["addr.type=unix,addr.path={SOCK}"])
    return swap(["-b", "127.0.0.1", "-p", "{PORT}"], ["-k", "{SOCK}"])


def client_uri(client, server, export, cfg, port="{PORT}", sock="{SOCK}"):
    """The URI `client` is given for `server` (a spec name)."""
    kind = kind_of(server)
    if kind == "plain":
        return f"nbd://127.0.0.1:{port}/{export}"
    if kind == "unix":
        return f"nbd+unix:///{export}?socket={sock}"
    tls = cfg["tls_dir"]
    if kind == "tls":
        q = "" if client == "fio" else f"?tls-certificates={tls}/home/.pki/libnbd"
        return f"nbds://127.0.0.1:{port}/{export}{q}"
    return f"nbds://{PSK_USER}@127.0.0.1:{port}/{export}?tls-psk-file={tls}/psk/keys.psk"


def client_skip(client, server):
    """Why `client` cannot run against `server`, or None."""
    if client == "fio" and kind_of(server) == "psk":
        return ("fio's nbd engine cannot do TLS-PSK: libnbd refuses tls-psk-file= "
                "without nbd_set_uri_allow_local_file and has no default PSK file")
    return None


def make_tls(tmpdir):
    """A CA, a server certificate for 127.0.0.1, a client certificate and a
    PSK key; returns the directory (server/ for the servers, home/.pki/libnbd
    for libnbd and nbdc, psk/keys.psk for everyone), or raises BenchError."""
    for tool in ("certtool", "psktool"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (Debian: gnutls-bin)")
    d = os.path.join(tmpdir, "tls")
    lib = os.path.join(d, "home", ".pki", "libnbd")
    os.makedirs(os.path.join(d, "server"))
    os.makedirs(lib)

    def certtool(*args, template=None):
        argv = ["certtool", *args]
        if template is not None:
            tpath = os.path.join(d, "template")
            with open(tpath, "w", encoding="ascii") as f:
                f.write(template)
            argv += ["--template", tpath]
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} failed:\n{p.stderr}")

    os.makedirs(os.path.join(d, "psk"))
    p = subprocess.run(["psktool", "-u", PSK_USER, "-p", os.path.join(d, "psk", "keys.psk")],
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise BenchError(f"psktool failed:\n{p.stderr}")
    ca_key, ca = os.path.join(d, "ca-key.pem"), os.path.join(d, "server", "ca-cert.pem")
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", ca_key)
    certtool("--generate-self-signed", "--load-privkey", ca_key, "--outfile", ca,
             template='cn = "bench CA"\nca\ncert_signing_key\nexpiration_days = 2\n')
    for who, tmpl in (("server", 'cn = "127.0.0.1"\nip_address = "127.0.0.1"\n'
                       'dns_name = "localhost"\ntls_www_server\n'),
                      ("client", 'cn = "bench client"\ntls_www_client\n')):
        where = os.path.join(d, "server") if who == "server" else lib
        key = os.path.join(where, f"{who}-key.pem")
        certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
        certtool("--generate-certificate", "--load-privkey", key,
                 "--load-ca-certificate", ca, "--load-ca-privkey", ca_key,
                 "--outfile", os.path.join(where, f"{who}-cert.pem"),
                 template=tmpl + "encryption_key\nsigning_key\nexpiration_days = 2\n")
    shutil.copy(ca, os.path.join(lib, "ca-cert.pem"))
    return d


# ---------------------------------------------------------------- fio

def fio_argv(wl, uri, cfg, out_json):
    name, _title, rw, bs, qd, jobs, _metric = wl
    return ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}",
            f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--numjobs={jobs}",
            "--group_reporting", "--time_based", f"--runtime={cfg['runtime']}",
            f"--ramp_time={cfg['ramp']}", "--norandommap", "--randrepeat=0",
            "--output-format=json", f"--output={out_json}"]


def wait_first_connection(server, proc, t0):
    """When the server first shows an established connection (or t0)."""
    while proc.poll() is None and time.monotonic() - t0 < 30:
        if server.connections() > 0:
            return time.monotonic()
        time.sleep(0.002)
    return t0


def run_fio(server, wl, cfg, tmpdir, log_path, uri):
    """Run fio once against a started server; return a result dict."""
    out_json = os.path.join(tmpdir, "fio.json")
    if os.path.exists(out_json):
        os.unlink(out_json)
    argv = fio_argv(wl, uri, cfg, out_json)
    jobs = wl[5]
    with open(log_path, "ab") as lf:
        lf.write(f"\n=== {shlex.join(argv)}\n".encode())
        lf.flush()
        t0 = time.monotonic()
        env = None
        if kind_of(server.name) == "tls":
            # libnbd's default X.509 directory is $HOME/.pki/libnbd.
            env = dict(os.environ, HOME=os.path.join(cfg["tls_dir"], "home"))
        fio = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf,
                               stderr=subprocess.STDOUT, env=env)
        try:
            # The measured window starts `ramp` seconds after fio's first
            # connection reaches the server.
            conn_at = wait_first_connection(server, fio, t0)
            while fio.poll() is None and time.monotonic() < conn_at + cfg["ramp"]:
                time.sleep(min(0.005, max(0.0, conn_at + cfg["ramp"] - time.monotonic())))
            conns = server.connections()
            cpu0 = cpu_seconds(server.proc.pid)
            w0 = time.monotonic()
            limit = cfg["ramp"] + cfg["runtime"] + 60
            try:
                rc = fio.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                raise BenchError(f"fio did not finish within {limit} s against {server.name}\n"
                                 f"--- {log_path}\n{tail(log_path)}") from None
            cpu1 = cpu_seconds(server.proc.pid)
            w1 = time.monotonic()
        except BaseException:
            fio.kill()
            fio.wait()
            raise
    server.check_alive(f"during fio {wl[0]}")
    if rc != 0 or not os.path.exists(out_json):
        raise BenchError(f"fio failed (exit status {rc}) against {server.name}\n"
                         f"--- {log_path}\n{tail(log_path)}")
    with open(out_json, encoding="utf-8", errors="replace") as f:
        text = f.read()
    # Older fio versions may print notes before the JSON object.
    doc = json.loads(text[text.index("{"):])
    io_bytes = ios = 0
    client_cpu = 0.0
    errors = 0
    for job in doc["jobs"]:
        errors += job.get("error", 0)
        for d in ("read", "write"):
            io_bytes += job[d]["io_bytes"]
            ios += job[d]["total_ios"]
        # usr_cpu/sys_cpu are percentages of the job's runtime (summed over
        # the jobs of the group with --group_reporting).
        client_cpu += (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"] / 1000.0
    if errors:
        raise BenchError(f"fio reported error {errors} against {server.name}\n{tail(log_path)}")
    secs = cfg["runtime"]
    # job_runtime with group_reporting is the sum over the jobs; per job it is ~runtime.
    per_job_ms = sum(j["job_runtime"] for j in doc["jobs"]) / jobs
    if per_job_ms > 0:
        secs = per_job_ms / 1000.0
    return {
        "iops": ios / secs,
        "mibs": io_bytes / MIB / secs,
        "ios": ios,
        "io_bytes": io_bytes,
        "seconds": secs,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_window_s": w1 - w0,
        "client_cpu_s": client_cpu,
        "client_io_bytes": io_bytes,
        "connections": conns,
    }


def nbdc_argv(wl, uri, cfg):
    _name, _title, rw, bs, qd, jobs, _metric = wl
    return [cfg["nbdc"], "bench", uri, "--rw", rw, "--bs", bs.upper(),
            "--iodepth", str(qd), "--connections", str(jobs),
            "--time", str(cfg["ramp"] + cfg["runtime"])]


def nbdc_for(server, cfg):
    """The nbdc binary that drives `server`."""
    if cfg.get("other_client") and base_of(server) == OTHER:
        return os.path.join(cfg["other_build"], "nbdc")
    return cfg["nbdc"]


def run_nbdc(server, wl, cfg, log_path, uri):
    """Run nbdc bench once against a started server; return a result dict.

    nbdc prints "[   Ns] IOPS: X, MiB/s: Y" after each second N of its run:
    the window is from the line of second `ramp` to the last one, and the
    server's CPU is read as each of those two lines arrives."""
    argv = [nbdc_for(server.name, cfg)] + nbdc_argv(wl, uri, cfg)[1:]
    bs = int(wl[3][:-1]) * (MIB if wl[3].endswith("m") else 1024)
    total_s = cfg["ramp"] + cfg["runtime"]
    with open(log_path, "ab") as lf:
        lf.write(f"\n=== {shlex.join(argv)}\n".encode())
        lf.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=lf)
        per_sec = {}
        cpu0 = w0 = cpu1 = w1 = None
        conns = 0
        final_iops = None
        try:
            timer = threading.Timer(total_s + 60, proc.kill)
            timer.start()
            if cfg["ramp"] == 0:
                wait_first_connection(server, proc, t0)
                cpu0, w0 = cpu_seconds(server.proc.pid), time.monotonic()
            for raw_line in proc.stdout:
                lf.write(raw_line)
                line = raw_line.decode("utf-8", "replace").strip()
                if line.startswith("[") and "s] IOPS: " in line:
                    sec = int(line[1:line.index("s]")])
                    per_sec[sec] = int(line.split("IOPS: ")[1].split(",")[0])
                    if sec == cfg["ramp"]:
                        conns = server.connections()
                        cpu0, w0 = cpu_seconds(server.proc.pid), time.monotonic()
                    elif sec == total_s:
                        cpu1, w1 = cpu_seconds(server.proc.pid), time.monotonic()
                elif line.startswith("IOPS: "):
                    final_iops = float(line.split()[1])
            _pid, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            timer.cancel()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    server.check_alive(f"during nbdc bench {wl[0]}")
    if proc.returncode != 0 or cpu0 is None or cpu1 is None or final_iops is None:
        raise BenchError(f"nbdc bench failed (exit status {proc.returncode}) against "
                         f"{server.name}\n--- {log_path}\n{tail(log_path)}")
    if cfg["ramp"] == 0:
        conns = wl[5]
    ios = sum(n for sec, n in per_sec.items() if cfg["ramp"] < sec <= total_s)
    secs = float(cfg["runtime"])
    return {
        "iops": ios / secs,
        "mibs": ios * bs / MIB / secs,
        "ios": ios,
        "io_bytes": ios * bs,
        "seconds": secs,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_window_s": w1 - w0,
        # rusage covers the whole run, ramp included: per byte of the whole run.
        "client_cpu_s": ru.ru_utime + ru.ru_stime,
        "client_io_bytes": final_iops * total_s * bs,
        "connections": conns,
    }


# ---------------------------------------------------------------- report

def fmt_val(v, metric):
    return f"{v:,.0f}" if metric == "iops" else f"{v:,.1f}"


def load_baseline(path):
    """(workload, server, client) -> [metric dicts] from a BENCH_JSON file."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"BENCH_BASELINE={path}: {e}") from None
    base = {}
    for r in doc.get("results", []):
        key = (r["workload"], r["server"], r.get("client", "fio"))
        base.setdefault(key, []).append(r)
    return base


def build_report(cfg, specs, missing, rows, workloads, results, notes, host,
                 baseline, ciphers):
    out = []
    out.append("# nbd-serverd vs nbdkit vs qemu-nbd (127.0.0.1; fio nbd engine and nbdc bench)")
    out.append("")
    out.append(f"- date: {host['date']}")
    out.append(f"- machine: {host['nproc']} CPUs ({host['cpu']}), kernel {host['kernel']}, "
               "client and servers share these CPUs")
    out.append(f"- versions: {host['versions']}")
    out.append(f"- load average (1 min) before / after: {host['load_before']} / "
               f"{os.getloadavg()[0]:.2f} (other work on the machine skews every number)")
    out.append(f"- runs: {cfg['runs']} (interleaved: run → workload → server → client, "
               f"server order rotated each run), {cfg['runtime']} s measured after "
               f"{cfg['ramp']} s of ramp per client run")
    out.append(f"- image: {cfg['size_mib']} MiB of random data in {cfg['image']} "
               "(tmpfs); each server is started fresh for every client run")
    out.append("- server CPU: utime+stime of the server process (/proc/PID/stat, all "
               "threads) over the measured window, per request (µs/req) and per GiB moved; "
               "server CPU %: of one CPU over the window; client CPU s/GiB: fio's own "
               "usr+sys from its JSON, nbdc's rusage over its whole run")
    out.append("- vs best peer: median / the better median of nbdkit and qemu-nbd over the "
               "same transport with the same client")
    if baseline is not None:
        out.append(f"- vs baseline: median / the median of the same row in {cfg['baseline']}")
    if cfg.get("other_build"):
        out.append(f"- {OTHER}: the nbd-serverd of {cfg['other_build']}, interleaved with the "
                   "rest, driven by "
                   + (f"that build's nbdc ({cfg['other_build']}/nbdc) and fio"
                      if cfg.get("other_client") else "the same clients")
                   + "; \"this build / .b\" on its rows: the median of the same row of this "
                   "build's nbd-serverd / its own")
    if any(kind_of(n) == "unix" for n, _c in rows):
        out.append("- -unix rows: plain NBD on a unix socket (nbd+unix:///EXPORT?socket=PATH), "
                   + ("every workload" if cfg["unix"] == "all" else
                      "the 1 MiB workloads only (BENCH_UNIX=all: every workload)"))
    if any(kind_of(n) in TLS_KINDS for n, _c in rows):
        out.append("- -tls rows: TLS required, X.509 (ECDSA P-256 certificates from certtool); "
                   "fio over nbds:// with libnbd's default certificate directory "
                   "(HOME/.pki/libnbd), since fio cannot pass tls-certificates=; "
                   "-psk rows: TLS required, a psktool key (nbdc only, see the notes); "
                   "every server and client with its default TLS priority")
    out.append("")
    out.append("Server commands (PORT: a free port picked for each start):")
    out.append("")
    out.append("```")
    seen = set()
    for name, _client in rows:
        if name in seen:
            continue
        seen.add(name)
        if name in specs:
            argv, _export = specs[name]
            out.append(shlex.join(a.replace("{PORT}", "PORT") for a in argv))
        else:
            out.append(f"# {name}: skipped, {missing[name]}")
    out.append("```")
    out.append("")
    out.append("Client commands (URI: nbd://127.0.0.1:PORT/EXPORT, or nbds:// with "
               "tls-certificates= or USER@ and tls-psk-file= for nbdc):")
    out.append("")
    out.append("```")
    clients = sorted({c for _n, c in rows}, key=CLIENTS.index)
    for wl in workloads:
        if "fio" in clients:
            out.append(shlex.join(fio_argv(wl, "URI", cfg, "OUT.json")))
        if "nbdc" in clients:
            out.append(shlex.join(["nbdc"] + nbdc_argv(wl, "URI", cfg)[1:]))
    out.append("```")
    if ciphers:
        out.append("")
        out.append("Negotiated TLS (nbdc info --json before the runs; for nbd-serverd also "
                   "what its log says each client got):")
        out.append("")
        for name in sorted(ciphers, key=lambda n: [r[0] for r in rows].index(n)):
            out.append(f"- {name}: {ciphers[name]}")
    for wl in workloads:
        name, title, _rw, _bs, _qd, _jobs, metric = wl
        unit = "IOPS" if metric == "iops" else "MiB/s"
        out.append("")
        out.append(f"## {title} (`{name}`, {unit})")
        out.append("")
        other = cfg.get("other_build") is not None
        head = (f"| server | client | median {unit} | min–max | vs best peer |"
                + (" vs baseline |" if baseline is not None else "")
                + (" this build / .b |" if other else "")
                + " server CPU µs/req | server CPU s/GiB | server CPU % | client CPU s/GiB |")
        out.append(head)
        out.append("|---|---|" + "---:|" * (head.count("|") - 3))
        med = {}
        for key in rows:
            rs = results.get((name,) + key, [])
            if rs:
                med[key] = statistics.median(r[metric] for r in rs)
        for srv, client in rows:
            rs = results.get((name, srv, client), [])
            if not rs and kind_of(srv) == "unix":
                continue  # BENCH_UNIX=1 runs them on the 1 MiB workloads only
            if not rs:
                dashes = head.count("|") - 3
                out.append(f"| {srv} | {client} |" + " – |" * dashes)
                continue
            peer_meds = [med[(p, client)] for p in peers_of(srv) if (p, client) in med]
            best = max(peer_meds) if peer_meds else None
            vals = [r[metric] for r in rs]
            ratio = f"{med[(srv, client)] / best:.2f}×" if best else "–"
            cells = [srv, client, fmt_val(med[(srv, client)], metric),
                     f"{fmt_val(min(vals), metric)}–{fmt_val(max(vals), metric)}", ratio]
            if baseline is not None:
                brs = baseline.get((name, srv, client), [])
                if brs:
                    bmed = statistics.median(r[metric] for r in brs)
                    cells.append(f"{med[(srv, client)] / bmed:.2f}×")
                else:
                    cells.append("–")
            if other:
                mine = (srv.replace(OTHER, "nbd-serverd", 1), client)
                if base_of(srv) == OTHER and mine in med:
                    cells.append(f"{med[mine] / med[(srv, client)]:.2f}×")
                else:
                    cells.append("–")
            us_req = statistics.median(1e6 * r["server_cpu_s"] / max(r["ios"], 1) for r in rs)
            cpu_gib = statistics.median(r["server_cpu_s"] / (r["io_bytes"] / GIB) for r in rs)
            cpu_pct = statistics.median(100.0 * r["server_cpu_s"] / r["server_cpu_window_s"]
                                        for r in rs)
            cli_gib = statistics.median(r["client_cpu_s"] / (r["client_io_bytes"] / GIB)
                                        for r in rs)
            cells += [f"{us_req:.1f}", f"{cpu_gib:.3f}", f"{cpu_pct:.0f}", f"{cli_gib:.3f}"]
            out.append("| " + " | ".join(cells) + " |")
    if notes:
        out.append("")
        out.append("Notes:")
        out.append("")
        for n in notes:
            out.append(f"- {n}")
    return "\n".join(out) + "\n"


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        line = (p.stdout or p.stderr).strip().splitlines()
        return line[0] if line else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def host_info(specs):
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = [tool_version(["fio", "--version"])]
    if "nbdkit" in specs:
        versions.append(tool_version(["nbdkit", "--version"]))
    if "qemu-nbd" in specs:
        versions.append(tool_version(["qemu-nbd", "--version"]))
    if "nbdkit-trixie" in specs:
        versions.append("trixie chroot: "
                        + tool_version(in_chroot(["nbdkit", "--version"])))
    if "qsd-trixie" in specs:
        versions.append("trixie chroot: " + tool_version(
            in_chroot(["qemu-storage-daemon", "--version"])))
    if "nbd-serverd" in specs:
        v = tool_version([specs["nbd-serverd"][0][0], "--version"])
        versions.append(v if v.startswith("nbd-serverd") else f"nbd-serverd {v}")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "versions": "; ".join(versions),
        "load_before": f"{os.getloadavg()[0]:.2f}",
    }


# ---------------------------------------------------------------- main

def make_image(path, size_mib):
    st = os.statvfs(os.path.dirname(path))
    if st.f_bavail * st.f_frsize < (size_mib + 64) * MIB:
        raise BenchError(f"not enough free space in {os.path.dirname(path)} for {size_mib} MiB")
    log(f"bench: writing {size_mib} MiB of random data to {path}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(size_mib):
            chunk = os.urandom(MIB)
            off = 0
            while off < MIB:
                off += os.write(fd, chunk[off:])
    finally:
        os.close(fd)


def probe_cipher(cfg, specs, name, tmpdir):
    """Start `name`, ask `nbdc info --json` what TLS it negotiates, stop it."""
    srv = Server(name, specs[name][0], os.path.join(tmpdir, f"{name}.log"))
    srv.start(free_port())
    try:
        uri = client_uri("nbdc", name, specs[name][1], cfg, srv.port, srv.sock)
        p = subprocess.run([nbdc_for(name, cfg), "info", "--json", uri], capture_output=True,
                           text=True, timeout=30, check=False)
    finally:
        srv.stop()
    if p.returncode != 0:
        raise BenchError(f"nbdc info {uri} failed against {name}: {p.stderr.strip()}")
    doc = json.loads(p.stdout)
    if "TLS-cipher" not in doc:
        return "nbdc gets TLS (this nbdc does not name the cipher)"
    return f"nbdc gets {doc['TLS-version']} {doc['TLS-cipher']}"


def serverd_ciphers(logpath):
    """The "VERSION CIPHER" pairs nbd-serverd logged, with their counts."""
    counts = {}
    try:
        with open(logpath, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "TLS established: " in line:
                    vc = line.split("TLS established: ", 1)[1].split(",", 1)[0].strip()
                    counts[vc] = counts.get(vc, 0) + 1
    except OSError:
        pass
    return counts


def main(argv):
    build_dir = argv[1] if len(argv) > 1 else "build"
    if not os.path.isdir(build_dir):
        alt = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), build_dir)
        if os.path.isdir(alt):
            build_dir = alt
    build_dir = os.path.abspath(build_dir)

    cfg = {
        "runs": env_int("BENCH_RUNS", 3, 1),
        "runtime": env_int("BENCH_RUNTIME", 5, 1),
        "ramp": env_int("BENCH_RAMP", 1, 0),
        "size_mib": env_int("BENCH_SIZE_MIB", 1024, 16),
        "threads": env_int("BENCH_THREADS", os.cpu_count() or 1, 1),
        "nbdkit_threads": env_int("BENCH_NBDKIT_THREADS", 16, 1),
        "qemu_aio": os.environ.get("BENCH_QEMU_AIO") or "io_uring",
        "qemu_cache": os.environ.get("BENCH_QEMU_CACHE") or "writeback",
        "serverd_args": shlex.split(os.environ.get("BENCH_SERVERD_ARGS", "")),
        "nbdc": os.path.join(build_dir, "nbdc"),
        "baseline": os.environ.get("BENCH_BASELINE") or None,
    }
    tls_mode = os.environ.get("BENCH_TLS", "1")
    if tls_mode not in ("0", "1", "only"):
        raise BenchError(f"BENCH_TLS={tls_mode!r}: want 0, 1 or only")
    default = {"0": PLAIN_SERVERS, "1": PLAIN_SERVERS + TLS_SERVERS,
               "only": TLS_SERVERS}[tls_mode]
    cfg["unix"] = os.environ.get("BENCH_UNIX", "1")
    if cfg["unix"] not in ("0", "1", "all"):
        raise BenchError(f"BENCH_UNIX={cfg['unix']!r}: want 0, 1 or all")
    if cfg["unix"] != "0" and tls_mode != "only":
        default = default + UNIX_SERVERS
    known = ALL_SERVERS
    cfg["other_build"] = os.environ.get("BENCH_OTHER_BUILD") or None
    cfg["other_client"] = os.environ.get("BENCH_OTHER_CLIENT") == "1"
    if cfg["other_client"] and not cfg["other_build"]:
        raise BenchError("BENCH_OTHER_CLIENT=1 needs BENCH_OTHER_BUILD=DIR")
    if cfg["other_build"]:
        cfg["other_build"] = os.path.abspath(cfg["other_build"])
        others = tuple(n.replace("nbd-serverd", OTHER, 1) for n in default
                       if base_of(n) == "nbd-serverd")
        default = tuple(default) + others
        known = ALL_SERVERS + (OTHER,) + tuple(f"{OTHER}-{k}" for k in TLS_KINDS + ("unix",))
    servers = env_list("BENCH_SERVERS", default, known)
    clients = env_list("BENCH_CLIENTS", CLIENTS, CLIENTS)
    wl_names = [w[0] for w in WORKLOADS]
    wanted = env_list("BENCH_WORKLOADS", wl_names, wl_names)
    workloads = [w for w in WORKLOADS if w[0] in wanted]
    if "fio" in clients and shutil.which("fio") is None:
        raise BenchError("fio is not installed (Debian: apt-get install fio); "
                         "BENCH_CLIENTS=nbdc runs without it")
    if "nbdc" in clients and not os.access(cfg["nbdc"], os.X_OK):
        raise BenchError(f"{cfg['nbdc']} is not built yet")
    baseline = load_baseline(cfg["baseline"]) if cfg["baseline"] else None
    notes = []
    if cfg["runs"] < 3:
        notes.append(f"only {cfg['runs']} run(s): medians and ranges are not meaningful, "
                     "use BENCH_RUNS>=3 for numbers you quote")
    if not CHROOT:
        notes.append("no trixie chroot (tests/chroot-trixie.sh ensure; bench-servers.sh "
                     "uses it when valid): nbdkit 1.42 and qemu-storage-daemon 10 "
                     "are not in the comparison")

    tmpdir = tempfile.mkdtemp(prefix="nbd-bench-")
    image = f"/dev/shm/nbd-bench-{os.getpid()}.img"
    cfg["image"] = image
    ok = False
    try:
        if any(kind_of(n) in TLS_KINDS for n in servers):
            try:
                cfg["tls_dir"] = make_tls(tmpdir)
            except BenchError as e:
                cfg["tls_missing"] = str(e)
        specs, missing = server_specs(build_dir, image, cfg)
        for name in servers:
            if name not in specs:
                if os.environ.get("BENCH_REQUIRE_ALL") == "1":
                    raise BenchError(f"{name}: {missing[name]}")
                log(f"bench: skipping {name}: {missing[name]}")
                notes.append(f"{name} skipped: {missing[name]}")
        active = [s for s in servers if s in specs]
        if not active:
            raise BenchError("no server to benchmark")
        rows = []
        for name in servers:
            for client in clients:
                why = client_skip(client, name)
                if why is None:
                    rows.append((name, client))
                elif name in specs:
                    note = f"{client} skips the -psk rows: {why}"
                    if note not in notes:
                        notes.append(note)
        make_image(image, cfg["size_mib"])

        # Preflight: every server must start and accept a connection before the
        # long matrix begins.  qemu-nbd falls back from io_uring to threads.
        for name in active:
            srv = Server(name, specs[name][0], os.path.join(tmpdir, f"{name}.log"))
            try:
                srv.start(free_port())
                warn = srv.stop()
                if warn:
                    notes.append(warn)
            except BenchError as e:
                srv.stop()
                if base_of(name) == "qemu-nbd" and cfg["qemu_aio"] == "io_uring":
                    log(f"bench: qemu-nbd --aio=io_uring failed, retrying with threads:\n{e}")
                    notes.append("qemu-nbd refused --aio=io_uring; used --aio=threads")
                    cfg["qemu_aio"] = "threads"
                    specs, _ = server_specs(build_dir, image, cfg)
                    srv = Server(name, specs[name][0], srv.logpath)
                    srv.start(free_port())
                    srv.stop()
                else:
                    raise
        ciphers = {}
        if os.access(cfg["nbdc"], os.X_OK):
            for name in active:
                if kind_of(name) in TLS_KINDS:
                    ciphers[name] = probe_cipher(cfg, specs, name, tmpdir)

        host = host_info(specs)
        results = {}
        raw = []
        client_log = os.path.join(tmpdir, "clients.log")
        active_rows = [(n, c) for n, c in rows if n in specs]

        def runs_on(name, wl):
            return kind_of(name) != "unix" or cfg["unix"] == "all" or wl[3] == "1m"
        total = cfg["runs"] * sum(runs_on(n, wl) for wl in workloads for n, _c in active_rows)
        done = 0
        for run in range(cfg["runs"]):
            order = active[run % len(active):] + active[:run % len(active)]
            for wl in workloads:
                for name in order:
                    for client in clients:
                        if (name, client) not in active_rows or not runs_on(name, wl):
                            continue
                        done += 1
                        srv = Server(name, specs[name][0],
                                     os.path.join(tmpdir, f"{name}.log"))
                        srv.start(free_port())
                        uri = client_uri(client, name, specs[name][1], cfg, srv.port, srv.sock)
                        try:
                            if client == "fio":
                                r = run_fio(srv, wl, cfg, tmpdir, client_log, uri)
                            else:
                                r = run_nbdc(srv, wl, cfg, client_log, uri)
                        finally:
                            warn = srv.stop()
                        if warn:
                            notes.append(f"run {run + 1}, {wl[0]}: {warn}")
                        if r["connections"] < wl[5]:
                            notes.append(f"run {run + 1}, {wl[0]}, {name}, {client}: saw "
                                         f"{r['connections']} connection(s) at the end of "
                                         f"the ramp, expected {wl[5]}")
                        results.setdefault((wl[0], name, client), []).append(r)
                        raw.append(dict(r, run=run + 1, workload=wl[0], server=name,
                                        client=client, metric=wl[6]))
                        unit = wl[6]
                        log(f"bench: [{done}/{total}] run {run + 1} {wl[0]:<16} {name:<16} "
                            f"{client:<4} {fmt_val(r[unit], unit):>10} "
                            f"{'IOPS' if unit == 'iops' else 'MiB/s'}  server CPU "
                            f"{1e6 * r['server_cpu_s'] / max(r['ios'], 1):.1f} µs/req")
        for name in active:
            if base_of(name) in ("nbd-serverd", OTHER) and kind_of(name) in TLS_KINDS:
                seen = serverd_ciphers(os.path.join(tmpdir, f"{name}.log"))
                if seen:
                    ciphers[name] = (ciphers.get(name, "") + "; its log: " + ", ".join(
                        f"{vc} ×{n}" for vc, n in sorted(seen.items()))).lstrip("; ")

        report = build_report(cfg, specs, missing, rows, workloads, results, notes, host,
                              baseline, ciphers)
        sys.stdout.write(report)
        sys.stdout.flush()
        if os.environ.get("BENCH_REPORT"):
            with open(os.environ["BENCH_REPORT"], "w", encoding="utf-8") as f:
                f.write(report)
        outdir = os.environ.get("BENCH_OUT", os.path.join(HERE, "results"))
        os.makedirs(outdir, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        json_paths = [os.path.join(outdir, f"bench-{stamp}.json")]
        if os.environ.get("BENCH_JSON"):
            json_paths.append(os.environ["BENCH_JSON"])
        for path in json_paths:
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"config": cfg, "host": host, "ciphers": ciphers, "results": raw},
                          f, indent=1)
        with open(os.path.join(outdir, f"bench-{stamp}.md"), "w", encoding="utf-8") as f:
            f.write(report)
        # The chart is a convenience: a machine without gnuplot still gets the tables.
        subprocess.run([sys.executable, os.path.join(HERE, "bench-chart.py"), json_paths[0],
                        os.path.join(outdir, f"bench-{stamp}.png")], check=False)
        ok = True
    finally:
        Server.kill_all()
        try:
            os.unlink(image)
        except FileNotFoundError:
            pass
        if ok:
            shutil.rmtree(tmpdir, ignore_errors=True)
        else:
            log(f"bench: logs kept in {tmpdir}")
    return 0


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _on_signal)
    try:
        sys.exit(main(sys.argv))
    except BenchError as err:
        log(f"bench: error: {err}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("bench: interrupted")
        sys.exit(130)
