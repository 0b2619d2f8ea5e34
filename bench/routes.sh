#!/usr/bin/env bash
# Writes an lb config fragment with 10 named pools and 50 routes, for
# measuring what routing costs a request (bench/RESULTS.md):
#
#   bench/routes.sh > /tmp/routes.yaml
#   LB_EXTRA_YAML=/tmp/routes.yaml bench/instructions.sh --only lb
#
# Every pool holds the benchmark's three backends (B1, B2, B3: bench/peers.sh
# puts in their ports). The benchmark's requests (Host 127.0.0.1, path /)
# match none of the 40 host routes, 5 wildcard routes and 4 prefix routes,
# and end at the catch-all: the longest walk through the table there is.
set -euo pipefail
echo "upstreams:"
for i in $(seq 0 9); do
  echo "  u$i: {backends: [127.0.0.1:B1, 127.0.0.1:B2, 127.0.0.1:B3]}"
done
echo "routes:"
for i in $(seq 0 39); do
  echo "  - {match: {host: h$i.example.com, path_prefix: /v$((i % 4))/}, upstream: u$((i % 10))}"
done
for i in $(seq 0 4); do
  echo "  - {match: {host: \"*.w$i.example.org\"}, upstream: u$i}"
done
for i in $(seq 0 3); do
  echo "  - {match: {path_prefix: /p$i/}, upstream: u$((i + 5))}"
done
echo "  - {upstream: u9}"
