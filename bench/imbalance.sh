#!/usr/bin/env bash
# What a runtime without work stealing costs when few connections carry the
# load: lb with 2 worker threads, each runtime, 4 keep-alive clients, one
# of them slow.
#
#   bench/imbalance.sh [--rounds N] [--duration SECS] [--pin]
#
# - three clients send back to back (wrk -t3 -c3, closed loop), the fourth
#   one request every 10 ms (oha -c1 -q100): a long-lived connection that
#   is mostly idle;
# - without work stealing a connection stays on the thread that accepted
#   it, so the three busy ones may share one thread while the other idles;
#   each round starts lb afresh, so the accepts fall anew;
# - each row: requests/s of the three busy clients, the slow client's p99,
#   and the CPU seconds each lb worker thread spent (its busiest thread's
#   share of lb's worker time: 50% is an even split);
# - `--pin`: after start, each lb worker thread is pinned to its own CPU
#   (taskset -p, as HAProxy's cpu-map); the rows say "pinned".
# Everything shares the machine's CPUs (2 here): the numbers compare the
# runtimes with each other, not with other proxies. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
duration=8
pin=false
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --pin) pin=true; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "imbalance: unknown argument $1" >&2; exit 1 ;;
  esac
done
PROXY_THREADS=2
. bench/peers.sh
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
for tool in nginx wrk oha; do
  command -v "$tool" >/dev/null || { echo "imbalance: needs $tool" >&2; exit 1; }
done
cargo build --release --bin lb >/dev/null 2>&1 || cargo build --release --bin lb
LB=$PWD/target/release/lb

work=$(mktemp -d /tmp/lb-imbalance.XXXXXX)
lb_pid=
cleanup() {
  [ -n "$lb_pid" ] && kill "$lb_pid" 2>/dev/null || true
  nginx -p "$work/backends" -c "$work/backends/nginx.conf" -s stop 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
B1=19701; B2=19702; B3=19703; P_LB=19711; A_LB=19719
mkdir -p "$work/backends/logs"
backends_conf "$work/backends/nginx.conf" "$work/backends" $B1 $B2 $B3
nginx -p "$work/backends" -c "$work/backends/nginx.conf"
wait_port $B1; wait_port $B2; wait_port $B3

# The worker threads' TIDs: Pingora names them after the service ("lb proxy ...").
workers() { grep -l '^lb proxy' /proc/"$lb_pid"/task/*/comm 2>/dev/null | awk -F/ '{print $5}'; }
# The comm field may hold spaces: fields are counted after its closing parenthesis.
thread_cpu() { sed 's/.*) //' "/proc/$lb_pid/task/$1/stat" | awk '{print $12 + $13}'; }

echo "| runtime | round | busy clients req/s | slow client p99 ms | busiest thread's share of worker CPU |"
echo "| --- | ---: | ---: | ---: | ---: |"
for stealing in true false; do
  for round in $(seq "$rounds"); do
    LB_SERVER_EXTRA="work_stealing: $stealing" lb_yaml "$work/lb.yaml" lb $P_LB $A_LB $B1 $B2 $B3
    RUST_LOG=warn "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
    lb_pid=$!
    wait_port $P_LB; wait_port $A_LB
    tids=$(workers)
    if $pin; then
      cpu=0
      for tid in $tids; do taskset -p -c "$cpu" "$tid" >/dev/null; cpu=$(((cpu + 1) % $(nproc))); done
    fi
    declare -A before=()
    for tid in $tids; do before[$tid]=$(thread_cpu "$tid"); done
    oha --no-tui --output-format json -z "${duration}s" -w -c 1 -q 100 --latency-correction \
      "http://127.0.0.1:$P_LB/" >"$work/slow.json" 2>/dev/null &
    slow=$!
    busy=$(timeout -k 5 $((duration + 30)) wrk -t3 -c3 -d"${duration}s" "http://127.0.0.1:$P_LB/" \
      | awk '/Requests\/sec/ {printf "%d", $2}')
    wait "$slow" || true
    p99=$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["latencyPercentiles"]["p99"] * 1000))' "$work/slow.json")
    share=$(for tid in $tids; do echo $(($(thread_cpu "$tid") - ${before[$tid]})); done \
      | awk '{t += $1; if ($1 > m) m = $1} END {if (t > 0) printf "%.0f%%", 100 * m / t; else print "-"}')
    label=$([ "$stealing" = true ] && echo "work stealing" || echo "no stealing")
    $pin && label="$label, pinned"
    echo "| $label | $round | $busy | $p99 | $share |"
    kill "$lb_pid"; wait "$lb_pid" 2>/dev/null || true; lb_pid=
  done
done
