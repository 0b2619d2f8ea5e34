#!/usr/bin/env bash
# What many certificates on one TLS listener cost a handshake: lb (one
# worker thread) with N self-signed ECDSA certificates (h0.test ...), and
# bench/tls_handshakes.py making new TLS 1.3 connections, one at a time,
# for 10 s, asking for the last name (with a scan, the worst case). Prints per N: lb's start time,
# its RSS, handshakes a second, and lb's CPU per handshake (µs, /proc).
#
#   bench/certs.sh [N...]       (default: 1 1000 10000)
#
# Certificates are made once into $CERTS_DIR (default /tmp/lb-bench-certs).
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LB:-target/release/lb}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 1000 10000)
certs=${CERTS_DIR:-/tmp/lb-bench-certs}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$certs"
max=0; for n in "${counts[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
for i in $(seq 0 $((max - 1))); do
  [ -f "$certs/h$i.pem" ] && continue
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=h$i.test" -addext "subjectAltName=DNS:h$i.test" \
    -keyout "$certs/h$i.key" -out "$certs/h$i.pem" 2>/dev/null
done
chmod 600 "$certs"/*.key
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
backend=$(port)

printf '%8s %9s %8s %12s %12s\n' certs start_s rss_mb handshakes_s cpu_us_each
for n in "${counts[@]}"; do
  tls=$(port)
  {
    echo "listeners:"
    echo "  - address: 127.0.0.1:$tls"
    echo "    tls:"
    echo "      certificates:"
    for i in $(seq 0 $((n - 1))); do echo "        - {cert: $certs/h$i.pem, key: $certs/h$i.key}"; done
    echo "server: {threads: 1, pid_file: $work/lb.pid, upgrade_sock: $work/up.sock}"
    echo "backends: [127.0.0.1:$backend]"
    echo "health_check: {type: tcp, interval: 1h}"
  } > "$work/lb.yaml"
  t0=$(now)
  "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
  pid=$!
  for _ in $(seq 6000); do accepts "$tls" && break; sleep 0.05; done
  started=$(echo "$(now) - $t0" | bc)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  conns=$(python3 bench/tls_handshakes.py "$tls" "h$((n - 1)).test" 10)
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  printf '%8s %9.2f %8.1f %12.1f %12.1f\n' "$n" "$started" "$(echo "$rss / 1024" | bc -l)" \
    "$(echo "$conns / 10" | bc -l)" \
    "$(echo "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $conns" | bc -l)"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
done
