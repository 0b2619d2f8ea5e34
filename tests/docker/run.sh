#!/usr/bin/env bash
# lb in Docker, against a real Docker engine: the image, compose, backend
# loss, scaling, a partition, in-place upgrades, a stop under load, and a
# rolling replacement of two lb containers behind HAProxy, and a fleet of
# three behind HAProxy (PROXY v2) sharing a rate limit through Redis and
# following an edit of their config.
#
#   tests/docker/run.sh            (as root, or a user in the docker group)
#
# Everything runs on containers and one network the test makes itself, on
# LB_TEST_SUBNET (default 172.31.250.0/24); the host's ports it publishes
# are free ones it picks. Each step prints its figures (requests, errors,
# seconds) as `figure:` lines, also written to LB_DOCKER_REPORT (default
# target/docker-report.txt). Each load is bounded in time. Exit status 0
# when every step passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

subnet=${LB_TEST_SUBNET:-172.31.250.0/24}
net_prefix=${subnet%.*}
project=lbdockertest
work=$(mktemp -d)
chmod 755 "$work"
report=${LB_DOCKER_REPORT:-$root/target/docker-report.txt}
mkdir -p "$(dirname "$report")"
: >"$report"
export LB_TEST_SUBNET=$subnet LB_TEST_LB_IP=$net_prefix.10 LB_TEST_CONFIG=$work/lb.yaml
lb_url=http://$LB_TEST_LB_IP:8000
network=${project}_default

# shellcheck source=tests/docker/lib.sh
. tests/docker/lib.sh
fail() {
  echo "docker-test: FAIL: $*" >&2
  # lb's own lines, and the access lines of requests that failed.
  compose logs lb 2>&1 | grep -v 'lb::access' | tail -40 >&2 || true
  compose logs lb 2>&1 | grep 'lb::access' | grep -v '" 200 ' | tail -20 >&2 || true
  exit 1
}

compose() {
  local files=(-p "$project" -f deploy/docker-compose.yml -f tests/docker/compose.test.yml)
  if docker compose version >/dev/null 2>&1; then
    docker compose "${files[@]}" "$@"
  else
    docker-compose "${files[@]}" "$@"
  fi
}

cleanup() {
  touch "$work"/stop.* 2>/dev/null || true
  compose down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  docker rm -f lbtest-ro lbtest-low lbtest-slow lbtest-a lbtest-b lbtest-haproxy >/dev/null 2>&1 || true
  docker network rm lbtest-roll >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }


# The names of the `be` that answer N requests to lb, one per line, counted.
spread() {
  local n=$1 url=${2:-$lb_url/}
  for _ in $(seq "$n"); do
    curl -s --max-time 5 "$url" | awk '{print $NF}'
  done | sort | uniq -c
}
distinct_backends() { spread "$1" | wc -l; }
serves_from() { [ "$(distinct_backends 30)" -eq "$1" ]; }

# Starts keep-alive load against lb for at most $2 seconds under the name $1;
# `load_stop NAME` ends it and prints its JSON.
load_start() {
  rm -f "$work/stop.$1"
  python3 tests/docker/load.py "${3:-$lb_url/}" --connections 8 --seconds "$2" \
    --stop-file "$work/stop.$1" --timeout 20 >"$work/load.$1.json" &
  echo $! >"$work/load.$1.pid"
}
load_stop() {
  touch "$work/stop.$1"
  # Called in $(...), a subshell, which cannot `wait` for the load: poll for
  # its one line, written as it ends, within its client timeout (20 s) of
  # the stop file.
  local deadline=$((SECONDS + 60))
  until [ -s "$work/load.$1.json" ] || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.2; done
  cat "$work/load.$1.json"
}
# A load's JSON ($1) summed up in one phrase.
load_summary() {
  python3 - "$1" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
kinds = " " + json.dumps(r["error_kinds"]) if r["error_kinds"] else ""
print(f"{r['requests']} requests, {r['errors']} errors{kinds}, "
      f"{r['stale_connection_retries']} stale-connection retries, {r['seconds']} s")
PY
}

lb_container() { compose ps -q lb; }

# The lb config of the compose test: the shipped one, plus a pool `slow`
# (a `be` that answers after 3 s) behind /slow/, for step 6.
write_config() {
  {
    cat deploy/lb.compose.yaml
    echo "upstreams:"
    echo "  slow:"
    echo "    backends: [slow:8080]"
    echo "    health_check: {path: /health, interval: 5s, timeout: 5s}"
    echo "routes:"
    echo "  - {match: {path_prefix: /slow/}, upstream: slow}"
    echo "  - upstream: default"
  } >"$work/lb.next.yaml"
  if [ "${1:-}" = close ]; then
    sed -i 's/^  unhealthy_threshold: 1$/  unhealthy_threshold: 1\n  on_marked_down: close/' "$work/lb.next.yaml"
  fi
  # In place: the container's bind mount follows the file, not its name.
  cat "$work/lb.next.yaml" >"$LB_TEST_CONFIG"
  chmod 644 "$LB_TEST_CONFIG"
}

step_image() {
  say "1. the image"
  tests/docker/base-images.sh
  local t0
  t0=$(now)
  docker build --network host -t lb:test -t lb:local . >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; fail "docker build"; }
  figure "build: $(since "$t0") s; image $(docker image inspect -f '{{.Size}}' lb:test | awk '{printf "%.1f MB", $1 / 1e6}')"
  # Outputs are read whole before grep: with pipefail, `grep -q` closing
  # the pipe early would fail the writer.
  local out
  out=$(docker run --rm lb:test --version)
  grep -q '^lb ' <<<"$out" || fail "lb --version in the container: $out"
  docker run --rm lb:test -t -c /etc/lb/lb.yaml >/dev/null || fail "lb -t in the container"
  [ "$(docker run --rm --entrypoint id lb:test -u)" = 10001 ] || fail "the container does not run as user 10001"
  docker run -d --name lbtest-ro --read-only --tmpfs /tmp --cap-drop ALL lb:test >/dev/null
  wait_for 60 is_healthy lbtest-ro || fail "the read-only container never became healthy ($(health_of lbtest-ro))"
  out=$(docker exec lbtest-ro curl -fsS http://127.0.0.1:8000/)
  grep -q 'Hello From Backend Server' <<<"$out" || fail "the image's demo does not answer: $out"
  out=$(docker logs lbtest-ro 2>&1)
  grep -q 'set LB_BACKENDS' <<<"$out" || fail "the demo does not say what to set: $out"
  figure "read-only, --cap-drop ALL, user $(docker exec lbtest-ro id -u): healthy, the demo answers"
  docker run -d --name lbtest-low --read-only --tmpfs /tmp --cap-drop ALL \
    -e LB_BACKENDS=127.0.0.1:9 lb:test --listen 0.0.0.0:80 >/dev/null
  local code unprivileged
  wait_for 20 sh -c "docker exec lbtest-low curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:80/ | grep -q 503" \
    || fail "lb without capabilities could not listen on port 80"
  unprivileged=$(docker exec lbtest-low cat /proc/sys/net/ipv4/ip_unprivileged_port_start)
  figure "port 80 with --cap-drop ALL: bound (no capability needed: Docker sets net.ipv4.ip_unprivileged_port_start=$unprivileged in the container)"
  docker rm -f lbtest-ro lbtest-low >/dev/null
}

step_compose() {
  say "2. compose up --scale be=3"
  write_config
  export LB_HTTP_PORT LB_HTTPS_PORT LB_ADMIN_PORT
  LB_HTTP_PORT=$(free_port) LB_HTTPS_PORT=$(free_port) LB_ADMIN_PORT=$(free_port)
  local t0
  t0=$(now)
  compose up -d --scale be=3 >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up"; }
  wait_for 90 is_healthy "$(lb_container)" || fail "lb never became healthy ($(health_of "$(lb_container)"))"
  figure "compose up to lb healthy: $(since "$t0") s"
  local counts
  counts=$(spread 60)
  echo "$counts"
  [ "$(wc -l <<<"$counts")" -eq 3 ] || fail "60 requests were not spread over 3 backends"
  figure "60 requests over 3 backend containers: $(awk '{print $1}' <<<"$counts" | paste -sd/ -)"
}

step_loss_and_scaling() {
  say "3. a backend killed, scaled up to 5, down to 2, under load"
  load_start scale 150
  sleep 2
  docker kill "$(compose ps -q be | head -1)" >/dev/null
  wait_for 30 serves_from 2 || fail "lb still sends to the killed backend"
  local t0
  t0=$(now)
  compose up -d --no-recreate --scale be=5 >"$work/up5.log" 2>&1 || { cat "$work/up5.log" >&2; fail "scale to 5"; }
  wait_for 60 serves_from 5 || fail "the new backends got no traffic within 60 s"
  figure "scale 3 -> 5: all 5 get traffic $(since "$t0") s after the command (discovery 2 s + health check 5 s)"
  compose up -d --no-recreate --scale be=2 >"$work/up2.log" 2>&1 || { cat "$work/up2.log" >&2; fail "scale to 2"; }
  wait_for 60 serves_from 2 || fail "lb still sends to removed backends"
  sleep 2
  local result
  result=$(load_stop scale)
  figure "kill 1 of 3, scale to 5, scale to 2 under keep-alive load: $(load_summary "$result")"
  [ "$(load_field "$result" errors)" -eq 0 ] || fail "client errors: $result"
}

# Disconnects one backend under load ($1: keep or close), then reconnects it.
partition() {
  local mode=$1 victim result t0 n
  write_config "$mode"
  compose kill -s HUP lb >/dev/null 2>&1
  n=$(compose ps -q be | wc -l)
  wait_for 30 serves_from "$n" || fail "not serving from $n backends before the partition"
  victim=$(compose ps -q be | head -1)
  load_start "partition-$mode" 60
  sleep 2
  t0=$(now)
  docker network disconnect "$network" "$victim"
  wait_for 30 serves_from $((n - 1)) || fail "lb still sends to the disconnected backend"
  figure "partition ($mode): new requests avoid the disconnected backend after $(since "$t0") s"
  sleep 25 # the requests that were in flight to it end: retried, or timed out (client timeout 20 s)
  result=$(load_stop "partition-$mode")
  figure "partition with on_marked_down: $mode: $(load_summary "$result")"
  t0=$(now)
  # Back under the service's name: compose gave it the alias `be`.
  docker network connect --alias be "$network" "$victim"
  wait_for 60 serves_from "$n" || fail "the reconnected backend gets no traffic"
  figure "partition ($mode): reconnected backend gets traffic again after $(since "$t0") s"
  [ "$mode" = keep ] || [ "$(load_field "$result" errors)" -eq 0 ] || fail "client errors in the partition: $result"
}

step_partition() {
  say "4. a partition: docker network disconnect"
  partition keep
  partition close
}

step_upgrades() {
  say "5. three in-place upgrades under load"
  local before after t0 result
  before=$(lb_container)
  load_start upgrade 150
  sleep 2
  for i in 1 2 3; do
    t0=$(now)
    docker exec "$before" lb-upgrade -c /etc/lb/lb.yaml >"$work/upgrade.$i.log" 2>&1 \
      || { cat "$work/upgrade.$i.log" >&2; fail "lb-upgrade $i"; }
    figure "upgrade $i: $(since "$t0") s; $(grep timeline "$work/upgrade.$i.log" | sed 's/^lb-upgrade: //')"
  done
  sleep 2
  result=$(load_stop upgrade)
  after=$(lb_container)
  [ "$before" = "$after" ] || fail "the container changed: $before -> $after"
  [ "$(docker inspect -f '{{.State.Running}}' "$after")" = true ] || fail "the container stopped"
  figure "3 upgrades under keep-alive load: $(load_summary "$result"); same container"
  [ "$(load_field "$result" errors)" -eq 0 ] || fail "client errors during upgrades: $result"
}

step_stop() {
  say "6. docker stop under load, with long requests in flight"
  docker run -d --name lbtest-slow --network "$network" --network-alias slow \
    --entrypoint be lb:test --port 8080 --name slow --fault delay --delay 3s >/dev/null
  wait_for 60 sh -c "curl -s --max-time 10 $lb_url/slow/ | grep -q 'Server slow'" \
    || fail "the slow backend never served"
  local lb_id t0 status code
  lb_id=$(lb_container)
  for i in 1 2 3; do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 30 "$lb_url/slow/$i" >"$work/long.$i" &
  done
  load_start stop 60
  sleep 1
  t0=$(now)
  docker stop -t 20 "$lb_id" >/dev/null
  local took result kinds
  took=$(since "$t0")
  sleep 1
  result=$(load_stop stop)
  wait
  status=$(docker inspect -f '{{.State.ExitCode}}' "$lb_id")
  code=$(cat "$work"/long.* | sort | uniq -c | awk '{print $1 " x " $2}' | paste -sd' ' -)
  figure "docker stop with 3 requests of 3 s in flight: answered $code; exit code $status; stopped in $took s (stop timeout 20 s)"
  figure "docker stop under keep-alive load: $(load_summary "$result") (once lb stops listening, connections are refused; once the container is gone, its address does not answer)"
  # Every request sent was answered 200; the only errors are connections
  # that could not be opened.
  kinds=$(load_field "$result" error_kinds)
  [ "$(python3 -c 'import ast,sys; print(all(k.startswith("connect ") for k in ast.literal_eval(sys.argv[1])))' "$kinds")" = True ] \
    || fail "a request sent at the stop failed: $kinds"
  [ "$status" -eq 0 ] || fail "lb exited with $status"
  [ "$(cat "$work"/long.* | sort -u)" = 200 ] || fail "long requests did not all finish: $code"
  if curl -s --max-time 2 "$lb_url/" >/dev/null; then fail "a stopped lb still answers"; fi
  docker rm -f lbtest-slow >/dev/null
}

# LB_TEST_STEPS: the steps to run, in order (default: all). The image is
# built first whatever it says.
steps=${LB_TEST_STEPS:-compose loss partition upgrades stop rolling fleet}
step_image
for step in $steps; do
  case $step in
    compose) step_compose ;;
    loss) step_loss_and_scaling ;;
    partition) step_partition ;;
    upgrades) step_upgrades ;;
    stop) step_stop ;;
    rolling) tests/docker/rolling.sh "$report" ;;
    fleet) tests/docker/fleet.sh "$report" ;;
    *) fail "unknown step $step" ;;
  esac
done
say "all steps passed; figures in $report"
