//! Turns one retrieved message (raw bytes) into the webhook payload: a Standard Webhooks
//! envelope whose `data` holds the headers, addresses, bodies and attachments as JSON.
//!
//! Building an event never fails and never panics: if the message cannot be parsed, the
//! event still goes out with `parse_error` set and the original bytes in `raw`, because a
//! message we cannot read must still reach the receiver before it is deleted.

mod address;
mod attachments;
mod body;
mod decode;
mod headers;
mod html;
mod model;
mod params;
pub mod recipient;
mod reply;
mod spool;

use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_parser::{Header, HeaderName, Message, MessageParser, MimeHeaders};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use address::parse_addresses;
use attachments::attachment;
use headers::{
    authentication_results, date_rfc3339, header_name, header_value, ids, is_auto_reply, raw_value,
    spam,
};
#[cfg(test)]
use html::html_to_text;
use spool::Spool;
pub use spool::{Cursor, Spooled};

/// The Standard Webhooks `type` of every event pophook sends.
pub const EVENT_TYPE: &str = "email.received";

/// What the caller knows about a message that is not in its bytes.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// The configured mailbox name.
    pub mailbox: &'a str,
    /// The server's UIDL for the message.
    pub uidl: &'a str,
    /// When the message was fetched.
    pub received_at: OffsetDateTime,
    /// Whether to send the original bytes in `raw` even when parsing succeeded.
    pub include_raw: bool,
    /// Set when only part of the message (its headers) was fetched.
    pub truncated: bool,
    /// How much of each attachment the webhook gets.
    pub attachments: AttachmentMode,
    /// In [`AttachmentMode::Inline`], attachments larger than this (decoded octets) are
    /// listed without content; `None` inlines every attachment.
    pub max_inline_attachment_size: Option<u64>,
}

/// How attachments appear in `data.attachments`, chosen per webhook: receivers that
/// store files want them inline, ticketing systems often only want to know they exist,
/// and some want the event small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentMode {
    /// Every attachment with its content, except those over
    /// `max_inline_attachment_size`.
    #[default]
    Inline,
    /// Every attachment listed, no content (`content_omitted: true`).
    Metadata,
    /// `attachments: []`.
    Omit,
    /// Every attachment larger than `store_larger_than` goes to the object store and is
    /// listed with `url`, `storage_key` and `sha256`; smaller ones are inline.
    Store,
}

/// How a mailbox's events are built: the `webhook` keys that shape the event rather
/// than its delivery.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub include_raw: bool,
    /// How much of each attachment goes into the event.
    pub attachments: AttachmentMode,
    /// Attachments larger than this are sent as metadata (`content_omitted: true`).
    pub max_inline_attachment_size: Option<u64>,
    /// The object store, when `attachments: store` or `raw: store` uses it.
    pub storage: Option<std::sync::Arc<crate::storage::Storage>>,
    /// With `attachments: store`, attachments of at most this many octets stay inline.
    pub store_larger_than: u64,
    /// `raw: store`: the whole message goes to the store, its URL into `raw_url`.
    pub raw_store: bool,
}

/// Where `attachments: store` and `raw: store` put things; `None` when rendering
/// without a store (the attachments are then listed without content).
#[derive(Debug, Clone, Copy)]
pub struct Stash<'a> {
    pub storage: &'a crate::storage::Storage,
    /// Attachments of at most this many octets stay inline.
    pub larger_than: u64,
    /// `raw: store`: `raw_url` points at the whole message in the store.
    pub raw: bool,
}

pub use model::{
    Attachment, AuthVerdict, AuthenticationResults, Disposition, EmailAddress, Event, EventData,
    HeaderField, Spam,
};

/// The message's stable id: identity is the ledger's (see [`crate::ledger::event_id`]).
pub use crate::ledger::event_id;

/// Builds the event for one message, exactly as retrieved and dot-unstuffed.
///
/// Never fails and never panics; see the module doc.
pub fn build_event(meta: &EventMeta<'_>, raw: &[u8]) -> Event {
    Event {
        kind: EVENT_TYPE.to_owned(),
        timestamp: rfc3339(OffsetDateTime::now_utc()),
        data: event_data(meta, raw),
    }
}

fn event_data(meta: &EventMeta<'_>, raw: &[u8]) -> EventData {
    event_data_with(
        meta,
        raw,
        |raw, spool| {
            extract(
                raw,
                meta.attachments,
                meta.max_inline_attachment_size,
                spool,
                None,
            )
        },
        None,
        None,
    )
    .0
}

/// The standard event for one message, serialised: (id, JSON body, parse error). Large
/// base64 content goes straight into the body (see `spool`), so the peak is about the
/// message plus the body rather than three copies.
pub fn serialize_event(meta: &EventMeta<'_>, raw: &[u8]) -> (String, Vec<u8>, Option<String>) {
    let serialized = serialize_with(meta, raw, None, |spool, json| spool.assemble(&json));
    (serialized.id, serialized.body, serialized.parse_error)
}

/// A serialised standard event and the objects to put in the store before it is posted.
/// `B`: the body whole, or [`Spooled`], made as it is sent.
#[derive(Debug)]
pub struct Serialized<B> {
    pub id: String,
    pub body: B,
    pub parse_error: Option<String>,
    /// Stored attachments (`raw: store` is the caller's: it holds the message's buffer).
    pub uploads: Vec<crate::storage::Upload>,
}

/// [`serialize_event`] for delivery. The body comes in pieces: the base64 that comes
/// from the message is made from `raw` as the body is sent, so the message is in memory
/// once, not once more as base64 in the body. With a store, attachments over
/// `stash.larger_than` are listed with their URL and returned as uploads, their decoded
/// bytes moved out of the parse rather than copied; with `stash.raw`, `raw_url` is set.
pub fn serialize_event_spooled(
    meta: &EventMeta<'_>,
    raw: &bytes::Bytes,
    stash: Option<&Stash<'_>>,
) -> Serialized<Spooled> {
    serialize_with(meta, raw, stash, |spool, json| {
        spool.into_spooled(json, raw)
    })
}

fn serialize_with<'r, B>(
    meta: &EventMeta<'_>,
    raw: &'r [u8],
    stash: Option<&Stash<'_>>,
    finish: impl FnOnce(Spool<'r>, Vec<u8>) -> B,
) -> Serialized<B> {
    let mut spool = Spool::new(raw);
    let id = event_id(meta.mailbox, meta.uidl);
    let stashing = stash.map(|stash| Stashing {
        stash,
        event_id: &id,
    });
    let (data, uploads) = event_data_with(
        meta,
        raw,
        |raw, spool| {
            extract(
                raw,
                meta.attachments,
                meta.max_inline_attachment_size,
                spool,
                stashing.as_ref(),
            )
        },
        Some(&mut spool),
        stash,
    );
    let parse_error = data.parse_error.clone();
    let event = Event {
        kind: EVENT_TYPE.to_owned(),
        timestamp: rfc3339(OffsetDateTime::now_utc()),
        data,
    };
    let json = serde_json::to_vec(&event).expect("an event always serialises");
    drop(event);
    Serialized {
        body: finish(spool, json),
        id,
        parse_error,
        uploads,
    }
}

/// A store and the event whose attachments go there.
pub(crate) struct Stashing<'a> {
    pub(crate) stash: &'a Stash<'a>,
    pub(crate) event_id: &'a str,
}

/// `extract` is a parameter only so a test can make it panic.
fn event_data_with<'r>(
    meta: &EventMeta<'_>,
    raw: &'r [u8],
    extract: impl FnOnce(&[u8], Option<&mut Spool<'r>>) -> Result<Parsed, ParseFailure>,
    mut spool: Option<&mut Spool<'r>>,
    stash: Option<&Stash<'_>>,
) -> (EventData, Vec<crate::storage::Upload>) {
    // mail-parser is fuzzed but not proven; a panic inside it must cost one message its
    // structure, not the whole mailbox task. Nothing shared is mutated inside, so
    // observing state after an unwind is not a concern.
    let outcome = catch_unwind(AssertUnwindSafe(|| extract(raw, spool.as_deref_mut())))
        .unwrap_or(Err(ParseFailure::Panicked));
    let (mut parsed, parse_error) = match outcome {
        Ok(parsed) => (parsed, None),
        Err(failure) => (Parsed::default(), Some(failure.message().to_owned())),
    };
    let id = event_id(meta.mailbox, meta.uidl);
    let raw_url = stash
        .filter(|stash| stash.raw)
        .map(|stash| stash.storage.presign_get(&stash.storage.raw_key(&id)));
    let uploads = std::mem::take(&mut parsed.uploads);
    // When parsing failed the raw bytes are the only copy of the message the receiver
    // gets before we delete it, so they go out whatever `include_raw` says.
    let raw_base64 = (meta.include_raw || parse_error.is_some()).then(|| match spool {
        Some(spool) => spool.raw_message(),
        None => BASE64.encode(raw),
    });

    let data = EventData {
        id,
        mailbox: meta.mailbox.to_owned(),
        uidl: meta.uidl.to_owned(),
        size: raw.len() as u64,
        received_at: rfc3339(meta.received_at),
        message_id: parsed.message_id,
        in_reply_to: parsed.in_reply_to,
        references: parsed.references,
        subject: parsed.subject,
        date: parsed.date,
        from: parsed.from,
        sender: parsed.sender,
        reply_to: parsed.reply_to,
        to: parsed.to,
        cc: parsed.cc,
        bcc: parsed.bcc,
        mailbox_hash: parsed
            .recipient
            .as_deref()
            .and_then(recipient::mailbox_hash),
        recipient: parsed.recipient,
        auto_reply: parsed.auto_reply,
        bounce: parsed.bounce,
        authentication_results: parsed.authentication_results,
        spam: parsed.spam,
        headers: parsed.headers,
        text: parsed.text,
        stripped_text: parsed.stripped_text,
        html: parsed.html,
        attachments: parsed.attachments,
        raw: raw_base64,
        raw_url,
        parse_error,
        truncated: meta.truncated,
    };
    (data, uploads)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseFailure {
    Unparseable,
    NoHeaders,
    Panicked,
}

impl ParseFailure {
    /// Read by whoever runs the receiver, so each says where the message went.
    fn message(self) -> &'static str {
        match self {
            ParseFailure::Unparseable => {
                "the message could not be parsed as MIME; the original is in `raw` (base64)"
            }
            ParseFailure::NoHeaders => {
                "the message has no header fields, so it is not an RFC 5322 message; \
                 the original is in `raw` (base64)"
            }
            ParseFailure::Panicked => {
                "the MIME parser panicked on this message (a bug worth reporting to pophook \
                 with this message attached); the original is in `raw` (base64)"
            }
        }
    }
}

/// Everything taken from the message's bytes, owned so it outlives the parse.
#[derive(Debug, Default)]
struct Parsed {
    message_id: Option<String>,
    in_reply_to: Vec<String>,
    references: Vec<String>,
    subject: Option<String>,
    date: Option<String>,
    from: Vec<EmailAddress>,
    sender: Vec<EmailAddress>,
    reply_to: Vec<EmailAddress>,
    to: Vec<EmailAddress>,
    cc: Vec<EmailAddress>,
    bcc: Vec<EmailAddress>,
    recipient: Option<String>,
    auto_reply: bool,
    bounce: bool,
    authentication_results: Option<AuthenticationResults>,
    spam: Option<Spam>,
    headers: Vec<HeaderField>,
    text: Option<String>,
    stripped_text: Option<String>,
    html: Option<String>,
    attachments: Vec<Attachment>,
    /// Stored attachments' bytes, for the store.
    uploads: Vec<crate::storage::Upload>,
}

fn extract(
    raw: &[u8],
    mode: AttachmentMode,
    max_inline: Option<u64>,
    spool: Option<&mut Spool<'_>>,
    stashing: Option<&Stashing<'_>>,
) -> Result<Parsed, ParseFailure> {
    let parser = MessageParser::default();
    let mut message = parser.parse(raw).ok_or(ParseFailure::Unparseable)?;
    // A part whose headers run straight into its body makes mail-parser read the body,
    // and the boundaries after it, as headers; reading a copy with the blank line put
    // back keeps every part. The event's `raw` and `size` stay the original's.
    let repaired = body::needs_header_repair(raw, &message)
        .then(|| body::repair_part_headers(raw, &body::boundaries(&message)))
        .flatten();
    match repaired {
        Some(fixed) => {
            let mut message = parser.parse(&fixed).ok_or(ParseFailure::Unparseable)?;
            let (mut parsed, pending) = read(&fixed, &message, mode, max_inline, spool, stashing)?;
            parsed.uploads = take_uploads(&fixed, &mut message, pending);
            Ok(parsed)
        }
        None => {
            let (mut parsed, pending) = read(raw, &message, mode, max_inline, spool, stashing)?;
            parsed.uploads = take_uploads(raw, &mut message, pending);
            Ok(parsed)
        }
    }
}

/// The stored attachments' bytes, moved out of the parsed message (decoded base64 is
/// not copied again; see [`attachments::take_content`]).
fn take_uploads(
    raw: &[u8],
    message: &mut Message<'_>,
    pending: Vec<attachments::Pending>,
) -> Vec<crate::storage::Upload> {
    pending
        .into_iter()
        .map(|p| crate::storage::Upload {
            body: attachments::take_content(raw, message, p.part),
            key: p.key,
            content_type: p.content_type,
        })
        .collect()
}

/// Everything the event says about the message, from the parse and from the bytes it
/// was parsed from (mail-parser's offsets point into them).
fn read(
    raw: &[u8],
    message: &Message<'_>,
    mode: AttachmentMode,
    max_inline: Option<u64>,
    mut spool: Option<&mut Spool<'_>>,
    stashing: Option<&Stashing<'_>>,
) -> Result<(Parsed, Vec<attachments::Pending>), ParseFailure> {
    let root = message.parts.first().ok_or(ParseFailure::Unparseable)?;
    if root.headers.is_empty() {
        return Err(ParseFailure::NoHeaders);
    }
    let headers = &root.headers;
    let first = |name: HeaderName<'static>| headers.iter().find(|h| h.name == name);
    let all = |name: HeaderName<'static>| headers.iter().filter(move |h| h.name == name);
    // Every occurrence counts: a message with two `To` fields went to both lists.
    let addresses = |name: HeaderName<'static>| -> Vec<EmailAddress> {
        all(name)
            .flat_map(|h| parse_addresses(raw_value(raw, h)))
            .collect()
    };
    let bodies = body::bodies(raw, message);
    let stripped_text = bodies.text.as_deref().and_then(reply::stripped_text);
    let mut pending = Vec::new();
    let parsed = Parsed {
        message_id: first(HeaderName::MessageId).and_then(|h| ids(&h.value).into_iter().next()),
        in_reply_to: all(HeaderName::InReplyTo)
            .flat_map(|h| ids(&h.value))
            .collect(),
        references: all(HeaderName::References)
            .flat_map(|h| ids(&h.value))
            .collect(),
        subject: first(HeaderName::Subject).map(|h| header_value(raw, h)),
        date: first(HeaderName::Date).and_then(|h| {
            h.value
                .as_datetime()
                .and_then(|date| date_rfc3339(raw_value(raw, h), date))
        }),
        from: addresses(HeaderName::From),
        sender: addresses(HeaderName::Sender),
        reply_to: addresses(HeaderName::ReplyTo),
        to: addresses(HeaderName::To),
        cc: addresses(HeaderName::Cc),
        bcc: addresses(HeaderName::Bcc),
        recipient: recipient::recipient(raw, headers),
        auto_reply: is_auto_reply(raw, headers),
        bounce: is_bounce(message),
        authentication_results: first(HeaderName::AuthenticationResults)
            .map(|h| authentication_results(&header_value(raw, h))),
        spam: spam(raw, headers),
        headers: headers
            .iter()
            .map(|h: &Header<'_>| HeaderField {
                name: header_name(raw, h),
                value: header_value(raw, h),
            })
            .collect(),
        text: bodies.text,
        stripped_text,
        html: bodies.html,
        // Omit skips the attachments entirely: no decoding for content nobody gets.
        attachments: match mode {
            AttachmentMode::Omit => Vec::new(),
            AttachmentMode::Inline | AttachmentMode::Metadata | AttachmentMode::Store => bodies
                .attachments
                .iter()
                .enumerate()
                .filter_map(|(index, &id)| Some((index, id, message.parts.get(id)?)))
                .filter_map(|(index, id, part)| {
                    let store = stashing.map(|s| attachments::Target {
                        stashing: s,
                        index,
                        part: id,
                        pending: &mut pending,
                    });
                    attachment(raw, part, mode, max_inline, spool.as_deref_mut(), store)
                })
                .collect(),
        },
        uploads: Vec::new(),
    };
    Ok((parsed, pending))
}

/// Whether the message is a delivery status notification: a part (the root included) of
/// type `multipart/report; report-type=delivery-status` (RFC 6522) or
/// `message/delivery-status` (RFC 3464; `message/global-delivery-status`, RFC 6533).
/// Only the message's own parts count: a bounce forwarded as an attachment makes the
/// forward no bounce.
fn is_bounce(message: &Message<'_>) -> bool {
    message.parts.iter().any(|part| {
        let Some(ct) = part.content_type() else {
            return false;
        };
        let subtype = ct.subtype().unwrap_or("");
        if ct.ctype().eq_ignore_ascii_case("multipart") {
            subtype.eq_ignore_ascii_case("report")
                && ct
                    .attribute("report-type")
                    .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("delivery-status"))
        } else if ct.ctype().eq_ignore_ascii_case("message") {
            subtype.eq_ignore_ascii_case("delivery-status")
                || subtype.eq_ignore_ascii_case("global-delivery-status")
        } else {
            false
        }
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    // Formatting fails only for years outside 0..=9999 or offsets with seconds; the
    // second try fixes the latter, and a clock that far off still gets a readable stamp.
    at.format(&Rfc3339)
        .or_else(|_| at.to_offset(UtcOffset::UTC).format(&Rfc3339))
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests;
