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
mod params;
mod reply;
mod spool;

use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_parser::{Header, HeaderName, Message, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// The webhook payload: `{"type": "email.received", "timestamp": …, "data": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339, when the event was built.
    pub timestamp: String,
    pub data: EventData,
}

impl Event {
    /// The event id, stable for a (mailbox, UIDL) pair; receivers deduplicate on it.
    pub fn id(&self) -> &str {
        &self.data.id
    }
}

/// The message itself. Every field is always present, null or `[]` when the message has
/// no such thing, so receivers can rely on the shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub id: String,
    pub mailbox: String,
    pub uidl: String,
    /// Octets of the message as retrieved.
    pub size: u64,
    /// RFC 3339, when the message was fetched.
    pub received_at: String,
    /// Without angle brackets, like `in_reply_to` and `references`.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub subject: Option<String>,
    /// The `Date` header as RFC 3339 with the sender's offset; null when absent or invalid.
    pub date: Option<String>,
    pub from: Vec<EmailAddress>,
    pub sender: Vec<EmailAddress>,
    pub reply_to: Vec<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    pub bcc: Vec<EmailAddress>,
    /// The envelope recipient: from `Delivered-To`, `X-Original-To` or `X-Envelope-To`
    /// (the first found), else the first `To` address.
    pub recipient: Option<String>,
    /// The plus-address tag of `recipient` (`support+ticket-42@…` → `ticket-42`).
    pub mailbox_hash: Option<String>,
    /// An automatic message (vacation notice, autoresponder, bulk mail): a receiver that
    /// answers mail must not answer it, or two robots mail each other forever.
    pub auto_reply: bool,
    /// A delivery status notification (RFC 3464), i.e. a bounce.
    pub bounce: bool,
    /// From the topmost `Authentication-Results` header, the one the receiving server
    /// added; null when there is none. Only as trustworthy as that server: check
    /// `authserv_id`, since a sender can write the header too.
    pub authentication_results: Option<AuthenticationResults>,
    /// The spam verdict a scanner on the way wrote into the headers; null when there is
    /// none. Only as trustworthy as that server: a sender can write these headers too.
    pub spam: Option<Spam>,
    /// Every top-level header field, in order, with encoded-words decoded.
    pub headers: Vec<HeaderField>,
    /// The plain-text body, rendered from the HTML when there is no plain-text part.
    pub text: Option<String>,
    /// `text` without the quoted history and the signature of a reply: what the sender
    /// wrote this time. Null when there was nothing to strip.
    pub stripped_text: Option<String>,
    /// The HTML body; null when the message has no HTML part.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Standard base64 of the message as retrieved, when asked for or when parsing failed.
    pub raw: Option<String>,
    /// `raw: store`: a presigned GET URL of the message in the store, else null.
    #[serde(default)]
    pub raw_url: Option<String>,
    pub parse_error: Option<String>,
    pub truncated: bool,
}

/// One mailbox from an address header; groups are flattened into their members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderField {
    /// As spelled in the message.
    pub name: String,
    /// Unfolded, encoded-words decoded.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: Option<String>,
    /// `type/subtype`, lower case, without parameters.
    pub content_type: String,
    /// Octets after undoing the transfer encoding.
    pub size: u64,
    /// Without angle brackets.
    pub content_id: Option<String>,
    pub disposition: Disposition,
    /// Null when `content_omitted`.
    pub content_base64: Option<String>,
    /// The content was left out by the attachment mode or size limit, not missing from
    /// the message (with `attachments: store`, it is at `url`).
    pub content_omitted: bool,
    /// `attachments: store`: a presigned GET URL of the content, valid for
    /// `storage.url_expiry`. Null unless the attachment is in the store.
    #[serde(default)]
    pub url: Option<String>,
    /// The object's key in the bucket. Null unless the attachment is in the store.
    #[serde(default)]
    pub storage_key: Option<String>,
    /// Lower-case hex SHA-256 of the content. Null unless the attachment is in the store.
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    Attachment,
    Inline,
}

/// The verdicts of one `Authentication-Results` header (RFC 8601); a field is null when
/// the header has no result for that method or one we cannot read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationResults {
    pub spf: Option<AuthVerdict>,
    /// `pass` when any DKIM signature passed, else the first DKIM result.
    pub dkim: Option<AuthVerdict>,
    pub dmarc: Option<AuthVerdict>,
    /// Who wrote the header, e.g. `mx.example.com`.
    pub authserv_id: Option<String>,
}

/// A spam scanner's verdict from the message's headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spam {
    /// Whether the scanner called the message spam.
    pub flagged: bool,
    /// The scanner's score on its own scale (SpamAssassin and Rspamd points, Microsoft's
    /// SCL from -1 to 9); null when it gave none.
    pub score: Option<serde_json::Number>,
    /// The header the verdict came from, in lower case, e.g. `x-spam-status`.
    pub source: String,
}

/// An RFC 8601 result keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthVerdict {
    Pass,
    Fail,
    Softfail,
    Neutral,
    None,
    Temperror,
    Permerror,
    Policy,
}

/// The event id for a (mailbox, UIDL) pair: `msg_` and 32 hex digits of
/// SHA-256(mailbox, 0x00, uidl).
///
/// It is derived rather than stored so that a retry, a restart or even a lost state
/// database sends the same id and the receiver can drop the duplicate. The 0x00 keeps
/// ("ab", "c") and ("a", "bc") apart. Changing this re-delivers every message under a new
/// id, so the test pins a known value.
pub fn event_id(mailbox: &str, uidl: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(mailbox.as_bytes());
    hasher.update([0u8]);
    hasher.update(uidl.as_bytes());
    let digest = hasher.finalize();

    let mut id = String::with_capacity(4 + 32);
    id.push_str("msg_");
    for byte in &digest[..16] {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
    let serialized = serialize_event_stashed(meta, raw, None);
    (serialized.id, serialized.body, serialized.parse_error)
}

/// A serialised standard event and the objects to put in the store before it is posted.
#[derive(Debug)]
pub struct Serialized {
    pub id: String,
    pub body: Vec<u8>,
    pub parse_error: Option<String>,
    /// Stored attachments (`raw: store` is the caller's: it holds the message's buffer).
    pub uploads: Vec<crate::storage::Upload>,
}

/// [`serialize_event`] with a store: attachments over `stash.larger_than` are listed
/// with their URL and returned as uploads, their decoded bytes moved out of the parse
/// rather than copied; with `stash.raw`, `raw_url` is set.
pub fn serialize_event_stashed(
    meta: &EventMeta<'_>,
    raw: &[u8],
    stash: Option<&Stash<'_>>,
) -> Serialized {
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
        body: spool.assemble(&json),
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
            .and_then(crate::formats::recipient::mailbox_hash),
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
        recipient: crate::formats::recipient::recipient(raw, headers),
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
mod tests {
    use super::*;
    use std::fmt::Write as _;

    use time::macros::datetime;

    fn meta(uidl: &str) -> EventMeta<'_> {
        EventMeta {
            mailbox: "support",
            uidl,
            received_at: datetime!(2024-03-16 12:00:00 UTC),
            include_raw: false,
            truncated: false,
            attachments: AttachmentMode::Inline,
            max_inline_attachment_size: None,
        }
    }

    #[test]
    fn event_id_is_stable_and_distinct_per_mailbox_and_uidl() {
        // Pinned: a new value would make every receiver see old messages as new.
        assert_eq!(
            event_id("support", "UID1"),
            "msg_4a9f8127042050ca245177da931ac704"
        );
        assert_eq!(event_id("support", "UID1"), event_id("support", "UID1"));
        assert_ne!(event_id("support", "UID1"), event_id("sales", "UID1"));
        assert_ne!(event_id("support", "UID1"), event_id("support", "UID2"));
        assert_ne!(event_id("ab", "c"), event_id("a", "bc"));

        let raw = b"Subject: hi\r\n\r\nbody\r\n";
        let event = build_event(&meta("UID1"), raw);
        assert_eq!(event.id(), event_id("support", "UID1"));
        assert_eq!(event.id(), build_event(&meta("UID1"), raw).id());
    }

    #[test]
    fn raw_is_sent_only_when_asked_for_or_when_parsing_failed() {
        let good = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let event = build_event(&meta("1"), good);
        assert_eq!(event.data.raw, None);
        assert_eq!(event.data.parse_error, None);

        let with_raw = EventMeta {
            include_raw: true,
            ..meta("1")
        };
        let event = build_event(&with_raw, good);
        assert_eq!(BASE64.decode(event.data.raw.unwrap()).unwrap(), good);

        for bad in [&b""[..], b"\r\n\r\njust a body, no header section\r\n"] {
            let event = build_event(&meta("1"), bad);
            let raw = event.data.raw.expect("raw must be forced on parse failure");
            assert_eq!(BASE64.decode(raw).unwrap(), bad);
            assert!(event.data.parse_error.unwrap().contains("`raw`"));
            assert!(event.data.headers.is_empty());
            assert_eq!((event.data.text, event.data.html), (None, None));
            assert_eq!(event.data.size, bad.len() as u64);
        }
    }

    #[test]
    fn a_panic_while_parsing_becomes_a_parse_error_with_raw() {
        let raw = b"Subject: hi\r\n\r\nbody\r\n";
        let (data, _) = event_data_with(&meta("1"), raw, |_, _| panic!("parser bug"), None, None);
        assert!(data.parse_error.unwrap().contains("panicked"));
        assert_eq!(BASE64.decode(data.raw.unwrap()).unwrap(), raw);
        assert_eq!(data.id, event_id("support", "1"));
    }

    #[test]
    fn envelope_has_type_and_rfc3339_timestamps() {
        let before = OffsetDateTime::now_utc();
        let event = build_event(&meta("1"), b"Subject: hi\r\n\r\nbody\r\n");
        let json = serde_json::to_value(&event).unwrap();

        assert_eq!(json["type"], "email.received");
        assert!(json.get("kind").is_none());
        let timestamp = OffsetDateTime::parse(json["timestamp"].as_str().unwrap(), &Rfc3339)
            .expect("timestamp is RFC 3339");
        assert!(timestamp >= before && timestamp <= OffsetDateTime::now_utc());
        assert_eq!(json["data"]["received_at"], "2024-03-16T12:00:00Z");
        assert_eq!(json["data"]["truncated"], false);

        let truncated = EventMeta {
            truncated: true,
            ..meta("1")
        };
        assert!(
            build_event(&truncated, b"Subject: hi\r\n\r\n")
                .data
                .truncated
        );

        // Headers that end without the blank line: no body at all, so no text.
        for headers_only in [&b"Subject: hi\r\n"[..], b"Subject: hi"] {
            assert_eq!(build_event(&meta("1"), headers_only).data.text, None);
        }
        assert_eq!(
            build_event(&meta("1"), b"Subject: hi\r\n\r\n")
                .data
                .text
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn dates_keep_the_sender_offset_and_impossible_dates_are_null() {
        let date = |header: &str| {
            let raw = format!("Date: {header}\r\nSubject: x\r\n\r\n");
            build_event(&meta("1"), raw.as_bytes()).data.date
        };
        assert_eq!(
            date("Tue, 5 Mar 2024 08:15:30 -0530").as_deref(),
            Some("2024-03-05T08:15:30-05:30")
        );
        assert_eq!(
            date("Tue, 5 Mar 2024 08:15:30 +0000").as_deref(),
            Some("2024-03-05T08:15:30Z")
        );
        assert_eq!(date("Fri, 30 Feb 2024 08:15:30 +0000"), None);
        assert_eq!(date("yesterday"), None);
        // Zones no clock uses: mail-parser wraps them by 24 hours.
        assert_eq!(date("Tue, 30 Nov 1999 23:56:33 -3000"), None);
        assert_eq!(date("Tue, 30 Nov 1999 23:56:33 +2400"), None);
        assert_eq!(date("Tue, 30 Nov 1999 23:56:33 +0199"), None);
    }

    /// RFC 5322 §4.3 obsolete forms, which old clients and some robots still write.
    #[test]
    fn obsolete_date_forms_read_as_rfc_5322_says() {
        let date = |header: &str| {
            let raw = format!("Date: {header}\r\nSubject: x\r\n\r\n");
            build_event(&meta("1"), raw.as_bytes()).data.date
        };
        let cases = [
            // Two-digit years: 00-49 are 20xx, 50-99 19xx.
            ("21 Nov 97 09:55:06 GMT", "1997-11-21T09:55:06Z"),
            ("Fri, 21 Nov 03 09:55:06 +0100", "2003-11-21T09:55:06+01:00"),
            // Named US zones.
            ("Fri, 21 Nov 1997 09:55:06 EST", "1997-11-21T09:55:06-05:00"),
            ("Fri, 21 Nov 1997 09:55:06 PDT", "1997-11-21T09:55:06-07:00"),
            ("Fri, 21 Nov 1997 09:55:06 UT", "1997-11-21T09:55:06Z"),
            // No seconds, no day name, comments and extra whitespace.
            (
                "Thu, 13 Feb 1969 23:32 -0330 (Newfoundland Time)",
                "1969-02-13T23:32:00-03:30",
            ),
            (
                "  13   Feb   1969   23:32:10   -0330  ",
                "1969-02-13T23:32:10-03:30",
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(date(header).as_deref(), Some(expected), "{header}");
        }
    }

    #[test]
    fn html_only_mail_reads_as_text() {
        let cases = [
            (
                "<html><head><title>T</title><style>p{}</style></head><body>\n\
                 <h1>News</h1><div>one</div><div>two</div><!-- hidden --></body></html>",
                "News\n\none\ntwo",
            ),
            ("a<br>b<br/><br>c", "a\nb\n\nc"),
            ("<ul><li>x</li><li>y</li></ul>after", "- x\n- y\n\nafter"),
            (
                "<ol><li>one<li> two <ul><li>inner</li></ul></li></ol>",
                "1. one\n2. two\n  - inner",
            ),
            (
                "Read <a href=\"https://x.test/t?a=1&amp;b=2\">the terms</a>, \
                 <a href='https://x.test/'>https://x.test/</a>, \
                 <a href=\"mailto:a@x.test\">mail us</a>, \
                 <a data-href=\"https://no\" href=https://y.test/>y</a> \
                 <a href=\"https://pixel.test/\"><img src=\"p.gif\"></a>end",
                "Read the terms <https://x.test/t?a=1&b=2>, https://x.test/, mail us, \
                 y <https://y.test/> end",
            ),
            (
                "<table><tr><td>Tea</td><td>2.50</td></tr></table>",
                "Tea 2.50",
            ),
            (
                "AT&T &amp; caf&eacute;&nbsp;&nbsp;&#9731; &bogus; 1 < 2",
                "AT&T & café ☃ &bogus; 1 < 2",
            ),
            ("<pre>  keep\n    this</pre>", "  keep\n    this"),
            ("<a title=\"x>y\" href=\"/\">link</a> text", "link text"),
            ("<img alt=it's><p>still here</p>", "still here"),
            ("<img alt = 'a>b'>after", "after"),
            ("<script>never()</script>shown", "shown"),
            ("<style>unclosed", ""),
            ("<p>unclosed <b", "unclosed"),
        ];
        for (html, text) in cases {
            assert_eq!(html_to_text(html), text, "for {html:?}");
        }
    }

    #[test]
    fn a_forwarded_message_arrives_as_its_own_bytes() {
        let inner = "From: Mia <mia@example.com>\r\nSubject: inner\r\n\
                     Content-Type: multipart/alternative; boundary=\"in\"\r\n\r\n\
                     --in\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
                     --in\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--in--";
        let raw = format!(
            "From: a@example.com\r\nSubject: fwd\r\n\
             Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
             --out\r\nContent-Type: text/plain\r\n\r\nsee below\r\n\
             --out\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n\
             --out\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--out--\r\n",
            BASE64.encode(inner)
        );

        let event = build_event(&meta("1"), raw.as_bytes());
        assert_eq!(event.data.text.as_deref(), Some("see below"));
        assert_eq!(event.data.attachments.len(), 2);
        for attachment in &event.data.attachments {
            assert_eq!(attachment.content_type, "message/rfc822");
            let content = BASE64
                .decode(attachment.content_base64.as_ref().unwrap())
                .unwrap();
            assert_eq!(String::from_utf8(content).unwrap(), inner);
            assert_eq!(attachment.size, inner.len() as u64);
        }
    }

    #[test]
    fn deeply_nested_multiparts_produce_an_event() {
        const DEPTH: usize = 200;
        let mut raw = String::from("From: a@example.com\r\nSubject: deep\r\n");
        for level in 0..DEPTH {
            write!(
                raw,
                "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
            )
            .unwrap();
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nthe innermost text\r\n");
        for level in (0..DEPTH).rev() {
            write!(raw, "--b{level}--\r\n").unwrap();
        }

        let event = build_event(&meta("1"), raw.as_bytes());
        assert_eq!(event.data.parse_error, None);
        assert_eq!(event.data.subject.as_deref(), Some("deep"));
        assert!(event
            .data
            .text
            .is_some_and(|t| t.contains("the innermost text")));
    }

    #[test]
    fn thousands_of_parts_produce_an_event() {
        const PARTS: usize = 5_000;
        let mut raw = String::from(
            "From: a@example.com\r\nSubject: many\r\n\
             Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n",
        );
        for n in 0..PARTS {
            write!(
                raw,
                "--p\r\nContent-Type: application/octet-stream; name=\"f{n}.bin\"\r\n\
                 Content-Disposition: attachment\r\n\r\npart {n}\r\n"
            )
            .unwrap();
        }
        raw.push_str("--p--\r\n");

        let event = build_event(&meta("1"), raw.as_bytes());
        assert_eq!(event.data.parse_error, None);
        assert_eq!(event.data.attachments.len(), PARTS);
        let last = event.data.attachments.last().unwrap();
        assert_eq!(last.filename.as_deref(), Some("f4999.bin"));
        let content = last.content_base64.as_ref().unwrap();
        assert_eq!(BASE64.decode(content).unwrap(), b"part 4999");
    }

    #[test]
    fn automatic_replies_are_flagged_so_receivers_do_not_answer_them() {
        let auto_reply = |header: &str| {
            let raw = format!("From: a@example.com\r\n{header}\r\nSubject: x\r\n\r\nbody\r\n");
            build_event(&meta("1"), raw.as_bytes()).data.auto_reply
        };
        for header in [
            "Auto-Submitted: auto-replied",
            "Auto-Submitted: auto-generated",
            "auto-submitted: Auto-Replied; owner-email=\"bob@example.net\"",
            "Auto-Submitted: (vacation) auto-notified",
            "Auto-Submitted:",
            "X-Autoreply: yes",
            "X-Autorespond: Vacation",
            "Precedence: bulk",
            "Precedence: JUNK",
            "Precedence: auto_reply",
            "X-Auto-Response-Suppress: OOF, AutoReply",
        ] {
            assert!(auto_reply(header), "{header}");
        }
        for header in [
            "Auto-Submitted: no",
            "Auto-Submitted: No (a person wrote this)",
            "Precedence: list",
            "Precedence: bulky",
            "X-Mailer: autoreply-maker",
        ] {
            assert!(!auto_reply(header), "{header}");
        }
    }

    #[test]
    fn delivery_status_notifications_are_bounces_and_other_reports_are_not() {
        let bounce = |content_type: &str, part_type: &str| {
            let raw = format!(
                "From: MAILER-DAEMON@example.net\r\nSubject: x\r\n\
                 Content-Type: {content_type}; boundary=\"b\"\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n\
                 --b\r\nContent-Type: {part_type}\r\n\r\nAction: failed\r\n--b--\r\n"
            );
            build_event(&meta("1"), raw.as_bytes()).data.bounce
        };
        assert!(bounce(
            "multipart/report; report-type=delivery-status",
            "message/delivery-status"
        ));
        assert!(bounce(
            "Multipart/Report; Report-Type=\"Delivery-Status\"",
            "text/plain"
        ));
        assert!(bounce("multipart/mixed", "message/delivery-status"));
        assert!(bounce("multipart/mixed", "message/global-delivery-status"));
        // A read receipt (RFC 8098) is a report but not a bounce.
        assert!(!bounce(
            "multipart/report; report-type=disposition-notification",
            "message/disposition-notification"
        ));
        assert!(!bounce("multipart/mixed", "text/plain"));

        // Someone forwarding a bounce has not bounced anything.
        let forwarded = "From: a@example.com\r\nSubject: fwd\r\n\
             Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
             --out\r\nContent-Type: text/plain\r\n\r\nwhy did this bounce?\r\n\
             --out\r\nContent-Type: message/rfc822\r\n\r\n\
             From: MAILER-DAEMON@example.net\r\nSubject: failed\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"in\"\r\n\r\n\
             --in\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--in--\r\n\
             --out--\r\n";
        let event = build_event(&meta("1"), forwarded.as_bytes());
        assert_eq!(event.data.attachments.len(), 1);
        assert!(!event.data.bounce);
    }

    #[test]
    fn authentication_results_are_read_leniently() {
        use AuthVerdict as V;
        let read = |value: &str| {
            let r = authentication_results(value);
            (r.authserv_id, r.spf, r.dkim, r.dmarc)
        };
        let id = |id: &str| Some(id.to_owned());
        let cases = [
            (
                "mx.example.com; spf=pass smtp.mailfrom=a@example.org; \
                 dkim=pass header.d=example.org; dmarc=fail header.from=example.org",
                (
                    id("mx.example.com"),
                    Some(V::Pass),
                    Some(V::Pass),
                    Some(V::Fail),
                ),
            ),
            (
                "mx.example.com 1; spf=softfail",
                (id("mx.example.com"), Some(V::Softfail), None, None),
            ),
            (
                "\"mx; odd \\\"id\\\"\"; spf=neutral",
                (id("mx; odd \"id\""), Some(V::Neutral), None, None),
            ),
            ("example.org; none", (id("example.org"), None, None, None)),
            // No authserv-id at all.
            (
                "spf=pass; dkim=fail",
                (None, Some(V::Pass), Some(V::Fail), None),
            ),
            // Comments may hold `;`, `=` and nested parentheses.
            (
                "mx (a;b=c (d)) ; spf=pass(ok; dkim=fail) smtp.mailfrom=x; dmarc = temperror",
                (id("mx"), Some(V::Pass), None, Some(V::Temperror)),
            ),
            // So may quoted property values.
            (
                "mx; dkim=fail header.b=\"x;spf=fail\"; spf=permerror",
                (id("mx"), Some(V::Permerror), Some(V::Fail), None),
            ),
            // DKIM: a pass anywhere wins, otherwise the first result.
            (
                "mx; dkim=fail; dkim=neutral",
                (id("mx"), None, Some(V::Fail), None),
            ),
            (
                "mx; dkim=policy; dkim/1=pass; dkim=fail",
                (id("mx"), None, Some(V::Pass), None),
            ),
            // The first SPF and DMARC result counts.
            (
                "mx; spf=fail; spf=pass; dmarc=none; dmarc=pass",
                (id("mx"), Some(V::Fail), None, Some(V::None)),
            ),
            (
                "MX; SPF=Pass; DKIM=TempError; dmarc=hardfail",
                (id("MX"), Some(V::Pass), Some(V::Temperror), Some(V::Fail)),
            ),
            // Unknown methods and words are skipped, not guessed at.
            (
                "mx; dkim-atps=pass; spf=bogus; iprev=pass; dmarc=",
                (id("mx"), None, None, None),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(read(value), expected, "{value}");
        }

        let garbage = [
            "",
            ";",
            ";;;",
            "(((",
            ")))",
            "\"",
            "\\",
            "=;=;=",
            "mx; =pass; spf",
            "mx; spf=(pass)",
        ];
        for value in garbage {
            let r = authentication_results(value);
            assert_eq!((r.spf, r.dkim, r.dmarc), (None, None, None), "{value}");
        }
        let long = "héllo.example (ü;\\)) ; spf=pass (\"x\\\" ; dkim=\"fail\"";
        for end in (0..=long.len()).filter(|&end| long.is_char_boundary(end)) {
            authentication_results(&long[..end]);
        }
    }

    #[test]
    fn the_topmost_authentication_results_header_counts() {
        let raw = "Authentication-Results: mx.example.com; spf=pass; dkim=none\r\n\
                   Received: from relay by mx.example.com\r\n\
                   Authentication-Results: relay.example.org; spf=fail; dmarc=pass\r\n\
                   From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n";
        let results = build_event(&meta("1"), raw.as_bytes())
            .data
            .authentication_results
            .unwrap();
        assert_eq!(
            results,
            AuthenticationResults {
                spf: Some(AuthVerdict::Pass),
                dkim: Some(AuthVerdict::None),
                dmarc: None,
                authserv_id: Some("mx.example.com".to_owned()),
            }
        );
        let json = serde_json::to_value(&results).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "spf": "pass", "dkim": "none", "dmarc": null, "authserv_id": "mx.example.com"
            })
        );
    }

    /// A 3-octet and a 100-octet attachment, in that order.
    fn two_attachments() -> String {
        format!(
            "From: a@example.com\r\nSubject: files\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --b\r\nContent-Type: text/csv; name=\"small.csv\"\r\n\
             Content-Disposition: attachment; filename=\"small.csv\"\r\n\r\na,b\r\n\
             --b\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"big.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            BASE64.encode([0u8; 100])
        )
    }

    fn attachments_with(
        mode: AttachmentMode,
        max_inline_attachment_size: Option<u64>,
    ) -> Vec<Attachment> {
        let meta = EventMeta {
            attachments: mode,
            max_inline_attachment_size,
            ..meta("1")
        };
        build_event(&meta, two_attachments().as_bytes())
            .data
            .attachments
    }

    /// (filename, size, decoded content or None when omitted)
    fn summary(attachments: &[Attachment]) -> Vec<(&str, u64, Option<Vec<u8>>)> {
        attachments
            .iter()
            .map(|a| {
                assert_eq!(a.content_omitted, a.content_base64.is_none());
                let content = a.content_base64.as_ref().map(|c| BASE64.decode(c).unwrap());
                (a.filename.as_deref().unwrap(), a.size, content)
            })
            .collect()
    }

    #[test]
    fn inline_mode_sends_every_attachment_with_its_content() {
        let attachments = attachments_with(AttachmentMode::Inline, None);
        assert_eq!(
            summary(&attachments),
            [
                ("small.csv", 3, Some(b"a,b".to_vec())),
                ("big.bin", 100, Some(vec![0; 100])),
            ]
        );
        assert_eq!(AttachmentMode::default(), AttachmentMode::Inline);
    }

    #[test]
    fn metadata_mode_lists_every_attachment_without_content() {
        let attachments = attachments_with(AttachmentMode::Metadata, None);
        assert_eq!(
            summary(&attachments),
            [("small.csv", 3, None), ("big.bin", 100, None)]
        );
        assert!(attachments.iter().all(|a| a.content_omitted));
        assert_eq!(attachments[0].content_type, "text/csv");
        // A limit does not bring content back.
        assert_eq!(
            attachments_with(AttachmentMode::Metadata, Some(1000)),
            attachments
        );
    }

    #[test]
    fn omit_mode_sends_no_attachments_and_the_message_is_otherwise_unchanged() {
        assert_eq!(attachments_with(AttachmentMode::Omit, None), []);
        let meta = EventMeta {
            attachments: AttachmentMode::Omit,
            ..meta("1")
        };
        let event = build_event(&meta, two_attachments().as_bytes());
        assert_eq!(event.data.text.as_deref(), Some("see attached"));
        // A message we cannot parse still goes out whole.
        let event = build_event(&meta, b"");
        assert_eq!(event.data.raw.as_deref(), Some(""));
    }

    #[test]
    fn inline_mode_leaves_out_only_attachments_over_the_size_limit() {
        assert_eq!(
            summary(&attachments_with(AttachmentMode::Inline, Some(50))),
            [
                ("small.csv", 3, Some(b"a,b".to_vec())),
                ("big.bin", 100, None)
            ]
        );
        // The limit is inclusive.
        assert_eq!(
            summary(&attachments_with(AttachmentMode::Inline, Some(100))),
            summary(&attachments_with(AttachmentMode::Inline, None))
        );
        assert_eq!(
            summary(&attachments_with(AttachmentMode::Inline, Some(2))),
            [("small.csv", 3, None), ("big.bin", 100, None)]
        );
    }

    #[test]
    fn attachment_modes_are_spelled_in_lower_case() {
        for (json, mode) in [
            ("\"inline\"", AttachmentMode::Inline),
            ("\"metadata\"", AttachmentMode::Metadata),
            ("\"omit\"", AttachmentMode::Omit),
        ] {
            assert_eq!(serde_json::from_str::<AttachmentMode>(json).unwrap(), mode);
        }
        assert!(serde_json::from_str::<AttachmentMode>("\"Inline\"").is_err());
    }

    /// The readers pophook wrote for headers, parameters, encodings and replies see
    /// whatever a sender writes: every prefix of some nasty values and of byte soup built
    /// from the characters they care about must come back without a panic.
    #[test]
    fn own_readers_survive_every_prefix_of_hostile_values() {
        let mut values: Vec<Vec<u8>> = [
            "=?utf-8?b?0J/R?= =?utf-8?q?=9F=?= \"q\\\" (c(d)\\) <a@b> x@y, g:;",
            "attachment; filename*0*=utf-8''%E2%82; filename*1=\"x\"; name=\"=?x?q?a?=\"",
            "+AD4-+ZeVnLIqe +/v8- +",
            "=0=\r\n9 =\n=ZZ=4",
            "On Mon, X <a@b>\nwrote:\n> q\n-- \nFrom: a\nSent: b",
            "<ol><li><a href='https://x'>y</a><a href=\"<ul><li>",
        ]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
        let alphabet = b"=?\"\\()<>,:;@*'%+-_ \t\r\nabQB0\xc3\xa9\xff";
        let mut seed: u32 = 0x9e37_79b9;
        for _ in 0..20 {
            let soup = (0..200).map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                alphabet[(seed >> 16) as usize % alphabet.len()]
            });
            values.push(soup.collect());
        }
        for value in &values {
            for end in 0..=value.len() {
                let bytes = &value[..end];
                let text = String::from_utf8_lossy(bytes);
                address::parse_addresses(bytes);
                params::parse(bytes);
                decode::decode_unstructured(bytes);
                decode::decode_utf7(bytes);
                decode::decode_quoted_printable_lenient(bytes);
                decode::decode_base64_lenient(bytes);
                reply::stripped_text(&text);
                html_to_text(&text);
            }
        }
    }
}
