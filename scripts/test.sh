#!/usr/bin/env bash
# Runs lb's whole test suite: unit tests and the integration tests in tests/,
# which start real lb and be processes on loopback. Installs cmake first if
# it is missing (Pingora's build needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then
  echo "cmake is missing; installing it (Pingora's zlib-ng build needs it)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake
fi
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --no-fail-fast "$@"
  # nextest does not run doc tests; there are none to run in a binary crate's tests.
else
  cargo test "$@"
fi
