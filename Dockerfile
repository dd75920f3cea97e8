# pophook: POP3 mailboxes → webhooks. See docs/container.md for how to run it.
#
#   docker build -t pophook .
#   docker run --rm pophook --help

# ---- build ----------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, against empty sources: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every edit under src/.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# COPY keeps the files' own mtimes, which can be older than the stub build above;
# touching them makes cargo rebuild the crate itself instead of reusing the stub.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/pophook /out/pophook

# ---- run ------------------------------------------------------------------------
FROM debian:bookworm-slim

# docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pophook" \
      org.opencontainers.image.description="Turns POP3 mailboxes into webhooks: fetch by UIDL, POST as JSON, delete only after a 2xx." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# libssl3: native-tls links OpenSSL for POP3 TLS and https webhooks;
# ca-certificates: the roots those connections are verified against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid so a volume or Kubernetes fsGroup can be prepared for it.
RUN groupadd --system --gid 10001 pophook \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin pophook \
    && mkdir -p /data /etc/pophook \
    && chown 10001:10001 /data

COPY --from=builder /out/pophook /usr/local/bin/pophook

# The delivery state (sled): which messages were already delivered. Keep it on a
# volume; see docs/container.md for what losing it means.
ENV POPHOOK_STATE_DIR=/data
VOLUME ["/data"]
# An optional config file is read from /etc/pophook/config.yaml when one is mounted
# there; without one, POPHOOK_* environment variables alone configure pophook.

USER 10001:10001
WORKDIR /data

# `pophook healthcheck` GETs /healthz on `http.listen` and exits 0 on 200, so the image
# needs no curl. Without `http.listen` (e.g. POPHOOK_HTTP__LISTEN=127.0.0.1:9090) it
# fails: the endpoint also serves an unauthenticated management API, so the image does
# not open it by default.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["pophook", "healthcheck"]

ENTRYPOINT ["pophook"]
CMD ["run"]
