//! The webhook body in the shape the receiver already understands: pophook's own event
//! (`standard`), the message itself (`raw`, for Action Mailbox's relay ingress),
//! Postmark's inbound JSON or Mailgun's forwarded MIME form. [`render`] is the one entry
//! point: message bytes in, a body to POST out.

pub mod eight_bit;
pub mod mailgun;
pub mod postmark;

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::event::{self, EventMeta};

/// `webhook.format`: what the POST body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// pophook's `email.received` event, `application/json`.
    #[default]
    Standard,
    /// The message as retrieved (dot-unstuffed), `message/rfc822`.
    Raw,
    /// Postmark's inbound webhook JSON, always with `RawEmail`.
    Postmark,
    /// What Mailgun posts to a forwarding URL ending in `mime`: `multipart/form-data`
    /// with `body-mime`, signed with the Mailgun webhook signing key.
    Mailgun,
}

impl Format {
    /// As written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Raw => "raw",
            Format::Postmark => "postmark",
            Format::Mailgun => "mailgun",
        }
    }
}

/// One message, ready to POST.
#[derive(Debug)]
pub struct Rendered {
    /// The stable event id (`webhook-id`), the same whatever the format.
    pub id: String,
    pub payload: Payload,
    /// Set when the message could not be parsed; it is still delivered whole.
    pub parse_error: Option<String>,
    /// Objects to put in the store before the POST (`attachments: store`, `raw: store`).
    pub uploads: Vec<crate::storage::Upload>,
}

/// The body of the POST.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A finished body: the same bytes on every attempt.
    Body {
        content_type: &'static str,
        bytes: Bytes,
    },
    /// A standard event whose large base64 is made from the message as it is sent
    /// (`application/json`).
    Spooled(std::sync::Arc<event::Spooled>),
    /// Mailgun's form, whose `timestamp`, `token` and `signature` must be made fresh
    /// for each attempt (Action Mailbox refuses a timestamp older than two minutes).
    Mailgun(mailgun::Fields),
}

impl From<Vec<u8>> for Payload {
    /// A serialised standard event.
    fn from(json: Vec<u8>) -> Payload {
        Payload::Body {
            content_type: "application/json",
            bytes: json.into(),
        }
    }
}

/// Renders one retrieved message (dot-unstuffed, or only its headers when
/// `meta.truncated`) in `format`. Never fails: what cannot be parsed is still sent,
/// whole, in every format.
pub fn render(format: Format, meta: &EventMeta<'_>, raw: &[u8]) -> Rendered {
    let id = crate::ledger::event_id(meta.mailbox, meta.uidl);
    match format {
        Format::Standard => {
            let (id, body, parse_error) = event::serialize_event(meta, raw);
            Rendered {
                id,
                payload: body.into(),
                parse_error,
                uploads: Vec::new(),
            }
        }
        Format::Raw => Rendered {
            id,
            payload: Payload::Body {
                content_type: "message/rfc822",
                bytes: Bytes::from(message_bytes(raw, meta.truncated).into_owned()),
            },
            parse_error: None,
            uploads: Vec::new(),
        },
        Format::Postmark => {
            let message = message_bytes(raw, meta.truncated);
            let (body, parse_error) = postmark::render(meta, &message);
            Rendered {
                id,
                payload: body.into(),
                parse_error,
                uploads: Vec::new(),
            }
        }
        Format::Mailgun => Rendered {
            id,
            payload: Payload::Mailgun(mailgun::fields(&message_bytes(raw, meta.truncated))),
            parse_error: None,
            uploads: Vec::new(),
        },
    }
}

/// Standard events up to this size are sent whole (see [`render_stashed`]).
pub const WHOLE_UP_TO: usize = 256 * 1024;

/// [`render`] for delivery: the standard event spooled (its large base64 made from
/// `raw` as it is sent, so the message is in memory once), with the object store's
/// uploads (configuration refuses `store` with the other formats), the message itself
/// among them with `stash.raw`. `raw` is shared with those, not copied.
pub fn render_stashed(
    format: Format,
    meta: &EventMeta<'_>,
    raw: &Bytes,
    stash: Option<&event::Stash<'_>>,
) -> Rendered {
    if format != Format::Standard {
        return render(format, meta, raw);
    }
    let serialized = event::serialize_event_spooled(meta, raw, stash);
    // A small body is made whole here, once, on the render's thread: sending it piece
    // by piece saves nothing, and a spooled body is encoded a second time to sign it,
    // on another trip to the blocking pool (twice pophook's CPU per small message).
    let payload = if serialized.body.len() <= WHOLE_UP_TO {
        Payload::Body {
            content_type: "application/json",
            bytes: Bytes::from(serialized.body.to_vec()),
        }
    } else {
        Payload::Spooled(std::sync::Arc::new(serialized.body))
    };
    let mut rendered = Rendered {
        id: serialized.id,
        payload,
        parse_error: serialized.parse_error,
        uploads: serialized.uploads,
    };
    if let Some(stash) = stash.filter(|stash| stash.raw) {
        rendered.uploads.push(crate::storage::Upload {
            key: stash.storage.raw_key(&rendered.id),
            content_type: "message/rfc822".to_owned(),
            body: raw.clone(),
        });
    }
    rendered
}

/// The header field added to a message of which only the headers were fetched (it is
/// larger than `max_message_size`). The standard event says so in `truncated`; the other
/// formats have no such field, and a receiver must not take the headers for the whole
/// message, so the message itself says it.
pub const TRUNCATED_FIELD: &str = "X-Pophook-Truncated";

/// The message to send: as retrieved, or with [`TRUNCATED_FIELD`] on top when only its
/// headers were fetched (the line ending matches the message's own).
fn message_bytes(raw: &[u8], truncated: bool) -> Cow<'_, [u8]> {
    if !truncated {
        return Cow::Borrowed(raw);
    }
    let crlf = raw
        .iter()
        .position(|&b| b == b'\n')
        .is_none_or(|at| at > 0 && raw[at - 1] == b'\r');
    let mut out = format!(
        "{TRUNCATED_FIELD}: only the headers were fetched; the message is larger than max_message_size and stays on the server{}",
        if crlf { "\r\n" } else { "\n" }
    )
    .into_bytes();
    out.extend_from_slice(raw);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AttachmentMode;

    pub(crate) fn meta(truncated: bool) -> EventMeta<'static> {
        EventMeta {
            mailbox: "support",
            uidl: "UID1",
            received_at: time::macros::datetime!(2024-03-16 12:00:00 UTC),
            include_raw: false,
            truncated,
            attachments: AttachmentMode::Inline,
            max_inline_attachment_size: None,
        }
    }

    fn body(rendered: &Rendered) -> (&'static str, &[u8]) {
        match &rendered.payload {
            Payload::Body {
                content_type,
                bytes,
            } => (content_type, bytes),
            Payload::Mailgun(_) | Payload::Spooled(_) => panic!("not a finished body"),
        }
    }

    #[test]
    fn delivery_sends_a_small_standard_event_whole_and_spools_a_large_one() {
        let data = |bytes: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["data"].clone()
        };
        // Small: whole, and the same event `render` builds.
        let raw = Bytes::from_static(MESSAGE);
        let whole = render(Format::Standard, &meta(false), MESSAGE);
        let small = render_stashed(Format::Standard, &meta(false), &raw, None);
        let (content_type, bytes) = body(&small);
        assert_eq!(content_type, "application/json");
        assert_eq!(data(bytes), data(body(&whole).1));

        // Large: spooled, the same event again.
        let mut large = b"From: a@example.com\r\nSubject: big\r\n\r\n".to_vec();
        while large.len() <= WHOLE_UP_TO {
            large.extend_from_slice(b"a line of text in a long message\r\n");
        }
        let whole = render(Format::Standard, &meta(false), &large);
        let spooled = render_stashed(Format::Standard, &meta(false), &Bytes::from(large), None);
        let Payload::Spooled(spooled) = &spooled.payload else {
            panic!("a large standard event is spooled for delivery");
        };
        assert_eq!(data(&spooled.to_vec()), data(body(&whole).1));

        // The other formats are whole, as before.
        let raw_format = render_stashed(Format::Raw, &meta(false), &raw, None);
        assert_eq!(body(&raw_format), ("message/rfc822", MESSAGE));
    }

    const MESSAGE: &[u8] =
        b"From: a@example.com\r\nSubject: hi\r\n\r\n.starts with a dot\r\n\xff not UTF-8\r\n";

    #[test]
    fn raw_is_the_message_byte_for_byte_with_the_stable_id() {
        let rendered = render(Format::Raw, &meta(false), MESSAGE);
        assert_eq!(body(&rendered), ("message/rfc822", MESSAGE));
        assert_eq!(rendered.id, crate::ledger::event_id("support", "UID1"));
        let standard = render(Format::Standard, &meta(false), MESSAGE);
        assert_eq!(standard.id, rendered.id, "every format carries the same id");
        assert_eq!(body(&standard).0, "application/json");
    }

    #[test]
    fn a_truncated_message_says_so_in_its_own_headers() {
        let rendered = render(Format::Raw, &meta(true), b"Subject: big\r\n\r\n");
        let (_, bytes) = body(&rendered);
        assert!(bytes.starts_with(b"X-Pophook-Truncated: only the headers"));
        assert!(bytes.ends_with(b"server\r\nSubject: big\r\n\r\n"));
        let lf = message_bytes(b"Subject: big\n\n", true);
        assert!(lf.ends_with(b"server\nSubject: big\n\n"));
        assert_eq!(message_bytes(MESSAGE, false), MESSAGE);
    }

    #[test]
    fn the_standard_body_carries_large_attachments_exactly() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let pdf: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = b64.encode(&pdf);
        let wrapped: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let raw = format!(
            "Subject: \u{0}pophook-spool:0000000000000000:0\u{0}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b\r\nContent-Type: application/octet-stream; name=q.bin\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nA=00B=FF\r\n--b--\r\n",
            wrapped.join("\r\n")
        );
        let meta = EventMeta {
            include_raw: true,
            ..meta(false)
        };
        let rendered = render(Format::Standard, &meta, raw.as_bytes());
        let (_, bytes) = body(&rendered);
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        let attachments = value["data"]["attachments"].as_array().unwrap();
        assert_eq!(attachments[0]["content_base64"], encoded.as_str());
        assert_eq!(
            b64.decode(attachments[1]["content_base64"].as_str().unwrap())
                .unwrap(),
            b"A\x00B\xff"
        );
        assert_eq!(value["data"]["raw"], b64.encode(raw.as_bytes()));
        assert_eq!(
            value["data"]["subject"], "\u{0}pophook-spool:0000000000000000:0\u{0}",
            "text that looks like a marker stays text"
        );
        // The body is written once at its final size: not a byte reallocated.
        assert!(bytes.len() < raw.len() * 3);
    }

    #[test]
    fn format_names_are_lower_case_in_the_configuration() {
        for format in [
            Format::Standard,
            Format::Raw,
            Format::Postmark,
            Format::Mailgun,
        ] {
            let parsed: Format = serde_json::from_str(&format!("\"{}\"", format.name())).unwrap();
            assert_eq!(parsed, format);
        }
        assert!(serde_json::from_str::<Format>("\"Postmark\"").is_err());
    }
}
