#!/usr/bin/env bash
# Pingora's two runtimes under lb, open loop, beside HAProxy and a bare
# Pingora proxy: the tail a request that arrives alone sees.
#
#   bench/runtime.sh [--threads N] [--protocol http|tls|h2] [--rates "R ..."]
#                    [--rounds N] [--duration SECS] [--connections N]
#
# - proxies: HAProxy, lb with `work_stealing: true` (one multi-threaded
#   tokio runtime), lb with `work_stealing: false` (one single-threaded
#   runtime a worker thread), bare Pingora (examples/bare_pingora.rs) with
#   each runtime; all round-robin over three nginx backends, checks on;
# - --threads N: workers of every proxy. With fewer CPUs than N + 1 the
#   load, the backends and the proxies share every CPU (the table says so);
#   otherwise the proxies get the last N CPUs and the rest the others;
# - --protocol: plain HTTP/1.1 keep-alive, TLS 1.3 keep-alive (HTTP/1.1),
#   or h2 over TLS (one stream at a time a connection);
# - rates: without --rates, 25, 50 and 75% of lb's closed-loop maximum (wrk,
#   default runtime, measured first); the same absolute rates for everyone;
# - each row: oha -c N -q RATE -z SECS -w --latency-correction, rounds
#   interleaved, medians of p50, p99, p99.9 and of the proxy's CPU time per
#   answered request; for lb also the upstream connections it opened per
#   thousand requests (lb_upstream_connections_total{reused="false"}): the
#   cost of a pooled connection another thread could not take.
# Prints one markdown table. Needs nginx, haproxy, wrk and oha; traffic
# stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY_THREADS=1
protocol=http
rates=""
rounds=3
duration=8
connections=64
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) PROXY_THREADS=$2; shift 2 ;;
    --protocol) protocol=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "runtime: unknown argument $1" >&2; exit 1 ;;
  esac
done
case "$protocol" in http|tls|h2) ;; *) echo "runtime: --protocol takes http, tls or h2" >&2; exit 1 ;; esac
HEADERS=lb-only
. bench/peers.sh

export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
for tool in nginx haproxy wrk oha openssl; do
  command -v "$tool" >/dev/null || { echo "runtime: needs $tool (bench/run.sh installs them)" >&2; exit 1; }
done
cargo build --release --bins --examples >/dev/null 2>&1 || cargo build --release --bins --examples
LB=$PWD/target/release/lb
BARE=$PWD/target/release/examples/bare_pingora

cpus=$(nproc)
if [ "$cpus" -gt "$PROXY_THREADS" ]; then
  proxy_cpu="$((cpus - PROXY_THREADS))-$((cpus - 1))"; load_cpu="0-$((cpus - PROXY_THREADS - 1))"
  placement="workers on CPU $proxy_cpu, load and backends on CPU $load_cpu"
else
  proxy_cpu="0-$((cpus - 1))"; load_cpu=$proxy_cpu
  placement="workers, load and backends share CPUs $proxy_cpu"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/lb-runtime.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  nginx -p "$work/backends" -c "$work/backends/nginx.conf" -s stop 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

B1=19501; B2=19502; B3=19503
P_HAPROXY=19511; P_STEAL=19512; P_NOSTEAL=19513; P_BARE=19514; P_BARE_NOSTEAL=19515
T_HAPROXY=19521; T_STEAL=19522; T_NOSTEAL=19523
A_STEAL=19532; A_NOSTEAL=19533
for p in $B1 $B2 $B3 $P_HAPROXY $P_STEAL $P_NOSTEAL $P_BARE $P_BARE_NOSTEAL $T_HAPROXY $T_STEAL $T_NOSTEAL $A_STEAL $A_NOSTEAL; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "runtime: port $p is already in use; stop what listens there first" >&2; exit 1
  fi
done

if [ "$protocol" != http ]; then
  mkdir -p "$work/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
  cat "$work/tls/cert.pem" "$work/tls/key.pem" > "$work/tls/haproxy.pem"
  TLS_CERT=$work/tls/cert.pem; TLS_KEY=$work/tls/key.pem; TLS_PEM=$work/tls/haproxy.pem
fi

mkdir -p "$work/backends/logs"
backends_conf "$work/backends/nginx.conf" "$work/backends" $B1 $B2 $B3
taskset -c "$load_cpu" nginx -p "$work/backends" -c "$work/backends/nginx.conf"
wait_port $B1; wait_port $B2; wait_port $B3

[ "$protocol" != http ] && TLS_PORT=$T_HAPROXY
haproxy_cfg "$work/haproxy.cfg" $P_HAPROXY $B1 $B2 $B3
taskset -c "$proxy_cpu" haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!); haproxy_pid=$!

start_lb() { # NAME PORT TLS_PORT ADMIN STEALING
  [ "$protocol" != http ] && TLS_PORT=$3
  LB_SERVER_EXTRA="work_stealing: $5" lb_yaml "$work/$1.yaml" "$1" "$2" "$4" $B1 $B2 $B3
  RUST_LOG=warn taskset -c "$proxy_cpu" "$LB" -c "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
}
start_lb lb-steal $P_STEAL $T_STEAL $A_STEAL true; steal_pid=$!
start_lb lb-nosteal $P_NOSTEAL $T_NOSTEAL $A_NOSTEAL false; nosteal_pid=$!
taskset -c "$proxy_cpu" "$BARE" --threads "$PROXY_THREADS" 127.0.0.1:$P_BARE 127.0.0.1:$B1 127.0.0.1:$B2 127.0.0.1:$B3 >"$work/bare.log" 2>&1 &
pids+=($!); bare_pid=$!
taskset -c "$proxy_cpu" "$BARE" --threads "$PROXY_THREADS" --no-steal 127.0.0.1:$P_BARE_NOSTEAL 127.0.0.1:$B1 127.0.0.1:$B2 127.0.0.1:$B3 >"$work/bare-nosteal.log" 2>&1 &
pids+=($!); bare_nosteal_pid=$!
for p in $P_HAPROXY $P_STEAL $P_NOSTEAL $P_BARE $P_BARE_NOSTEAL $A_STEAL $A_NOSTEAL; do wait_port "$p"; done

declare -A pid=([haproxy]=$haproxy_pid [lb-steal]=$steal_pid [lb-nosteal]=$nosteal_pid
  [pingora-bare]=$bare_pid [pingora-bare-nosteal]=$bare_nosteal_pid)
declare -A admin=([lb-steal]=$A_STEAL [lb-nosteal]=$A_NOSTEAL)
names=(haproxy lb-steal lb-nosteal pingora-bare pingora-bare-nosteal)
oha_args=()
case "$protocol" in
  http)
    declare -A url=([haproxy]=http://127.0.0.1:$P_HAPROXY/ [lb-steal]=http://127.0.0.1:$P_STEAL/
      [lb-nosteal]=http://127.0.0.1:$P_NOSTEAL/ [pingora-bare]=http://127.0.0.1:$P_BARE/
      [pingora-bare-nosteal]=http://127.0.0.1:$P_BARE_NOSTEAL/) ;;
  tls|h2)
    # The bare proxy has no TLS listener: it is left out of these rows.
    names=(haproxy lb-steal lb-nosteal)
    declare -A url=([haproxy]=https://127.0.0.1:$T_HAPROXY/ [lb-steal]=https://127.0.0.1:$T_STEAL/
      [lb-nosteal]=https://127.0.0.1:$T_NOSTEAL/)
    oha_args=(--insecure)
    [ "$protocol" = h2 ] && oha_args+=(--http2) || oha_args+=(--http-version 1.1) ;;
esac

cpu_ticks() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }
clock_ticks=$(getconf CLK_TCK)
new_upstream() {
  [ -n "${admin[$1]:-}" ] || { echo 0; return; }
  curl -s "http://127.0.0.1:${admin[$1]}/metrics" \
    | awk 'index($0, "lb_upstream_connections_total{reused=\"false\"}") == 1 {print $2}' | awk '{n+=$1} END {print n+0}'
}
bounded() { timeout -k 5 "$((duration + 60))" "$@"; }

echo "warming up..." >&2
for name in "${names[@]}"; do
  bounded taskset -c "$load_cpu" oha --no-tui -z 2s -c "$connections" "${oha_args[@]}" "${url[$name]}" >/dev/null 2>&1 || true
done
if [ -z "$rates" ]; then
  # wrk speaks no h2: the maximum comes from plain HTTP/1.1 or TLS keep-alive.
  max_url=${url[lb-steal]}
  out=$(bounded taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${duration}s" "$max_url" 2>&1)
  max=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
  rates="$((max / 4)) $((max / 2)) $((max * 3 / 4))"
  echo "lb (work_stealing: true) closed-loop maximum: $max requests/s; rates: $rates" >&2
fi

mkdir -p "$work/runs"
for rate in $rates; do
  for round in $(seq "$rounds"); do
    for name in "${names[@]}"; do
      echo "rate $rate, round $round/$rounds: $name" >&2
      before=$(cpu_ticks "$name"); opened=$(new_upstream "$name")
      bounded taskset -c "$load_cpu" oha --no-tui --output-format json -z "${duration}s" -w \
        -c "$connections" -q "$rate" --latency-correction "${oha_args[@]}" "${url[$name]}" \
        >"$work/runs/$name.$rate.$round.json" 2>/dev/null || true
      after=$(cpu_ticks "$name"); opened_after=$(new_upstream "$name")
      echo "$(awk -v t=$((after - before)) -v hz="$clock_ticks" 'BEGIN {print t / hz}') $((opened_after - opened))" \
        >"$work/runs/$name.$rate.$round.cost"
    done
  done
done

echo
echo "### $protocol, $PROXY_THREADS worker thread(s): $placement; oha -c $connections, ${duration}s, medians of $rounds"
echo
python3 bench/runtime_table.py "$work/runs" "$rates" "${names[*]}"
echo
echo "machine: $(nproc) CPUs, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
