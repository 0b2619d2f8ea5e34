#!/usr/bin/env bash
# What a cluster-scoped rate limit (issue 26) costs a request, against the
# same limit counted locally, on loopback:
#
#   1. instructions a request (bench/instructions.sh --only lb, callgrind),
#      the route with a local limit, then with a cluster limit in a
#      redis-server on loopback (Debian's), far above the load (none refused);
#   2. latency at a fixed rate (oha -q RATE for SECONDS, 16 keep-alive
#      connections, latency-corrected), one lb worker over one `be`, for:
#      local, cluster (Redis answering), cluster with a Redis that accepts
#      and never answers from the start (the store goes local at its first
#      probe), and cluster with Redis stopped (SIGSTOP) for the middle third
#      of the run (decisions in flight wait up to cluster.timeout, 25 ms,
#      until two have timed out; then none waits until Redis answers again).
#
#   bench/cluster_limit.sh [--rate 2000] [--seconds 10] [--skip-instructions]
#
# Prints markdown tables. Needs redis-server, oha (cargo install oha) and a
# release build (cargo build --release). Every load is bounded by --seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=2000
seconds=10
instructions=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --skip-instructions) instructions=no; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "cluster_limit: unknown argument $1" >&2; exit 1 ;;
  esac
done
for tool in redis-server oha python3; do
  command -v "$tool" >/dev/null || { echo "cluster_limit: $tool is missing" >&2; exit 1; }
done
[ -x target/release/lb ] && [ -x target/release/be ] || cargo build --release --bins >/dev/null

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "cluster_limit: nothing accepts on port $1" >&2
  exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
wait_port "$redis_port"
# A "Redis" that accepts connections and never answers.
silent_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$silent_port" &
pids+=($!)
wait_port "$silent_port"

# The route and its limit; SCOPE and REDIS are filled in per run.
limit_yaml() {
  cat <<EOF
cluster: {redis: "redis://127.0.0.1:$2/0", timeout: 25ms, prefix: "bench:", replicas: 3}
policies:
  limited:
    rate_limit: {rate: 1000000/s, burst: 1000000, key: client_ip, scope: $1}
routes:
  - {upstream: default, policies: [limited]}
EOF
}

if [ "$instructions" = yes ]; then
  echo "| limit | instructions a request |"
  echo "|---|---:|"
  for scope in local cluster; do
    limit_yaml "$scope" "$redis_port" >"$work/extra-$scope.yaml"
    count=$(LB_EXTRA_YAML="$work/extra-$scope.yaml" bench/instructions.sh --only lb \
      | awk -F'|' '/^\| lb/ {gsub(/[ ,]/, "", $3); print $3}')
    echo "| $scope | $count |"
  done
  echo
fi

be_port=$(free_port)
target/release/be --port "$be_port" --name one >"$work/be.log" 2>&1 &
pids+=($!)
wait_port "$be_port"

# One lb with the limit `$1` counted in the Redis on port `$2`; prints the row.
latency_row() {
  local name=$1 scope=$2 store=$3 port admin file
  file=$work/lb-${name//[^a-z]/_}
  port=$(free_port)
  admin=$(free_port)
  {
    echo "server: {threads: 1, pid_file: $file.pid, upgrade_sock: $file.sock}"
    echo "listeners: [127.0.0.1:$port]"
    echo "backends: [127.0.0.1:$be_port]"
    echo "admin: {listen: 127.0.0.1:$admin}"
    limit_yaml "$scope" "$store"
  } >"$file.yaml"
  target/release/lb -c "$file.yaml" >"$file.log" 2>&1 &
  local lb_pid=$!
  wait_port "$port"
  oha -n 200 -c 4 --no-tui --output-format quiet "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  if [ "$name" = "cluster, Redis stopped mid-run" ]; then
    # SIGSTOP: Redis keeps its connections and answers nothing, from a
    # third of the run until two thirds.
    (sleep "$((seconds / 3))"; kill -STOP "$redis_pid"; sleep "$((seconds / 3))"; kill -CONT "$redis_pid") &
  fi
  oha --no-tui --output-format json -z "${seconds}s" -c 16 -q "$rate" --latency-correction \
    "http://127.0.0.1:$port/" | python3 bench/oha_row.py "$name" "$rate/s" 100
  kill "$lb_pid"
  wait "$lb_pid" 2>/dev/null || true
}

echo "| limit | rate | p50 ms | p99 ms | p99.9 ms | CPU µs/req | errors |"
echo "|---|---|---:|---:|---:|---:|---|"
latency_row local local "$redis_port"
latency_row cluster cluster "$redis_port"
latency_row "cluster, Redis silent" cluster "$silent_port"
latency_row "cluster, Redis stopped mid-run" cluster "$redis_port"
