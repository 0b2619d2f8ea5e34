#!/usr/bin/env bash
# Memory that comes back: a proxy's RSS before, during and after a storm of
# slow POSTs (bench/slow_post_storm.py), beside HAProxy under the same storm.
#
#   bench/storm.sh [--connections N] [--hold SECS] [--after SECS]
#                  [--lb PATH] [--label TEXT] [--only lb|haproxy]
#
# - N connections (default 1,500) each send a POST head with a 10 MB
#   Content-Length and 16 bytes of body a second for HOLD seconds (default
#   20), then all close at once;
# - RSS is read from /proc every second: before the storm, its peak, at the
#   close, 60 s after the close, and the highest and last reading between
#   60 s and AFTER s after it (default 300: the five minutes of the target);
# - one worker thread each, round robin over three `be` backends, which
#   read a body whole before they answer (nginx's `return 200` answers at
#   once, and the proxy then closes the slow client: no storm is held); after the last reading, one request through each
#   proxy must still get a 200;
# - `--lb PATH` measures another lb binary (an allocator build), `--label`
#   names its row; LB_ENV, if set, is passed to lb's environment (e.g.
#   `MIMALLOC_PURGE_DELAY=0`).
# Prints markdown rows. Needs haproxy and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers.sh

connections=1500
hold=20
after=300
lb_binary=
label=
only="haproxy lb"
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --hold) hold=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --lb) lb_binary=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "storm: unknown argument $1" >&2; exit 1 ;;
  esac
done
export PATH="$PATH:/usr/sbin"
if [ -z "$lb_binary" ]; then
  cargo build --release --bin lb --bin be >/dev/null 2>&1 || cargo build --release --bin lb --bin be
  lb_binary=$PWD/target/release/lb
elif [ ! -x target/release/be ]; then
  cargo build --release --bin be >/dev/null 2>&1 || cargo build --release --bin be
fi
label=${label:-lb}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/lb-storm.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
B1=19601; B2=19602; B3=19603; P_HAPROXY=19611; P_LB=19612; LB_ADMIN=19619

for b in $B1 $B2 $B3; do
  target/release/be --quiet --bind 127.0.0.1 --port "$b" >"$work/be.$b.log" 2>&1 &
  pids+=($!)
done
wait_port $B1; wait_port $B2; wait_port $B3

haproxy_cfg "$work/haproxy.cfg" $P_HAPROXY $B1 $B2 $B3
haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!); declare -A pid=([haproxy]=$!)
lb_yaml "$work/lb.yaml" lb $P_LB $LB_ADMIN $B1 $B2 $B3
# shellcheck disable=SC2086
env RUST_LOG=warn ${LB_ENV:-} "$lb_binary" -c "$work/lb.yaml" >"$work/lb.log" 2>&1 &
pids+=($!); pid[lb]=$!
declare -A port=([haproxy]=$P_HAPROXY [lb]=$P_LB)
wait_port $P_HAPROXY; wait_port $P_LB

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
max() { awk -v a="$1" -v b="$2" 'BEGIN {print (a > b) ? a : b}'; }

echo "| proxy | RSS before MB | peak MB | at close MB | 60 s after MB | highest 60-${after} s MB | at ${after} s MB | answers after |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for name in $only; do
  p=${pid[$name]}
  # A few ordinary requests first, so "before" is a proxy that has served.
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:${port[$name]}/"; done
  before=$(rss_mb "$p"); peak=$before
  python3 bench/slow_post_storm.py "${port[$name]}" "$connections" "$hold" >"$work/storm.$name" 2>&1 &
  storm=$!
  while kill -0 "$storm" 2>/dev/null; do peak=$(max "$peak" "$(rss_mb "$p")"); sleep 1; done
  wait "$storm" || true
  echo "$name: $(cat "$work/storm.$name")" >&2
  closed=$(rss_mb "$p")
  sleep 60
  at60=$(rss_mb "$p"); highest=$at60
  for _ in $(seq $((after - 60))); do highest=$(max "$highest" "$(rss_mb "$p")"); sleep 1; done
  last=$(rss_mb "$p")
  status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:${port[$name]}/" || true)
  row=$name; [ "$name" = lb ] && row=$label
  echo "| $row | $before | $peak | $closed | $at60 | $highest | $last | $status |"
done
