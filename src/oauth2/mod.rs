//! OAuth2 access tokens for `auth: xoauth2`: where they come from (a file, a command or
//! a token endpoint), how long one is reused, and the SASL XOAUTH2 string that carries it.
//! A refresh token the endpoint rotates is kept in the state, sealed, so a restart
//! presents the newest one (providers revoke the whole token family on reuse).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

mod seal;
mod sources;

use seal::{seal, seal_key, unseal};
use sources::{checked_token, parse_token_response, read_token_file, run_command};

use crate::ledger::Ledger;
use crate::secret::redacted;
use crate::secret::Secret;

/// A token file, command output or token endpoint answer larger than this is refused;
/// access tokens are a few KiB at most.
const MAX_OUTPUT: usize = 64 * 1024;
/// A token is refreshed this long before it expires at most (10% of its lifetime for
/// short-lived ones), so it cannot expire between fetching it and logging in.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// The token endpoint Microsoft 365 uses for a tenant (a GUID or a domain).
pub fn microsoft_token_url(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
}

/// The scope for app-only POP access to Microsoft 365 mailboxes.
pub const MICROSOFT_POP_SCOPE: &str = "https://outlook.office365.com/.default";

/// Where access tokens come from; built and validated by `config`.
pub enum Provider {
    /// Read on every login: whatever renews the file owns the token's expiry.
    File(PathBuf),
    /// `sh -c COMMAND` on every login; its trimmed stdout is the token, or an OAuth2
    /// token response (JSON), whose `expires_in` then lets the token be reused.
    Command(String),
    /// RFC 6749 §4.4: the application's own credentials (Microsoft 365 app-only access).
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    /// RFC 6749 §6: a long-lived refresh token from a one-time user consent (Gmail).
    RefreshToken {
        token_url: Url,
        client_id: String,
        client_secret: Option<Secret>,
        refresh_token: Secret,
        scope: Option<String>,
    },
}

/// Prints where tokens come from, never a secret, and not the command (it may hold one).
impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::File(path) => write!(f, "token_file {}", path.display()),
            Provider::Command(_) => f.write_str("token_command"),
            Provider::ClientCredentials { token_url, .. } => {
                write!(f, "client credentials at {}", redacted(token_url))
            }
            Provider::RefreshToken { token_url, .. } => {
                write!(f, "refresh token at {}", redacted(token_url))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("`auth: xoauth2` is set but the mailbox has no `oauth2` token source")]
    NotConfigured,
    #[error("cannot read the token file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The command's stderr is never included: it may print credentials.
    #[error("`token_command` {detail}")]
    Command { detail: String, timed_out: bool },
    #[error("{from} is not a usable access token: {reason}")]
    Invalid { from: String, reason: &'static str },
    #[error("cannot reach the token endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{from} refused: HTTP {status}{detail}; check `client_id`, the client secret, the refresh token and `scope`")]
    Refused {
        from: String,
        status: u16,
        detail: String,
    },
    #[error("the answer from {from} cannot be used: {reason}")]
    BadAnswer { from: String, reason: String },
}

impl TokenError {
    /// Worth trying again soon: the endpoint was unreachable or overloaded, or the
    /// command was too slow. Everything else needs the configuration fixed.
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Unreachable { .. } => true,
            TokenError::Refused { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            TokenError::Command { timed_out, .. } => *timed_out,
            _ => false,
        }
    }
}

/// One mailbox's tokens: fetched on demand, reused until shortly before they expire.
pub struct TokenSource {
    /// For logs.
    mailbox: String,
    provider: Provider,
    /// Bound on a token request or command.
    timeout: Duration,
    /// Made on the first request to a token endpoint, by the task that needs it: the
    /// configuration holds settings, not live clients.
    http: std::sync::OnceLock<reqwest::Client>,
    /// Held across a fetch, so concurrent logins of one mailbox fetch once.
    cache: Mutex<Cache>,
    /// Set by a running service (not by `check`): where rotated refresh tokens are
    /// kept, and the expiry gauge.
    keeper: std::sync::Mutex<Option<Arc<Keeper>>>,
}

/// What the service lends a token source.
pub struct Keeper {
    pub ledger: Ledger,
    /// Set to the access token's expiry (unix seconds) when the answer says.
    pub expiry: Option<metrics::Gauge>,
}

#[derive(Default)]
struct Cache {
    token: Option<Cached>,
    /// The newest refresh token, when the endpoint rotated it (Microsoft does on every
    /// use); also stored, sealed, through the keeper's ledger.
    rotated_refresh_token: Option<Secret>,
}

struct Cached {
    token: Secret,
    reuse_until: Instant,
}

/// A token endpoint's successful answer (RFC 6749 §5.1).
#[derive(Debug)]
struct TokenResponse {
    access_token: Secret,
    expires_in: Option<Duration>,
    refresh_token: Option<Secret>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// `timeout` bounds each token request and command run. Nothing is fetched or
    /// connected until a session asks for a token.
    pub fn new(mailbox: &str, provider: Provider, timeout: Duration) -> Result<Self, String> {
        Ok(TokenSource {
            mailbox: mailbox.to_string(),
            provider,
            timeout,
            http: std::sync::OnceLock::new(),
            cache: Mutex::new(Cache::default()),
            keeper: std::sync::Mutex::new(None),
        })
    }

    /// From now on, rotated refresh tokens are stored in (and read back from) the
    /// keeper's ledger and the expiry gauge is set. A later keeper (a service started
    /// again on the same configuration) replaces an earlier one.
    pub fn keep_in(&self, keeper: Keeper) {
        *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keeper));
    }

    /// Identifies the token source with its secrets (hashed), so a reload notices a
    /// changed client secret or refresh token.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let mut part = |text: &str| {
            hash.update(text.as_bytes());
            hash.update([0]);
        };
        match &self.provider {
            Provider::File(path) => part(&path.to_string_lossy()),
            Provider::Command(command) => part(command),
            Provider::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                for text in [token_url.as_str(), client_id, client_secret.expose()] {
                    part(text);
                }
                part(scope.as_deref().unwrap_or(""));
            }
            Provider::RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scope,
            } => {
                for text in [token_url.as_str(), client_id, refresh_token.expose()] {
                    part(text);
                }
                part(client_secret.as_ref().map_or("", |s| s.expose()));
                part(scope.as_deref().unwrap_or(""));
            }
        }
        part(&format!("{:?}", self.timeout));
        hash.finalize().into()
    }

    fn keeper(&self) -> Option<Arc<Keeper>> {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A token to log in with: the cached one while it is fresh, else a new one.
    pub async fn token(&self) -> Result<Secret, TokenError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = &cache.token {
            if Instant::now() < cached.reuse_until {
                return Ok(cached.token.clone());
            }
        }
        self.fetch(&mut cache).await
    }

    /// A new token after the server rejected `rejected` (revoked, or expired early).
    /// If another login already replaced it, that newer token is returned instead.
    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, TokenError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = &cache.token {
            if cached.token != *rejected && Instant::now() < cached.reuse_until {
                return Ok(cached.token.clone());
            }
        }
        info!(mailbox = %self.mailbox, "the server rejected the OAuth2 token; getting a new one");
        cache.token = None;
        self.fetch(&mut cache).await
    }

    async fn fetch(&self, cache: &mut Cache) -> Result<Secret, TokenError> {
        let response = match &self.provider {
            Provider::File(path) => TokenResponse {
                access_token: read_token_file(path).await?,
                expires_in: None,
                refresh_token: None,
            },
            Provider::Command(command) => {
                let output = run_command(command, self.timeout).await?;
                if output.trim_start().starts_with('{') {
                    parse_token_response("`token_command`", 200, output.as_bytes())?
                } else {
                    TokenResponse {
                        access_token: checked_token(&output, "the output of `token_command`")?,
                        expires_in: None,
                        refresh_token: None,
                    }
                }
            }
            Provider::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose()),
                ];
                form.extend(scope.as_deref().map(|s| ("scope", s)));
                self.request(token_url, &form, &[client_secret]).await?
            }
            Provider::RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scope,
            } => {
                let seal_key = seal_key(&self.mailbox, token_url, client_id, refresh_token);
                if cache.rotated_refresh_token.is_none() {
                    cache.rotated_refresh_token = self.stored_refresh_token(&seal_key);
                }
                let refresh_token = cache
                    .rotated_refresh_token
                    .as_ref()
                    .unwrap_or(refresh_token);
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                    ("client_id", client_id),
                ];
                form.extend(
                    client_secret
                        .as_ref()
                        .map(|s| ("client_secret", s.expose())),
                );
                form.extend(scope.as_deref().map(|s| ("scope", s)));
                let secrets: Vec<&Secret> = [Some(refresh_token), client_secret.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let response = self.request(token_url, &form, &secrets).await?;
                if let Some(rotated) = &response.refresh_token {
                    debug!(mailbox = %self.mailbox, "the token endpoint rotated the refresh token; using the new one from now on");
                    cache.rotated_refresh_token = Some(rotated.clone());
                    self.store_refresh_token(&seal_key, rotated).await;
                }
                response
            }
        };
        if let (Some(expires_in), Some(gauge)) = (
            response.expires_in,
            self.keeper().and_then(|k| k.expiry.clone()),
        ) {
            gauge.set((crate::ledger::now() as f64) + expires_in.as_secs_f64());
        }
        let reuse_for = response.expires_in.map(reuse_for).unwrap_or_default();
        debug!(mailbox = %self.mailbox, source = ?self.provider, ?reuse_for, "got an OAuth2 access token");
        cache.token = (!reuse_for.is_zero()).then(|| Cached {
            token: response.access_token.clone(),
            reuse_until: Instant::now() + reuse_for,
        });
        Ok(response.access_token)
    }

    /// The refresh token stored by an earlier run, when it was sealed for this
    /// configuration; one sealed for another (a new consent) or by an older pophook's
    /// format is ignored.
    fn stored_refresh_token(&self, key: &[u8; 32]) -> Option<Secret> {
        let sealed = self.keeper()?.ledger.refresh_token(&self.mailbox)?;
        let token = unseal(key, &sealed);
        if token.is_none() {
            info!(mailbox = %self.mailbox, "the refresh token stored in the state could not be opened (it was sealed by an older pophook or for another `oauth2` configuration); using the configured one");
        }
        token
    }

    /// Stores a rotated refresh token and waits until it is durable: after a crash the
    /// old one would be presented again, which providers treat as token theft.
    async fn store_refresh_token(&self, key: &[u8; 32], token: &Secret) {
        let Some(keeper) = self.keeper() else {
            return;
        };
        keeper
            .ledger
            .put_refresh_token(&self.mailbox, seal(key, token));
        if let Err(e) = keeper.ledger.flush().await {
            warn!(mailbox = %self.mailbox, "the rotated OAuth2 refresh token could not be saved ({e}); it is used from memory, and a restart before the next save would present the previous one");
        }
    }

    /// POSTs `form` to the token endpoint. `secrets` are blanked out of any error text
    /// the endpoint sends back, in case it echoes what it got.
    async fn request(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        secrets: &[&Secret],
    ) -> Result<TokenResponse, TokenError> {
        let shown = redacted(url);
        let unreachable = |e: reqwest::Error| TokenError::Unreachable {
            url: shown.clone(),
            reason: crate::text::error_chain(&e.without_url()),
        };
        let http = match self.http.get() {
            Some(http) => http,
            None => {
                let built = crate::http::client_builder()
                    .timeout(self.timeout)
                    .build()
                    .map_err(unreachable)?;
                self.http.get_or_init(|| built)
            }
        };
        let mut response = http
            .post(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_OUTPUT {
                return Err(TokenError::BadAnswer {
                    from: format!("the token endpoint {shown}"),
                    reason: format!("the answer is larger than {MAX_OUTPUT} bytes"),
                });
            }
        }
        let from = format!("the token endpoint {shown}");
        parse_token_response(&from, status, &body).map_err(|e| match e {
            TokenError::Refused {
                from,
                status,
                detail,
            } => TokenError::Refused {
                from,
                status,
                detail: scrub(&detail, secrets),
            },
            other => other,
        })
    }
}

/// How long a token that expires in `expires_in` is reused: up to a minute less, and
/// at most 90% of its lifetime, so short-lived tokens are still reused a little.
fn reuse_for(expires_in: Duration) -> Duration {
    expires_in.saturating_sub(MAX_EXPIRY_MARGIN.min(expires_in / 10))
}

/// The SASL XOAUTH2 initial response: base64 of
/// `user=<username>^Aauth=Bearer <token>^A^A`. It carries the token, so it is a secret.
pub fn xoauth2_response(username: &str, token: &Secret) -> Secret {
    let raw = format!("user={username}\x01auth=Bearer {}\x01\x01", token.expose());
    Secret::new(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// A server's XOAUTH2 error challenge (`+ <base64 JSON>`, e.g. Gmail's
/// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`), decoded
/// for an error message; `None` when it is empty or not base64 text.
pub fn describe_challenge(challenge: &[u8]) -> Option<String> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let text = loggable(text.trim());
    (!text.is_empty()).then_some(text)
}

/// Text from a server made safe for one log line.
fn loggable(text: &str) -> String {
    crate::text::one_line(text.as_bytes(), 300)
}

fn scrub(text: &str, secrets: &[&Secret]) -> String {
    secrets
        .iter()
        .filter(|s| !s.expose().is_empty())
        .fold(text.to_string(), |text, s| {
            text.replace(s.expose(), "[redacted]")
        })
}

#[cfg(test)]
mod tests;
