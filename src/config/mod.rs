//! Configuration: a YAML file, then `POPHOOK_*` environment variables on top, turned
//! into a validated [`Config`]. Every secret is resolved here, from an inline value, a
//! file or a named environment variable, so nothing later reads the environment.

mod http;
mod mailbox;
mod oauth2;
mod raw;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format as _, Yaml};
use figment::Figment;

pub use crate::mailbox::Mailbox;
pub use crate::ops::http::{HttpConfig, DEFAULT_HTTP_MAX_CONNECTIONS};
use crate::ops::shard;
pub use crate::service::Config;
use crate::settings::invalid;
pub use crate::settings::ConfigError;
use http::{validate_http, validate_shard};
use mailbox::validate_mailbox;
use raw::RawConfig;

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_POP3_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// A receiver that cannot be reached in 10s is down; waiting longer only delays the
/// retry (and is capped by `timeout` anyway).
const DEFAULT_WEBHOOK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1024 * 1024;
/// 256 MiB of messages and their rendered bodies in flight.
const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_MAX_IN_FLIGHT: usize = 4;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

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
        .map(std::sync::Arc::new);
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

#[cfg(test)]
mod tests;
