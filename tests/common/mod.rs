//! Shared test fixtures: the `pophook` binary as a child process, a real Dovecot, a
//! recording HTTP receiver, real receiver applications (Django with django-anymail,
//! Rails with Action Mailbox), a scripted POP3 server for faults Dovecot won't produce
//! on demand, a mock OAuth2 token endpoint, a real S3-compatible server (s3s-fs), and
//! throwaway TLS certificates.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod certs;
pub mod django;
pub mod dovecot;
pub mod process;
pub mod proxy;
pub mod rails;
pub mod receiver;
pub mod s3;
pub mod scripted;
pub mod setup;
pub mod token_server;
pub mod webapp;
