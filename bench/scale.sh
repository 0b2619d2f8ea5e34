#!/usr/bin/env bash
# What many pools cost lb: for each count N, a config of N host routes each
# to its own one-backend pool (the backend one `be` on loopback), and lb
# with one worker thread. Prints one row per N: seconds from exec to the
# first accepted connection, RSS and threads once serving, KiB per pool
# over the 1-pool run, and `lb -t` and reload times.
#
#   bench/scale.sh [N...]          (default: 1 100 1000 10000)
#   SHARED_POOLS=3 bench/scale.sh 1000 100000
#                                  N host routes over 3 pools instead
#
# Uses target/release/lb and be (cargo build --release --bins). Loopback
# only; each lb is stopped before the next starts; a start is given 300 s.
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LB:-target/release/lb}
BE=${BE:-target/release/be}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 100 1000 10000)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
now() { date +%s.%N; }

backend=$(free_port)
"$BE" --port "$backend" --name scale >/dev/null 2>&1 &
for _ in $(seq 200); do accepts "$backend" && break; sleep 0.05; done

# config N PORT FILE: N pools p0..p(N-1), one route each by host.
config() {
  {
    echo "listeners: [127.0.0.1:$2]"
    echo "server: {threads: 1, pid_file: $work/lb.pid, upgrade_sock: $work/up.sock}"
    echo "health_check: {path: /health, interval: 2s}"
    local pools=${SHARED_POOLS:-$1}
    echo "upstreams:"
    for i in $(seq 0 $((pools - 1))); do echo "  p$i: {backends: [127.0.0.1:$backend]}"; done
    echo "routes:"
    awk -v n="$1" -v p="$pools" 'BEGIN { for (i = 0; i < n; i++) printf "  - {match: {host: h%d.test}, upstream: p%d}\n", i, i % p }'
  } > "$3"
}

printf '%8s %10s %10s %8s %12s %8s %8s\n' routes start_s rss_mb threads kib_per_pool lb_t_s reload_s
base_kib=
for n in "${counts[@]}"; do
  port=$(free_port)
  config "$n" "$port" "$work/lb.yaml"
  t0=$(now)
  "$LB" -t -c "$work/lb.yaml" >/dev/null
  lb_t=$(echo "$(now) - $t0" | bc)
  t0=$(now)
  "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
  pid=$!
  started=
  for _ in $(seq 6000); do
    if accepts "$port"; then started=$(echo "$(now) - $t0" | bc); break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$started" ]; then
    printf '%8s did not start (see %s)\n' "$n" "$work/lb.log"; kill -9 "$pid" 2>/dev/null || true; continue
  fi
  # One request through the last route: the pools serve, not only start.
  curl -sf -H "Host: h$((n - 1)).test" "http://127.0.0.1:$port/" >/dev/null
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
  [ -n "$base_kib" ] || base_kib=$rss
  per_pool=0
  if [ "$n" -gt 1 ] && [ -z "${SHARED_POOLS:-}" ]; then per_pool=$(( (rss - base_kib) / (n - 1) )); fi
  lines=$(grep -c "reloaded" "$work/lb.log" || true)
  t0=$(now)
  kill -HUP "$pid"
  reload=
  for _ in $(seq 6000); do
    if [ "$(grep -c "reloaded" "$work/lb.log" || true)" -gt "$lines" ]; then reload=$(echo "$(now) - $t0" | bc); break; fi
    sleep 0.01
  done
  printf '%8s %10.2f %10.1f %8s %12s %8.3f %8s\n' "$n" "$started" "$(echo "$rss / 1024" | bc -l)" "$threads" "$per_pool" "$lb_t" "${reload:-none}"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
done
