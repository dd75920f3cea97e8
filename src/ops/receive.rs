//! `pophook receive`: a small webhook receiver for trying pophook out. It verifies the
//! Standard Webhooks signature (`v1` with a `whsec_` secret, `v1a` with a `whpk_` public
//! key; any one of several keys) when given keys, prints one line per message in
//! any `webhook.format` (standard, raw, postmark, mailgun) and answers 204.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::delivery::formats::mailgun;
use crate::delivery::signing::VerifyingKey;
use crate::event::recipient;
use crate::shutdown::Shutdown;

/// How far a `webhook-timestamp` may be from now, as the Standard Webhooks libraries
/// allow, so a captured request cannot be replayed much later.
const TOLERANCE_SECS: u64 = 5 * 60;

#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// The keys a signature may verify with; none accepts unsigned events.
    pub keys: Vec<VerifyingKey>,
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
    if !options.keys.is_empty() {
        if let Err(reason) = verify(&options.keys, &headers, &body) {
            println!("rejected: {reason}");
            return StatusCode::UNAUTHORIZED;
        }
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    let line = match describe(content_type, id, &body, options.json) {
        Ok(line) => line,
        Err((status, reason)) => {
            println!("rejected: {reason}");
            return status;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    StatusCode::NO_CONTENT
}

/// What to print for one request, by its content type: the standard event (whole with
/// `json`), or one line for a message in the raw, Postmark or Mailgun format.
fn describe(
    content_type: &str,
    id: &str,
    body: &[u8],
    json: bool,
) -> Result<String, (StatusCode, String)> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
    match media_type.as_str() {
        "message/rfc822" => Ok(message_summary("raw", None, body, id)),
        "multipart/form-data" => {
            let fields = mailgun::parse_form(content_type, body).map_err(bad)?;
            let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let message =
                field("body-mime").ok_or_else(|| bad("the form has no body-mime field".into()))?;
            let to = field("recipient").map(|r| String::from_utf8_lossy(r).into_owned());
            Ok(message_summary("mailgun", to, message, id))
        }
        _ => {
            let event = serde_json::from_slice::<serde_json::Value>(body)
                .map_err(|_| bad("the body is not JSON, message/rfc822 or a form".into()))?;
            if json {
                return Ok(serde_json::to_string_pretty(&event).unwrap_or_default());
            }
            match event["RawEmail"].as_str() {
                Some(message) => {
                    let to = event["OriginalRecipient"].as_str().map(str::to_owned);
                    let id = event["MessageID"].as_str().unwrap_or(id);
                    Ok(message_summary("postmark", to, message.as_bytes(), id))
                }
                None => Ok(summary(&event)),
            }
        }
    }
}

/// The line for a format that carries the whole message: format, recipient, sender,
/// subject, size, attachments, id; read from the message itself.
fn message_summary(format: &str, recipient: Option<String>, message: &[u8], id: &str) -> String {
    let parsed = mail_parser::MessageParser::default().parse(message);
    let headers = parsed
        .as_ref()
        .and_then(|m| m.parts.first())
        .map_or(&[][..], |root| &root.headers[..]);
    let recipient = recipient
        .filter(|r| !r.is_empty())
        .or_else(|| recipient::recipient(message, headers))
        .unwrap_or_else(|| "?".into());
    let from = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref())
        .unwrap_or("?")
        .to_owned();
    let subject = parsed.as_ref().and_then(|m| m.subject()).unwrap_or("");
    let attachments = parsed.as_ref().map_or(0, |m| m.attachments.len());
    format!(
        "{format} [{recipient}] from {from} — {subject:?} ({} bytes, {attachments} attachments){} id={id}",
        message.len(),
        if parsed.is_none() { " UNPARSEABLE" } else { "" },
    )
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
/// any of the space-separated `v1,`/`v1a,` signatures may match any of `keys`, and the
/// timestamp must be recent.
pub fn verify(keys: &[VerifyingKey], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
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
    let matches = header("webhook-signature")?.split(' ').any(|candidate| {
        keys.iter()
            .any(|key| key.verifies(candidate, id, timestamp, body))
    });
    if matches {
        Ok(())
    } else {
        Err(format!("bad signature for {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::signing::SigningKey;
    use crate::secret::Secret;

    fn signed_headers(key: &Secret, id: &str, ts: u64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert(
            "webhook-signature",
            format!("v1,bogus {}", crate::delivery::sign(key, id, ts, body))
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
        let verifying = |text: &str| VerifyingKey::parse(text).unwrap();
        let mine = verifying("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let other = verifying("b3RoZXIga2V5IG9mIGVub3VnaCBsZW5ndGg=");
        assert_eq!(verify(std::slice::from_ref(&mine), &headers, b"{}"), Ok(()));
        assert!(verify(std::slice::from_ref(&mine), &headers, b"{ }").is_err());
        assert!(verify(std::slice::from_ref(&other), &headers, b"{}").is_err());
        // Any of the receiver's keys may match.
        assert_eq!(verify(&[other, mine], &headers, b"{}"), Ok(()));
    }

    #[test]
    fn accepts_a_v1a_signature_with_the_public_key() {
        let (secret, public) = crate::delivery::signing::keygen();
        let signer = SigningKey::parse(&secret).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert(
            "webhook-signature",
            signer.sign("msg_1", now, b"{}").parse().unwrap(),
        );
        let public = VerifyingKey::parse(&public).unwrap();
        assert_eq!(
            verify(std::slice::from_ref(&public), &headers, b"{}"),
            Ok(())
        );
        assert!(verify(&[public], &headers, b"{}x").is_err());
    }

    #[test]
    fn rejects_old_timestamps() {
        let key = Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let headers = signed_headers(&key, "msg_1", now - 3600, b"{}");
        let keys = [VerifyingKey::parse(key.expose()).unwrap()];
        assert!(verify(&keys, &headers, b"{}")
            .unwrap_err()
            .contains("5 minutes"));
    }

    const MESSAGE: &[u8] =
        b"Delivered-To: support+t-7@example.com\r\nFrom: Ann <ann@example.com>\r\n\
        Subject: Hello\r\n\r\nHi\r\n";

    #[test]
    fn every_format_prints_one_line_naming_recipient_sender_subject_and_id() {
        let raw = describe("message/rfc822", "msg_1", MESSAGE, false).unwrap();
        assert_eq!(
            raw,
            "raw [support+t-7@example.com] from ann@example.com — \"Hello\" (90 bytes, 0 attachments) id=msg_1"
        );
        let postmark = serde_json::json!({
            "RawEmail": String::from_utf8_lossy(MESSAGE), "MessageID": "msg_2",
            "OriginalRecipient": "support+t-7@example.com"
        });
        let line = describe(
            "application/json",
            "msg_2",
            postmark.to_string().as_bytes(),
            false,
        )
        .unwrap();
        assert!(
            line.starts_with("postmark [support+t-7@example.com] from ann@example.com — \"Hello\""),
            "{line}"
        );
        assert!(line.ends_with("id=msg_2"), "{line}");

        let boundary = "xyz";
        let form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"recipient\"\r\n\r\nsupport@example.com\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"body-mime\"\r\n\r\n{}\r\n--{boundary}--\r\n",
            String::from_utf8_lossy(MESSAGE)
        );
        let line = describe(
            &format!("multipart/form-data; boundary={boundary}"),
            "msg_3",
            form.as_bytes(),
            false,
        )
        .unwrap();
        assert!(
            line.starts_with("mailgun [support@example.com] from ann@example.com"),
            "{line}"
        );
        assert!(line.ends_with("id=msg_3"), "{line}");
    }

    #[test]
    fn bodies_it_cannot_read_are_refused_with_the_reason() {
        let (status, reason) = describe("text/plain", "x", b"hello", false).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reason.contains("not JSON"), "{reason}");
        let (_, reason) = describe(
            "multipart/form-data; boundary=b",
            "x",
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
            false,
        )
        .unwrap_err();
        assert!(reason.contains("no name"), "{reason}");
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
