#!/usr/bin/env bash
# Step 7 of tests/docker/run.sh: replacing the lb container itself (a new
# image) without downtime takes a second replica. Two lb containers behind
# HAProxy in TCP mode (Debian's haproxy in an image built on the local
# debian:bookworm-slim), in front of the compose test's `be` backends; each
# lb container in turn is stopped (docker stop: a graceful stop), removed and
# started again from the new image, under keep-alive load through HAProxy.
#
#   tests/docker/rolling.sh REPORT     (run.sh calls it, with its network up)
set -euo pipefail
cd "$(dirname "$0")/../.."
report=$1
subnet=${LB_TEST_SUBNET:-172.31.250.0/24}
prefix=${subnet%.*}
network=${LB_TEST_NETWORK:-lbdockertest_default}
haproxy_ip=$prefix.20
work=$(mktemp -d)
trap 'touch "$work/stop"; docker rm -f lbtest-a lbtest-b lbtest-haproxy >/dev/null 2>&1; rm -rf "$work"' EXIT

# shellcheck source=tests/docker/lib.sh
. tests/docker/lib.sh
fail() {
  echo "docker-test: FAIL: $*" >&2
  docker logs --tail 30 lbtest-haproxy >&2 2>&1 || true
  exit 1
}

say "7. two lb containers behind HAProxy (TCP), replaced one after the other under load"
mkdir -p "$work/haproxy"
cat >"$work/haproxy/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
EOF
docker build --network host -q -t lbtest-haproxy:local "$work/haproxy" >/dev/null || fail "building the HAProxy image"
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend clients
  bind :8000
  default_backend lbs
backend lbs
  balance roundrobin
  server a $prefix.21:8000 check inter 500ms fall 1 rise 2
  server b $prefix.22:8000 check inter 500ms fall 1 rise 2
EOF
chmod 644 "$work/haproxy.cfg"

# An lb container named $1 at address $2, from image $3, in front of `be`.
start_lb() {
  docker run -d --name "$1" --network "$network" --ip "$2" \
    -e LB_BACKENDS=be:8080 "$3" >/dev/null
  wait_for 60 is_healthy "$1" || fail "$1 never became healthy"
}

start_lb lbtest-a "$prefix.21" lb:test
start_lb lbtest-b "$prefix.22" lb:test
docker run -d --name lbtest-haproxy --network "$network" --ip "$haproxy_ip" \
  -v "$work/haproxy.cfg:/etc/haproxy/haproxy.cfg:ro" lbtest-haproxy:local >/dev/null
wait_for 30 sh -c "curl -fs --max-time 2 http://$haproxy_ip:8000/ | grep -q 'Hello From'" \
  || fail "HAProxy does not answer"

# The new image: the same build under a new tag, as a new release would be.
docker tag lb:test lb:next
python3 tests/docker/load.py "http://$haproxy_ip:8000/" --connections 8 --seconds 180 \
  --stop-file "$work/stop" --timeout 20 >"$work/load.json" &
load=$!
sleep 2
for name in lbtest-a lbtest-b; do
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$name")
  t0=$SECONDS
  docker stop -t 20 "$name" >/dev/null
  docker rm "$name" >/dev/null
  start_lb "$name" "$ip" lb:next
  # HAProxy takes it back after two passed checks (rise 2, every 500 ms).
  sleep 2
  figure "rolled $name: stopped, replaced and healthy in $((SECONDS - t0)) s"
done
sleep 2
touch "$work/stop"
wait "$load" || true
result=$(cat "$work/load.json")
figure "two lb containers replaced in turn behind HAProxy under keep-alive load: $(load_field "$result" requests) requests, $(load_field "$result" errors) errors $(load_field "$result" error_kinds), $(load_field "$result" stale_connection_retries) stale-connection retries"
[ "$(load_field "$result" errors)" -eq 0 ] || fail "client errors while rolling: $result"
