#!/usr/bin/env python3
"""Draw a BENCH_JSON file of bench-servers.py as a PNG chart with gnuplot.

Usage: bench/bench-chart.py RESULTS.json OUT.png

One panel per client (fio, nbdc).  Along x, the workloads (and transports:
plain, -tls, -psk, -unix); per workload one bar per server: its median throughput
divided by the best peer's median over the same transport with the same
client (1.0 = as fast as the best peer), with a line from the slowest to the
fastest run.  A second pair of panels does the same for server CPU per
request (lower is better).  The data file and the gnuplot script are
written beside OUT.png (OUT.dat, OUT.gp) so the chart can be redrawn or
restyled by hand.  Needs gnuplot (Debian: gnuplot-nox, with its pngcairo
terminal).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys

TRANSPORTS = ("plain", "tls", "psk", "unix")


def transport_of(server):
    for t in TRANSPORTS[1:]:
        if server.endswith("-" + t):
            return t
    return "plain"


def base_of(server):
    t = transport_of(server)
    return server if t == "plain" else server[:-(len(t) + 1)]


def is_ours(server):
    return base_of(server) in ("nbd-serverd", "nbd-serverd.b")


def collect(results):
    """(workload, transport, client) -> {base server: [values]} for both metrics."""
    groups = {}
    for r in results:
        metric = r["metric"]
        key = (r["workload"], transport_of(r["server"]), r["client"])
        g = groups.setdefault(key, {})
        g.setdefault(base_of(r["server"]), []).append(
            (r[metric], 1e6 * r["server_cpu_s"] / max(r["ios"], 1)))
    return groups


def ratios(groups):
    """Rows of (label, client, server, metric index, median, min, max), each
    divided by the best peer's median of the same group (for CPU: the lowest)."""
    rows = []
    for (wl, transport, client), servers in sorted(groups.items()):
        label = wl if transport == "plain" else f"{wl} {transport}"
        for idx, better in ((0, max), (1, min)):
            peers = [statistics.median(v[idx] for v in vals)
                     for s, vals in servers.items() if not is_ours(s)]
            if not peers:
                continue
            best = better(peers)
            if best <= 0:
                continue
            for s, vals in sorted(servers.items()):
                xs = [v[idx] / best for v in vals]
                rows.append((label, client, s, idx, statistics.median(xs), min(xs), max(xs)))
    return rows


def write_data(rows, dat):
    """One gnuplot index block per (client, metric); columns per server."""
    servers = sorted({r[2] for r in rows}, key=lambda s: (not is_ours(s), s))
    blocks = []
    with open(dat, "w", encoding="utf-8") as f:
        for client in sorted({r[1] for r in rows}):
            for idx in (0, 1):
                sub = [r for r in rows if r[1] == client and r[3] == idx]
                if not sub:
                    continue
                labels = []
                for r in sub:
                    if r[0] not in labels:
                        labels.append(r[0])
                f.write("# label " + " ".join(f"{s} {s}_min {s}_max" for s in servers) + "\n")
                for lab in labels:
                    cells = []
                    for s in servers:
                        hit = [r for r in sub if r[0] == lab and r[2] == s]
                        cells += ([f"{hit[0][4]:.4f}", f"{hit[0][5]:.4f}", f"{hit[0][6]:.4f}"]
                                  if hit else ["NaN"] * 3)
                    f.write(f'"{lab}" ' + " ".join(cells) + "\n")
                f.write("\n\n")
                blocks.append((client, idx))
    return servers, blocks


def write_script(gp, dat, png, servers, blocks, title):
    n = len(servers)
    lines = [
        "set terminal pngcairo size 1400,%d font 'sans,10'" % (380 * len(blocks)),
        f"set output '{png}'",
        f"set multiplot layout {len(blocks)},1 title '{title}'",
        "set style data histograms",
        "set style histogram errorbars gap 2 lw 1",
        "set style fill solid 0.8 border -1",
        "set boxwidth 0.9",
        "set grid ytics",
        "set xtics rotate by -25 noenhanced",
        "set key outside right noenhanced",
        "set yrange [0:*]",
    ]
    for i, (client, idx) in enumerate(blocks):
        what = ("throughput relative to the best peer (higher is better)" if idx == 0
                else "server CPU per request relative to the best peer (lower is better)")
        lines.append(f"set title '{client}: {what}' noenhanced")
        plots = []
        for j, s in enumerate(servers):
            col = 2 + 3 * j
            using = f"using {col}:{col + 1}:{col + 2}" + (":xtic(1)" if j == 0 else "")
            plots.append(f"'{dat}' index {i} {using} title '{s}'")
        plots.append("1 with lines dashtype 2 lc rgb 'black' notitle")
        lines.append("plot " + ", \\\n     ".join(plots))
    lines.append("unset multiplot")
    with open(gp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return n


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    src, png = argv[1], argv[2]
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    rows = ratios(collect(data["results"]))
    if not rows:
        print(f"bench-chart: {src} holds no run with a peer to compare against", file=sys.stderr)
        return 1
    stem = os.path.splitext(png)[0]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    dat, gp = stem + ".dat", stem + ".gp"
    servers, blocks = write_data(rows, dat)
    host = data.get("host", {})
    title = "nbd-serverd against its peers, medians of %s runs%s" % (
        data.get("config", {}).get("runs", "?"),
        f" ({host['cpu']})" if isinstance(host, dict) and host.get("cpu") else "")
    write_script(gp, dat, png, servers, blocks, title)
    if shutil.which("gnuplot") is None:
        print(f"bench-chart: gnuplot is not installed (Debian: gnuplot-nox); data in {dat}, "
              f"script in {gp}", file=sys.stderr)
        return 1
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"bench-chart: gnuplot failed on {gp}:\n{r.stderr}", file=sys.stderr)
        return 1
    print(f"bench-chart: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
