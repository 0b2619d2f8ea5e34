#!/usr/bin/env bash
# What an idle client connection costs a proxy: RSS per connection, HTTP/1.1
# keep-alive over plain TCP and HTTP/2 over TLS, lb beside HAProxy.
#
#   bench/idle.sh [--connections N] [--lb PATH] [--only "lb haproxy"]
#                 [--protocols "http1 h2"]
#
# - N connections (default 10,000) each send one request, read the answer,
#   and stay open and idle (bench/idle_connections.py; --h2 for HTTP/2);
# - each proxy's RSS before the connections open and once all are idle;
#   the row gives the difference divided by N;
# - one worker thread each, three nginx backends; a fresh proxy for each
#   protocol. Needs nginx, haproxy, python3 (and its `h2` package for h2).
set -euo pipefail
cd "$(dirname "$0")/.."
connections=10000
lb_binary=
only="lb haproxy"
protocols="http1 h2"
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --lb) lb_binary=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --protocols) protocols=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "idle: unknown argument $1" >&2; exit 1 ;;
  esac
done
export PATH="$PATH:/usr/sbin"
if [ -z "$lb_binary" ]; then
  cargo build --release --bin lb >/dev/null 2>&1 || cargo build --release --bin lb
  lb_binary=$PWD/target/release/lb
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/lb-idle.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  nginx -p "$work/backends" -c "$work/backends/nginx.conf" -s stop 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
B1=19801; B2=19802; B3=19803; P_PLAIN=19811; P_TLS=19812; P_ADMIN=19819
mkdir -p "$work/tls" "$work/backends/logs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -subj /CN=localhost -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
cat "$work/tls/cert.pem" "$work/tls/key.pem" > "$work/tls/haproxy.pem"
TLS_CERT=$work/tls/cert.pem; TLS_KEY=$work/tls/key.pem; TLS_PEM=$work/tls/haproxy.pem
TLS_PORT=$P_TLS
. bench/peers.sh
backends_conf "$work/backends/nginx.conf" "$work/backends" $B1 $B2 $B3
nginx -p "$work/backends" -c "$work/backends/nginx.conf"
wait_port $B1; wait_port $B2; wait_port $B3

start() { # NAME: starts the proxy, sets $proxy
  case "$1" in
    lb)
      lb_yaml "$work/lb.yaml" lb $P_PLAIN $P_ADMIN $B1 $B2 $B3
      RUST_LOG=warn "$lb_binary" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 & ;;
    haproxy)
      haproxy_cfg "$work/haproxy.cfg" $P_PLAIN $B1 $B2 $B3
      haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & ;;
  esac
  proxy=$!; pids+=("$proxy")
  wait_port $P_PLAIN; wait_port $P_TLS
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "| proxy | protocol | connections | RSS before MB | RSS idle MB | KiB a connection |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for name in $only; do
  for protocol in $protocols; do
    start "$name"
    for _ in $(seq 20); do curl -sk -o /dev/null -o /dev/null "https://127.0.0.1:$P_TLS/" "http://127.0.0.1:$P_PLAIN/"; done
    before=$(rss_kb "$proxy")
    rm -f "$work/ready"
    if [ "$protocol" = h2 ]; then
      python3 bench/idle_connections.py $P_TLS "$connections" "$work/ready" --h2 2>"$work/clients.log" &
    else
      python3 bench/idle_connections.py $P_PLAIN "$connections" "$work/ready" 2>"$work/clients.log" &
    fi
    clients=$!
    for _ in $(seq 1200); do [ -e "$work/ready" ] && break; sleep 0.25; done
    sleep 2
    during=$(rss_kb "$proxy")
    [ -s "$work/clients.log" ] && sed "s/^/$name $protocol: /" "$work/clients.log" >&2
    kill "$clients" 2>/dev/null || true; wait "$clients" 2>/dev/null || true
    kill "$proxy"; wait "$proxy" 2>/dev/null || true
    awk -v n="$name" -v p="$protocol" -v c="$connections" -v b="$before" -v d="$during" \
      'BEGIN { printf "| %s | %s | %d | %.1f | %.1f | %.2f |\n", n, p, c, b/1024, d/1024, (d-b)/c }'
    sleep 1
  done
done
