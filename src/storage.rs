//! The S3-compatible object store that takes attachments (`attachments: store`) and whole
//! messages (`raw: store`) out of the webhook body: the `storage` section, object keys,
//! presigned GET URLs, uploads, and the store check `pophook check` runs.
//!
//! Signing is rusty-s3's (SigV4, query-string presigning); the requests go through reqwest.
//! Every upload uses a key derived from the event id, so a retry overwrites the same
//! objects instead of adding new ones. Nothing here prints a credential or a signed URL:
//! errors name the endpoint without userinfo or query, the bucket and the object key.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rusty_s3::actions::{DeleteObject, GetObject, HeadBucket, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
use serde::Deserialize;

use crate::secret::Secret;
use crate::settings::{invalid, read_ca_pem, resolve_secret, ConfigError};

/// SigV4 presigned URLs are valid for at most 7 days.
pub const MAX_URL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Each request to the store, body included, unless `storage.timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the URL pophook itself PUTs to is valid: the request starts at once.
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);
/// Enough of an error answer to read S3's `<Code>`.
const MAX_ERROR_BODY: usize = 8 * 1024;

// ---- configuration --------------------------------------------------------------

/// `storage`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    addressing: Option<Addressing>,
    access_key: Option<Secret>,
    access_key_file: Option<PathBuf>,
    access_key_env: Option<String>,
    secret_key: Option<Secret>,
    secret_key_file: Option<PathBuf>,
    secret_key_env: Option<String>,
    prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    url_expiry: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    tls_ca_file: Option<PathBuf>,
}

/// How the bucket appears in object URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Addressing {
    /// `https://endpoint/bucket/key`: MinIO, Garage, Ceph, R2, and AWS too.
    Path,
    /// `https://bucket.endpoint/key`: AWS's preferred form; needs a DNS-safe bucket name.
    VirtualHost,
}

/// `webhook.raw`: where the whole message goes besides the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Base64 in the event's `raw` (the same as `include_raw: true`).
    Inline,
    /// `message/rfc822` in the store, its presigned URL in the event's `raw_url`.
    Store,
}

/// Checks `storage` and resolves its credentials.
pub(crate) fn validate(raw: RawStorage) -> Result<Storage, ConfigError> {
    let endpoint = raw.endpoint.ok_or_else(|| {
        invalid(
            "storage.endpoint",
            "missing; the store's URL, e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000 for MinIO",
        )
    })?;
    let endpoint =
        parse_endpoint(&endpoint).map_err(|reason| invalid("storage.endpoint", reason))?;
    let bucket_name = raw
        .bucket
        .ok_or_else(|| invalid("storage.bucket", "missing; the name of an existing bucket"))?;
    if bucket_name.is_empty() || bucket_name.contains('/') || bucket_name.len() > 63 {
        return Err(invalid(
            "storage.bucket",
            format!("{bucket_name:?} is not a bucket name: use 1-63 characters without '/'"),
        ));
    }
    let region = raw.region.unwrap_or_else(|| "us-east-1".to_owned());
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "storage.region",
            format!("{region:?} is not a region name; use the store's region, e.g. eu-west-1 (MinIO and most others accept us-east-1)"),
        ));
    }
    let addressing = raw.addressing.unwrap_or(Addressing::Path);
    let style = match addressing {
        Addressing::Path => UrlStyle::Path,
        Addressing::VirtualHost => UrlStyle::VirtualHost,
    };
    let bucket = Bucket::new(endpoint.clone(), style, bucket_name.clone(), region.clone()).map_err(|e| {
        let reason = match (addressing, e) {
            (Addressing::VirtualHost, _) => format!(
                "cannot address bucket {bucket_name:?} as a host name ({e:?}): use `addressing: path`, or a DNS-safe bucket name with an endpoint that is a host name, not an IP address"
            ),
            (Addressing::Path, _) => format!("cannot build the bucket's URL from the endpoint ({e:?})"),
        };
        invalid("storage.addressing", reason)
    })?;
    let access_key = resolve_secret(
        "storage.access_key",
        raw.access_key,
        raw.access_key_file,
        raw.access_key_env,
    )?
    .ok_or_else(|| {
        invalid(
            "storage.access_key",
            "missing; set `access_key`, `access_key_file` or `access_key_env`",
        )
    })?;
    let secret_key = resolve_secret(
        "storage.secret_key",
        raw.secret_key,
        raw.secret_key_file,
        raw.secret_key_env,
    )?
    .ok_or_else(|| {
        invalid(
            "storage.secret_key",
            "missing; set `secret_key`, `secret_key_file` or `secret_key_env`",
        )
    })?;
    if access_key.expose().is_empty() || secret_key.expose().is_empty() {
        return Err(invalid(
            "storage",
            "`access_key` and `secret_key` must not be empty",
        ));
    }
    let prefix = raw.prefix.unwrap_or_default();
    if prefix.starts_with('/')
        || prefix.len() > 256
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        || prefix.split('/').any(|segment| segment == "..")
    {
        return Err(invalid(
            "storage.prefix",
            format!("{prefix:?} is not usable as a key prefix: use letters, digits, '-', '_', '.' and '/', not starting with '/', e.g. `pophook/`"),
        ));
    }
    let url_expiry = raw.url_expiry.unwrap_or(MAX_URL_EXPIRY);
    if url_expiry < Duration::from_secs(1) || url_expiry > MAX_URL_EXPIRY {
        return Err(invalid(
            "storage.url_expiry",
            "must be between 1s and 7d: SigV4 presigned URLs last at most 7 days",
        ));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid("storage.timeout", "must be more than 0s"));
    }
    let ca_pem = read_ca_pem("storage.tls_ca_file", raw.tls_ca_file)?;
    Ok(Storage {
        endpoint_display: display(&endpoint),
        credentials: Credentials::new(access_key.expose(), secret_key.expose()),
        access_key,
        secret_key,
        bucket,
        bucket_name,
        addressing,
        prefix,
        url_expiry,
        timeout,
        ca_pem,
        client: std::sync::OnceLock::new(),
    })
}

fn parse_endpoint(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!(
            "not a valid URL ({e}); give scheme and host, e.g. https://s3.eu-west-1.amazonaws.com"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not supported; use https (or http for a store on your own network)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Said without repeating the URL, which holds a credential.
        return Err(
            "the URL holds credentials; remove them and set `access_key` and `secret_key` instead"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must have no query or fragment".to_owned());
    }
    Ok(url)
}

/// Scheme, host, port and path: what may be printed.
fn display(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

// ---- the store ------------------------------------------------------------------

/// The validated `storage` section with its HTTP client. Cheap to share in an `Arc`.
#[derive(Clone)]
pub struct Storage {
    endpoint_display: String,
    bucket: Bucket,
    bucket_name: String,
    addressing: Addressing,
    credentials: Credentials,
    access_key: Secret,
    secret_key: Secret,
    prefix: String,
    url_expiry: Duration,
    timeout: Duration,
    /// PEM of a CA trusted besides the system's (`tls_ca_file`), read at load.
    ca_pem: Option<Vec<u8>>,
    /// Made on the first request, by the task that sends it: the configuration holds
    /// settings, not live clients.
    client: std::sync::OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("endpoint", &self.endpoint_display)
            .field("bucket", &self.bucket_name)
            .field("region", &self.bucket.region())
            .field("addressing", &self.addressing)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key)
            .field("prefix", &self.prefix)
            .field("url_expiry", &self.url_expiry)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.ca_pem.is_some())
            .finish()
    }
}

/// One object to put before the POST.
#[derive(Debug, Clone)]
pub struct Upload {
    pub key: String,
    pub content_type: String,
    /// Shares the message's or the decoded attachment's buffer: no copy.
    pub body: Bytes,
}

impl Storage {
    /// The endpoint as it may be printed, and the bucket: `http://127.0.0.1:9000/ bucket mail`.
    pub fn describe(&self) -> String {
        format!("{} bucket {}", self.endpoint_display, self.bucket_name)
    }

    /// Hashes what identifies the store, credentials included, for a reload to notice
    /// a change; the hash is never stored.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(format!("{self:?}").as_bytes());
        hash.update([0]);
        hash.update(self.access_key.expose().as_bytes());
        hash.update([0]);
        hash.update(self.secret_key.expose().as_bytes());
        // The certificate, not its path: a CA renewed in place is applied by a reload.
        if let Some(pem) = &self.ca_pem {
            hash.update([0]);
            hash.update(pem);
        }
        format!("{:x}", hash.finalize())
    }

    /// The key of attachment number `index` (its place among the message's
    /// attachments) of event `event_id`: `<prefix><event_id>/<index>-<name>`.
    pub fn attachment_key(&self, event_id: &str, index: usize, filename: Option<&str>) -> String {
        format!("{}{event_id}/{index}-{}", self.prefix, sanitise(filename))
    }

    /// The key of the whole message of event `event_id`.
    pub fn raw_key(&self, event_id: &str) -> String {
        format!("{}{event_id}/raw.eml", self.prefix)
    }

    /// A presigned GET URL for `key`, valid for `url_expiry`. It carries a signature:
    /// it goes into the event and nowhere else (never into a log).
    pub fn presign_get(&self, key: &str) -> String {
        GetObject::new(&self.bucket, Some(&self.credentials), key)
            .sign(self.url_expiry)
            .to_string()
    }

    /// Puts one object. Idempotent: the same key is overwritten.
    pub async fn put(&self, upload: &Upload) -> Result<(), StorageError> {
        let url = PutObject::new(&self.bucket, Some(&self.credentials), &upload.key).sign(SIGN_FOR);
        let request = self
            .client(&upload.key)?
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, &upload.content_type)
            .body(upload.body.clone());
        self.send(request, &upload.key).await
    }

    /// Fails only when the store says the bucket does not exist. Some stores (s3s-fs,
    /// some gateways) create a missing bucket on the first PUT instead of refusing it,
    /// which would hide a typo in `storage.bucket`; any other answer (403 from a key
    /// without `s3:ListBucket`, say) is left for the PUT to explain.
    pub async fn confirm_bucket(&self) -> Result<(), StorageError> {
        let url = HeadBucket::new(&self.bucket, Some(&self.credentials)).sign(SIGN_FOR);
        match self.send(self.client("")?.head(url), "").await {
            Err(
                error @ (StorageError::Unreachable { .. }
                | StorageError::Tls { .. }
                | StorageError::Timeout { .. }),
            ) => Err(error),
            Err(error @ StorageError::MissingBucket { .. }) => Err(error),
            Ok(()) | Err(_) => Ok(()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let url = DeleteObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGN_FOR);
        self.send(self.client(key)?.delete(url), key).await
    }

    /// Puts and deletes a small object under the prefix: the credentials, the bucket
    /// and the permissions pophook needs, checked the way delivery uses them.
    pub async fn check(&self) -> Result<(), StorageError> {
        let upload = Upload {
            key: format!(
                "{}pophook-check-{:016x}",
                self.prefix,
                rand::random::<u64>()
            ),
            content_type: "text/plain".to_owned(),
            body: Bytes::from_static(b"pophook check: safe to delete\n"),
        };
        self.confirm_bucket().await?;
        self.put(&upload).await?;
        self.delete(&upload.key).await
    }

    /// The HTTP client (no redirects: one would send the signed request elsewhere, and
    /// S3 does not redirect signed requests that succeed), trusting the system's CAs
    /// and `tls_ca_file`'s.
    fn client(&self, key: &str) -> Result<&reqwest::Client, StorageError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let setup_failed = |e: reqwest::Error| StorageError::Unreachable {
            at: self.place(key),
            reason: format!("cannot set up the HTTP client: {}", describe_reqwest(&e)),
        };
        let mut builder = crate::http::client_builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(pem) = &self.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(setup_failed)?;
            builder = builder.add_root_certificate(ca);
        }
        let built = builder.build().map_err(setup_failed)?;
        Ok(self.client.get_or_init(|| built))
    }

    fn place(&self, key: &str) -> Place {
        Place {
            endpoint: self.endpoint_display.clone(),
            bucket: self.bucket_name.clone(),
            key: key.to_owned(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, key: &str) -> Result<(), StorageError> {
        let at = || self.place(key);
        let exchange = async {
            let response = request.send().await.map_err(|e| {
                let reason = describe_reqwest(&e);
                if is_tls(&e) {
                    StorageError::Tls { at: at(), reason }
                } else {
                    StorageError::Unreachable { at: at(), reason }
                }
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = read_some(response).await;
            Err(classify(status.as_u16(), &body, at()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Timeout {
                at: at(),
                after: self.timeout,
            }),
        }
    }
}

/// What of a file name goes into a key: ASCII letters, digits, `.`, `-` and `_`, at most
/// 100 of them; anything else becomes `_`. Keys stay readable in a bucket listing and
/// safe in a URL, and the part index keeps two files with the same name apart.
pub fn sanitise(filename: Option<&str>) -> String {
    let mut name: String = filename
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    // Not `.` or `..` (a path segment some stores and tools treat specially).
    if name.trim_matches('.').is_empty() {
        name = "attachment".to_owned();
    }
    name
}

/// At most [`MAX_ERROR_BODY`] bytes of an error answer.
async fn read_some(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    body
}

/// reqwest's error without the URL (a signed URL holds a signature), with its causes.
fn describe_reqwest(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether the TLS handshake failed (the certificate, mostly), not the connection.
fn is_tls(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<native_tls::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error answer, by S3's `<Code>` where there is one, else by status.
fn classify(status: u16, body: &[u8], at: Place) -> StorageError {
    let code = s3_code(body);
    match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => StorageError::MissingBucket { at },
        (
            _,
            Some(
                "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "InvalidToken"
                | "ExpiredToken"
                | "AuthorizationHeaderMalformed"
                | "InvalidSecurity",
            ),
        ) => StorageError::BadCredentials {
            at,
            code: code.unwrap_or_default(),
        },
        (_, Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem")) | (403, None) => {
            StorageError::NoPermission { at }
        }
        (404, None) => StorageError::MissingBucket { at },
        (status, code) => StorageError::Status {
            at,
            status,
            code: code.map(str::to_owned),
        },
    }
}

/// The `<Code>` of an S3 error document.
fn s3_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = text[start..end].trim();
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

/// Where a request went: printable (no credentials, no signed URL).
#[derive(Debug, Clone)]
pub struct Place {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bucket {:?}", self.endpoint, self.bucket)?;
        if !self.key.is_empty() {
            write!(f, " key {:?}", self.key)?;
        }
        Ok(())
    }
}

/// Why the store refused or could not be reached. Each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage unreachable ({reason}) at {at}; check `storage.endpoint` and that the store is running")]
    Unreachable { at: Place, reason: String },
    #[error("storage TLS handshake failed ({reason}) at {at}; if a private CA signed the store's certificate, set `storage.tls_ca_file` to that CA's PEM file, else check the certificate's host name and dates")]
    Tls { at: Place, reason: String },
    #[error("storage did not answer within {after:?} at {at}; raise `storage.timeout` or check the store")]
    Timeout { at: Place, after: Duration },
    #[error("storage refused the credentials ({code}) at {at}; check `storage.access_key` and `storage.secret_key`")]
    BadCredentials { at: Place, code: String },
    #[error("storage bucket does not exist at {at}; create it or fix `storage.bucket` (and `storage.addressing`)")]
    MissingBucket { at: Place },
    #[error("storage denied access at {at}; the key needs s3:PutObject, s3:GetObject and s3:DeleteObject on the bucket under `storage.prefix`")]
    NoPermission { at: Place },
    #[error("storage answered HTTP {status}{} at {at}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        at: Place,
        status: u16,
        code: Option<String>,
    },
}

#[cfg(test)]
mod tests;
