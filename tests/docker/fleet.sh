#!/usr/bin/env bash
# Step 8 of tests/docker/run.sh: the fleet of deploy/docker-compose.fleet.yml.
# Three lb replicas behind HAProxy (TCP, send-proxy-v2), sharing a
# cluster-scoped rate limit through Redis, on a network of the step's own
# (LB_FLEET_SUBNET, default 172.31.251.0/24, beside run.sh's 172.31.250.0/24)
# under the compose project lbfleettest. Four checks, each bounded in time:
#
#   spread  requests through HAProxy reach all three replicas, all 200
#   client  lb sees the test's client address, not HAProxy's (PROXY v2)
#   limit   a cluster limit of 20/s, burst 10, driven at 40/s for 10 s over
#           new connections (spread over the replicas): about 20 x 10 + 10
#           accepted for the fleet, not three times that
#   reload  the mounted config replaced by a rename: every replica reports
#           the new config_hash, with no failed request under load meanwhile
#
#   tests/docker/fleet.sh REPORT     (run.sh calls it, after building lb:local)
#
# LB_FLEET_CHECKS: the checks to run, in order (default: all four).
# LB_FLEET_CONFIG: the lb config the test starts from (default
# deploy/fleet/lb.yaml); the test copies it into a directory of its own,
# mounted at /etc/lb, with the /api/ limit set to 20/s, burst 10.
set -euo pipefail
cd "$(dirname "$0")/../.."
report=$1
subnet=${LB_FLEET_SUBNET:-172.31.251.0/24}
prefix=${subnet%.*}
project=lbfleettest
network=${project}_default
haproxy_ip=$prefix.20
client_ip=$prefix.40
haproxy_url=http://$haproxy_ip:8000
token=fleet-test-token
checks=${LB_FLEET_CHECKS:-spread client limit reload}
work=$(mktemp -d)
chmod 755 "$work"
conf=$work/conf

# shellcheck source=tests/docker/lib.sh
. tests/docker/lib.sh

compose() {
  local files=(-p "$project" -f deploy/docker-compose.fleet.yml -f "$work/fleet.test.yml")
  if docker compose version >/dev/null 2>&1; then
    docker compose "${files[@]}" "$@"
  else
    docker-compose "${files[@]}" "$@"
  fi
}

fail() {
  echo "docker-test: FAIL: $*" >&2
  local c
  for c in $(lb_containers); do
    echo "--- $c (lb's own lines)" >&2
    docker logs "$c" 2>&1 | grep -v 'lb::access' | tail -15 >&2 || true
  done
  compose logs --tail 20 haproxy redis >&2 2>&1 || true
  exit 1
}

cleanup() {
  touch "$work/stop" 2>/dev/null || true
  docker rm -f lbfleet-client >/dev/null 2>&1 || true
  compose down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

lb_containers() { compose ps -q lb 2>/dev/null; }
# The access-log lines of container $1 whose path starts with $2.
access_lines() { docker logs "$1" 2>&1 | grep 'lb::access' | grep -F "\"GET $2" || true; }
count_access() { access_lines "$1" "$2" | wc -l; }
# Admin API of lb container $1: GET $2, with the token.
admin_get() { docker exec "$1" curl -fsS --max-time 5 -H "Authorization: Bearer $token" "http://127.0.0.1:9000$2"; }
# One field ($2) of lb container $1's /api/status.
status_field() { admin_get "$1" /api/status | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
config_hash() { status_field "$1" config_hash; }
# Whether every replica counts its cluster limits in Redis (not locally).
all_shared() {
  local c
  for c in $(lb_containers); do [ "$(status_field "$c" cluster_limits 2>/dev/null)" = shared ] || return 1; done
}
# The sum over the three replicas of the metric lines matching $1.
metric_sum() {
  local c
  for c in $(lb_containers); do admin_get "$c" /metrics; done \
    | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'
}

# The test's lb config in $conf/lb.yaml, from $1: the /api/ limit at 20/s,
# burst 10. Written beside and renamed over, as an editor saves.
write_config() {
  mkdir -p "$conf"
  chmod 755 "$conf"
  sed 's|rate_limit: {rate: [0-9]*/s, burst: [0-9]*,|rate_limit: {rate: 20/s, burst: 10,|' "$1" >"$conf/.lb.yaml.tmp"
  grep -q 'rate: 20/s, burst: 10' "$conf/.lb.yaml.tmp" || fail "no rate_limit line to set in $1"
  chmod 644 "$conf/.lb.yaml.tmp"
  mv "$conf/.lb.yaml.tmp" "$conf/lb.yaml"
}

# What the step adds to the shipped compose file: its subnet, HAProxy at a
# fixed address, the test's config directory, free host ports, a token.
write_override() {
  cat >"$work/fleet.test.yml" <<EOF
services:
  lb:
    volumes:
      - $conf:/etc/lb:ro
    environment:
      LB_ADMIN_TOKEN: $token
  haproxy:
    networks:
      default:
        ipv4_address: $haproxy_ip
networks:
  default:
    ipam:
      config:
        - subnet: $subnet
EOF
}

# How many of HAProxy's lb servers are UP, from its statistics (CSV).
haproxy_up() {
  curl -fsS --max-time 2 "http://$haproxy_ip:8404/;csv" 2>/dev/null \
    | awk -F, '$1 == "lbs" && $2 != "BACKEND" && $18 ~ /^UP/' | wc -l
}
all_up() { [ "$(haproxy_up)" -eq 3 ]; }

bring_up() {
  say "8. a fleet: 3 lb behind HAProxy (PROXY v2), limits shared in Redis"
  write_config "${LB_FLEET_CONFIG:-deploy/fleet/lb.yaml}"
  write_override
  export LB_FLEET_HTTP_PORT LB_FLEET_STATS_PORT
  LB_FLEET_HTTP_PORT=$(free_port) LB_FLEET_STATS_PORT=$(free_port)
  docker image inspect lb:local >/dev/null 2>&1 || fail "no image lb:local (run.sh's step 1 builds it)"
  compose build haproxy redis >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; fail "building HAProxy and Redis"; }
  local t0=$SECONDS
  compose up -d --scale lb=3 >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "compose up"; }
  local c
  for c in $(lb_containers); do
    wait_for 90 is_healthy "$c" || fail "lb $c never became healthy ($(health_of "$c"))"
  done
  [ "$(lb_containers | wc -l)" -eq 3 ] || fail "not 3 lb replicas: $(lb_containers | wc -l)"
  wait_for 30 all_up || fail "HAProxy has $(haproxy_up) of 3 lb replicas UP"
  figure "fleet up: 3 lb replicas healthy and UP in HAProxy $((SECONDS - t0)) s after compose up"
}

check_spread() {
  say "8.1 requests through HAProxy reach every replica"
  local ok=0 i c counts total
  for i in $(seq 30); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$haproxy_url/fleet/spread/$i")" = 200 ] && ok=$((ok + 1))
  done
  [ "$ok" -eq 30 ] || fail "$ok of 30 requests through HAProxy answered 200"
  # The access lines are written as the answers leave: wait for all 30.
  spread_total() { total=0; for c in $(lb_containers); do total=$((total + $(count_access "$c" /fleet/spread/))); done; [ "$total" -ge 30 ]; }
  wait_for 10 spread_total || fail "only $total of 30 requests in the replicas' access logs"
  counts=$(for c in $(lb_containers); do count_access "$c" /fleet/spread/; done | paste -sd/ -)
  figure "30 requests through HAProxy, one connection each: 30 answered 200; per lb replica $counts"
  for c in $(lb_containers); do
    [ "$(count_access "$c" /fleet/spread/)" -gt 0 ] || fail "replica $c got none of 30 requests ($counts)"
  done
}

check_client() {
  say "8.2 lb sees the client's address, not HAProxy's (PROXY v2)"
  local gateway seen c out i
  gateway=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$network")
  gateway=${gateway:-$prefix.1}
  # This host's requests arrive at HAProxy from the network's gateway; six
  # connections, two for each replica.
  for i in $(seq 6); do
    curl -fsS -o /dev/null --max-time 5 "$haproxy_url/fleet/client/$i" || fail "request $i through HAProxy failed"
  done
  client_seen() {
    seen=$(for c in $(lb_containers); do access_lines "$c" /fleet/client/; done \
      | sed -E 's/^.*lb::access\] ([^ ]+) ".*$/\1/' | sort | uniq -c | awk '{print $2 " x" $1}' | paste -sd' ' -)
    [ "$seen" = "$gateway x6" ]
  }
  wait_for 10 client_seen || fail "lb saw the clients '$seen'; expected $gateway (this host) for all 6, not $haproxy_ip (HAProxy)"
  # A client container at a fixed address: be echoes what lb forwarded.
  out=$(docker run --rm --name lbfleet-client --network "$network" --ip "$client_ip" \
    --entrypoint curl lb:local -fsS --max-time 10 http://haproxy:8000/headers) \
    || fail "the client container's request through HAProxy failed"
  grep -qi "^x-forwarded-for: $client_ip\$" <<<"$out" || fail "be did not get X-Forwarded-For: $client_ip: $out"
  figure "client address through HAProxy (PROXY v2): lb logged $gateway (this host) for 6 of 6, not HAProxy's $haproxy_ip; a container at $client_ip got X-Forwarded-For: $client_ip"
}

# Sends GET $1<n> at $2 requests a second for $3 seconds, each on a new
# connection (HAProxy gives each to the next replica); prints one JSON line:
# answers by status (or error kind), sends more than 0.25 s late, and the
# seconds from the first send to the last. At most $2 x $3 requests of at
# most 5 s each, 16 at once: bounded.
write_paced_load() {
  cat >"$work/paced.py" <<'PY'
import collections, http.client, json, sys, threading, time
from urllib.parse import urlsplit

url, rate, seconds = urlsplit(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
total = int(rate * seconds)
start = time.monotonic() + 0.2
lock = threading.Lock()
statuses = collections.Counter()
sent = []
state = {"next": 0, "late": 0}


def worker():
    while True:
        with lock:
            i = state["next"]
            state["next"] += 1
        if i >= total:
            return
        due = start + i / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        now = time.monotonic()
        with lock:
            sent.append(now)
            state["late"] += now - due > 0.25
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
            conn.request("GET", f"{url.path}{i}", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            kind = str(response.status)
            conn.close()
        except Exception as e:  # noqa: BLE001: every failure is counted
            kind = type(e).__name__
        with lock:
            statuses[kind] += 1


threads = [threading.Thread(target=worker) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"sent": len(sent), "statuses": dict(statuses), "late": state["late"],
                  "send_seconds": round(max(sent) - min(sent), 2)}))
PY
}

check_limit() {
  say "8.3 a cluster rate limit (20/s, burst 10) at 40/s for 10 s through HAProxy"
  local result accepted seconds expected c per_replica store_errors
  # Each replica connects to Redis in the background: start once all count there.
  wait_for 20 all_shared || fail "not every replica shares its cluster limits through Redis: $(for c in $(lb_containers); do status_field "$c" cluster_limits; done | paste -sd' ' -)"
  write_paced_load
  result=$(timeout 120 python3 "$work/paced.py" "$haproxy_url/api/fleet-limit/" 40 10) \
    || fail "the paced load did not finish within 120 s"
  accepted=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["statuses"].get("200", 0))' "$result")
  seconds=$(load_field "$result" send_seconds)
  # 20/s over the time the sending took, plus the burst: a loaded machine
  # that lags sends over more than 10 s is judged by what it did.
  expected=$(awk -v t="$seconds" 'BEGIN {printf "%d", 20 * t + 10}')
  per_replica=$(for c in $(lb_containers); do access_lines "$c" /api/fleet-limit/ | grep -c '" 200 ' || true; done | paste -sd/ -)
  store_errors=$(metric_sum lb_rate_limit_store_errors_total)
  figure "cluster limit 20/s burst 10, 40/s offered for $seconds s over 3 replicas: $accepted accepted (expected $expected +-10%; counted per replica, up to 3 times that would pass); by replica $per_replica; answers $(load_field "$result" statuses); $(load_field "$result" late) sends late; store errors $store_errors"
  python3 -c 'import sys; a, e = int(sys.argv[1]), int(sys.argv[2]); sys.exit(0 if abs(a - e) <= 0.1 * e else 1)' "$accepted" "$expected" \
    || fail "accepted $accepted, not within 10% of $expected: $result"
  [ "$(python3 -c 'import json,sys; print(sorted(json.loads(sys.argv[1])["statuses"]))' "$result")" = "['200', '429']" ] \
    || fail "answers other than 200 and 429: $result"
}

all_report() {
  local want=$1 c h
  for c in $(lb_containers); do
    h=$(config_hash "$c" 2>/dev/null) || return 1
    [ "$h" = "$want" ] || return 1
  done
}

check_reload() {
  say "8.4 the mounted config replaced by a rename, under load: every replica reloads"
  local c old new hashes t0 result reloads
  hashes=$(for c in $(lb_containers); do config_hash "$c"; done | sort -u)
  [ "$(wc -l <<<"$hashes")" -eq 1 ] || fail "the replicas run different configs: $hashes"
  old=$hashes
  [ "$old" = "$(sha256sum "$conf/lb.yaml" | cut -c1-12)" ] \
    || fail "config_hash $old is not the file's SHA-256 prefix $(sha256sum "$conf/lb.yaml" | cut -c1-12)"
  rm -f "$work/stop"
  python3 tests/docker/load.py "$haproxy_url/fleet/reload" --connections 3 --seconds 90 \
    --stop-file "$work/stop" --timeout 20 >"$work/load.reload.json" &
  local load=$!
  sleep 2
  # The new config: the /api/ limit at 30/s. lb's hash is over the file's
  # bytes: read it back from the first replica once it has the new one.
  sed 's|rate: 20/s, burst: 10,|rate: 30/s, burst: 10,|' "$conf/lb.yaml" >"$conf/.lb.yaml.tmp"
  chmod 644 "$conf/.lb.yaml.tmp"
  t0=$(date +%s.%N)
  mv "$conf/.lb.yaml.tmp" "$conf/lb.yaml"
  first_changed() { new=$(config_hash "$(lb_containers | sed -n 1p)") && [ "$new" != "$old" ]; }
  wait_for 30 first_changed || fail "replica 1 still reports config_hash $old 30 s after the rename"
  # The hash is the first 12 hex digits of the SHA-256 of the file's bytes.
  [ "$new" = "$(sha256sum "$conf/lb.yaml" | cut -c1-12)" ] \
    || fail "config_hash $new is not the file's SHA-256 prefix $(sha256sum "$conf/lb.yaml" | cut -c1-12)"
  wait_for 30 all_report "$new" || fail "not every replica reports config_hash $new: $(for c in $(lb_containers); do config_hash "$c"; done | paste -sd' ' -)"
  local took delays
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  # When each replica logged the reload (Docker's timestamp of the line),
  # after the rename: lb's own delay, without the test's polling.
  delays=$(for c in $(lb_containers); do
    ts=$(docker logs -t "$c" 2>&1 | grep -F "reloaded config $new" | awk 'NR == 1 {print $1}')
    awk -v a="$t0" -v b="$(date -d "$ts" +%s.%N 2>/dev/null || echo 0)" 'BEGIN {printf "%.1f\n", b - a}'
  done | paste -sd/ -)
  sleep 2
  touch "$work/stop"
  wait "$load" || true
  result=$(cat "$work/load.reload.json")
  reloads=$(metric_sum 'lb_config_reloads_total{outcome="success"}')
  # The metrics read whole, then searched: `admin_get | grep -q` would fail
  # under pipefail when grep, done at the first match, leaves curl writing
  # into a closed pipe (SIGPIPE).
  local metrics info
  for c in $(lb_containers); do
    metrics=$(admin_get "$c" /metrics) || fail "replica $c: no /metrics"
    info=$(grep '^lb_config_info{' <<<"$metrics" || true)
    [ "$info" = "lb_config_info{hash=\"$new\"} 1" ] || fail "replica $c: lb_config_info is '$info', not $new alone"
  done
  figure "config replaced by a rename in the mounted directory: all 3 replicas report config_hash $old -> $new within $took s (seen through docker exec; each logged its reload $delays s after the rename); $reloads successful reloads; under keep-alive load: $(load_field "$result" requests) requests, $(load_field "$result" errors) errors $(load_field "$result" error_kinds)"
  [ "$(load_field "$result" errors)" -eq 0 ] || fail "client errors during the reload: $result"
}

bring_up
for check in $checks; do
  case $check in
    spread) check_spread ;;
    client) check_client ;;
    limit) check_limit ;;
    reload) check_reload ;;
    *) fail "unknown check $check" ;;
  esac
done
