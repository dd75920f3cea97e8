//! `http` and `shard`.

use std::net::SocketAddr;

use super::raw::{RawHttp, RawShard};
use crate::ops::http::{HttpConfig, DEFAULT_HTTP_MAX_CONNECTIONS};
use crate::ops::shard::Shard;
use crate::settings::resolve_secret;
use crate::settings::{invalid, ConfigError};

pub(super) fn validate_http(raw: RawHttp) -> Result<HttpConfig, ConfigError> {
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

pub(super) fn validate_shard(raw: RawShard) -> Result<Shard, ConfigError> {
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
