#!/usr/bin/env python3
"""make bench-rbd: nbd-serverd's RBD backend against qemu-nbd with QEMU's
rbd driver, both exporting the same image of a throwaway Ceph cluster
(tests/ceph-cluster.sh) on a Unix socket, measured with fio's nbd engine
on the workloads of make bench (bench-servers.py's WORKLOADS).

Each (server, workload) runs BENCH_RUNS times (default 3) for
BENCH_RUNTIME seconds (default 10) after BENCH_RAMP (default 2); the
table gives medians, the ratio nbd-serverd / qemu-nbd, and the server's
CPU time (user + system, from /proc/PID/stat, both the server process and
its librbd threads) per request.  Usage: bench/bench-rbd.py [BUILD_DIR].
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import util as _util  # noqa: E402

_spec = _util.spec_from_file_location(
    "bench_servers", os.path.join(os.path.dirname(__file__),
                                  "bench-servers.py"))
_bs = _util.module_from_spec(_spec)
_spec.loader.exec_module(_bs)
WORKLOADS = _bs.WORKLOADS

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "tests", "ceph-cluster.sh")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_socket(path, proc):
    for _ in range(300):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.1)
    raise SystemExit(f"no socket {path}")


def start(kind, build, image, conf, sock, log):
    if kind == "nbd-serverd":
        argv = [os.path.join(build, "nbd-serverd"), "-f", "-l",
                f"unix:{sock}", "-e", f"disk=rbd:{image}"]
    else:
        # cache=writeback: QEMU's rbd driver then leaves librbd's cache on
        # (rbd_cache=true), as nbd-serverd does, so both sides cache alike.
        argv = ["qemu-nbd", "-f", "raw", "-x", "disk", "--socket", sock,
                "--shared=8", "--persistent", "--cache=writeback",
                "--aio=threads",
                f"rbd:{image}:conf={conf}"]
    p = subprocess.Popen(argv, stdout=log, stderr=log,
                         env=dict(os.environ, CEPH_CONF=conf))
    wait_socket(sock, p)
    return p


def run(wl, uri, runtime, ramp, out):
    name, _t, rw, bs, qd, jobs, _m = wl
    argv = ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}",
            f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}",
            f"--numjobs={jobs}", "--group_reporting", "--time_based",
            f"--runtime={runtime}", f"--ramp_time={ramp}", "--norandommap",
            "--randrepeat=0", "--size=1G", "--output-format=json",
            f"--output={out}"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        job = json.load(f)["jobs"][0]
    ops = job["read"]["total_ios"] + job["write"]["total_ios"]
    bw = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 2**20
    iops = job["read"]["iops"] + job["write"]["iops"]
    return iops, bw, ops


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    runtime = int(os.environ.get("BENCH_RUNTIME", "10"))
    ramp = int(os.environ.get("BENCH_RAMP", "2"))
    for tool in ("fio", "qemu-nbd", "rbd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench-rbd: {tool} is required")
    tmp = tempfile.mkdtemp(prefix="nbdsrv-bench-rbd.")
    cdir = os.path.join(tmp, "ceph")
    subprocess.run([CLUSTER, "start", cdir], check=True)
    conf = os.path.join(cdir, "ceph.conf")
    image = "rbd/bench"
    log = open(os.path.join(tmp, "servers.log"), "ab")
    results = {}
    try:
        subprocess.run(["rbd", "--conf", conf, "create", image, "--size",
                        "1G"], check=True)
        # Fill the image so that reads find data, not holes.
        subprocess.run(["rbd", "--conf", conf, "bench", "--io-type", "write",
                        "--io-size", "4M", "--io-total", "1G",
                        "--io-pattern", "seq", image], check=True,
                       stdout=subprocess.DEVNULL)
        for kind in ("nbd-serverd", "qemu-nbd"):
            for wl in WORKLOADS:
                for i in range(runs):
                    sock = os.path.join(tmp, "s.sock")
                    p = start(kind, build, image, conf, sock, log)
                    try:
                        c0 = cpu_seconds(p.pid)
                        iops, bw, ops = run(wl, f"nbd+unix:///disk?socket={sock}",
                                            runtime, ramp,
                                            os.path.join(tmp, "fio.json"))
                        cpu = cpu_seconds(p.pid) - c0
                    finally:
                        p.terminate()
                        p.wait()
                        if os.path.exists(sock):
                            os.unlink(sock)
                    results.setdefault((kind, wl[0]), []).append(
                        (iops, bw, cpu * 1e6 / max(ops, 1)))
                    print(f"{kind} {wl[0]} run {i + 1}: {iops:.0f} IOPS "
                          f"{bw:.1f} MiB/s", file=sys.stderr)
    finally:
        log.close()
        subprocess.run([CLUSTER, "stop", cdir])
        shutil.rmtree(tmp, ignore_errors=True)
    print("| workload | nbd-serverd | qemu-nbd | ratio | CPU us/req ours | "
          "CPU us/req qemu-nbd |")
    print("|---|---|---|---|---|---|")
    for wl in WORKLOADS:
        metric = wl[6]
        row = []
        for kind in ("nbd-serverd", "qemu-nbd"):
            r = results[(kind, wl[0])]
            v = statistics.median(x[0] if metric == "iops" else x[1]
                                  for x in r)
            c = statistics.median(x[2] for x in r)
            row.append((v, c))
        unit = "IOPS" if metric == "iops" else "MiB/s"
        ratio = row[0][0] / row[1][0] if row[1][0] else float("nan")
        print(f"| {wl[0]} | {row[0][0]:.0f} {unit} | {row[1][0]:.0f} {unit} "
              f"| {ratio:.2f} | {row[0][1]:.1f} | {row[1][1]:.1f} |")


if __name__ == "__main__":
    main()
