//! What can go wrong in a POP3 session, with predicates the delivery cycle branches
//! on. Messages name the cause and what to do; none of them carries a credential.

use std::io;
use std::time::Duration;

use super::codec::{CodecError, ErrReply, ResponseCode};
use crate::oauth2::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("cannot connect to {addr}: {source}; check host, port and that the server is up")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("the server sent nothing for {timeout:?} while waiting for the reply to {during}; the session was dropped (raise `timeout` if the server is slow)")]
    Timeout {
        during: &'static str,
        timeout: Duration,
    },
    #[error("the connection was closed by the server while waiting for the reply to {during}")]
    Closed { during: &'static str },
    #[error("network error during {during}: {source}")]
    Io {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {host} failed: {reason}; check the certificate, or set `tls_ca_file` for a private CA")]
    Tls { host: String, reason: String },
    #[error("the server sent something pophook cannot read: {0}")]
    Codec(#[from] CodecError),
    /// A multi-line reply outgrew its bound: `max_message_size` for RETR and TOP, a fixed
    /// bound for listings. The rest of the reply is still in flight, so the session is over.
    #[error(
        "the reply to {command} exceeded {limit} bytes; the session was dropped ({})",
        too_large_hint(command)
    )]
    TooLarge { command: &'static str, limit: usize },
    #[error("`tls: starttls` is set but the server does not offer STLS; no credentials were sent (use `tls: implicit` if the server speaks TLS on another port)")]
    StlsNotOffered,
    #[error("the server refused STLS ({0}); no credentials were sent")]
    StlsRefused(ErrReply),
    #[error("refusing to send credentials over an unencrypted connection; use `tls: implicit` or `tls: starttls`, or set `allow_insecure: true` for this mailbox")]
    InsecureRefused,
    /// `auth: plain`/`xoauth2` against a server without that SASL mechanism: a
    /// configuration error, found before any credentials were sent.
    #[error("`auth: {}` needs SASL {mechanism}, which the server does not offer ({offered}); no credentials were sent. Set {alternatives} for this mailbox", mechanism.to_ascii_lowercase())]
    MechanismNotOffered {
        mechanism: &'static str,
        offered: String,
        alternatives: &'static str,
    },
    #[error("login rejected: {0}; check username and password")]
    Auth(ErrReply),
    #[error("cannot get an OAuth2 token: {0}")]
    Token(#[from] TokenError),
    /// The server refused a cached token and then a newly fetched one.
    #[error("XOAUTH2 login rejected, also with a newly fetched token: {reply}{challenge}; check that `username` is the mailbox the token is for, that the token's scope allows POP (Microsoft 365: https://outlook.office365.com/.default, Gmail: https://mail.google.com/) and that POP is enabled for the mailbox")]
    TokenRejected {
        reply: ErrReply,
        /// The server's decoded error challenge, as " (server said: ...)", or empty.
        challenge: String,
    },
    #[error("{command} failed: {reply}")]
    Server {
        command: &'static str,
        reply: ErrReply,
    },
    #[error("the server does not support UIDL, so messages cannot be identified across sessions; pophook will not fetch or delete anything from this mailbox")]
    NoUidl,
    #[error("unexpected reply to {command}: {detail}")]
    Protocol {
        command: &'static str,
        detail: String,
    },
}

fn too_large_hint(command: &str) -> &'static str {
    match command {
        "RETR" | "TOP" => "raise `max_message_size` if this mailbox holds messages that large",
        _ => "no real mailbox needs a listing that large; is this server misbehaving?",
    }
}

impl Pop3Error {
    /// The RFC 2449/3206 response code the server gave, if any.
    pub fn code(&self) -> Option<&ResponseCode> {
        match self {
            Pop3Error::Auth(reply)
            | Pop3Error::TokenRejected { reply, .. }
            | Pop3Error::StlsRefused(reply)
            | Pop3Error::Server { reply, .. } => reply.code.as_ref(),
            _ => None,
        }
    }

    /// Worth trying again soon: the network, a timeout, or a server saying "not now"
    /// (`[IN-USE]`, `[LOGIN-DELAY]`, `[SYS/TEMP]`).
    pub fn is_transient(&self) -> bool {
        match self {
            Pop3Error::Connect { .. }
            | Pop3Error::Timeout { .. }
            | Pop3Error::Closed { .. }
            | Pop3Error::Io { .. } => true,
            Pop3Error::Token(e) => e.is_transient(),
            _ => matches!(
                self.code(),
                Some(ResponseCode::InUse | ResponseCode::LoginDelay | ResponseCode::SysTemp)
            ),
        }
    }

    /// Credentials or configuration are wrong: retrying quickly could lock the account.
    /// A token endpoint refusing the client's credentials counts too.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Pop3Error::Auth(_) | Pop3Error::TokenRejected { .. } | Pop3Error::Token(_)
        ) && !self.is_transient()
    }

    /// The configuration cannot work with this server (it lacks the SASL mechanism):
    /// no password was tried, so no account is at risk, and nothing changes until the
    /// configuration does.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Pop3Error::MechanismNotOffered { .. })
    }
}

impl std::fmt::Display for ErrReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "-ERR [{code}] {}", self.text),
            None => write!(f, "-ERR {}", self.text),
        }
    }
}
