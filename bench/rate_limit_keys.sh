#!/usr/bin/env bash
# What a flood of distinct rate-limit keys costs lb's memory: a route
# limited by `header:X-Api-Key` (rate RATE, default 10/s, burst 10,
# max_keys MAX_KEYS, default 100,000; with RATE=1/h no key goes idle
# during the run, so only max_keys bounds them) and wrk sending REQUESTS (default 1,000,000) requests,
# each with a random key, over 50 connections (bounded: wrk stops after
# DURATION, default 60 s, whatever it sent). Prints lb's RSS before, its
# peak during the flood (sampled every 0.2 s), after, and the requests
# sent and limited.
#
#   bench/rate_limit_keys.sh            (REQUESTS, MAX_KEYS, DURATION)
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LB:-target/release/lb}
BE=${BE:-target/release/be}
REQUESTS=${REQUESTS:-1000000}
MAX_KEYS=${MAX_KEYS:-100000}
DURATION=${DURATION:-60}
RATE=${RATE:-10/s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; cat "$work/lb.log" >&2 2>/dev/null; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE_PORT=$(free_port); LB_PORT=$(free_port); ADMIN=$(free_port)
"$BE" --port "$BE_PORT" --name one >/dev/null 2>&1 &
cat > "$work/lb.yaml" <<EOF
server: {threads: 1, pid_file: $work/lb.pid, upgrade_sock: $work/up.sock}
listeners: [127.0.0.1:$LB_PORT]
backends: [127.0.0.1:$BE_PORT]
health_check: {path: /health, interval: 2s}
admin: {listen: 127.0.0.1:$ADMIN}
policies:
  per_key:
    rate_limit: {rate: $RATE, burst: 10, key: "header:X-Api-Key", max_keys: $MAX_KEYS}
routes:
  - {upstream: default, policies: [per_key]}
EOF
RUST_LOG=warn "$LB" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
lb_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$LB_PORT/" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$lb_pid/status"; }
before=$(rss)

cat > "$work/keys.lua" <<EOF
local sent, limit = 0, $REQUESTS
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  sent = sent + 1
  if sent > limit then wrk.thread:stop() end
  return wrk.format("GET", "/", {["X-Api-Key"] = string.format("%08x%08x", math.random(0, 0x7fffffff), sent)})
end
EOF
peak=$before
( while kill -0 "$lb_pid" 2>/dev/null; do r=$(rss); [ "$r" -gt "$(cat "$work/peak" 2>/dev/null || echo 0)" ] && echo "$r" > "$work/peak"; sleep 0.2; done ) &
sampler=$!
wrk -t 1 -c 50 -d "${DURATION}s" -s "$work/keys.lua" "http://127.0.0.1:$LB_PORT/" > "$work/wrk.txt" 2>&1 || true
sleep 2
after=$(rss)
kill "$sampler" 2>/dev/null || true
peak=$(cat "$work/peak" 2>/dev/null || echo "$before")
sent=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
limited=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/lb_policy_decisions_total\{outcome="limited",policy="per_key"\}/ {print $2}')
echo "| rate | requests sent | limited | max_keys | RSS before | peak | after 2 s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| $RATE | $sent | ${limited:-0} | $MAX_KEYS | $((before / 1024)) MiB | $((peak / 1024)) MiB | $((after / 1024)) MiB |"
