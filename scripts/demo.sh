#!/usr/bin/env bash
# Starts the demo: three `be` backends on 8080, 8081 and 8082, and lb on 8000
# in front of them with conf/lb.yaml. Ctrl-C stops all four.
# Installs cmake first if it is missing (Pingora's build needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  echo "cmake is missing; installing it (Pingora's zlib-ng build needs it)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
fi
cargo build --release --bins
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for port in 8080 8081 8082; do
  ./target/release/be --bind 127.0.0.1 --port "$port" &
  pids+=($!)
done
# Wait until the backends accept, so lb's first health check finds them up.
for port in 8080 8081 8082; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
echo "lb on http://localhost:8000 in front of be on 8080, 8081, 8082; Ctrl-C to stop" >&2
./target/release/lb -c conf/lb.yaml
