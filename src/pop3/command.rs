//! POP3 commands as typed values: one place that knows their wire form, and one
//! that knows how to print them in a log without the credentials.

use std::fmt;

use crate::secret::Secret;

pub enum Command<'a> {
    Capa,
    Stls,
    User(&'a str),
    Pass(&'a Secret),
    /// `AUTH PLAIN`, the first step of SASL PLAIN; the credentials follow as [`Command::SaslResponse`].
    AuthPlain,
    /// A SASL response line (base64 of the credentials).
    SaslResponse(&'a Secret),
    /// `AUTH XOAUTH2`, alone (the response follows as [`Command::SaslResponse`]) or
    /// with the base64 response on the same line, which carries the OAuth2 token.
    AuthXOAuth2(Option<&'a Secret>),
    /// The empty line that answers a SASL error challenge, so the server can say -ERR.
    SaslEmpty,
    Stat,
    Uidl,
    List,
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    Quit,
}

impl Command<'_> {
    /// The bytes sent to the server, CRLF included.
    pub fn to_wire(&self) -> Vec<u8> {
        let line = match self {
            Command::Pass(secret) => format!("PASS {}", secret.expose()),
            Command::SaslResponse(secret) => secret.expose().to_string(),
            Command::AuthXOAuth2(Some(secret)) => format!("AUTH XOAUTH2 {}", secret.expose()),
            Command::SaslEmpty => String::new(),
            other => other.to_string(),
        };
        let mut bytes = line.into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes
    }

    /// The verb, for error messages ("RETR failed: ...").
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::AuthPlain => "AUTH",
            Command::SaslResponse(_) => "AUTH",
            Command::AuthXOAuth2(_) => "AUTH",
            Command::SaslEmpty => "AUTH",
            Command::Stat => "STAT",
            Command::Uidl => "UIDL",
            Command::List => "LIST",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Quit => "QUIT",
        }
    }
}

/// The loggable form: credentials are replaced, so the protocol trace can print every
/// command it sends (lettre's wire log prints `AUTH PLAIN <base64>`; this one cannot).
impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(name) => write!(f, "USER {name}"),
            Command::Pass(_) => f.write_str("PASS [redacted]"),
            Command::AuthPlain => f.write_str("AUTH PLAIN"),
            Command::SaslResponse(_) => f.write_str("[redacted SASL response]"),
            Command::AuthXOAuth2(None) => f.write_str("AUTH XOAUTH2"),
            Command::AuthXOAuth2(Some(_)) => f.write_str("AUTH XOAUTH2 [redacted]"),
            Command::SaslEmpty => f.write_str("[empty line: acknowledging the server's error]"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Top(n, lines) => write!(f, "TOP {n} {lines}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            other => f.write_str(other.verb()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_on_the_wire_but_not_in_the_log_form() {
        let password = Secret::new("hunter2");
        let pass = Command::Pass(&password);
        assert_eq!(pass.to_wire(), b"PASS hunter2\r\n");
        assert_eq!(pass.to_string(), "PASS [redacted]");

        let sasl = Secret::new("AHVzZXIAaHVudGVyMg==");
        let response = Command::SaslResponse(&sasl);
        assert_eq!(response.to_wire(), b"AHVzZXIAaHVudGVyMg==\r\n");
        assert!(!response.to_string().contains("AHVz"));

        let xoauth2 = Secret::new("dXNlcj1hAWF1dGg9QmVhcmVyIHRvawEB");
        let one_line = Command::AuthXOAuth2(Some(&xoauth2));
        assert_eq!(
            one_line.to_wire(),
            b"AUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHRvawEB\r\n"
        );
        assert_eq!(one_line.to_string(), "AUTH XOAUTH2 [redacted]");
        assert_eq!(Command::AuthXOAuth2(None).to_wire(), b"AUTH XOAUTH2\r\n");
        assert_eq!(Command::SaslEmpty.to_wire(), b"\r\n");
    }

    #[test]
    fn plain_commands_have_their_rfc_1939_form() {
        assert_eq!(Command::Retr(7).to_wire(), b"RETR 7\r\n");
        assert_eq!(Command::Top(3, 0).to_wire(), b"TOP 3 0\r\n");
        assert_eq!(Command::Dele(12).to_wire(), b"DELE 12\r\n");
        assert_eq!(Command::Uidl.to_wire(), b"UIDL\r\n");
        assert_eq!(Command::User("a@b").to_wire(), b"USER a@b\r\n");
    }
}
