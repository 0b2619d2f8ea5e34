#!/usr/bin/env bash
# Starts the demo: three `be` backends on 8080, 8081 and 8082, and lb on 8000
# in front of them with conf/lb.yaml. Ctrl-C stops all four.
# Installs cmake first if it is missing (Pingora's build needs it).
# The binaries are taken from cargo's target directory, wherever
# CARGO_TARGET_DIR or .cargo/config put it. An upgrade of the demo's lb
# (scripts/lb-upgrade -c conf/lb.yaml --lb BIN/lb) keeps the backends up for
# the new lb; Ctrl-C then stops it too.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  echo "cmake is missing; installing it (Pingora's zlib-ng build needs it)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
fi
cargo build --release --bins
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target:-target}/release"
pid_file=/tmp/lb.pid # conf/lb.yaml's server.pid_file
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for port in 8080 8081 8082; do
  "$bin/be" --bind 127.0.0.1 --port "$port" &
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
echo "upgrade it with: scripts/lb-upgrade -c conf/lb.yaml --lb $bin/lb" >&2
"$bin/lb" -c conf/lb.yaml
# This lb exited on its own: after an upgrade, the pid file names the new
# lb, which needs the backends; keep them until it stops (or Ctrl-C).
new=$(cat "$pid_file" 2>/dev/null || true)
if [ -n "$new" ] && kill -0 "$new" 2>/dev/null; then
  echo "lb was replaced by pid $new; the backends keep serving it; Ctrl-C stops all" >&2
  pids+=("$new")
  while kill -0 "$new" 2>/dev/null; do sleep 1; done
fi
