#!/usr/bin/env bash
# Issue 6's end-to-end benchmark: builds pophook in release, then runs the `e2e` bench
# (benches/e2e/), which starts a throwaway Dovecot and a local webhook receiver, runs
# `target/release/pophook once` on each scenario's corpus, measures the floor with a
# bare pipelined POP3 client, prints a table and appends it to BENCHMARKS.md.
# Installs what it needs (Dovecot, OpenSSL headers, GNU time) when missing.
#
#   scripts/bench.sh                    # every scenario; appends to BENCHMARKS.md
#   scripts/bench.sh --only 1,4         # some scenarios
#   scripts/bench.sh --quick            # small versions, to check the harness; no write
#   scripts/bench.sh --max-in-flight    # scenario 2 with webhook.max_in_flight 1 vs 4 (the default)
#   scripts/bench.sh --commit-every N   # pophook's commit_every (default 50) for every run
#   scripts/bench.sh --only 1 --wrap 'perf record -g -o /tmp/perf.data --'
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
pophook_ensure_deps
if [ ! -x /usr/bin/time ]; then
  # GNU time reports the child's peak RSS (wait4's ru_maxrss).
  echo "installing: time" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time
fi
if [ "$(id -u)" -ne 0 ]; then
  # Dovecot must start as root to switch to the mail user.
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi
export BENCH_COMMAND="scripts/bench.sh${*:+ $*}"
cargo build --release --locked --bin pophook
exec cargo bench --locked --bench e2e -- "$@"
