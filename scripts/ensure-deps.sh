#!/usr/bin/env bash
# Installs what building and testing pophook needs on Debian/Ubuntu, only when missing:
# a C toolchain and OpenSSL headers (reqwest and async-native-tls use OpenSSL),
# the openssl tool (test certificates), Dovecot's POP3 server (the real server the
# tests and the demo run against), python3 with venv (the tests install Django and
# django-anymail from PyPI into a virtualenv; python3-cryptography verifies ed25519
# signatures independently of pophook) and Ruby with Rails, sqlite3 and WEBrick
# (Action Mailbox): the real receivers of the raw, postmark and mailgun formats; and,
# for the tests only (pophook_ensure_test_deps), s3s-fs from crates.io, the
# S3-compatible server of the storage tests.
# Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pophook_ensure_deps() {
  local missing=()
  command -v cc >/dev/null || missing+=(gcc libc6-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  [ -x /usr/sbin/dovecot ] && [ -e /usr/lib/dovecot/pop3 ] || missing+=(dovecot-pop3d)
  # Debian splits venv's pip bootstrap (ensurepip) into python3-venv.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
  # An ed25519 implementation independent of pophook's, to verify v1a signatures.
  python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' >/dev/null 2>&1 \
    || missing+=(python3-cryptography)
  ruby -e 'require "rails"; require "action_mailbox/engine"; require "sqlite3"; require "webrick"' \
    >/dev/null 2>&1 || missing+=(ruby-rails ruby-sqlite3 ruby-webrick)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # The package starts a system-wide Dovecot on ports 110/995; pophook's tests and demo
  # run their own instances on other ports, so the system one is left alone.
  if ! command -v cargo >/dev/null; then
    echo "Rust is not installed: install it from https://rustup.rs (curl --proto '=https' -sSf https://sh.rustup.rs | sh), then run this again." >&2
    exit 1
  fi
}

# s3s-fs: the S3-compatible server (it checks SigV4 signatures) that the storage tests
# start on 127.0.0.1; only the tests need it, so the demo does not build it. Pinned:
# later versions need a newer Rust than rust-version.
pophook_ensure_test_deps() {
  if ! command -v s3s-fs >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    echo "installing: s3s-fs (cargo install)" >&2
    cargo install s3s-fs --locked --version 0.14.1 --features binary
  fi
}
