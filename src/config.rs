//! Configuration: a YAML file, then `POPHOOK_*` environment variables on top, turned
//! into a validated [`Config`]. Every secret is resolved here, from an inline value, a
//! file or a named environment variable, so nothing later reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format as _, Yaml};
use figment::Figment;
use serde::Deserialize;

use crate::event::AttachmentMode;
use crate::formats::Format;
use crate::oauth2::{Provider, TokenSource};
use crate::pop3::codec::DEFAULT_MAX_LINE;
use crate::pop3::{AuthMethod, ServerConfig, TlsMode};
use crate::retry::{Backoff, RetryPolicy};
use crate::secret::Secret;
use crate::shard::{self, Shard};
use crate::signing::SigningKey;
use crate::storage::{RawMode, RawStorage, Storage};
use crate::webhook::{BasicAuth, WebhookConfig, WebhookUrl};

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_POP3_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// A receiver that cannot be reached in 10s is down; waiting longer only delays the
/// retry (and is capped by `timeout` anyway).
const DEFAULT_WEBHOOK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1024 * 1024;
/// 256 MiB of message bytes in flight; peak memory is about 2–3× that.
const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_MAX_IN_FLIGHT: usize = 4;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    /// The mailboxes this instance polls: all of them, or with `shard` those that hash
    /// to its index.
    pub mailboxes: Vec<Mailbox>,
    /// How long `run` may take after SIGTERM to finish the message in hand and QUIT.
    pub shutdown_timeout: Duration,
    /// Message bytes in flight across all mailboxes (downloaded and not yet answered
    /// by the webhook); a download waits for room.
    pub max_memory: u64,
    /// The health, metrics and management endpoint; off unless configured.
    pub http: Option<HttpConfig>,
    pub shard: Option<Shard>,
    /// Mailboxes in the configuration that other shards poll: (name, owning index).
    pub other_shards: Vec<(String, u32)>,
    /// The object store (`storage`), when configured; the webhooks that store
    /// attachments or messages hold it too.
    pub storage: Option<Arc<Storage>>,
}

/// `http`: where the health, metrics and management endpoints listen, and who may
/// use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The bearer token `/api/*` requires (and `/metrics` with `protect_metrics`).
    /// `None` only on a loopback address or with `allow_unauthenticated_api: true`.
    pub token: Option<Secret>,
    /// `/metrics` requires the token too.
    pub protect_metrics: bool,
    /// Host names (without port) the API answers besides loopback ones and the listen
    /// address: what a browser sends is refused otherwise (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more wait in the kernel's queue, so the API can never
    /// use the descriptors that delivery needs.
    pub max_connections: usize,
}

/// Connections the endpoint serves at once unless `http.max_connections` says otherwise.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 32;

impl HttpConfig {
    /// An endpoint on `listen` with the defaults: no token (as tests bind loopback).
    pub fn open(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            token: None,
            protect_metrics: false,
            allowed_hosts: Vec::new(),
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
        }
    }
}

impl HttpConfig {
    /// The address a local client connects to: a wildcard listen address (`0.0.0.0`,
    /// `[::]`) is reached on loopback.
    pub fn local_url(&self, path: &str) -> String {
        let ip = match self.listen.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        format!("http://{}{path}", SocketAddr::new(ip, self.listen.port()))
    }
}

/// One mailbox and the webhook its messages go to.
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Unique; part of state keys, event ids, logs and payloads.
    pub name: String,
    pub server: ServerConfig,
    pub poll_interval: Duration,
    /// `false`: leave mail on the server and deliver each message once.
    pub delete: bool,
    /// QUIT (which commits deletions) once a session has lasted this long, and continue
    /// in a new one, so a dropped connection late in a large backlog undoes little.
    pub commit_interval: Duration,
    /// Deprecated extra cap: also QUIT after this many DELEs. Unset by default.
    pub commit_every: Option<usize>,
    pub webhook: WebhookConfig,
}

impl Mailbox {
    /// Identifies everything about the mailbox, secrets included (hashed, never
    /// stored): a reload restarts the mailboxes whose fingerprint changed.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        // Debug shows every setting but prints secrets as [redacted]; they follow.
        hash.update(format!("{self:?}").as_bytes());
        hash.update([0]);
        hash.update(self.server.password.expose().as_bytes());
        hash.update([0]);
        hash.update(self.webhook.fingerprint().as_bytes());
        if let Some(tokens) = &self.server.oauth2 {
            hash.update(tokens.fingerprint());
        }
        if let Some(storage) = &self.webhook.storage {
            hash.update(storage.fingerprint().as_bytes());
        }
        hash.finalize().into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Load(String),
    #[error("invalid configuration at `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---- the shape of the file ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    shutdown_timeout: Option<Duration>,
    max_memory: Option<u64>,
    #[serde(default)]
    webhook: RawWebhook,
    #[serde(default)]
    mailboxes: Vec<RawMailbox>,
    http: Option<RawHttp>,
    shard: Option<RawShard>,
    // Issue 13: validated in `crate::storage`.
    storage: Option<RawStorage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    allow_unauthenticated_api: Option<bool>,
    protect_metrics: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShard {
    index: Option<u32>,
    count: Option<u32>,
}

/// Every field optional: the top-level `webhook` is the default and a mailbox's
/// `webhook` overrides it key by key.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    response_timeout: Option<Duration>,
    tls_ca_file: Option<PathBuf>,
    headers: Option<BTreeMap<String, RawHeaderValue>>,
    secret: Option<SecretList>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    include_raw: Option<bool>,
    attachments: Option<AttachmentMode>,
    max_inline_attachment_size: Option<u64>,
    // Issue 13: `attachments: store` keeps these inline; `raw: store`.
    store_larger_than: Option<u64>,
    raw: Option<RawMode>,
    max_in_flight: Option<usize>,
    allow_insecure_webhook: Option<bool>,
    retry: Option<RawRetry>,
    // Receiver formats (issue 11): see `crate::formats` and `validate_format`.
    format: Option<Format>,
    mailgun_signing_key: Option<Secret>,
    mailgun_signing_key_file: Option<PathBuf>,
    mailgun_signing_key_env: Option<String>,
}

/// `webhook.secret`: one key, or a list of keys that all sign (for rotation).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum SecretList {
    One(Secret),
    Many(Vec<Secret>),
}

/// A header value: inline, or `{file: PATH}` / `{env: VAR}` like every other secret.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawHeaderValue {
    Inline(Secret),
    Source(HeaderSource),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct HeaderSource {
    file: Option<PathBuf>,
    env: Option<String>,
}

/// `webhook.retry`: either a `schedule` or the exponential keys, not both.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    schedule: Option<Vec<humantime_serde::Serde<Duration>>>,
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    initial_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_backoff: Option<Duration>,
    max_rejections: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    name: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    #[serde(default)]
    allow_insecure: bool,
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_accept_invalid_certs: bool,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    auth: Option<AuthMethod>,
    oauth2: Option<RawOAuth2>,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    max_message_size: Option<usize>,
    delete: Option<bool>,
    commit_every: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    commit_interval: Option<Duration>,
    #[serde(default)]
    webhook: RawWebhook,
}

/// `mailboxes[].oauth2`: exactly one token source — `token_file`, `token_command`, or
/// a token endpoint (client credentials, or a refresh token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    token_file: Option<PathBuf>,
    token_command: Option<String>,
    tenant: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    refresh_token: Option<Secret>,
    refresh_token_file: Option<PathBuf>,
    refresh_token_env: Option<String>,
    scope: Option<String>,
}

// ---- loading --------------------------------------------------------------------

/// The file read when neither `--config` nor `POPHOOK_CONFIG` names one, if it exists:
/// the container image's mount point, and the usual place on a host.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pophook/config.yaml";

/// Reads the configuration file, then the environment on top, and validates the result.
/// A file named by `path` (`--config`/`POPHOOK_CONFIG`) must exist, so a typo fails
/// loudly; without one, [`DEFAULT_CONFIG_FILE`] is read only if it is there, so a
/// container runs from a mounted file or from `POPHOOK_*` variables alone.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_or_default(path, Path::new(DEFAULT_CONFIG_FILE))
}

fn load_or_default(path: Option<&Path>, default: &Path) -> Result<Config, ConfigError> {
    let file = match path {
        Some(path) if !path.is_file() => {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist; pass --config PATH or set POPHOOK_CONFIG (see config.example.yaml)",
                path.display()
            )))
        }
        Some(path) => Some(path),
        None => Some(default).filter(|default| default.is_file()),
    };
    let mut figment = Figment::new();
    match file {
        Some(file) => {
            tracing::info!("configuration: {} and POPHOOK_* variables", file.display());
            figment = figment.merge(Yaml::file(file));
        }
        None => tracing::info!(
            "configuration: POPHOOK_* variables only (no --config, and no {})",
            default.display()
        ),
    }
    figment = figment.merge(environment());
    from_figment(figment)
}

/// `POPHOOK_WEBHOOK__URL=...` overrides `webhook.url`. The variables that configure the
/// command line itself are not configuration keys.
fn environment() -> Env {
    Env::prefixed("POPHOOK_")
        .ignore(&["CONFIG", "LOG_FORMAT", "LOG", "RECEIVE_SECRET"])
        .split("__")
}

/// Validates an already assembled figment (tests build one from a YAML string).
pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
    let raw: RawConfig = figment
        .extract()
        .map_err(|e| ConfigError::Load(describe_figment_error(e)))?;
    validate(raw)
}

/// Parses a YAML document (plus nothing from the environment).
pub fn from_yaml(yaml: &str) -> Result<Config, ConfigError> {
    from_figment(Figment::from(Yaml::string(yaml)))
}

fn describe_figment_error(error: figment::Error) -> String {
    // figment reports every error found; one per line reads best. Its own messages
    // repeat the offending value, which may be a password (an inline one inside
    // POPHOOK_MAILBOXES, say), so values are described by their type only.
    use figment::error::{Actual, Kind};
    fn shape(actual: &Actual) -> &'static str {
        match actual {
            Actual::Bool(_) => "a boolean",
            Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
            Actual::Char(_) | Actual::Str(_) => "a string",
            Actual::Bytes(_) => "bytes",
            Actual::Unit => "nothing",
            Actual::Seq => "a list",
            Actual::Map => "a map",
            _ => "another kind of value",
        }
    }
    error
        .into_iter()
        .map(|e| {
            let what = match &e.kind {
                Kind::InvalidType(actual, expected) => {
                    format!("expected {expected}, found {}", shape(actual))
                }
                Kind::InvalidValue(actual, expected) => {
                    format!("invalid value ({}), expected {expected}", shape(actual))
                }
                Kind::Unsupported(actual) => format!("{} is not supported here", shape(actual)),
                Kind::Message(_) => "the value is not valid here".to_string(),
                other => other.to_string(),
            };
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!(" for key `{}`", e.path.join("."))
            };
            let from = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{what}{key}{from}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.mailboxes.is_empty() {
        return Err(invalid(
            "mailboxes",
            "no mailboxes are configured; add at least one (see config.example.yaml)",
        ));
    }
    let storage = raw
        .storage
        .map(crate::storage::validate)
        .transpose()?
        .map(Arc::new);
    let mut mailboxes: Vec<Mailbox> = Vec::with_capacity(raw.mailboxes.len());
    for (i, mailbox) in raw.mailboxes.into_iter().enumerate() {
        let mailbox = validate_mailbox(i, mailbox, &raw.webhook, storage.as_ref())?;
        if mailboxes.iter().any(|m| m.name == mailbox.name) {
            return Err(invalid(
                format!("mailboxes[{i}].name"),
                format!("the name {:?} is used twice; mailbox names must be unique because state is kept by name", mailbox.name),
            ));
        }
        mailboxes.push(mailbox);
    }
    let shutdown_timeout = raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    if shutdown_timeout.is_zero() {
        return Err(invalid("shutdown_timeout", "must be more than 0s"));
    }
    let max_memory = raw.max_memory.unwrap_or(DEFAULT_MAX_MEMORY);
    if max_memory < 1024 * 1024 {
        return Err(invalid(
            "max_memory",
            "must be at least 1048576 (1 MiB); it bounds the message bytes in flight across all mailboxes",
        ));
    }
    let http = raw.http.map(validate_http).transpose()?;
    let shard = raw.shard.map(validate_shard).transpose()?;
    // Sharding is applied here, not at service start: every command (`run`, `once`,
    // `status`, `parked`, readiness, metrics) then sees only this instance's mailboxes,
    // so no code path can poll another shard's mailbox by iterating the wrong list;
    // validation above still covers every mailbox, so all instances refuse the same
    // bad file.
    let mut other_shards = Vec::new();
    if let Some(shard) = shard {
        mailboxes.retain(|m| {
            let owner = shard::owner(&m.name, shard.count);
            if owner != shard.index {
                other_shards.push((m.name.clone(), owner));
            }
            owner == shard.index
        });
    }
    Ok(Config {
        state_dir: raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from("./pophook-state")),
        mailboxes,
        shutdown_timeout,
        max_memory,
        http,
        shard,
        other_shards,
        storage,
    })
}

fn validate_http(raw: RawHttp) -> Result<HttpConfig, ConfigError> {
    let listen = raw.listen.ok_or_else(|| {
        invalid(
            "http.listen",
            "missing; an address and port such as 127.0.0.1:9090 (or remove `http` to turn the endpoint off)",
        )
    })?;
    let listen: SocketAddr = listen.trim().parse().map_err(|_| {
        invalid(
            "http.listen",
            format!(
                "{listen:?} is not an IP address and port, such as 127.0.0.1:9090 or 0.0.0.0:9090"
            ),
        )
    })?;
    let token = resolve_secret("http.token", raw.token, raw.token_file, raw.token_env)?;
    if let Some(token) = &token {
        let usable =
            token.expose().len() >= 16 && token.expose().bytes().all(|b| b.is_ascii_graphic());
        if !usable {
            return Err(invalid(
                "http.token",
                "use at least 16 printable characters without spaces (make one with `head -c 32 /dev/urandom | base64`)",
            ));
        }
    }
    let allow_unauthenticated = raw.allow_unauthenticated_api.unwrap_or(false);
    if token.is_none() && !listen.ip().is_loopback() && !allow_unauthenticated {
        return Err(invalid(
            "http.token",
            format!(
                "missing: {listen} is not a loopback address, and anyone who can reach the management API could drop or replay parked messages; set `token`, `token_file` or `token_env` (then `pophook status` and `parked` send it), or listen on 127.0.0.1, or set `allow_unauthenticated_api: true` if a firewall already restricts who reaches it"
            ),
        ));
    }
    let protect_metrics = raw.protect_metrics.unwrap_or(false);
    if protect_metrics && token.is_none() {
        return Err(invalid(
            "http.protect_metrics",
            "needs a `token`: /metrics would then require one that does not exist",
        ));
    }
    let allowed_hosts = raw
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .map(|host| host.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if let Some(bad) = allowed_hosts
        .iter()
        .find(|h| h.is_empty() || h.contains(['/', ' ', '@']))
    {
        return Err(invalid(
            "http.allowed_hosts",
            format!("{bad:?} is not a host name; list names such as pophook.internal, without scheme or path"),
        ));
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS);
    if !(1..=1024).contains(&max_connections) {
        return Err(invalid(
            "http.max_connections",
            "must be between 1 and 1024",
        ));
    }
    Ok(HttpConfig {
        listen,
        token,
        protect_metrics,
        allowed_hosts,
        max_connections,
    })
}

fn validate_shard(raw: RawShard) -> Result<Shard, ConfigError> {
    let count = raw.count.ok_or_else(|| {
        invalid(
            "shard.count",
            "missing; how many instances share the mailboxes (POPHOOK_SHARD__COUNT)",
        )
    })?;
    let index = raw.index.ok_or_else(|| {
        invalid(
            "shard.index",
            "missing; this instance's number, 0 to count-1 (POPHOOK_SHARD__INDEX)",
        )
    })?;
    if count == 0 {
        return Err(invalid("shard.count", "must be at least 1"));
    }
    if index >= count {
        return Err(invalid(
            "shard.index",
            format!(
                "{index} is out of range: with count {count} it must be 0 to {}",
                count - 1
            ),
        ));
    }
    Ok(Shard { index, count })
}

fn validate_mailbox(
    i: usize,
    raw: RawMailbox,
    default_webhook: &RawWebhook,
    storage: Option<&Arc<Storage>>,
) -> Result<Mailbox, ConfigError> {
    let key = |field: &str| format!("mailboxes[{i}].{field}");

    let name = raw
        .name
        .ok_or_else(|| invalid(key("name"), "missing; every mailbox needs a unique name"))?;
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !name_ok {
        return Err(invalid(
            key("name"),
            format!("{name:?} is not a valid name: use 1-64 letters, digits, '-', '_', '.' or '@'"),
        ));
    }

    let host = raw
        .host
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| invalid(key("host"), "missing; the POP3 server's host name"))?;
    let tls = raw.tls.unwrap_or(TlsMode::Implicit);
    if tls == TlsMode::None && !raw.allow_insecure {
        return Err(invalid(
            key("tls"),
            "`tls: none` sends the password unencrypted; use `implicit` or `starttls`, or set `allow_insecure: true` if you accept that",
        ));
    }
    let username = raw
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid(key("username"), "missing"))?;
    if username.bytes().any(|b| b.is_ascii_control()) {
        return Err(invalid(key("username"), "contains a control character"));
    }
    let auth = raw.auth.unwrap_or(AuthMethod::User);
    if raw.oauth2.is_some() && auth != AuthMethod::XOAuth2 {
        return Err(invalid(
            key("auth"),
            "set `auth: xoauth2` to log in with the token from `oauth2`",
        ));
    }
    let password = resolve_secret(
        &key("password"),
        raw.password,
        raw.password_file,
        raw.password_env,
    )?;
    let password = match (auth, password) {
        (AuthMethod::XOAuth2, None) => Secret::new(""),
        (AuthMethod::XOAuth2, Some(_)) => {
            return Err(invalid(
                key("password"),
                "not used with `auth: xoauth2`, which logs in with the token from `oauth2`; remove it",
            ))
        }
        (_, password) => password.ok_or_else(|| {
            invalid(
                key("password"),
                "missing; set `password`, `password_file` (e.g. /run/secrets/pop3) or `password_env` (a variable name)",
            )
        })?,
    };
    if password
        .expose()
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(invalid(
            key("password"),
            "contains a line break or NUL byte, which POP3 cannot carry (a password file's single trailing newline is trimmed)",
        ));
    }
    let ca_pem = read_ca_pem(&key("tls_ca_file"), raw.tls_ca_file)?;
    let poll_interval = raw.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
    if poll_interval < Duration::from_secs(1) {
        return Err(invalid(key("poll_interval"), "must be at least 1s"));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_POP3_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be more than 0s"));
    }
    let oauth2 = match raw.oauth2 {
        Some(oauth2) => Some(Arc::new(validate_oauth2(&key("oauth2"), oauth2, &name, timeout)?)),
        None if auth == AuthMethod::XOAuth2 => return Err(invalid(
            key("oauth2"),
            "missing; `auth: xoauth2` needs a token source: `token_file`, `token_command`, or `client_id` with `tenant` (Microsoft 365) or `token_url`",
        )),
        None => None,
    };

    let server = ServerConfig {
        port: raw.port.unwrap_or(tls.default_port()),
        host,
        tls,
        allow_insecure: raw.allow_insecure,
        ca_pem,
        accept_invalid_certs: raw.tls_accept_invalid_certs,
        username,
        password,
        auth,
        oauth2,
        timeout,
        max_line: DEFAULT_MAX_LINE,
        max_message_size: raw.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
        tls_connector: Default::default(),
    };
    if raw.commit_every == Some(0) {
        return Err(invalid(key("commit_every"), "must be at least 1"));
    }
    let commit_interval = raw.commit_interval.unwrap_or(DEFAULT_COMMIT_INTERVAL);
    if commit_interval.is_zero() {
        return Err(invalid(key("commit_interval"), "must be longer than 0s"));
    }
    let webhook = validate_webhook(
        &key("webhook"),
        merge(default_webhook, raw.webhook),
        storage,
    )?;
    Ok(Mailbox {
        name,
        server,
        poll_interval,
        delete: raw.delete.unwrap_or(true),
        commit_interval,
        commit_every: raw.commit_every,
        webhook,
    })
}

/// The PEM at `path`, checked to be a certificate; `key` names it in errors.
fn read_ca_pem(key: &str, path: Option<PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(&path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    native_tls::Certificate::from_pem(&pem).map_err(|e| {
        invalid(
            key,
            format!("{} is not a PEM certificate: {e}", path.display()),
        )
    })?;
    Ok(Some(pem))
}

/// A mailbox's `webhook` block over the top-level one. The signing secret is taken
/// whole from whichever level names any of its three sources.
fn merge(base: &RawWebhook, over: RawWebhook) -> RawWebhook {
    let over_has_secret =
        over.secret.is_some() || over.secret_file.is_some() || over.secret_env.is_some();
    let (secret, secret_file, secret_env) = if over_has_secret {
        (over.secret, over.secret_file, over.secret_env)
    } else {
        (
            base.secret.clone(),
            base.secret_file.clone(),
            base.secret_env.clone(),
        )
    };
    let over_has_mailgun_key = over.mailgun_signing_key.is_some()
        || over.mailgun_signing_key_file.is_some()
        || over.mailgun_signing_key_env.is_some();
    let (mailgun_signing_key, mailgun_signing_key_file, mailgun_signing_key_env) =
        if over_has_mailgun_key {
            (
                over.mailgun_signing_key,
                over.mailgun_signing_key_file,
                over.mailgun_signing_key_env,
            )
        } else {
            (
                base.mailgun_signing_key.clone(),
                base.mailgun_signing_key_file.clone(),
                base.mailgun_signing_key_env.clone(),
            )
        };
    let headers = match (&base.headers, over.headers) {
        (Some(base), Some(over)) => {
            let mut merged = base.clone();
            merged.extend(over);
            Some(merged)
        }
        (base, over) => over.or_else(|| base.clone()),
    };
    RawWebhook {
        url: over.url.or_else(|| base.url.clone()),
        timeout: over.timeout.or(base.timeout),
        connect_timeout: over.connect_timeout.or(base.connect_timeout),
        response_timeout: over.response_timeout.or(base.response_timeout),
        tls_ca_file: over.tls_ca_file.or_else(|| base.tls_ca_file.clone()),
        headers,
        secret,
        secret_file,
        secret_env,
        include_raw: over.include_raw.or(base.include_raw),
        attachments: over.attachments.or(base.attachments),
        max_in_flight: over.max_in_flight.or(base.max_in_flight),
        max_inline_attachment_size: over
            .max_inline_attachment_size
            .or(base.max_inline_attachment_size),
        store_larger_than: over.store_larger_than.or(base.store_larger_than),
        raw: over.raw.or(base.raw),
        allow_insecure_webhook: over.allow_insecure_webhook.or(base.allow_insecure_webhook),
        retry: over.retry.or_else(|| base.retry.clone()),
        format: over.format.or(base.format),
        mailgun_signing_key,
        mailgun_signing_key_file,
        mailgun_signing_key_env,
    }
}

fn validate_webhook(
    key: &str,
    raw: RawWebhook,
    storage: Option<&Arc<Storage>>,
) -> Result<WebhookConfig, ConfigError> {
    let url_key = format!("{key}.url");
    let url = raw.url.ok_or_else(|| {
        invalid(
            &url_key,
            "missing; set `webhook.url` (for every mailbox) or a mailbox's own `webhook.url`",
        )
    })?;
    let mut url =
        url::Url::parse(&url).map_err(|e| invalid(&url_key, format!("not a valid URL ({e})")))?;
    // Taken out at once, so the URL that is kept, logged and stored has no password.
    let basic_auth = BasicAuth::take_from(&mut url).map_err(|reason| invalid(&url_key, reason))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) || raw.allow_insecure_webhook.unwrap_or(false) => {}
        "http" => {
            return Err(invalid(
                &url_key,
                "plain http to a non-loopback host would send mail and signatures unencrypted; use https, or set `allow_insecure_webhook: true`",
            ))
        }
        other => {
            return Err(invalid(
                &url_key,
                format!("scheme {other:?} is not supported; use https (or http for loopback)"),
            ))
        }
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid(format!("{key}.timeout"), "must be more than 0s"));
    }
    let connect_timeout = raw
        .connect_timeout
        .unwrap_or(DEFAULT_WEBHOOK_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() {
        return Err(invalid(
            format!("{key}.connect_timeout"),
            "must be more than 0s",
        ));
    }
    // The answer may take all of `timeout` unless told otherwise.
    let response_timeout = raw.response_timeout.unwrap_or(timeout);
    if response_timeout.is_zero() {
        return Err(invalid(
            format!("{key}.response_timeout"),
            "must be more than 0s",
        ));
    }
    let ca_pem = read_ca_pem(&format!("{key}.tls_ca_file"), raw.tls_ca_file)?;
    let mut headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let header_key = format!("{key}.headers.{name}");
        let value = match value {
            RawHeaderValue::Inline(value) => value,
            RawHeaderValue::Source(source) => {
                if source.file.is_some() == source.env.is_some() {
                    return Err(invalid(
                        &header_key,
                        "give the value as a string, or exactly one of `file` and `env`",
                    ));
                }
                resolve_secret(&header_key, None, source.file, source.env)?
                    .expect("exactly one source was given")
            }
        };
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&header_key, "not a valid HTTP header name"))?;
        reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
            invalid(
                &header_key,
                "the value is not a valid HTTP header value (no line breaks or control characters)",
            )
        })?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    let secret_key = format!("{key}.secret");
    let signing_keys = signing_keys(&secret_key, raw.secret, raw.secret_file, raw.secret_env)?;
    let retry = validate_retry(&format!("{key}.retry"), raw.retry.unwrap_or_default())?;
    let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=256).contains(&max_in_flight) {
        return Err(invalid(
            format!("{key}.max_in_flight"),
            "must be between 1 (strict mailbox order) and 256",
        ));
    }
    let format = raw.format.unwrap_or_default();
    validate_format(key, url.path(), format)?;
    let mailgun_key = format!("{key}.mailgun_signing_key");
    let mailgun_signing_key = resolve_secret(
        &mailgun_key,
        raw.mailgun_signing_key,
        raw.mailgun_signing_key_file,
        raw.mailgun_signing_key_env,
    )?;
    if format == Format::Mailgun && mailgun_signing_key.is_none() {
        return Err(invalid(
            mailgun_key,
            "missing; `format: mailgun` signs every request as Mailgun does, with the receiver's webhook signing key: set `mailgun_signing_key`, `mailgun_signing_key_file` or `mailgun_signing_key_env`",
        ));
    }
    let attachments = raw.attachments.unwrap_or_default();
    let (include_raw, raw_store, storage) = crate::storage::validate_webhook(
        key,
        format,
        attachments,
        raw.include_raw,
        raw.raw,
        storage,
    )?;
    Ok(WebhookConfig {
        url: WebhookUrl::new(url),
        basic_auth,
        format,
        mailgun_signing_key,
        timeout,
        connect_timeout,
        response_timeout,
        ca_pem,
        headers,
        signing_keys,
        include_raw,
        attachments,
        max_inline_attachment_size: raw.max_inline_attachment_size,
        storage,
        store_larger_than: raw.store_larger_than.unwrap_or(0),
        raw_store,
        max_in_flight,
        retry,
    })
}

/// Refuses a URL that is a well-known inbound endpoint when `format` is not what it
/// reads: such an endpoint may answer 200 to a body it cannot read, and pophook would
/// then delete mail nobody received. Matched on the path's segments, so an app mounted
/// under a prefix (`/app/rails/action_mailbox/…`) is recognised too.
fn validate_format(key: &str, path: &str, format: Format) -> Result<(), ConfigError> {
    use Format::{Mailgun, Postmark, Raw};
    // (path segments, what it is, the format it reads; None: one pophook cannot speak)
    const INGRESSES: &[(&str, &str, Option<Format>)] = &[
        (
            "rails/action_mailbox/relay/",
            "Action Mailbox's relay ingress",
            Some(Raw),
        ),
        (
            "rails/action_mailbox/postmark/",
            "Action Mailbox's Postmark ingress",
            Some(Postmark),
        ),
        (
            "rails/action_mailbox/mailgun/",
            "Action Mailbox's Mailgun ingress",
            Some(Mailgun),
        ),
        ("rails/action_mailbox/", "this Action Mailbox ingress", None),
        (
            "anymail/postmark/",
            "django-anymail's Postmark webhook",
            Some(Postmark),
        ),
        (
            "anymail/mailgun/",
            "django-anymail's Mailgun webhook",
            Some(Mailgun),
        ),
        ("anymail/", "this django-anymail webhook", None),
        (
            "laravel-mailbox/postmark",
            "laravel-mailbox's Postmark driver",
            Some(Postmark),
        ),
        (
            "laravel-mailbox/mailgun/",
            "laravel-mailbox's Mailgun driver",
            Some(Mailgun),
        ),
    ];
    let path = format!("{}/", path.trim_end_matches('/'));
    let Some((_, what, reads)) = INGRESSES
        .iter()
        .find(|(segments, _, _)| path.contains(&format!("/{segments}")))
    else {
        return Ok(());
    };
    match reads {
        Some(reads) if *reads == format => Ok(()),
        Some(reads) => Err(invalid(
            format!("{key}.format"),
            format!(
                "the URL is {what}, which reads the `{}` format, but `format` is `{}`: set `format: {}` (otherwise it may accept what it cannot read, and the mail would be deleted)",
                reads.name(),
                format.name(),
                reads.name()
            ),
        )),
        None => Err(invalid(
            format!("{key}.url"),
            format!(
                "the URL is {what}, whose format pophook does not speak; use Action Mailbox's relay ingress (`format: raw`) or a Postmark or Mailgun endpoint (`format: postmark` / `format: mailgun`)"
            ),
        )),
    }
}

fn validate_retry(key: &str, raw: RawRetry) -> Result<RetryPolicy, ConfigError> {
    let defaults = RetryPolicy::default();
    let exponential_keys =
        raw.max_attempts.is_some() || raw.initial_backoff.is_some() || raw.max_backoff.is_some();
    let backoff = match raw.schedule {
        Some(_) if exponential_keys => return Err(invalid(
            key,
            "give either `schedule` or `max_attempts`/`initial_backoff`/`max_backoff`, not both",
        )),
        Some(schedule) if schedule.is_empty() => {
            return Err(invalid(
                format!("{key}.schedule"),
                "must list at least one attempt",
            ))
        }
        Some(schedule) => Backoff::Schedule(schedule.into_iter().map(|d| d.into_inner()).collect()),
        None if exponential_keys => {
            let max_attempts = raw.max_attempts.unwrap_or(10);
            if max_attempts == 0 {
                return Err(invalid(format!("{key}.max_attempts"), "must be at least 1"));
            }
            Backoff::Exponential {
                max_attempts,
                initial: raw.initial_backoff.unwrap_or(Duration::from_secs(5)),
                max: raw.max_backoff.unwrap_or(Duration::from_secs(3600)),
            }
        }
        None => defaults.backoff,
    };
    Ok(RetryPolicy {
        backoff,
        max_rejections: raw.max_rejections.unwrap_or(defaults.max_rejections).max(1),
    })
}

fn validate_oauth2(
    base: &str,
    raw: RawOAuth2,
    mailbox: &str,
    timeout: Duration,
) -> Result<TokenSource, ConfigError> {
    let key = |field: &str| format!("{base}.{field}");
    let endpoint_keys: Vec<&str> = [
        ("tenant", raw.tenant.is_some()),
        ("token_url", raw.token_url.is_some()),
        ("client_id", raw.client_id.is_some()),
        (
            "client_secret",
            raw.client_secret.is_some()
                || raw.client_secret_file.is_some()
                || raw.client_secret_env.is_some(),
        ),
        (
            "refresh_token",
            raw.refresh_token.is_some()
                || raw.refresh_token_file.is_some()
                || raw.refresh_token_env.is_some(),
        ),
        ("scope", raw.scope.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    let mut sources = Vec::new();
    if raw.token_file.is_some() {
        sources.push("`token_file`".to_string());
    }
    if raw.token_command.is_some() {
        sources.push("`token_command`".to_string());
    }
    if !endpoint_keys.is_empty() {
        sources.push(format!(
            "a token endpoint (`{}`)",
            endpoint_keys.join("`, `")
        ));
    }
    match sources.len() {
        0 => return Err(invalid(
            base,
            "no token source; set `token_file`, `token_command`, or `client_id` with `tenant` (Microsoft 365) or `token_url`",
        )),
        1 => {}
        _ => return Err(invalid(
            base,
            format!("give exactly one token source, not {}", sources.join(" and ")),
        )),
    }

    let provider = if let Some(path) = raw.token_file {
        // Read now so a wrong path is reported at startup; it is read again on every login.
        std::fs::metadata(&path).map_err(|e| {
            invalid(
                key("token_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Provider::File(path)
    } else if let Some(command) = raw.token_command {
        if command.trim().is_empty() {
            return Err(invalid(key("token_command"), "is empty"));
        }
        Provider::Command(command)
    } else {
        let tenant_given = raw.tenant.is_some();
        let token_url = match (raw.tenant, raw.token_url) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("token_url"),
                    "give `tenant` (Microsoft 365) or `token_url`, not both",
                ))
            }
            (Some(tenant), None) => {
                let tenant_ok = !tenant.is_empty()
                    && tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !tenant_ok {
                    return Err(invalid(
                        key("tenant"),
                        "must be the directory (tenant) ID or a domain such as contoso.onmicrosoft.com",
                    ));
                }
                crate::oauth2::microsoft_token_url(&tenant)
            }
            (None, Some(url)) => url,
            (None, None) => {
                return Err(invalid(
                    key("token_url"),
                    "missing; set `token_url` (Gmail: https://oauth2.googleapis.com/token) or `tenant` (Microsoft 365)",
                ))
            }
        };
        let token_url = url::Url::parse(&token_url)
            .map_err(|e| invalid(key("token_url"), format!("not a valid URL: {e}")))?;
        if token_url.scheme() != "https"
            && !(token_url.scheme() == "http" && is_loopback(&token_url))
        {
            return Err(invalid(
                key("token_url"),
                "must be https (plain http only to a loopback address): the request carries the client secret",
            ));
        }
        let client_id = raw
            .client_id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    key("client_id"),
                    "missing; the application (client) ID the provider issued for pophook",
                )
            })?;
        let client_secret = resolve_secret(
            &key("client_secret"),
            raw.client_secret,
            raw.client_secret_file,
            raw.client_secret_env,
        )?;
        let refresh_token = resolve_secret(
            &key("refresh_token"),
            raw.refresh_token,
            raw.refresh_token_file,
            raw.refresh_token_env,
        )?;
        match refresh_token {
            Some(refresh_token) => Provider::RefreshToken {
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scope: raw.scope,
            },
            None => Provider::ClientCredentials {
                token_url,
                client_id,
                client_secret: client_secret.ok_or_else(|| invalid(
                    key("client_secret"),
                    "missing; the client credentials flow needs `client_secret`, `client_secret_file` or `client_secret_env` (or give a `refresh_token` for the refresh-token flow)",
                ))?,
                // App-only POP access to Microsoft 365 always asks for this scope.
                scope: raw.scope.or_else(|| {
                    tenant_given.then(|| crate::oauth2::MICROSOFT_POP_SCOPE.to_string())
                }),
            },
        }
    };
    TokenSource::new(mailbox, provider, timeout).map_err(|reason| invalid(base, reason))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Every signing key, from an inline key or list, or a file or variable holding one or
/// more keys separated by whitespace (a new line per key). `whsec_` keys sign `v1`,
/// `whsk_` keys `v1a`.
fn signing_keys(
    key: &str,
    inline: Option<SecretList>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Vec<SigningKey>, ConfigError> {
    if inline.is_some() && (file.is_some() || env.is_some()) {
        return Err(invalid(
            key,
            "set only one of `secret`, `secret_file` and `secret_env` (a list of keys goes in `secret`, or one per line in the file)",
        ));
    }
    let secrets = match inline {
        Some(SecretList::One(secret)) => vec![secret],
        Some(SecretList::Many(list)) => list,
        None => resolve_secret(key, None, file, env)?
            .map(|all| all.expose().split_whitespace().map(Secret::new).collect())
            .unwrap_or_default(),
    };
    secrets
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            SigningKey::parse(secret).map_err(|reason| match secrets.len() {
                1 => invalid(key, reason),
                _ => invalid(format!("{key}[{i}]"), reason),
            })
        })
        .collect()
}

/// One secret from exactly one of: inline value, `<key>_file`, `<key>_env`.
pub(crate) fn resolve_secret(
    key: &str,
    inline: Option<Secret>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let sources = [inline.is_some(), file.is_some(), env.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if sources > 1 {
        return Err(invalid(
            key,
            format!(
                "set only one of `{0}`, `{0}_file` and `{0}_env`",
                last_segment(key)
            ),
        ));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        // Files written by `echo` or editors end with a newline that is not part of it.
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        return Ok(Some(Secret::new(trimmed)));
    }
    if let Some(var) = env {
        let value = std::env::var(&var).map_err(|_| {
            invalid(
                format!("{key}_env"),
                format!("the environment variable {var:?} is not set (or not valid UTF-8)"),
            )
        })?;
        return Ok(Some(Secret::new(value)));
    }
    Ok(inline)
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBHOOK: &str = "webhook:\n  url: http://127.0.0.1:8080/inbound\n";
    const MAILBOX: &str =
        "  - name: support\n    host: pop.example.com\n    username: support@example.com\n";

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        from_yaml(yaml)
    }

    fn error(yaml: &str) -> String {
        match load(yaml) {
            Ok(_) => panic!("config should be refused:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n")).unwrap();
        let m = &config.mailboxes[0];
        assert_eq!(m.server.tls, TlsMode::Implicit);
        assert_eq!(m.server.port, 995);
        assert_eq!(m.server.auth, AuthMethod::User);
        assert_eq!(m.poll_interval, Duration::from_secs(60));
        assert!(m.delete);
        assert_eq!(m.webhook.timeout, Duration::from_secs(30));
        assert!(!m.webhook.include_raw);
        assert_eq!(config.state_dir, PathBuf::from("./pophook-state"));
        let starttls = load(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n    tls: starttls\n"
        ))
        .unwrap();
        assert_eq!(starttls.mailboxes[0].server.port, 110);
    }

    #[test]
    fn attachment_mode_defaults_to_inline_and_a_mailbox_can_override_it() {
        let sales = concat!(
            "  - name: sales\n    host: pop.example.com\n    username: sales@example.com\n",
            "    password: b\n    webhook:\n      attachments: omit\n",
        );
        let config = load(&format!(
            "{WEBHOOK}  attachments: metadata\n  max_inline_attachment_size: 1000\n\
             mailboxes:\n{MAILBOX}    password: a\n{sales}"
        ))
        .unwrap();
        let (first, second) = (&config.mailboxes[0].webhook, &config.mailboxes[1].webhook);
        assert_eq!(first.attachments, AttachmentMode::Metadata);
        assert_eq!(first.max_inline_attachment_size, Some(1000));
        assert_eq!(second.attachments, AttachmentMode::Omit);
        assert_eq!(second.max_inline_attachment_size, Some(1000));

        let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n")).unwrap();
        assert_eq!(
            config.mailboxes[0].webhook.attachments,
            AttachmentMode::Inline
        );
        assert_eq!(config.mailboxes[0].webhook.max_inline_attachment_size, None);
        let e = error(&format!(
            "{WEBHOOK}  attachments: links\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("links"), "{e}");
    }

    #[test]
    fn header_values_come_inline_from_files_or_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "Bearer from-file\n").unwrap();
        std::env::set_var("PH_TEST_HEADER_VAR", "from-env");
        let config = load(&format!(
            "{WEBHOOK}  headers:\n    Authorization: {{file: {}}}\n    X-Env: {{env: PH_TEST_HEADER_VAR}}\n    X-Inline: plain\n\
             mailboxes:\n{MAILBOX}    password: a\n",
            file.display()
        ))
        .unwrap();
        let headers: Vec<(&str, &str)> = config.mailboxes[0]
            .webhook
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization", "Bearer from-file"),
                ("x-env", "from-env"),
                ("x-inline", "plain")
            ]
        );
        let e = error(&format!(
            "{WEBHOOK}  headers:\n    Authorization: {{file: /x, env: Y}}\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("headers.Authorization"), "{e}");
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
                .unwrap();
        // Point its secret files at real files.
        let mut yaml = example.clone();
        for secret in ["/run/secrets/webhook-secret", "/run/secrets/pop3-support"] {
            let path = dir.path().join(secret.rsplit('/').next().unwrap());
            std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
            yaml = yaml.replace(secret, path.to_str().unwrap());
        }
        let config = load(&yaml).unwrap_or_else(|e| panic!("config.example.yaml: {e}"));
        let m = &config.mailboxes[0];
        assert_eq!(m.name, "support");
        assert_eq!(m.webhook.retry, crate::retry::RetryPolicy::default());
        assert!(!m.webhook.signing_keys.is_empty());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn a_badly_shaped_environment_value_is_reported_without_its_content() {
        use figment::Jail;
        Jail::expect_with(|jail| {
            jail.set_env(
                "POPHOOK_MAILBOXES",
                "[{name=demo, host=h, username=u, password=hunter2secret,}}",
            );
            jail.set_env("POPHOOK_WEBHOOK__URL", "http://127.0.0.1:1/");
            let e = super::load_or_default(None, Path::new("/nonexistent"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("hunter2secret"), "{e}");
            assert!(e.contains("mailboxes") || e.contains("MAILBOXES"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n    pasword: typo\n"
        ));
        assert!(e.contains("pasword"), "{e}");
        let e = error(&format!(
            "{WEBHOOK}  retries: 3\nmailboxes:\n{MAILBOX}    password: pw\n"
        ));
        assert!(e.contains("retries"), "{e}");
    }

    #[test]
    fn a_missing_password_names_the_key_and_the_ways_to_give_it() {
        let e = error(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}"));
        assert!(e.contains("mailboxes[0].password"), "{e}");
        assert!(e.contains("password_file"), "{e}");
    }

    #[test]
    fn two_sources_for_one_secret_are_refused_without_echoing_it() {
        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: hunter2\n    password_env: HOME\n"
        ));
        assert!(
            e.contains("only one of `password`, `password_file` and `password_env`"),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
    }

    #[test]
    fn secrets_come_from_files_with_the_trailing_newline_trimmed_and_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let config = load(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password_file: {}\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(config.mailboxes[0].server.password.expose(), "from-file");

        std::env::set_var("PH_TEST_PASSWORD_VAR", "from-env");
        let config = load(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password_env: PH_TEST_PASSWORD_VAR\n"
        ))
        .unwrap();
        assert_eq!(config.mailboxes[0].server.password.expose(), "from-env");

        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password_env: PH_TEST_UNSET_VAR_XYZ\n"
        ));
        assert!(
            e.contains("password_env") && e.contains("PH_TEST_UNSET_VAR_XYZ"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_mailbox_names_are_refused() {
        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n{MAILBOX}    password: b\n"
        ));
        assert!(e.contains("mailboxes[1].name"), "{e}");
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn bad_webhook_urls_are_refused() {
        let e = error(&format!(
            "webhook:\n  url: not a url\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("mailboxes[0].webhook.url"), "{e}");
        let e = error(&format!(
            "webhook:\n  url: http://hooks.example.com/in\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("https"), "{e}");
        let e = error(&format!("mailboxes:\n{MAILBOX}    password: a\n"));
        assert!(e.contains("webhook.url") && e.contains("missing"), "{e}");
        // https anywhere, and plain http when explicitly allowed.
        load(&format!(
            "webhook:\n  url: https://hooks.example.com/in\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
        load(&format!(
            "webhook:\n  url: http://app:8080/in\n  allow_insecure_webhook: true\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
    }

    #[test]
    fn a_mailbox_webhook_overrides_the_default_key_by_key() {
        let config = load(&format!(
            "webhook:\n  url: http://127.0.0.1:1/a\n  timeout: 5s\n  headers: {{Authorization: Bearer x, X-A: '1'}}\n\
             mailboxes:\n{MAILBOX}    password: a\n    webhook:\n      url: http://127.0.0.1:1/b\n      headers: {{X-A: '2'}}\n"
        ))
        .unwrap();
        let webhook = &config.mailboxes[0].webhook;
        assert_eq!(webhook.url.as_str(), "http://127.0.0.1:1/b");
        assert_eq!(webhook.timeout, Duration::from_secs(5));
        let headers: Vec<(&str, &str)> = webhook
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("authorization", "Bearer x"), ("x-a", "2")]);
    }

    #[test]
    fn several_signing_keys_come_as_a_list_or_one_per_line_of_a_file() {
        let (ed25519, _) = crate::signing::keygen();
        let hmac = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = load(&format!(
            "{WEBHOOK}  secret: [{hmac}, \"{}\"]\nmailboxes:\n{MAILBOX}    password: a\n",
            ed25519.expose()
        ))
        .unwrap();
        let keys = &config.mailboxes[0].webhook.signing_keys;
        assert!(matches!(
            keys[..],
            [
                crate::signing::SigningKey::Hmac(_),
                crate::signing::SigningKey::Ed25519(_)
            ]
        ));
        assert!(!format!("{config:?}").contains(&ed25519.expose()[5..]));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("{hmac}\n{}\n", ed25519.expose())).unwrap();
        let config = load(&format!(
            "{WEBHOOK}  secret_file: {}\nmailboxes:\n{MAILBOX}    password: a\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(config.mailboxes[0].webhook.signing_keys.len(), 2);

        let e = error(&format!(
            "{WEBHOOK}  secret: [{hmac}, whsk_bad-key]\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(
            e.contains("webhook.secret[1]") && !e.contains("bad-key"),
            "{e}"
        );
    }

    #[test]
    fn webhook_timeouts_default_from_timeout_and_override_per_mailbox() {
        let sales = MAILBOX.replace("support", "sales");
        let config = load(&format!(
            "{WEBHOOK}  timeout: 20s\nmailboxes:\n{MAILBOX}    password: a\n\
             {sales}    password: a\n    webhook: {{connect_timeout: 2s, response_timeout: 5s}}\n"
        ))
        .unwrap();
        let (first, second) = (&config.mailboxes[0].webhook, &config.mailboxes[1].webhook);
        assert_eq!(first.connect_timeout, Duration::from_secs(10));
        assert_eq!(first.response_timeout, Duration::from_secs(20));
        assert_eq!(second.timeout, Duration::from_secs(20));
        assert_eq!(second.connect_timeout, Duration::from_secs(2));
        assert_eq!(second.response_timeout, Duration::from_secs(5));
        let e = error(&format!(
            "{WEBHOOK}  response_timeout: 0s\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("webhook.response_timeout"), "{e}");
    }

    #[test]
    fn a_webhook_ca_file_must_be_a_readable_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let yaml = format!(
            "{WEBHOOK}  tls_ca_file: {}\nmailboxes:\n{MAILBOX}    password: a\n",
            path.display()
        );
        let e = error(&yaml);
        assert!(
            e.contains("webhook.tls_ca_file") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&path, "not a certificate").unwrap();
        let e = error(&yaml);
        assert!(
            e.contains("webhook.tls_ca_file") && e.contains("not a PEM"),
            "{e}"
        );
    }

    #[test]
    fn signing_secrets_must_be_standard_webhooks_secrets() {
        let e = error(&format!(
            "{WEBHOOK}  secret: not-base64!!\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(e.contains("webhook.secret") && e.contains("whsec_"), "{e}");
        assert!(!e.contains("not-base64!!"), "{e}");
        let config = load(&format!(
            "{WEBHOOK}  secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
        assert!(!config.mailboxes[0].webhook.signing_keys.is_empty());
    }

    /// A config with one mailbox whose webhook is `url` plus `extra` webhook lines.
    fn hook_yaml(url: &str, extra: &str) -> String {
        format!("webhook:\n  url: {url}\n{extra}mailboxes:\n{MAILBOX}    password: a\n")
    }

    #[test]
    fn a_well_known_ingress_with_the_wrong_format_is_refused_naming_the_right_one() {
        let cases = [
            ("/rails/action_mailbox/relay/inbound_emails", "raw"),
            ("/rails/action_mailbox/postmark/inbound_emails", "postmark"),
            (
                "/rails/action_mailbox/mailgun/inbound_emails/mime",
                "mailgun",
            ),
            ("/anymail/postmark/inbound/", "postmark"),
            ("/anymail/mailgun/inbound_mime/", "mailgun"),
            ("/anymail/mailgun/inbound/", "mailgun"),
            ("/laravel-mailbox/postmark", "postmark"),
            ("/laravel-mailbox/mailgun/mime", "mailgun"),
            // Mounted under a prefix.
            ("/app/anymail/postmark/inbound/", "postmark"),
        ];
        let key = "  mailgun_signing_key: k\n";
        for (path, right) in cases {
            let url = format!("https://hooks.example.com{path}");
            for wrong in ["standard", "raw", "postmark", "mailgun"] {
                let yaml = hook_yaml(&url, &format!("  format: {wrong}\n{key}"));
                if wrong == right {
                    load(&yaml).unwrap_or_else(|e| panic!("{path} with {wrong}: {e}"));
                    continue;
                }
                let e = error(&yaml);
                assert!(
                    e.contains("webhook.format") && e.contains(&format!("set `format: {right}`")),
                    "{path} with {wrong}: {e}"
                );
            }
            // No `format` at all is `standard`, the silent failure of the issue.
            let e = error(&hook_yaml(&url, key));
            assert!(e.contains(&format!("`format: {right}`")), "{e}");
        }
    }

    #[test]
    fn ingresses_pophook_cannot_speak_and_ordinary_paths() {
        let e = error(&hook_yaml(
            "https://app.example.com/rails/action_mailbox/sendgrid/inbound_emails",
            "",
        ));
        assert!(
            e.contains("webhook.url") && e.contains("relay ingress"),
            "{e}"
        );
        let e = error(&hook_yaml(
            "https://app.example.com/anymail/sendgrid/inbound/",
            "",
        ));
        assert!(e.contains("does not speak"), "{e}");
        for path in ["/inbound", "/hooks/anymail-postmark", "/mailgun/mime", "/"] {
            for format in ["standard", "raw", "postmark"] {
                load(&hook_yaml(
                    &format!("https://app.example.com{path}"),
                    &format!("  format: {format}\n"),
                ))
                .unwrap_or_else(|e| panic!("{path} {format}: {e}"));
            }
        }
    }

    #[test]
    fn the_format_is_overridable_per_mailbox() {
        let config = load(&format!(
            "{WEBHOOK}  format: raw\nmailboxes:\n{MAILBOX}    password: a\n\
             {}    password: a\n    webhook: {{format: postmark}}\n",
            MAILBOX.replace("support", "sales")
        ))
        .unwrap();
        assert_eq!(config.mailboxes[0].webhook.format, Format::Raw);
        assert_eq!(config.mailboxes[1].webhook.format, Format::Postmark);
        let default = load(&hook_yaml("https://a.example.com/in", "")).unwrap();
        assert_eq!(default.mailboxes[0].webhook.format, Format::Standard);
        let e = error(&hook_yaml("https://a.example.com/in", "  format: json\n"));
        assert!(e.contains("format"), "{e}");
    }

    #[test]
    fn basic_auth_comes_from_the_url_and_never_stays_in_it() {
        let config = load(&hook_yaml(
            "https://actionmailbox:s3cr%40t-pass@app.example.com/rails/action_mailbox/relay/inbound_emails?x=1",
            "  format: raw\n",
        ))
        .unwrap();
        let webhook = &config.mailboxes[0].webhook;
        let auth = webhook.basic_auth.as_ref().unwrap();
        assert_eq!(auth.username, "actionmailbox");
        assert_eq!(auth.password.expose(), "s3cr@t-pass");
        assert_eq!(
            webhook.url.as_str(),
            "https://app.example.com/rails/action_mailbox/relay/inbound_emails?x=1"
        );
        let printed = format!("{config:?} {}", webhook.url);
        assert!(!printed.contains("s3cr"), "{printed}");
        assert!(
            !printed.contains("x=1"),
            "the query may hold a token: {printed}"
        );
        // Credentials are part of what re-enables an endpoint disabled by a 410.
        let other = load(&hook_yaml(
            "https://actionmailbox:other@app.example.com/rails/action_mailbox/relay/inbound_emails?x=1",
            "  format: raw\n",
        ))
        .unwrap();
        assert_ne!(
            webhook.fingerprint(),
            other.mailboxes[0].webhook.fingerprint()
        );
        let e = error(&hook_yaml("https://u:%ff%fe@app.example.com/in", ""));
        assert!(e.contains("percent-encoded") && !e.contains("%ff"), "{e}");
    }

    #[test]
    fn mailgun_needs_a_signing_key_from_any_source_and_never_prints_it() {
        let url = "https://app.example.com/anymail/mailgun/inbound_mime/";
        let e = error(&hook_yaml(url, "  format: mailgun\n"));
        assert!(
            e.contains("webhook.mailgun_signing_key") && e.contains("mailgun_signing_key_file"),
            "{e}"
        );
        let config = load(&hook_yaml(
            url,
            "  format: mailgun\n  mailgun_signing_key: key-inline-value\n",
        ))
        .unwrap();
        let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
        assert_eq!(key.map(Secret::expose), Some("key-inline-value"));
        assert!(!format!("{config:?}").contains("key-inline-value"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mailgun-key");
        std::fs::write(&file, "key-from-file\n").unwrap();
        let config = load(&hook_yaml(
            url,
            &format!(
                "  format: mailgun\n  mailgun_signing_key_file: {}\n",
                file.display()
            ),
        ))
        .unwrap();
        let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
        assert_eq!(key.map(Secret::expose), Some("key-from-file"));
        std::env::set_var("PH_TEST_MAILGUN_KEY", "key-from-env");
        let config = load(&hook_yaml(
            url,
            "  format: mailgun\n  mailgun_signing_key_env: PH_TEST_MAILGUN_KEY\n",
        ))
        .unwrap();
        let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
        assert_eq!(key.map(Secret::expose), Some("key-from-env"));
        let e = error(&hook_yaml(
            url,
            "  format: mailgun\n  mailgun_signing_key: a\n  mailgun_signing_key_env: B\n",
        ));
        assert!(e.contains("only one of"), "{e}");
    }

    #[test]
    fn tls_none_needs_allow_insecure() {
        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n    tls: none\n"
        ));
        assert!(e.contains("mailboxes[0].tls"), "{e}");
        load(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n    tls: none\n    allow_insecure: true\n"
        ))
        .unwrap();
    }

    #[test]
    fn a_password_of_the_wrong_shape_is_not_echoed() {
        let e = error(&format!(
            "{WEBHOOK}mailboxes:\n{MAILBOX}    password: [hunter2]\n"
        ));
        assert!(e.contains("password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_reachable_api_needs_a_token_which_is_never_printed() {
        let with_http =
            |http: &str| format!("{WEBHOOK}http: {http}\nmailboxes:\n{MAILBOX}    password: a\n");
        let e = error(&with_http("{listen: '0.0.0.0:9090'}"));
        assert!(
            e.contains("http.token") && e.contains("allow_unauthenticated_api"),
            "{e}"
        );
        let token = "t0ken-that-is-long-enough";
        let config = load(&with_http(&format!("{{listen: '0.0.0.0:9090', token: {token}, protect_metrics: true, allowed_hosts: [Pophook.Internal]}}"))).unwrap();
        let http = config.http.unwrap();
        assert_eq!(http.token.as_ref().map(|t| t.expose()), Some(token));
        assert!(http.protect_metrics);
        assert_eq!(http.allowed_hosts, ["pophook.internal"]);
        assert!(!format!("{http:?}").contains(token));
        // Loopback needs none; a short token is refused without echoing it.
        assert_eq!(
            load(&with_http("{listen: '127.0.0.1:9090'}"))
                .unwrap()
                .http
                .unwrap()
                .token,
            None
        );
        let e = error(&with_http(
            "{listen: '127.0.0.1:9090', token: short-s3cret}",
        ));
        assert!(
            e.contains("http.token") && !e.contains("short-s3cret"),
            "{e}"
        );
        let e = error(&with_http(
            "{listen: '127.0.0.1:9090', protect_metrics: true}",
        ));
        assert!(e.contains("protect_metrics"), "{e}");
    }

    #[test]
    fn http_is_off_by_default_and_listen_must_be_an_address() {
        let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n")).unwrap();
        assert_eq!(config.http, None);
        let config = load(&format!(
            "{WEBHOOK}http: {{listen: '0.0.0.0:9090', allow_unauthenticated_api: true}}\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
        let http = config.http.unwrap();
        assert_eq!(http.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(http.token, None);
        assert_eq!(http.local_url("/healthz"), "http://127.0.0.1:9090/healthz");
        let e = error(&format!(
            "{WEBHOOK}http: {{listen: 'localhost'}}\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
        assert!(
            e.contains("http.listen") && e.contains("127.0.0.1:9090"),
            "{e}"
        );
    }

    #[test]
    fn a_shard_polls_only_the_mailboxes_that_hash_to_its_index() {
        let names = ["support", "sales", "billing", "info", "noreply"];
        let mailboxes: String = names
            .iter()
            .map(|n| format!("  - {{name: {n}, host: h, username: u, password: p}}\n"))
            .collect();
        let mut seen = Vec::new();
        for index in 0..2 {
            let config = load(&format!(
                "{WEBHOOK}shard: {{index: {index}, count: 2}}\nmailboxes:\n{mailboxes}"
            ))
            .unwrap();
            assert_eq!(config.shard, Some(Shard { index, count: 2 }));
            for m in &config.mailboxes {
                assert_eq!(shard::owner(&m.name, 2), index);
                seen.push(m.name.clone());
            }
            assert_eq!(
                config.mailboxes.len() + config.other_shards.len(),
                names.len()
            );
            assert!(config.other_shards.iter().all(|(_, owner)| *owner != index));
        }
        seen.sort();
        let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        all.sort();
        assert_eq!(seen, all, "every mailbox polled by exactly one instance");

        let e = error(&format!(
            "{WEBHOOK}shard: {{index: 2, count: 2}}\nmailboxes:\n{mailboxes}"
        ));
        assert!(e.contains("shard.index") && e.contains("0 to 1"), "{e}");
        let e = error(&format!(
            "{WEBHOOK}shard: {{index: 0, count: 0}}\nmailboxes:\n{mailboxes}"
        ));
        assert!(e.contains("shard.count"), "{e}");
        let e = error(&format!(
            "{WEBHOOK}shard: {{index: 0}}\nmailboxes:\n{mailboxes}"
        ));
        assert!(e.contains("shard.count") && e.contains("missing"), "{e}");
    }

    #[test]
    fn no_mailboxes_is_an_error_not_an_idle_service() {
        let e = error(WEBHOOK);
        assert!(e.contains("no mailboxes"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn the_default_file_is_optional_but_a_named_file_must_exist() {
        use figment::Jail;
        Jail::expect_with(|jail| {
            let default = jail.directory().join("config.yaml");
            jail.set_env("POPHOOK_WEBHOOK__URL", "https://hooks.example.com/in");
            jail.set_env(
                "POPHOOK_MAILBOXES",
                "[{name=env, host=pop.example.com, username=u, password=p}]",
            );
            // No file at all: the environment alone is the configuration.
            let config = load_or_default(None, &default).unwrap();
            assert_eq!(config.mailboxes[0].name, "env");
            // A file at the default place is read, and the environment still wins.
            jail.create_file(
                "config.yaml",
                "state_dir: /from-file\nwebhook:\n  timeout: 5s\n",
            )?;
            let config = load_or_default(None, &default).unwrap();
            assert_eq!(config.state_dir, PathBuf::from("/from-file"));
            assert_eq!(config.mailboxes[0].webhook.timeout, Duration::from_secs(5));
            // A file asked for by name must exist: a typo is not silently ignored.
            let e = load_or_default(Some(Path::new("typo.yaml")), &default).unwrap_err();
            assert!(e.to_string().contains("typo.yaml does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn the_receivers_secret_variable_is_not_a_configuration_key() {
        use figment::Jail;
        Jail::expect_with(|jail| {
            jail.set_env(
                "POPHOOK_RECEIVE_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            );
            jail.set_env("POPHOOK_WEBHOOK__URL", "https://hooks.example.com/in");
            jail.set_env(
                "POPHOOK_MAILBOXES",
                "[{name=env, host=pop.example.com, username=u, password=p}]",
            );
            load_or_default(None, &jail.directory().join("absent.yaml")).unwrap();
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn environment_variables_override_the_file() {
        use figment::Jail;
        Jail::expect_with(|jail| {
            jail.create_file(
                "pophook.yaml",
                &format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n"),
            )?;
            jail.set_env("POPHOOK_WEBHOOK__URL", "https://override.example.com/hook");
            jail.set_env("POPHOOK_STATE_DIR", "/var/lib/pophook");
            jail.set_env("POPHOOK_CONFIG", "ignored-here");
            let config = super::load(Some(Path::new("pophook.yaml"))).unwrap();
            assert_eq!(
                config.mailboxes[0].webhook.url.as_str(),
                "https://override.example.com/hook"
            );
            assert_eq!(config.state_dir, PathBuf::from("/var/lib/pophook"));
            jail.set_env("POPHOOK_SHARD__INDEX", "0");
            jail.set_env("POPHOOK_SHARD__COUNT", "1");
            jail.set_env("POPHOOK_HTTP__LISTEN", "127.0.0.1:9090");
            let config = super::load(Some(Path::new("pophook.yaml"))).unwrap();
            assert_eq!(config.shard, Some(Shard { index: 0, count: 1 }));
            assert_eq!(config.http.unwrap().listen.port(), 9090);
            Ok(())
        });
    }
}
