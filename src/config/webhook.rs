//! `webhook` (top level, overridden key by key per mailbox), its formats, retry policy
//! and signing keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::oauth2::is_loopback;
use super::raw::{RawHeaderValue, RawRetry, RawWebhook, SecretList};
use super::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_WEBHOOK_CONNECT_TIMEOUT, DEFAULT_WEBHOOK_TIMEOUT};
use crate::delivery::formats::Format;
use crate::delivery::retry::{Backoff, RetryPolicy};
use crate::delivery::signing::SigningKey;
use crate::delivery::{BasicAuth, WebhookConfig, WebhookUrl};
use crate::event::{self, AttachmentMode};
use crate::secret::Secret;
use crate::settings::{invalid, read_ca_pem, resolve_secret, ConfigError};
use crate::storage::{RawMode, Storage};

/// A mailbox's `webhook` block over the top-level one. The signing secret is taken
/// whole from whichever level names any of its three sources.
pub(super) fn merge(base: &RawWebhook, over: RawWebhook) -> RawWebhook {
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

pub(super) fn validate_webhook(
    key: &str,
    raw: RawWebhook,
    storage: Option<&Arc<Storage>>,
) -> Result<(WebhookConfig, event::Options), ConfigError> {
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
    let (include_raw, raw_store, storage) =
        validate_storage(key, format, attachments, raw.include_raw, raw.raw, storage)?;
    let event = event::Options {
        include_raw,
        attachments,
        max_inline_attachment_size: raw.max_inline_attachment_size,
        storage,
        store_larger_than: raw.store_larger_than.unwrap_or(0),
        raw_store,
    };
    let webhook = WebhookConfig {
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
        max_in_flight,
        retry,
        stored_fingerprint: Default::default(),
    };
    Ok((webhook, event))
}

/// Refuses a URL that is a well-known inbound endpoint when `format` is not what it
/// reads: such an endpoint may answer 200 to a body it cannot read, and pophook would
/// then delete mail nobody received. Matched on the path's segments, so an app mounted
/// under a prefix (`/app/rails/action_mailbox/…`) is recognised too.
pub(super) fn validate_format(key: &str, path: &str, format: Format) -> Result<(), ConfigError> {
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

pub(super) fn validate_retry(key: &str, raw: RawRetry) -> Result<RetryPolicy, ConfigError> {
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

/// Every signing key, from an inline key or list, or a file or variable holding one or
/// more keys separated by whitespace (a new line per key). `whsec_` keys sign `v1`,
/// `whsk_` keys `v1a`.
pub(super) fn signing_keys(
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

/// A webhook's storage keys against its format and the `storage` section: what
/// `include_raw` becomes, whether the message is stored, and the store when anything is.
fn validate_storage(
    key: &str,
    format: Format,
    attachments: AttachmentMode,
    include_raw: Option<bool>,
    raw: Option<RawMode>,
    storage: Option<&Arc<Storage>>,
) -> Result<(bool, bool, Option<Arc<Storage>>), ConfigError> {
    let include_raw = match (include_raw, raw) {
        (Some(true), Some(RawMode::Store)) => {
            return Err(invalid(
                format!("{key}.raw"),
                "`raw: store` and `include_raw: true` both set; choose one (the message in the store with its URL in `raw_url`, or base64 in `raw`)",
            ))
        }
        (_, Some(RawMode::Inline)) => true,
        (include_raw, _) => include_raw.unwrap_or(false),
    };
    let raw_store = raw == Some(RawMode::Store);
    let store_attachments = attachments == AttachmentMode::Store;
    if !raw_store && !store_attachments {
        return Ok((include_raw, false, None));
    }
    let what = if store_attachments {
        format!("{key}.attachments")
    } else {
        format!("{key}.raw")
    };
    // Postmark's and Mailgun's bodies have no field for a link, and `raw` posts the
    // message itself: storing would silently drop what those receivers expect.
    if format != Format::Standard {
        return Err(invalid(
            what,
            format!(
                "`store` needs `format: standard` (the event carries the URLs); `format: {}` has no field for them, so use `attachments: inline` or `metadata` there",
                format.name()
            ),
        ));
    }
    let Some(storage) = storage else {
        return Err(invalid(
            what,
            "`store` needs a `storage` section (endpoint, bucket, credentials); see the README's Storage section",
        ));
    };
    Ok((include_raw, raw_store, Some(storage.clone())))
}
