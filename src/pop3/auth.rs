//! Logging in: USER/PASS, SASL PLAIN and XOAUTH2 (with its two ways of
//! sending the response), and the refusal to try a mechanism the server did not offer.

use base64::Engine as _;
use tracing::trace;

use super::client::{AuthMethod, Capabilities, Connection, Io, ServerConfig, WIRE};
use super::codec::Status;
use super::command::Command;
use super::error::Pop3Error;
use crate::oauth2::{self, TokenSource};
use crate::secret::Secret;

impl<S: Io> Connection<S> {
    pub(super) async fn authenticate(
        &mut self,
        cfg: &ServerConfig,
        capabilities: &Capabilities,
    ) -> Result<(), Pop3Error> {
        let auth_err = |e: Pop3Error| match e {
            Pop3Error::Server { reply, .. } => Pop3Error::Auth(reply),
            other => other,
        };
        mechanism_offered(cfg.auth, capabilities)?;
        match cfg.auth {
            AuthMethod::User => {
                self.simple(Command::User(&cfg.username))
                    .await
                    .map_err(auth_err)?;
                self.simple(Command::Pass(&cfg.password))
                    .await
                    .map_err(auth_err)?;
            }
            AuthMethod::Plain => {
                self.send(&Command::AuthPlain).await?;
                match self.read_status("AUTH").await? {
                    Status::Continue(_) => {}
                    // A server without CAPA that refuses the AUTH command itself, before
                    // any credentials, does not speak SASL PLAIN.
                    Status::Err(reply)
                        if capabilities.lines().is_empty() && reply.code.is_none() =>
                    {
                        return Err(Pop3Error::MechanismNotOffered {
                            mechanism: "PLAIN",
                            offered: format!(
                                "it answered CAPA with -ERR and AUTH PLAIN with {reply}"
                            ),
                            alternatives: "`auth: user` (USER/PASS)",
                        })
                    }
                    Status::Err(reply) => return Err(Pop3Error::Auth(reply)),
                    Status::Ok(_) => {
                        return Err(Pop3Error::Protocol {
                            command: "AUTH",
                            detail: "+OK before any credentials were sent".into(),
                        })
                    }
                }
                let response = sasl_plain(&cfg.username, &cfg.password);
                self.send(&Command::SaslResponse(&response)).await?;
                self.expect_ok("AUTH").await.map_err(auth_err)?;
            }
            AuthMethod::XOAuth2 => {
                let tokens = cfg
                    .oauth2
                    .as_ref()
                    .ok_or(Pop3Error::Token(oauth2::TokenError::NotConfigured))?;
                self.xoauth2(&cfg.username, tokens).await?;
            }
        }
        Ok(())
    }

    /// Logs in with a (cached) token; if the server rejects it, once more with a new
    /// one, because a cached token can be revoked or expire early.
    async fn xoauth2(&mut self, username: &str, tokens: &TokenSource) -> Result<(), Pop3Error> {
        let mut form = XOAuth2Form::TwoStep;
        let token = tokens.token().await?;
        let rejection = match self.xoauth2_attempt(username, &token, &mut form).await? {
            None => return Ok(()),
            Some(rejection) => rejection,
        };
        // [IN-USE], [LOGIN-DELAY], [SYS/TEMP]: the token is fine, the server is busy.
        if rejection.is_transient() {
            return Err(Pop3Error::Auth(rejection.reply));
        }
        let token = tokens.refresh(&token).await?;
        match self.xoauth2_attempt(username, &token, &mut form).await? {
            None => Ok(()),
            Some(rejection) if rejection.is_transient() => Err(Pop3Error::Auth(rejection.reply)),
            Some(Rejection { reply, challenge }) => Err(Pop3Error::TokenRejected {
                reply,
                challenge: challenge
                    .map(|c| format!(" (server said: {c})"))
                    .unwrap_or_default(),
            }),
        }
    }

    /// One XOAUTH2 exchange: `None` when logged in, the rejection otherwise. Two-step
    /// first (Microsoft 365 needs it); a server that refuses `AUTH XOAUTH2` alone gets
    /// the initial-response form, and keeps getting it in this session.
    async fn xoauth2_attempt(
        &mut self,
        username: &str,
        token: &Secret,
        form: &mut XOAuth2Form,
    ) -> Result<Option<Rejection>, Pop3Error> {
        let response = oauth2::xoauth2_response(username, token);
        if *form == XOAuth2Form::TwoStep {
            self.send(&Command::AuthXOAuth2(None)).await?;
            match self.read_status("AUTH").await? {
                Status::Continue(_) => {
                    self.send(&Command::SaslResponse(&response)).await?;
                    return self.xoauth2_outcome().await;
                }
                Status::Err(reply) => {
                    trace!(target: WIRE, "AUTH XOAUTH2 without a response refused ({reply}); sending it on one line");
                    *form = XOAuth2Form::InitialResponse;
                }
                Status::Ok(_) => {
                    return Err(Pop3Error::Protocol {
                        command: "AUTH",
                        detail: "+OK before any credentials were sent".into(),
                    })
                }
            }
        }
        self.send(&Command::AuthXOAuth2(Some(&response))).await?;
        self.xoauth2_outcome().await
    }

    /// The server's verdict on an XOAUTH2 response. A refusal may come as an error
    /// challenge (`+ <base64 JSON>`) that the client acknowledges with an empty line
    /// before the final -ERR (Gmail does this).
    async fn xoauth2_outcome(&mut self) -> Result<Option<Rejection>, Pop3Error> {
        match self.read_status("AUTH").await? {
            Status::Ok(_) => Ok(None),
            Status::Err(reply) => Ok(Some(Rejection {
                reply,
                challenge: None,
            })),
            Status::Continue(challenge) => {
                self.send(&Command::SaslEmpty).await?;
                match self.read_status("AUTH").await? {
                    Status::Err(reply) => Ok(Some(Rejection {
                        reply,
                        challenge: oauth2::describe_challenge(&challenge),
                    })),
                    Status::Ok(_) => Ok(None),
                    Status::Continue(_) => Err(Pop3Error::Protocol {
                        command: "AUTH",
                        detail: "a second SASL challenge after the XOAUTH2 error challenge".into(),
                    }),
                }
            }
        }
    }
}

/// How this session sends the XOAUTH2 response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum XOAuth2Form {
    /// `AUTH XOAUTH2`, then the response after the server's `+`.
    TwoStep,
    /// `AUTH XOAUTH2 <response>` (RFC 4954-style initial response).
    InitialResponse,
}

/// The server said no to an XOAUTH2 login.
struct Rejection {
    reply: super::codec::ErrReply,
    /// The decoded error challenge, if the server sent one.
    challenge: Option<String>,
}

impl Rejection {
    fn is_transient(&self) -> bool {
        Pop3Error::Auth(self.reply.clone()).is_transient()
    }
}

/// `auth: plain` and `auth: xoauth2` need their SASL mechanism in CAPA's `SASL` line.
/// Checked before anything is sent, so the error names the configuration, not the
/// password. A server that did not answer CAPA is tried anyway.
pub(super) fn mechanism_offered(
    auth: AuthMethod,
    capabilities: &Capabilities,
) -> Result<(), Pop3Error> {
    let mechanism = match auth {
        AuthMethod::User => return Ok(()),
        AuthMethod::Plain => "PLAIN",
        AuthMethod::XOAuth2 => "XOAUTH2",
    };
    if capabilities.lines().is_empty() {
        return Ok(());
    }
    let offered = capabilities.sasl_mechanisms();
    if offered.iter().any(|m| m == mechanism) {
        return Ok(());
    }
    let alternatives = match (offered.iter().any(|m| m == "PLAIN"), mechanism) {
        (true, "XOAUTH2") => {
            "`auth: plain` (SASL PLAIN) or `auth: user` (USER/PASS) with a password"
        }
        _ if offered.iter().any(|m| m == "XOAUTH2") => {
            "`auth: user` (USER/PASS), or `auth: xoauth2` with an `oauth2` token source"
        }
        _ => "`auth: user` (USER/PASS)",
    };
    Err(Pop3Error::MechanismNotOffered {
        mechanism,
        offered: match offered.is_empty() {
            true => "its CAPA lists no SASL mechanism".to_string(),
            false => format!("it offers SASL {}", offered.join(" ")),
        },
        alternatives,
    })
}

/// `\0username\0password`, base64: the SASL PLAIN response, kept secret because it is
/// the password in a thin disguise.
pub(super) fn sasl_plain(username: &str, password: &Secret) -> Secret {
    let mut raw = Vec::with_capacity(username.len() + password.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.expose().as_bytes());
    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw))
}
