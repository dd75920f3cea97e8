#!/usr/bin/env bash
# Runs pophook's whole test suite: unit tests, the codec's exhaustive checks, and the
# integration tests against a real Dovecot (installed first if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
pophook_ensure_deps
pophook_ensure_test_deps
if [ "$(id -u)" -ne 0 ]; then
  # Dovecot must start as root to switch to the mail user, so the tests run as root.
  exec sudo -E env "PATH=$PATH" cargo test --locked --lib --bins --tests "$@"
fi
exec cargo test --locked --lib --bins --tests "$@"
