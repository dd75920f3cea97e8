//! pophook turns POP3 mailboxes into webhooks: it fetches new messages by UIDL, POSTs
//! each as a JSON event, and deletes a message only after the webhook answered 2xx.
//!
//! # Layout
//! Data flows one way: each module imports only those on the planes below it.
//!
//! - [`config`] (with the binary's command line, the top): YAML file + `POPHOOK_*`
//!   environment → validated settings, secrets already resolved from inline values,
//!   files or environment variables. One file per section; the settings types live
//!   with the components that use them. It builds data only: the live objects (TLS
//!   connectors, the token-endpoint and store clients) are made on first use by the
//!   task that needs them and the webhook pools by the service, so a reload, which
//!   loads afresh, rebuilds every one of them.
//! - [`service`]: the running process: every mailbox's task (restarted one by one on a
//!   reload), `once`, `check`, `replay`, shutdown; each cycle and each POST is logged,
//!   counted and recorded in the cycle log by its bookkeeper.
//! - [`ops`]: the operator plane the service wires up: the `http.listen` endpoint
//!   (health, readiness, metrics, management behind a token), the Prometheus
//!   instruments, `pophook status`, parked messages, sharding, `pophook receive`. It
//!   reads through handles (the ledger, the monitor, the reload channel).
//! - [`mailbox`]: one mailbox's task (when to try next, the outage breaker), the pure
//!   planner, and the session that executes a plan; the only place that sends DELE or
//!   QUIT. It reports each cycle and POST to a sink the service provides.
//! - [`pop3`]: the sans-IO codec and one POP3 session over TCP or TLS, with a timeout
//!   on every await; [`oauth2`]: access tokens for `auth: xoauth2`.
//! - [`event`]: raw message bytes → the `email.received` event.
//! - [`delivery`]: the body in the receiver's format, signed and POSTed with one
//!   connection pool per endpoint; the answer classified; when to retry. It posts
//!   bytes and knows nothing of how the event was built.
//! - [`storage`]: the S3-compatible store for `attachments: store` and `raw: store`:
//!   object keys from the event id, presigned GET URLs, the uploads that precede a
//!   POST, and the store check of `pophook check`.
//! - [`ledger`]: what pophook remembers, keyed by (mailbox, UIDL), and the event id:
//!   every record in memory, written through to sled by the one thread that writes and
//!   flushes.
//! - Shared by all: [`secret`] (passwords and keys kept out of logs, URLs without
//!   credentials), [`text`] (outside text fit for a log line, error chains), [`http`]
//!   (the builder of every HTTP client), [`shutdown`] (the stop signal as a value),
//!   [`watchdog`] (a thread that ends a process that stopped making progress),
//!   [`settings`] (the error every validation reports, and how a secret is read).
#![forbid(unsafe_code)]

pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod ledger;
pub mod mailbox;
pub mod oauth2;
pub mod ops;
pub mod pop3;
pub mod secret;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod storage;
pub mod text;
pub mod watchdog;
