//! POSTs an event to its endpoint with the Standard Webhooks headers and signature,
//! and classifies the answer. Redirects are never followed: a 3xx is a failure.
//! The body is whatever [`crate::delivery::formats`] rendered; basic-auth credentials from the
//! URL travel in their own field and are never printed with it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::delivery::formats::{mailgun, Format, Payload};
use crate::delivery::retry::RetryPolicy;
use crate::secret::redacted;
use crate::secret::Secret;

pub mod client;
pub mod formats;
pub mod retry;
pub mod signing;

pub use client::{ConnectionObserver, TimedOut};

/// Where and how one mailbox's events are posted; built and validated by `config`.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Without userinfo (that is `basic_auth`); prints without its query too.
    pub url: WebhookUrl,
    /// From the URL's `user:password@`, sent as HTTP basic auth.
    pub basic_auth: Option<BasicAuth>,
    /// What the POST body is.
    pub format: Format,
    /// The key Mailgun-format requests are signed with (`format: mailgun` needs one).
    pub mailgun_signing_key: Option<Secret>,
    /// The request apart from uploading its body; see [`client`].
    pub timeout: Duration,
    /// TCP and TLS handshake (at most `timeout`).
    pub connect_timeout: Duration,
    /// From the end of the body to the answer (at most what is left of `timeout`).
    pub response_timeout: Duration,
    /// PEM of an extra CA to trust for an `https` URL (`tls_ca_file`).
    pub ca_pem: Option<Vec<u8>>,
    /// Extra headers (lower-case names); values are secrets because they are often
    /// `Authorization` tokens.
    pub headers: Vec<(String, Secret)>,
    /// Every key that signs each request (`webhook.secret`, one or a list); none: the
    /// requests are not signed.
    pub signing_keys: Vec<crate::delivery::signing::SigningKey>,
    /// POSTs in flight at once for one mailbox; 1 keeps strict mailbox order.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// [`WebhookConfig::fingerprint`], once computed.
    pub stored_fingerprint: FingerprintCache,
}

impl WebhookConfig {
    /// The URL as it may be printed or stored: without userinfo or query, which often
    /// carry credentials.
    pub fn display_url(&self) -> String {
        self.url.to_string()
    }

    /// Identifies where and how events are sent (URL, credentials, headers, format,
    /// keys), so an endpoint disabled after a 410 is re-enabled when the configuration
    /// changes. It is stored in the state, and the secrets are in it, so it is slow to
    /// compute on purpose: PBKDF2-HMAC-SHA256 ([`FINGERPRINT_ROUNDS`] rounds, salted
    /// with the URL as printed), so a copy of the state cannot confirm guesses at a
    /// webhook password at hash speed. Computed when first needed (a 410, or a
    /// mailbox whose endpoint is disabled), then kept.
    pub fn fingerprint(&self) -> String {
        self.stored_fingerprint
            .0
            .get_or_init(|| {
                let mut password = Vec::new();
                self.identity(&mut |bytes: &[u8]| password.extend_from_slice(bytes));
                let salt = format!("pophook webhook fingerprint v2 {}", self.display_url());
                let mut out = [0u8; 16];
                pbkdf2::pbkdf2_hmac::<Sha256>(
                    &password,
                    salt.as_bytes(),
                    FINGERPRINT_ROUNDS,
                    &mut out,
                );
                let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
                format!("v2:{hex}")
            })
            .clone()
    }

    /// Feeds everything that decides where and how events are sent, secrets included,
    /// to `sink`: for [`WebhookConfig::fingerprint`] and for a reload's in-memory
    /// comparison (which needs no slow hash: nothing of it is stored).
    pub fn identity(&self, sink: &mut dyn FnMut(&[u8])) {
        sink(self.url.as_str().as_bytes());
        if let Some(auth) = &self.basic_auth {
            sink(&[2]);
            sink(auth.username.as_bytes());
            sink(&[0]);
            sink(auth.password.expose().as_bytes());
        }
        sink(&[3]);
        sink(self.format.name().as_bytes());
        if let Some(key) = &self.mailgun_signing_key {
            sink(&[4]);
            sink(key.expose().as_bytes());
        }
        for (name, value) in &self.headers {
            sink(&[0]);
            sink(name.as_bytes());
            sink(&[0]);
            sink(value.expose().as_bytes());
        }
        for key in &self.signing_keys {
            let (tag, bytes) = key.fingerprint_part();
            sink(&[tag]);
            sink(&bytes);
        }
    }
}

/// PBKDF2 rounds of the stored fingerprint: about 50 ms of CPU, spent once per process
/// for a mailbox whose endpoint answered 410 (or is disabled), never on a healthy one.
pub const FINGERPRINT_ROUNDS: u32 = 100_000;

/// The cached [`WebhookConfig::fingerprint`]. Prints nothing, so a configuration's
/// `Debug` (which a reload hashes) is the same before and after it is computed. A clone
/// starts empty: a cloned configuration may be changed before it is used.
#[derive(Default)]
pub struct FingerprintCache(std::sync::OnceLock<String>);

impl Clone for FingerprintCache {
    fn clone(&self) -> Self {
        FingerprintCache::default()
    }
}

impl std::fmt::Debug for FingerprintCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// The webhook URL. It may carry a token in its query, so it is printed (`Display`,
/// `Debug`, and so in logs, errors and the state) as scheme, host, port and path only;
/// [`WebhookUrl::as_str`] is the whole URL, for sending it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    /// `url` must already be without userinfo (see [`BasicAuth::take_from`]).
    pub fn new(url: url::Url) -> WebhookUrl {
        WebhookUrl(url)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn path(&self) -> &str {
        self.0.path()
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// HTTP basic-auth credentials, given in the webhook URL as `https://user:pass@host/…`
/// as Postmark's and Action Mailbox's documentation write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

impl BasicAuth {
    /// Removes the userinfo from `url` and returns it, percent-decoded; `None` when
    /// the URL has none. Errors name the problem, never the value.
    pub fn take_from(url: &mut url::Url) -> Result<Option<BasicAuth>, &'static str> {
        if url.username().is_empty() && url.password().is_none() {
            return Ok(None);
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| {
                    "the user name or password in the URL is not valid percent-encoded UTF-8"
                })
        };
        let username = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        if username.contains(':') {
            return Err("the user name in the URL contains `:`, which basic auth cannot carry");
        }
        // Cannot fail: the URL has a host (it has userinfo), so it can have credentials.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Some(BasicAuth {
            username,
            password: Secret::new(password),
        }))
    }
}

/// Bodies up to this size are signed in place; larger ones on the blocking pool, as
/// hashing megabytes would hold up the reactor that serves every socket.
const SIGN_IN_PLACE: usize = 256 * 1024;

/// The `webhook-signature` value for `body`.
async fn signatures(
    keys: &[crate::delivery::signing::SigningKey],
    id: &str,
    timestamp: u64,
    body: &client::Body,
) -> String {
    use crate::delivery::signing::signature_header;
    if let client::Body::Whole(bytes) = body {
        if bytes.len() <= SIGN_IN_PLACE {
            return signature_header(keys, id, timestamp, bytes);
        }
    }
    let (keys, id, body) = (keys.to_vec(), id.to_string(), body.clone());
    let work = move || match &body {
        client::Body::Whole(bytes) => signature_header(&keys, &id, timestamp, bytes),
        client::Body::Spooled(spooled) => {
            // The pieces are made twice, here and when sent: encoding again costs far
            // less than holding the whole body while it is sent.
            let pieces = spooled.pieces();
            match crate::delivery::signing::signature_header_pieces(&keys, &id, timestamp, pieces) {
                Some(signatures) => signatures,
                // An ed25519 signature needs the body whole.
                None => signature_header(&keys, &id, timestamp, &spooled.to_vec()),
            }
        }
    };
    match tokio::task::spawn_blocking(work.clone()).await {
        Ok(signatures) => signatures,
        // Only when the runtime is shutting down: sign here rather than send unsigned.
        Err(_) => work(),
    }
}

/// Why a POST did not count as delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook unreachable: {0}")]
    Network(String),
    #[error("{0}")]
    Timeout(TimedOut),
    #[error("webhook answered HTTP {status}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// An upload the event needs failed, so it was not posted. Neither the endpoint's
    /// fault nor a refusal of the message: retried on the normal schedule.
    #[error("not posted: {0}")]
    Storage(crate::storage::StorageError),
}

impl DeliveryError {
    /// The endpoint is unavailable rather than refusing this message: network errors,
    /// timeouts, 408, 425, 429 and 5xx. Trying the next message now would fail too.
    pub fn is_endpoint_unavailable(&self) -> bool {
        match self {
            DeliveryError::Network(_) | DeliveryError::Timeout(_) => true,
            DeliveryError::Status { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..600).contains(status)
            }
            DeliveryError::Storage(_) => false,
        }
    }

    /// 410 Gone: the endpoint says it no longer exists; stop posting to it.
    pub fn is_gone(&self) -> bool {
        matches!(self, DeliveryError::Status { status: 410, .. })
    }

    /// The endpoint refused this message (3xx, 4xx other than 408, 410, 425, 429):
    /// retried only a few times, then parked.
    pub fn is_rejection(&self) -> bool {
        !self.is_endpoint_unavailable() && !self.is_gone() && !self.is_storage()
    }

    /// The store refused or could not be reached; the webhook was not asked.
    pub fn is_storage(&self) -> bool {
        matches!(self, DeliveryError::Storage(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryError::Network(_) => "network",
            DeliveryError::Timeout(_) => "timeout",
            DeliveryError::Status { status, .. } if (300..400).contains(status) => "redirect",
            DeliveryError::Status { status: 410, .. } => "gone",
            DeliveryError::Status { status, .. } if (400..500).contains(status) => "http_4xx",
            DeliveryError::Status { .. } => "http_5xx",
            DeliveryError::Storage(_) => "storage",
        }
    }
}

/// Shared by every mailbox: one connection pool per endpoint (see [`client::Pools`]),
/// so mailboxes posting to the same receiver reuse each other's connections.
#[derive(Clone)]
pub struct Sender {
    pools: client::Pools,
}

impl Sender {
    /// With the pools of `webhooks` made now: making one loads the system's CAs, which
    /// takes a while and would otherwise hold up the first POST to each endpoint.
    /// `connections` is told about every connection opened, to make reuse visible.
    pub fn new<'a>(
        connections: Option<Arc<dyn ConnectionObserver>>,
        webhooks: impl IntoIterator<Item = &'a WebhookConfig>,
    ) -> Result<Sender, reqwest::Error> {
        let pools = client::Pools::new(connections);
        for webhook in webhooks {
            pools.pool(webhook)?;
        }
        Ok(Sender { pools })
    }

    /// POSTs `payload` (a message whose event id is `id`). Ok only for a 2xx.
    pub async fn post(
        &self,
        cfg: &WebhookConfig,
        id: &str,
        payload: Payload,
    ) -> Result<(), DeliveryError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (content_type, body): (std::borrow::Cow<'static, str>, client::Body) = match payload {
            Payload::Body {
                content_type,
                bytes,
            } => (content_type.into(), client::Body::Whole(bytes)),
            Payload::Spooled(body) => ("application/json".into(), client::Body::Spooled(body)),
            Payload::Mailgun(fields) => {
                // Configuration refuses `format: mailgun` without a key.
                let key = cfg.mailgun_signing_key.as_ref().ok_or_else(|| {
                    DeliveryError::Network("format mailgun needs `mailgun_signing_key`".into())
                })?;
                let (content_type, body) = mailgun::form(&fields, key, timestamp).await;
                (content_type.into(), client::Body::Whole(body.into()))
            }
        };
        let pool = self
            .pools
            .pool(cfg)
            .map_err(|e| DeliveryError::Network(describe(&e)))?;
        let mut request = pool
            .client
            .post(cfg.url.url().clone())
            .header(reqwest::header::CONTENT_TYPE, content_type.as_ref())
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string());
        if !cfg.signing_keys.is_empty() {
            let signatures = signatures(&cfg.signing_keys, id, timestamp, &body).await;
            request = request.header("webhook-signature", signatures);
        }
        for (name, value) in &cfg.headers {
            let mut value =
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    DeliveryError::Network(format!("header {name} has an invalid value"))
                })?;
            // Keeps the value out of reqwest's and hyper's debug output.
            value.set_sensitive(true);
            request = request.header(name.as_str(), value);
        }
        if let Some(auth) = &cfg.basic_auth {
            // reqwest marks the Authorization value sensitive.
            request = request.basic_auth(&auth.username, Some(auth.password.expose()));
        }
        let answer = client::exchange(&pool, request, body, client::Timeouts::of(cfg))
            .await
            .map_err(|failure| match failure {
                client::Failure::TimedOut(bound) => DeliveryError::Timeout(bound),
                client::Failure::Http(e) => DeliveryError::Network(describe(&e)),
            })?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(DeliveryError::Status {
            status: answer.status.as_u16(),
            retry_after: retry_after(&answer.headers),
        })
    }
}

/// The reqwest error and its causes, without the URL (which may carry credentials).
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = current {
        let part = match e.downcast_ref::<reqwest::Error>() {
            Some(r) => {
                let mut r = format!("{}", FmtWithoutUrl(r));
                if r.is_empty() {
                    r = "request failed".into();
                }
                r
            }
            None => e.to_string(),
        };
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
        current = e.source();
    }
    text
}

struct FmtWithoutUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for FmtWithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        let kind = if e.is_connect() {
            "connection failed"
        } else if e.is_body() {
            "error sending the body"
        } else if e.is_request() {
            "error sending the request"
        } else if e.is_decode() {
            "error reading the answer"
        } else {
            "request failed"
        };
        f.write_str(kind)
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at one hour so a confused endpoint
/// cannot park a mailbox for days.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let format = time::format_description::well_known::Rfc2822;
        let at = time::OffsetDateTime::parse(value, &format).ok()?;
        let now = time::OffsetDateTime::now_utc();
        (at - now).try_into().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(CAP))
}

/// The HMAC key of a Standard Webhooks secret (`whsec_` + base64 of the key bytes), as
/// base64 in a [`Secret`]. A secret without the prefix is taken as the base64 part.
pub fn signing_key(secret: &Secret) -> Result<Secret, &'static str> {
    let engine = base64::engine::general_purpose::STANDARD;
    let encoded = secret
        .expose()
        .strip_prefix("whsec_")
        .unwrap_or(secret.expose());
    let bytes = engine.decode(encoded).map_err(|_| {
        "not a Standard Webhooks secret: expected `whsec_` followed by base64 (make one with `echo whsec_$(head -c 32 /dev/urandom | base64)`)"
    })?;
    if bytes.len() < 16 {
        return Err("the key is shorter than 16 bytes; use 24 to 64 random bytes");
    }
    Ok(Secret::new(engine.encode(bytes)))
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, as the Standard Webhooks
/// specification defines it. `key` is the base64 part of the `whsec_` secret.
pub fn sign(key: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = signing_mac(key, id, timestamp);
    mac.update(body);
    v1_signature(mac)
}

/// The HMAC of a Standard Webhooks signature with the id and timestamp fed in; the
/// body follows, whole or piece by piece.
pub(crate) fn signing_mac(key: &Secret, id: &str, timestamp: u64) -> Hmac<Sha256> {
    let engine = base64::engine::general_purpose::STANDARD;
    // The key was validated as base64 when the configuration was loaded.
    let key_bytes = engine.decode(key.expose()).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac
}

/// `v1,<base64 of the HMAC>`.
pub(crate) fn v1_signature(mac: Hmac<Sha256>) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests;
