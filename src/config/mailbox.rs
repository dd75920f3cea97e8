//! `mailboxes[]`: the server, the schedule and the merged webhook of each.

use std::sync::Arc;
use std::time::Duration;

use super::oauth2::validate_oauth2;
use super::raw::{RawMailbox, RawWebhook};
use super::webhook::{merge, validate_webhook};
use super::{
    DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_POLL_INTERVAL, DEFAULT_POP3_TIMEOUT,
};
use crate::mailbox::Mailbox;
use crate::pop3::codec::DEFAULT_MAX_LINE;
use crate::pop3::{AuthMethod, ServerConfig, TlsMode};
use crate::secret::Secret;
use crate::settings::{invalid, read_ca_pem, resolve_secret, ConfigError};
use crate::storage::Storage;

pub(super) fn validate_mailbox(
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
    let (webhook, event) = validate_webhook(
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
        event,
    })
}
