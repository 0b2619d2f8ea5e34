#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a
# measure this shared machine's noise does not move (two runs of the same
# binary differ by under 0.5%; requests/s from bench/run.sh vary by 30%).
#
#   bench/instructions.sh [--requests N] [--only NAME,...] [--lb PATH]
#                         [--headers lb-only|minimal|like-for-like] [--keep DIR]
#
# Each proxy (nginx, HAProxy, lb, a bare Pingora proxy) runs in turn under
# `valgrind --tool=callgrind`, one worker, round robin over three nginx
# backends, as in bench/run.sh. oha sends 2,000 warm-up requests, the
# counters are zeroed, then N requests (default 10,000) on 16 keep-alive
# connections are counted. Prints a markdown table. `--only lb` counts
# only the named proxies (nginx, haproxy, lb, pingora-bare); `--lb PATH`
# counts another lb binary (an older build, to compare before and after);
# `--headers` chooses which proxies add forwarding headers (bench/peers.sh);
# `--keep DIR` keeps the callgrind dumps there, for `callgrind_annotate`.
#
# What it does not see: the kernel (send/recv on loopback is about 40% of
# lb's CPU time and 68% of HAProxy's), cache misses, and memcpy's real speed
# (valgrind counts `rep movsb` per byte). Use it to compare versions of the
# same code path, and bench/run.sh for time. Needs valgrind, nginx, haproxy
# (Debian packages) and oha (cargo install oha); installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/peers.sh

requests=10000
only=nginx,haproxy,lb,pingora-bare
lb_binary=
keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --lb) lb_binary=$2; shift 2 ;;
    --headers) HEADERS=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "instructions: unknown argument $1" >&2; exit 1 ;;
  esac
done

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v cmake >/dev/null || need+=(cmake)
if [ ${#need[@]} -gt 0 ]; then
  echo "instructions: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
command -v oha >/dev/null || cargo install --locked oha >/dev/null 2>&1
cargo build --release --bins --examples >/dev/null 2>&1 || cargo build --release --bins --examples
LB=${lb_binary:-$PWD/target/release/lb}
BARE=$PWD/target/release/examples/bare_pingora
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/lb-instructions.XXXXXX)
proxy_pid=
cleanup() {
  [ -n "$proxy_pid" ] && kill -9 "$proxy_pid" 2>/dev/null
  nginx -p "$work/backends" -c "$work/backends/nginx.conf" -s stop 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

B1=19121; B2=19122; B3=19123; PROXY=19320; ADMIN=19329
for p in $B1 $B2 $B3 $PROXY $ADMIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "instructions: port $p is already in use" >&2; exit 1
  fi
done
# Longer than peers.sh's wait_port: a proxy starting under valgrind is slow.
wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "instructions: nothing listens on $1" >&2; exit 1
}

mkdir -p "$work/backends/logs" "$work/nginx/logs"
backends_conf "$work/backends/nginx.conf" "$work/backends" $B1 $B2 $B3
nginx -p "$work/backends" -c "$work/backends/nginx.conf"
wait_port $B1; wait_port $B2; wait_port $B3

# The proxies, configured as in bench/run.sh; nginx in the foreground
# (valgrind follows one process).
nginx_proxy_conf "$work/nginx/nginx.conf" "$work/nginx" $PROXY foreground $B1 $B2 $B3
haproxy_cfg "$work/haproxy.cfg" $PROXY $B1 $B2 $B3
lb_yaml "$work/lb.yaml" lb $PROXY $ADMIN $B1 $B2 $B3

# callgrind_control FLAG for the proxy under test. Valgrind takes commands
# only while its program runs, and an idle nginx sleeps in epoll_wait: one
# request wakes it.
callgrind_command() {
  callgrind_control "$1" "$proxy_pid" >/dev/null 2>&1 &
  local control=$!
  sleep 0.5
  oha -n 1 --no-tui --output-format quiet "http://127.0.0.1:$PROXY/" || true
  wait "$control"
}

# count NAME CMD...: prints "NAME instructions-per-request".
count() {
  local name=$1; shift
  case ",$only," in *",$name,"*) ;; *) return 0 ;; esac
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name.%p" \
    "$@" >"$work/valgrind.$name.log" 2>&1 &
  proxy_pid=$!
  wait_port $PROXY
  sleep 1
  oha -n 2000 -c 16 --no-tui --output-format quiet "http://127.0.0.1:$PROXY/"
  callgrind_command -z
  local ok
  ok=$(oha -n "$requests" -c 16 --no-tui "http://127.0.0.1:$PROXY/" | awk '/\[200\]/ {print $2}')
  callgrind_command -d
  # The counts are in the dump; a graceful stop would wait out Pingora's
  # grace period (300 s by default for the bare proxy).
  kill -KILL "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY") 2>/dev/null || break; sleep 0.1; done
  if [ "${ok:-0}" != "$requests" ]; then
    echo "instructions: $name answered ${ok:-0} of $requests requests with 200" >&2; exit 1
  fi
  local dump total
  dump=$(ls "$work"/cg."$name".*.1)
  [ -n "$keep" ] && mkdir -p "$keep" && cp "$dump" "$keep/callgrind.$name.$HEADERS"
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$name $((total / requests))"
}

{
  count nginx nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
  count haproxy haproxy -f "$work/haproxy.cfg"
  count lb "$LB" -c "$work/lb.yaml"
  count pingora-bare "$BARE" 127.0.0.1:$PROXY 127.0.0.1:$B1 127.0.0.1:$B2 127.0.0.1:$B3
} > "$work/counts"

echo "## User-space instructions per request (callgrind, $requests requests, 16 keep-alive connections, headers $HEADERS)"
echo
echo "| proxy | instructions per request | x nginx |"
echo "| --- | ---: | ---: |"
awk 'NR == 1 { base = $2 } { printf "| %s | %d | %.2f |\n", $1, $2, $2 / base }' "$work/counts"
