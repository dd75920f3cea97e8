//! `mailboxes[].oauth2`: exactly one token source.

use std::time::Duration;

use super::raw::RawOAuth2;
use crate::oauth2::{Provider, TokenSource};
use crate::settings::resolve_secret;
use crate::settings::{invalid, ConfigError};

pub(super) fn validate_oauth2(
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

pub(super) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
