#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/bench-chart.py turns a bench-servers.py JSON into the ratios it
# plots: medians over runs divided by the best peer's median of the same
# workload, transport and client (throughput: the highest; CPU per
# request: the lowest), and gnuplot draws them as a PNG.  The numbers
# here are made up, so the expected ratios are known exactly.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires gnuplot
python3 - "$T/in.json" <<'PY'
import json, sys
res = []
def add(server, wl, metric, rates, ios_per_cpu):
    for i, rate in enumerate(rates):
        res.append({"workload": wl, "server": server, "client": "nbdc", "run": i + 1,
                    "metric": metric, metric: rate, "ios": 1000,
                    "server_cpu_s": 1000 / ios_per_cpu / 1e6})
# nbd-serverd: 300 (median of 200, 300, 400); peers 100 and 150 (the best).
add("nbd-serverd", "randread-4k-1c", "iops", [200, 300, 400], 1 / 2.0)
add("nbdkit", "randread-4k-1c", "iops", [100, 100, 100], 1 / 4.0)
add("qemu-nbd", "randread-4k-1c", "iops", [150, 150, 150], 1 / 8.0)
# Over TLS the only peer is slower than nbd-serverd's own plain row: the
# -tls row is compared with -tls peers only.
add("nbd-serverd-tls", "randread-4k-1c", "iops", [60, 60, 60], 1 / 3.0)
add("nbdkit-tls", "randread-4k-1c", "iops", [50, 50, 50], 1 / 6.0)
add("nbd-serverd-unix", "seqread-1m", "mibs", [900, 900, 900], 1 / 400.0)
add("nbdkit-unix", "seqread-1m", "mibs", [1000, 1000, 1000], 1 / 500.0)
json.dump({"config": {"runs": 3}, "host": {"cpu": "test"}, "results": res},
          open(sys.argv[1], "w"))
PY
python3 bench/bench-chart.py "$T/in.json" "$T/out/chart.png" >"$T/chart.log" 2>&1 ||
    fail "bench-chart.py failed: $(cat "$T/chart.log")"
[ "$(head -c 8 "$T/out/chart.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
    fail "$T/out/chart.png is not a PNG"
# Columns per server (sorted: nbd-serverd first): median, min, max.
row()
{
    # Blocks (gnuplot's "index") are paragraphs: awk's RS="" reads one each.
    awk -v lab="$1" -v blk="$2" 'BEGIN { RS = ""; FS = "\n" }
        NR == blk + 1 { for (i = 1; i <= NF; i++)
            if (index($i, "\"" lab "\" ") == 1) print substr($i, length(lab) + 4) }' \
        "$T/out/chart.dat"
}
# Block 0: throughput; servers nbd-serverd, nbdkit, qemu-nbd.
got=$(row randread-4k-1c 0)
[ "$got" = "2.0000 1.3333 2.6667 0.6667 0.6667 0.6667 1.0000 1.0000 1.0000" ] ||
    fail "throughput ratios: got '$got'"
got=$(row "randread-4k-1c tls" 0 | awk '{ print $1, $4 }')
[ "$got" = "1.2000 1.0000" ] || fail "-tls throughput ratios: got '$got'"
got=$(row "seqread-1m unix" 0 | awk '{ print $1, $4 }')
[ "$got" = "0.9000 1.0000" ] || fail "-unix throughput ratios: got '$got'"
# Block 1: CPU per request, against the lowest peer (nbdkit's 4 µs).
got=$(row randread-4k-1c 1 | awk '{ print $1, $4, $7 }')
[ "$got" = "0.5000 1.0000 2.0000" ] || fail "CPU ratios: got '$got'"
echo '{"config": {}, "results": []}' >"$T/empty.json"
if python3 bench/bench-chart.py "$T/empty.json" "$T/out/empty.png" 2>"$T/empty.err"; then
    fail "a JSON without results made a chart"
fi
grep -q "no run with a peer" "$T/empty.err" || fail "no clear error: $(cat "$T/empty.err")"
