//! What Mailgun posts to a forwarding URL that ends in `mime`: a `multipart/form-data`
//! form with the envelope (`recipient`, `sender`), `from`, `subject`, the message itself
//! in `body-mime`, and `timestamp`, `token` and `signature`, the hex HMAC-SHA256 of
//! timestamp + token under the webhook signing key, which every Mailgun receiver checks.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use mail_parser::{Address, HeaderName, MessageParser};
use sha2::Sha256;

use crate::secret::Secret;

/// The form fields that stay the same on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The envelope recipient (see [`crate::event::recipient`]); empty when unknown.
    pub recipient: String,
    /// The envelope sender: `Return-Path`, else the `From` address.
    pub sender: String,
    /// The `From` field, encoded-words decoded: `Name <address>`.
    pub from: String,
    pub subject: String,
    /// The message as retrieved.
    pub body_mime: Bytes,
}

/// Reads the fields from the message's headers (the body is not parsed).
pub fn fields(message: &[u8]) -> Fields {
    let parsed = MessageParser::default().parse_headers(message);
    let headers = parsed
        .as_ref()
        .and_then(|m| m.parts.first())
        .map_or(&[][..], |root| &root.headers[..]);
    let from = parsed.as_ref().and_then(|m| m.from()).and_then(first_addr);
    let return_path = headers
        .iter()
        .find(|h| h.name == HeaderName::ReturnPath)
        .and_then(|h| h.value.as_text())
        .filter(|path| path.contains('@'));
    Fields {
        recipient: crate::event::recipient::recipient(message, headers).unwrap_or_default(),
        sender: return_path
            .map(str::to_owned)
            .or_else(|| from.as_ref().map(|(_, address)| address.clone()))
            .unwrap_or_default(),
        from: match &from {
            Some((Some(name), address)) => format!("{name} <{address}>"),
            Some((None, address)) => address.clone(),
            None => String::new(),
        },
        subject: parsed
            .as_ref()
            .and_then(|m| m.subject())
            .unwrap_or_default()
            .to_owned(),
        body_mime: Bytes::copy_from_slice(message),
    }
}

fn first_addr(address: &Address<'_>) -> Option<(Option<String>, String)> {
    let addr = address.first()?;
    Some((
        addr.name.as_ref().map(|n| n.to_string()),
        addr.address.as_ref()?.to_string(),
    ))
}

/// The form for one attempt: a new random token, `timestamp` (seconds since the
/// epoch) and the signature over both. Returns the content type (with its boundary)
/// and the body.
///
/// The body is rendered to bytes here, not streamed, because the Standard Webhooks
/// signature pophook adds to every format covers the exact body.
pub async fn form(fields: &Fields, key: &Secret, timestamp: u64) -> (String, Vec<u8>) {
    use futures_util::StreamExt as _;
    use reqwest::multipart::{Form, Part};

    let token = token();
    let signature = signature(key, timestamp, &token);
    let form = Form::new()
        .text("recipient", fields.recipient.clone())
        .text("sender", fields.sender.clone())
        .text("from", fields.from.clone())
        .text("subject", fields.subject.clone())
        .part(
            "body-mime",
            Part::stream_with_length(fields.body_mime.clone(), fields.body_mime.len() as u64),
        )
        .text("timestamp", timestamp.to_string())
        .text("token", token)
        .text("signature", signature);
    let content_type = format!("multipart/form-data; boundary={}", form.boundary());
    let mut body = Vec::with_capacity(fields.body_mime.len() + 2048);
    let mut stream = form.into_stream();
    while let Some(chunk) = stream.next().await {
        // Every part is in memory, so reading them cannot fail.
        if let Ok(chunk) = chunk {
            body.extend_from_slice(&chunk);
        }
    }
    (content_type, body)
}

/// 50 random hex digits, the length of Mailgun's own tokens; receivers may remember
/// tokens to refuse a replayed request, so each attempt gets a new one.
fn token() -> String {
    let bytes: [u8; 25] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex HMAC-SHA256 of `timestamp` followed by `token`, keyed with the signing key's
/// text, as Mailgun signs its webhooks.
pub fn signature(key: &Secret, timestamp: u64, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fields of a `multipart/form-data` body, in order, for `pophook receive`. Only
/// what a form of text fields needs: names and contents, no files or nested parts.
pub fn parse_form(content_type: &str, body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or("the multipart content type has no boundary")?;
    let delimiter = format!("\r\n--{boundary}");
    let truncated = || "the form ends before its closing boundary".to_string();
    let mut rest = body
        .strip_prefix(format!("--{boundary}").as_bytes())
        .ok_or("the form does not start with its boundary")?;
    let mut fields = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").ok_or_else(truncated)?;
        let header_end = find(rest, b"\r\n\r\n").ok_or_else(truncated)?;
        let headers = String::from_utf8_lossy(&rest[..header_end]);
        let content = &rest[header_end + 4..];
        let end = find(content, delimiter.as_bytes()).ok_or_else(truncated)?;
        let name = headers
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .flat_map(|l| l.split(';'))
            .filter_map(|p| p.trim().strip_prefix("name="))
            .map(|n| n.trim_matches('"').to_owned())
            .next()
            .ok_or("a form part has no name")?;
        fields.push((name, content[..end].to_vec()));
        rest = &content[end + delimiter.len()..];
    }
    Ok(fields)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Return-Path: <bounce@example.org>\r\n\
        Delivered-To: support+t-1@example.com\r\n\
        From: =?UTF-8?Q?Jos=C3=A9?= <jose@example.org>\r\n\
        To: support@example.com\r\n\
        Subject: =?UTF-8?Q?=C3=89t=C3=A9?=\r\n\
        \r\n\
        .a line that starts with a dot\r\n\
        --not-a-boundary\r\n";

    #[test]
    fn fields_come_from_the_envelope_headers() {
        let fields = fields(MESSAGE);
        assert_eq!(fields.recipient, "support+t-1@example.com");
        assert_eq!(fields.sender, "bounce@example.org");
        assert_eq!(fields.from, "José <jose@example.org>");
        assert_eq!(fields.subject, "Été");
        assert_eq!(fields.body_mime, MESSAGE);
        let bare = super::fields(b"From: a@example.com\r\n\r\nx");
        assert_eq!(
            (
                bare.sender.as_str(),
                bare.from.as_str(),
                bare.recipient.as_str()
            ),
            ("a@example.com", "a@example.com", "")
        );
    }

    /// The key and expected value follow the definition (HMAC-SHA256 over
    /// timestamp + token, hex), computed independently with Python's hmac module.
    #[test]
    fn the_signature_is_hex_hmac_sha256_of_timestamp_and_token() {
        let key = Secret::new("key-3ax6xnjp29jd6fds4gc373sgvjxteol0");
        assert_eq!(
            signature(
                &key,
                1529006854,
                "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
            ),
            "b63c0701c4f4b614f272106a1b367c5c3369bcdca664ae73ebd52787e45eef07"
        );
    }

    #[tokio::test]
    async fn each_form_is_signed_with_a_fresh_token_and_reads_back_whole() {
        let key = Secret::new("signing-key");
        let fields = fields(MESSAGE);
        let (content_type, body) = form(&fields, &key, 1_700_000_000).await;
        let parsed = parse_form(&content_type, &body).unwrap();
        let get = |name: &str| {
            parsed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(get("body-mime"), MESSAGE);
        assert_eq!(get("subject"), "Été".as_bytes());
        assert_eq!(get("timestamp"), b"1700000000");
        let token = String::from_utf8(get("token")).unwrap();
        assert_eq!(token.len(), 50);
        assert_eq!(
            String::from_utf8(get("signature")).unwrap(),
            signature(&key, 1_700_000_000, &token)
        );
        let (_, again) = form(&fields, &key, 1_700_000_000).await;
        let again = parse_form(&content_type_of(&again), &again).unwrap();
        let other_token = &again.iter().find(|(n, _)| n == "token").unwrap().1;
        assert_ne!(other_token, token.as_bytes(), "a new token per attempt");
    }

    /// The boundary a form body opens with.
    fn content_type_of(body: &[u8]) -> String {
        let first = body.split(|&b| b == b'\r').next().unwrap();
        format!(
            "multipart/form-data; boundary={}",
            String::from_utf8_lossy(&first[2..])
        )
    }

    #[test]
    fn malformed_forms_are_refused_with_a_reason() {
        assert!(parse_form("multipart/form-data", b"")
            .unwrap_err()
            .contains("boundary"));
        let e = parse_form(
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue",
        )
        .unwrap_err();
        assert!(e.contains("closing boundary"), "{e}");
    }
}
