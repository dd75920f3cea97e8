//! What every component's settings are checked with, wherever they are validated:
//! one error type that names the key and what to do, and one way to read a secret
//! (an inline value, a file with `_file`, an environment variable with `_env`),
//! resolved once at load so nothing later reads the environment; and one way to read
//! a CA certificate to trust (`tls_ca_file`), checked at load too.

use std::path::PathBuf;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Load(String),
    #[error("invalid configuration at `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// One secret from exactly one of: inline value, `<key>_file`, `<key>_env`.
pub fn resolve_secret(
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

/// The PEM at `path`, checked to be a certificate; `key` names it in errors.
pub fn read_ca_pem(key: &str, path: Option<PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
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

pub(super) fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}
