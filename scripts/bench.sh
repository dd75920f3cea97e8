#!/usr/bin/env bash
# The end-to-end benchmark (issues 6 and 9): builds pophook in release, then runs the
# `e2e` bench (benches/e2e/), which starts a throwaway Dovecot and a local webhook
# receiver, runs `target/release/pophook` on each scenario's corpus with pophook's
# defaults, measures the floor with a bare pipelined POP3 client, prints a table and
# appends it to BENCHMARKS.md. Installs what it needs (Dovecot, OpenSSL headers, GNU
# time, s3s-fs for scenario 9) when missing. A full run with `--repeat 3` takes about 10 minutes on 2 cores,
# 2 of them scenario 5 (posting 100,000 messages, then a minute of `pophook run`) and
# 4.5 scenario 8 (5 GiB through 50 mailboxes, three times; once whatever `--repeat` says).
#
#   scripts/bench.sh                    # every scenario; appends to BENCHMARKS.md
#   scripts/bench.sh --only 1,4         # some scenarios
#   scripts/bench.sh --only 4,7 --repeat 3   # issue 10: one 50 MiB message; https reuse
#   scripts/bench.sh --only 8           # issue 10: 50 mailboxes under max_memory 128 MiB
#   scripts/bench.sh --only 9 --repeat 3   # issue 13: a 40 MiB attachment in attachments: store (s3s-fs)
#   scripts/bench.sh --quick            # small versions, to check the harness; no write
#   scripts/bench.sh --max-in-flight    # scenario 2 with webhook.max_in_flight 1 vs 4 (the default)
#   scripts/bench.sh --commit-every N   # set the deprecated commit_every cap (unset by default)
#   scripts/bench.sh --only 5 --remembered 20000 --run-for 30   # a smaller scenario 5
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
