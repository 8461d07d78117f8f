#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real Prometheus server scrapes nbd-serverd's /metrics every second:
# after fio's nbd engine writes and then reads a known number of blocks,
# Prometheus's HTTP API (/api/v1/query) must come to show exactly fio's
# request counts and bytes, the latency histogram's _count for each, a
# median from histogram_quantile, the per-loop requests adding up to the
# same total, and the target up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires prometheus fio python3 curl truncate
is_our_server || skip "metrics-listen is nbd-serverd's"
fio --enghelp=nbd >/dev/null 2>&1 || missing "this fio has no nbd engine"

disk=$T/disk.img
make_image "$disk" 64M

port=$(free_port)
maddr=127.0.0.1:$(free_port)
start_server -l "127.0.0.1:$port" -t 2 -e "disk=$disk" --metrics-listen "$maddr"
u=$(uri disk)

paddr=127.0.0.1:$(free_port)
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: nbd-serverd
    static_configs:
      - targets: ['$maddr']
EOF
step "start prometheus on $paddr, scraping $maddr every second"
prometheus --config.file="$T/prometheus.yml" \
    --storage.tsdb.path="$T/tsdb" --web.listen-address="$paddr" \
    >"$T/prometheus.log" 2>&1 &
prom_pid=$!
track_pid "$prom_pid"
deadline=$((SECONDS + 60))
until curl -sf "http://$paddr/-/ready" >/dev/null 2>&1; do
    kill -0 "$prom_pid" 2>/dev/null ||
        fail "prometheus exited: $(tail -n 20 "$T/prometheus.log")"
    [ "$SECONDS" -lt "$deadline" ] ||
        fail "prometheus is not ready after 60 s: $(tail -n 20 "$T/prometheus.log")"
    sleep 0.2
done
step "prometheus is ready (pid $prom_pid)"

# fio_count NAME DIR: the number of DIR (read or write) I/Os job NAME did.
fio_count()
{
    python3 - "$T/$1.json" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])
job = doc["jobs"][0]
if job["error"] != 0:
    sys.exit("fio job error %d" % job["error"])
print(job[sys.argv[2]]["total_ios"])
EOF
}

run_fio()
{
    local name=$1
    shift
    (cd "$T" && tmo fio --name="$name" --ioengine=nbd --uri="$u" \
        --output-format=json --output="$T/$name.json" "$@") \
        >"$T/$name.err" 2>&1 || fail "fio $name: $(cat "$T/$name.err")"
}

step "fio: random 4 KiB writes over 8 MiB, then 64 KiB reads of 4 MiB"
run_fio writes --rw=randwrite --bs=4k --size=8m --iodepth=8
run_fio reads --rw=read --bs=64k --size=4m --iodepth=4
writes=$(fio_count writes write)
reads=$(fio_count reads read)
[ "$writes" = 2048 ] && [ "$reads" = 64 ] ||
    fail "fio did $writes writes and $reads reads, not 2048 and 64"
step "fio did $writes writes and $reads reads"

# query EXPR: the value of a one-sample instant query, or "none".
query()
{
    curl -sS -G "http://$paddr/api/v1/query" --data-urlencode "query=$1" |
        python3 -c '
import json, sys
doc = json.load(sys.stdin)
if doc.get("status") != "success":
    sys.exit("query failed: %r" % doc)
r = doc["data"]["result"]
if len(r) != 1:
    print("none" if not r else "many:%d" % len(r))
else:
    v = float(r[0]["value"][1])
    print(int(v) if v == int(v) else v)'
}

# wait_query EXPR WANT: Prometheus must come to answer WANT within 30 s.
wait_query()
{
    local expr=$1 want=$2 got deadline=$((SECONDS + 30))
    while :; do
        got=$(query "$expr") || fail "query $expr failed"
        [ "$got" = "$want" ] && break
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "prometheus answers '$got' for $expr, not $want, after 30 s"
        sleep 0.5
    done
    step "prometheus: $expr = $got"
}

sel='export="disk",job="nbd-serverd"'
wait_query "nbd_serverd_requests_total{$sel,command=\"write\"}" "$writes"
wait_query "nbd_serverd_requests_total{$sel,command=\"read\"}" "$reads"
wait_query "nbd_serverd_request_duration_seconds_count{$sel,command=\"write\"}" "$writes"
wait_query "nbd_serverd_request_duration_seconds_count{$sel,command=\"read\"}" "$reads"
wait_query "nbd_serverd_written_bytes_total{$sel}" $((writes * 4096))
wait_query "nbd_serverd_read_bytes_total{$sel}" $((reads * 65536))
wait_query 'up{job="nbd-serverd"}' 1
total=$(query 'sum(nbd_serverd_requests_total{job="nbd-serverd"})')
wait_query 'sum(nbd_serverd_loop_requests_total{job="nbd-serverd"})' "$total"
median=$(query "histogram_quantile(0.5, nbd_serverd_request_duration_seconds_bucket{$sel,command=\"write\"})")
python3 -c 'import sys; v = float(sys.argv[1]); sys.exit(not (0 < v <= 10))' \
    "$median" || fail "the median write latency is '$median'"
step "prometheus: median write latency $median s (histogram_quantile)"
errors=$(query 'sum(nbd_serverd_request_errors_total{job="nbd-serverd"})')
[ "$errors" = none ] || [ "$errors" = 0 ] ||
    fail "fio's requests were counted as $errors errors"

kill "$prom_pid"
wait "$prom_pid" 2>/dev/null || true
server_alive
stop_server
step "pass"
