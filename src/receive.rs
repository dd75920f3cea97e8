//! `pophook receive`: a small webhook receiver for trying pophook out. It verifies the
//! Standard Webhooks signature when given the secret, prints each event and answers 204.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::webhook;

/// How far a `webhook-timestamp` may be from now, as the Standard Webhooks libraries
/// allow, so a captured request cannot be replayed much later.
const TOLERANCE_SECS: u64 = 5 * 60;

#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// The base64 HMAC key (the part after `whsec_`); `None` accepts unsigned events.
    pub signing_key: Option<Secret>,
    /// Print the whole event instead of a summary line.
    pub json: bool,
}

/// Serves until `shutdown` fires. Every path accepts POST.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: ReceiveOptions,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let options = Arc::new(options);
    let app = Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(options);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn receive(
    axum::extract::State(options): axum::extract::State<Arc<ReceiveOptions>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if let Some(key) = &options.signing_key {
        if let Err(reason) = verify(key, &headers, &body) {
            println!("rejected: {reason}");
            return StatusCode::UNAUTHORIZED;
        }
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        println!("rejected: the body is not JSON");
        return StatusCode::BAD_REQUEST;
    };
    let line = if options.json {
        serde_json::to_string_pretty(&event).unwrap_or_default()
    } else {
        summary(&event)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    StatusCode::NO_CONTENT
}

/// One line a person can scan: mailbox, sender, subject, size, attachments, id.
fn summary(event: &serde_json::Value) -> String {
    let data = &event["data"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let from = data["from"]
        .as_array()
        .and_then(|list| list.first())
        .map(|a| text(&a["address"]))
        .unwrap_or_default();
    format!(
        "{} [{}] from {} — {:?} ({} bytes, {} attachments){} id={}",
        text(&event["type"]),
        text(&data["mailbox"]),
        if from.is_empty() { "?".into() } else { from },
        text(&data["subject"]),
        data["size"].as_u64().unwrap_or(0),
        data["attachments"].as_array().map_or(0, Vec::len),
        if data["parse_error"].is_null() {
            ""
        } else {
            " UNPARSEABLE"
        },
        text(&data["id"]),
    )
}

/// Checks `webhook-signature` against the body as the Standard Webhooks spec says:
/// any of the space-separated `v1,` signatures may match, and the timestamp must be recent.
pub fn verify(key: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("missing {name} header"))
    };
    let id = header("webhook-id")?;
    let timestamp: u64 = header("webhook-timestamp")?
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now.abs_diff(timestamp) > TOLERANCE_SECS {
        return Err(format!(
            "webhook-timestamp {timestamp} is more than 5 minutes from now"
        ));
    }
    let expected = webhook::sign(key, id, timestamp, body);
    let matches = header("webhook-signature")?
        .split(' ')
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()));
    if matches {
        Ok(())
    } else {
        Err(format!("bad signature for {id}"))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how
/// much of a forged signature was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_headers(key: &Secret, id: &str, ts: u64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert(
            "webhook-signature",
            format!("v1,bogus {}", webhook::sign(key, id, ts, body))
                .parse()
                .unwrap(),
        );
        headers
    }

    #[test]
    fn accepts_a_valid_signature_among_several_and_rejects_tampering() {
        let key = Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let headers = signed_headers(&key, "msg_1", now, b"{}");
        assert_eq!(verify(&key, &headers, b"{}"), Ok(()));
        assert!(verify(&key, &headers, b"{ }").is_err());
        let other = Secret::new("b3RoZXIga2V5IG9mIGVub3VnaCBsZW5ndGg=");
        assert!(verify(&other, &headers, b"{}").is_err());
    }

    #[test]
    fn rejects_old_timestamps() {
        let key = Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let headers = signed_headers(&key, "msg_1", now - 3600, b"{}");
        assert!(verify(&key, &headers, b"{}")
            .unwrap_err()
            .contains("5 minutes"));
    }

    #[test]
    fn the_summary_names_mailbox_sender_subject_and_id() {
        let event = serde_json::json!({
            "type": "email.received",
            "data": {"mailbox": "support", "from": [{"name": null, "address": "a@example.com"}],
                     "subject": "Hi", "size": 120, "attachments": [], "parse_error": null, "id": "msg_x"}
        });
        assert_eq!(
            summary(&event),
            "email.received [support] from a@example.com — \"Hi\" (120 bytes, 0 attachments) id=msg_x"
        );
    }
}
