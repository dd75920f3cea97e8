//! pophook turns POP3 mailboxes into webhooks: it fetches new messages by UIDL, POSTs
//! each as a JSON event, and deletes a message only after the webhook answered 2xx.
//!
//! # Layout
//! Data flows one way, top to bottom:
//!
//! - [`config`]: YAML file + `POPHOOK_*` environment → a validated [`config::Config`],
//!   secrets already resolved from inline values, files or environment variables.
//! - [`pop3::codec`]: sans-IO decoding of server bytes into status lines and
//!   multi-line bodies (dot-unstuffing, line and size limits).
//! - [`pop3::client`]: one POP3 session over TCP or TLS — greeting, CAPA, STLS,
//!   authentication, UIDL/LIST/RETR/DELE/QUIT — with a timeout on every await.
//! - [`oauth2`]: access tokens for `auth: xoauth2` from a file, a command or a token
//!   endpoint (client credentials, refresh token), cached until shortly before expiry.
//! - [`event`]: raw message bytes → the `email.received` JSON event.
//! - [`formats`]: the body in the format the receiver reads: the standard event, the
//!   raw message, Postmark's inbound JSON or Mailgun's MIME form; envelope recipient.
//! - [`webhook`]: POSTs an event with Standard Webhooks headers and signature and
//!   classifies the answer; [`webhook::client`] keeps one connection pool per endpoint
//!   and bounds connecting, uploading and waiting for the answer separately.
//! - [`storage`]: the S3-compatible store for `attachments: store` and `raw: store`:
//!   the `storage` section, object keys from the event id, presigned GET URLs, the
//!   uploads that precede a POST, and the store check of `pophook check`.
//! - [`signing`]: the `webhook-signature` header: `v1` (HMAC) and `v1a` (ed25519)
//!   signatures from every configured key, verification, `pophook keygen`.
//! - [`retry`]: when a failed delivery is tried again, and when it is parked.
//! - [`ledger`]: what pophook remembers, keyed by (mailbox, UIDL): every record in
//!   memory, written through to sled by the one thread that writes and flushes.
//! - [`mailbox`]: one mailbox's task (when to try next, the outage breaker), the pure
//!   planner, and the session that executes a plan; the only place that sends DELE or
//!   QUIT.
//! - [`service`]: every mailbox's task, `once`, `check`, and shutdown; each cycle is
//!   logged, counted and recorded in the ledger.
//! - [`watchdog`]: a thread that notices work that stopped making progress and ends
//!   the process rather than letting it hang silently.
//! - [`shard`]: which instance polls which mailbox when several share the list.
//! - [`monitor`]: the running service's view of itself: Prometheus instruments,
//!   readiness, and the wake-up that makes a mailbox cycle now.
//! - [`status`]: what `pophook status` shows, from the cycle log in the state.
//! - [`api`]: the `http.listen` endpoint: health, readiness, metrics and management,
//!   behind a bearer token, a `Host` check and a connection cap.
//! - [`manage`]: the management commands, on the state directly or through the API
//!   of the running service that holds it.
//! - [`parked`]: listing, replaying and dropping messages whose retries ran out.
//! - [`receive`]: `pophook receive`, a debug webhook receiver that checks signatures.
//! - [`shutdown`]: the stop signal, passed in as a value so tests can fire it.
//! - [`secret`]: the type that keeps passwords and keys out of logs.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod event;
pub mod formats;
pub mod ledger;
pub mod mailbox;
pub mod manage;
pub mod monitor;
pub mod oauth2;
pub mod parked;
pub mod pop3;
pub mod receive;
pub mod retry;
pub mod secret;
pub mod service;
pub mod shard;
pub mod shutdown;
pub mod signing;
pub mod status;
pub mod storage;
pub mod watchdog;
pub mod webhook;
