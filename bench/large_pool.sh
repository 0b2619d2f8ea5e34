#!/usr/bin/env bash
# What a large pool costs each request: lb with one worker thread in front
# of one pool of N backends (one nginx answering `return 200` on N loopback
# ports), and the same with D more backends that refuse (nothing listens).
# wrk, 1 thread, 50 connections, 10 s, after a 3 s warm-up. Prints per row:
# requests/s, lb's CPU per request (µs, from /proc), and new upstream
# connections per 1,000 requests (lb_upstream_connections_total).
#
#   bench/large_pool.sh [N:D ...]     (default: 3:0 100:0 1000:0 3:997)
#
# HC_INTERVAL, HC_TIMEOUT: the health checks' interval and timeout (default
#   1s and 1s; lb spreads a round's checks over interval - timeout).
# CHECKS_ONLY=1: no traffic; lb's CPU a health check instead (1 s interval).
# LB_HC_EXTRA: more keys of lb's health_check (e.g. `reuse_connection: false`).
# PROXY=haproxy: HAProxy (one thread, http-reuse always, round robin,
#   httpchk every HC_INTERVAL) in lb's place, for the floor; its connection
#   count is not read (shown as 0).
# PROXY=bare: bare Pingora (examples/bare_pingora: one thread, round robin,
#   HTTP checks every 2 s, no work stealing, an idle pool of
#   max(128, 2 x backends) as lb sizes it), for Pingora's own floor; its
#   connection count is not read either. BARE_EXTRA: more flags of it
#   (`--check-reuse`: checks keep their connection, as lb's do).
# LB_SERVER_EXTRA: one more line of lb's server: section (e.g.
# `upstream_keepalive_pool_size: 128` to see Pingora's default).
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LB:-target/release/lb}
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(3:0 100:0 1000:0 3:997)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT

ports() { python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
new_connections() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^lb_upstream_connections_total\{reused="false"\}/ {print $2}' || true
}
requests() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^lb_requests_total/ {s += $2} END {print s + 0}' || true; }

printf '%6s %6s %10s %12s %14s\n' up down req_per_s cpu_us_req new_conn_per_1k
for row in "${rows[@]}"; do
  up=${row%%:*}; down=${row##*:}
  # One call, so that no port is given twice.
  read -r -a all <<<"$(ports $((up + down + 2)))"
  live=("${all[@]:0:up}"); dead=("${all[@]:up:down}")
  port=${all[up + down]}; admin=${all[up + down + 1]}
  {
    echo "worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; server {"
    for p in "${live[@]}"; do echo "  listen 127.0.0.1:$p reuseport;"; done
    echo "  location / { return 200 'ok'; } } }"
  } > "$work/nginx.conf"
  nginx -c "$work/nginx.conf" -p "$work"
  for _ in $(seq 100); do accepts "${live[0]}" && break; sleep 0.05; done
  {
    echo "listeners: [127.0.0.1:$port]"
    echo "admin: {listen: 127.0.0.1:$admin}"
    echo "server: {threads: 1, pid_file: $work/lb.pid, upgrade_sock: $work/up.sock${LB_SERVER_EXTRA:+, $LB_SERVER_EXTRA}}"
    echo "health_check: {path: /, interval: ${HC_INTERVAL:-1s}, timeout: ${HC_TIMEOUT:-1s}${LB_HC_EXTRA:+, $LB_HC_EXTRA}}"
    echo "backends:"
    for p in "${live[@]}" ${dead[@]+"${dead[@]}"}; do echo "  - 127.0.0.1:$p"; done
  } > "$work/lb.yaml"
  if [ "${PROXY:-lb}" = haproxy ]; then
    {
      echo "global"; echo "  nbthread 1"; echo "  maxconn 8000"
      echo "defaults"; echo "  mode http"; echo "  timeout connect 1s"; echo "  timeout client 30s"; echo "  timeout server 30s"
      echo "  http-reuse always"
      echo "frontend f"; echo "  bind 127.0.0.1:$port"; echo "  default_backend b"
      echo "frontend stats"; echo "  bind 127.0.0.1:$admin"; echo "  http-request return status 200 content-type text/plain lf-string \"%[fe_req_rate]\" if { path /metrics }"
      echo "backend b"; echo "  balance roundrobin"; echo "  option httpchk GET /"
      for p in "${live[@]}" ${dead[@]+"${dead[@]}"}; do echo "  server s$p 127.0.0.1:$p check inter ${HC_INTERVAL:-1s}"; done
    } > "$work/haproxy.cfg"
    haproxy -f "$work/haproxy.cfg" >"$work/lb.log" 2>&1 &
  elif [ "${PROXY:-lb}" = bare ]; then
    keepalive=$(( 2 * (up + down) > 128 ? 2 * (up + down) : 128 ))
    addrs=(); for p in "${live[@]}" ${dead[@]+"${dead[@]}"}; do addrs+=("127.0.0.1:$p"); done
    target/release/examples/bare_pingora --threads 1 --no-steal --keepalive "$keepalive" ${BARE_EXTRA:-} \
      "127.0.0.1:$port" "${addrs[@]}" >"$work/lb.log" 2>&1 &
  else
    "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 1200); do accepts "$port" && break; sleep 0.05; done
  accepts "$port" || { echo "lb did not start:"; tail -5 "$work/lb.log"; exit 1; }
  sleep 3 # two health rounds: the refusing backends are down
  if [ -n "${CHECKS_ONLY:-}" ]; then
    # No traffic: lb's CPU over 10 s is its health checks'.
    c0=$(cpu_ticks "$pid"); sleep 10; c1=$(cpu_ticks "$pid")
    # One check a backend an interval (whole seconds).
    interval_s=$(echo "${HC_INTERVAL:-1s}" | tr -dc '0-9')
    checks=$(( (up + down) * 10 / interval_s ))
    printf '%6s %6s   checks: %.1f us CPU a check (%s checks), %.1f%% of a core\n' "$up" "$down" \
      "$(echo "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $checks" | bc -l)" "$checks" \
      "$(echo "($c1 - $c0) * 100 / $(getconf CLK_TCK) / 10" | bc -l)"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    kill "$(cat "$work/nginx.pid")"; sleep 0.3
    continue
  fi
  wrk -t1 -c50 -d3s "http://127.0.0.1:$port/" >/dev/null
  c0=$(cpu_ticks "$pid"); n0=$(new_connections "$admin"); r0=$(requests "$admin")
  out=$(wrk -t1 -c50 -d10s "http://127.0.0.1:$port/")
  c1=$(cpu_ticks "$pid"); n1=$(new_connections "$admin"); r1=$(requests "$admin")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$((r1 - r0))
  if [ "${PROXY:-lb}" != lb ]; then
    # HAProxy and bare Pingora have no lb metrics: wrk's count, and no
    # connection count.
    reqs=$(echo "$out" | awk '/requests in/ {print $1}'); n0=0; n1=0
  fi
  hz=$(getconf CLK_TCK)
  printf '%6s %6s %10s %12.1f %14.2f\n' "$up" "$down" "$rps" \
    "$(echo "($c1 - $c0) * 1000000 / $hz / $reqs" | bc -l)" \
    "$(echo "($n1 - $n0) * 1000 / $reqs" | bc -l)"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  kill "$(cat "$work/nginx.pid")"; sleep 0.3
done
