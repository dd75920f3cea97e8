//! The shape of the file: every key optional, so validation can name what is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::delivery::formats::Format;
use crate::event::AttachmentMode;
use crate::pop3::{AuthMethod, TlsMode};
use crate::secret::Secret;
use crate::storage::{RawMode, RawStorage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) max_memory: Option<u64>,
    #[serde(default)]
    pub(super) webhook: RawWebhook,
    #[serde(default)]
    pub(super) mailboxes: Vec<RawMailbox>,
    pub(super) http: Option<RawHttp>,
    pub(super) shard: Option<RawShard>,
    // Issue 13: validated in `crate::storage`.
    pub(super) storage: Option<RawStorage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) token: Option<Secret>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    pub(super) allow_unauthenticated_api: Option<bool>,
    pub(super) protect_metrics: Option<bool>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShard {
    pub(super) index: Option<u32>,
    pub(super) count: Option<u32>,
}

/// Every field optional: the top-level `webhook` is the default and a mailbox's
/// `webhook` overrides it key by key.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(super) timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) response_timeout: Option<Duration>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) headers: Option<BTreeMap<String, RawHeaderValue>>,
    pub(super) secret: Option<SecretList>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) secret_env: Option<String>,
    pub(super) include_raw: Option<bool>,
    pub(super) attachments: Option<AttachmentMode>,
    pub(super) max_inline_attachment_size: Option<u64>,
    // Issue 13: `attachments: store` keeps these inline; `raw: store`.
    pub(super) store_larger_than: Option<u64>,
    pub(super) raw: Option<RawMode>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) allow_insecure_webhook: Option<bool>,
    pub(super) retry: Option<RawRetry>,
    // Receiver formats (issue 11): see `crate::delivery::formats` and `validate_format`.
    pub(super) format: Option<Format>,
    pub(super) mailgun_signing_key: Option<Secret>,
    pub(super) mailgun_signing_key_file: Option<PathBuf>,
    pub(super) mailgun_signing_key_env: Option<String>,
}

/// `webhook.secret`: one key, or a list of keys that all sign (for rotation).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum SecretList {
    One(Secret),
    Many(Vec<Secret>),
}

/// A header value: inline, or `{file: PATH}` / `{env: VAR}` like every other secret.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawHeaderValue {
    Inline(Secret),
    Source(HeaderSource),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderSource {
    pub(super) file: Option<PathBuf>,
    pub(super) env: Option<String>,
}

/// `webhook.retry`: either a `schedule` or the exponential keys, not both.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) schedule: Option<Vec<humantime_serde::Serde<Duration>>>,
    pub(super) max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub(super) initial_backoff: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) max_backoff: Option<Duration>,
    pub(super) max_rejections: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailbox {
    pub(super) name: Option<String>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<TlsMode>,
    #[serde(default)]
    pub(super) allow_insecure: bool,
    pub(super) tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) tls_accept_invalid_certs: bool,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) auth: Option<AuthMethod>,
    pub(super) oauth2: Option<RawOAuth2>,
    #[serde(default, with = "humantime_serde")]
    pub(super) poll_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) timeout: Option<Duration>,
    pub(super) max_message_size: Option<usize>,
    pub(super) delete: Option<bool>,
    pub(super) commit_every: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub(super) commit_interval: Option<Duration>,
    #[serde(default)]
    pub(super) webhook: RawWebhook,
}

/// `mailboxes[].oauth2`: exactly one token source — `token_file`, `token_command`, or
/// a token endpoint (client credentials, or a refresh token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_command: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) token_url: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) refresh_token: Option<Secret>,
    pub(super) refresh_token_file: Option<PathBuf>,
    pub(super) refresh_token_env: Option<String>,
    pub(super) scope: Option<String>,
}
