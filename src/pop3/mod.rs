//! The POP3 client: a sans-IO [`codec`] for server replies and a [`client`] session
//! that drives it over TCP or TLS. Nothing here decides what to fetch or delete.

mod auth;
pub mod client;
pub mod codec;
mod command;
mod error;
pub mod pipeline;
mod tls;

pub use client::{AuthMethod, ServerConfig, Session, TlsMode};
pub use error::Pop3Error;
