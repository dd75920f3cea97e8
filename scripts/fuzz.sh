#!/usr/bin/env bash
# Fuzzes the POP3 codec and the event builder for SECONDS each (default 60) with
# cargo-fuzz, installing it if missing. Needs a nightly toolchain; without one it says
# so and exits 0, so CI on stable still passes. Crashes are left in fuzz/artifacts/.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! nightly=$(cargo +nightly --version 2>&1); then
  echo "fuzz: skipped, cargo-fuzz needs a nightly toolchain and \`cargo +nightly\` failed: $nightly" >&2
  echo "fuzz: install one with \`rustup toolchain install nightly\`" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
# Seeds: the golden messages for the event builder, and a short POP3 session for the
# codec (8 bytes of split point and limits, then server bytes).
mkdir -p corpus/event corpus/codec
cp -n ../tests/fixtures/eml/*.eml corpus/event/ 2>/dev/null || true
printf '\x20\x00\x7f\xff\xff\xff\xff\xff+OK ready\r\n+OK\r\n1 uid-1\r\n2 uid-2\r\n.\r\n-ERR [IN-USE] busy\r\n+OK 2 320\r\n+OK\r\nSubject: x\r\n\r\n..dot\r\n.\r\n' \
  > corpus/codec/session
printf '\x05\x00\x10\x04\x00\x00\x00\x00+ \r\n+OK\r\nSTLS\r\n.\r\n' > corpus/codec/small-limits

for target in codec event; do
  echo "fuzz: $target for ${seconds}s" >&2
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
