//! Turns one retrieved message (raw bytes) into the webhook payload: a Standard Webhooks
//! envelope whose `data` holds the headers, addresses, bodies and attachments as JSON.
//!
//! Building an event never fails and never panics: if the message cannot be parsed, the
//! event still goes out with `parse_error` set and the original bytes in `raw`, because a
//! message we cannot read must still reach the receiver before it is deleted.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_parser::decoders::html::add_html_token;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Addr, Address, Encoding, Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart,
    MimeHeaders, PartType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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
    /// Every top-level header field, in order, with encoded-words decoded.
    pub headers: Vec<HeaderField>,
    /// The plain-text body, rendered from the HTML when there is no plain-text part.
    pub text: Option<String>,
    /// The HTML body; null when the message has no HTML part.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Standard base64 of the message as retrieved, when asked for or when parsing failed.
    pub raw: Option<String>,
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
    /// the message.
    pub content_omitted: bool,
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
    event_data_with(meta, raw, |raw| {
        extract(raw, meta.attachments, meta.max_inline_attachment_size)
    })
}

/// `extract` is a parameter only so a test can make it panic.
fn event_data_with(
    meta: &EventMeta<'_>,
    raw: &[u8],
    extract: impl FnOnce(&[u8]) -> Result<Parsed, ParseFailure>,
) -> EventData {
    // mail-parser is fuzzed but not proven; a panic inside it must cost one message its
    // structure, not the whole mailbox task. Nothing shared is mutated inside, so
    // observing state after an unwind is not a concern.
    let outcome =
        catch_unwind(AssertUnwindSafe(|| extract(raw))).unwrap_or(Err(ParseFailure::Panicked));
    let (parsed, parse_error) = match outcome {
        Ok(parsed) => (parsed, None),
        Err(failure) => (Parsed::default(), Some(failure.message().to_owned())),
    };
    // When parsing failed the raw bytes are the only copy of the message the receiver
    // gets before we delete it, so they go out whatever `include_raw` says.
    let raw_base64 = (meta.include_raw || parse_error.is_some()).then(|| BASE64.encode(raw));

    EventData {
        id: event_id(meta.mailbox, meta.uidl),
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
        headers: parsed.headers,
        text: parsed.text,
        html: parsed.html,
        attachments: parsed.attachments,
        raw: raw_base64,
        parse_error,
        truncated: meta.truncated,
    }
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
    headers: Vec<HeaderField>,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<Attachment>,
}

fn extract(
    raw: &[u8],
    mode: AttachmentMode,
    max_inline: Option<u64>,
) -> Result<Parsed, ParseFailure> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(ParseFailure::Unparseable)?;
    let root = message.parts.first().ok_or(ParseFailure::Unparseable)?;
    if root.headers.is_empty() {
        return Err(ParseFailure::NoHeaders);
    }
    let headers = &root.headers;
    let first = |name: HeaderName<'static>| headers.iter().find(|h| h.name == name);
    let all = |name: HeaderName<'static>| headers.iter().filter(move |h| h.name == name);

    Ok(Parsed {
        message_id: first(HeaderName::MessageId).and_then(|h| ids(&h.value).into_iter().next()),
        in_reply_to: all(HeaderName::InReplyTo)
            .flat_map(|h| ids(&h.value))
            .collect(),
        references: all(HeaderName::References)
            .flat_map(|h| ids(&h.value))
            .collect(),
        subject: first(HeaderName::Subject).map(|h| header_value(raw, h)),
        date: first(HeaderName::Date)
            .and_then(|h| h.value.as_datetime())
            .and_then(date_rfc3339),
        from: addresses(all(HeaderName::From)),
        sender: addresses(all(HeaderName::Sender)),
        reply_to: addresses(all(HeaderName::ReplyTo)),
        to: addresses(all(HeaderName::To)),
        cc: addresses(all(HeaderName::Cc)),
        bcc: addresses(all(HeaderName::Bcc)),
        recipient: crate::formats::recipient::recipient(raw, headers),
        auto_reply: is_auto_reply(raw, headers),
        bounce: is_bounce(&message),
        authentication_results: first(HeaderName::AuthenticationResults)
            .map(|h| authentication_results(&header_value(raw, h))),
        headers: headers
            .iter()
            .map(|h| HeaderField {
                name: header_name(raw, h),
                value: header_value(raw, h),
            })
            .collect(),
        text: text_body(&message),
        html: html_body(&message),
        // Omit skips the attachments entirely: no decoding for content nobody gets.
        attachments: match mode {
            AttachmentMode::Omit => Vec::new(),
            AttachmentMode::Inline | AttachmentMode::Metadata => message
                .attachments
                .iter()
                .filter_map(|&id| message.parts.get(id as usize))
                .filter_map(|part| attachment(raw, part, mode, max_inline))
                .collect(),
        },
    })
}

/// The field name as the sender spelled it (`Message-Id`), not mail-parser's canonical
/// spelling (`Message-ID`): the event reports the message, not our parser.
fn header_name(raw: &[u8], header: &Header<'_>) -> String {
    raw.get(header.offset_field as usize..header.offset_start as usize)
        .and_then(|field| field.split(|&b| b == b':').next())
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_else(|| header.name.as_str().to_owned())
}

/// The field value, unfolded, with RFC 2047 encoded-words decoded.
///
/// mail-parser parses addresses, dates, ids and content types into structures, and
/// printing those back would be our invention (and drop comments, odd spacing, anything
/// it did not understand). So every value is re-read from the raw bytes with
/// mail-parser's own unstructured-field reader, the one it uses for `Subject`: it unfolds,
/// decodes encoded-words in any charset it knows (unknown ones as UTF-8), joins adjacent
/// encoded-words as RFC 2047 says, and turns invalid UTF-8 into U+FFFD rather than failing.
fn header_value(raw: &[u8], header: &Header<'_>) -> String {
    let Some(value) = raw.get(header.offset_start as usize..header.offset_end as usize) else {
        return String::new();
    };
    // The reader only finishes a field at its line end; the last field of a message
    // that stops mid-header has none.
    let value: Cow<'_, [u8]> = if value.ends_with(b"\n") {
        Cow::Borrowed(value)
    } else {
        let mut owned = value.to_vec();
        owned.push(b'\n');
        Cow::Owned(owned)
    };
    match MessageStream::new(&value).parse_unstructured() {
        HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

/// Message ids from an id header, which mail-parser has already stripped of `<>`.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Every mailbox from every occurrence of an address header, groups flattened: receivers
/// want to know who the message went to, not how the sender grouped them.
fn addresses<'a>(headers: impl Iterator<Item = &'a Header<'a>>) -> Vec<EmailAddress> {
    let convert = |addr: &Addr<'_>| EmailAddress {
        name: addr.name.as_ref().map(|name| name.to_string()),
        address: addr.address.as_ref().map(|address| address.to_string()),
    };
    let mut out = Vec::new();
    for header in headers {
        match header.value.as_address() {
            Some(Address::List(list)) => out.extend(list.iter().map(convert)),
            Some(Address::Group(groups)) => {
                out.extend(
                    groups
                        .iter()
                        .flat_map(|group| &group.addresses)
                        .map(convert),
                );
            }
            None => {}
        }
    }
    out
}

/// The `Date` header in RFC 3339, keeping the sender's offset. Built through `time` so
/// that impossible dates (30 February, hour 25) become null instead of a string that
/// looks valid but is not.
fn date_rfc3339(date: &mail_parser::DateTime) -> Option<String> {
    let month = Month::try_from(date.month).ok()?;
    let day = Date::from_calendar_date(i32::from(date.year), month, date.day).ok()?;
    let time = Time::from_hms(date.hour, date.minute, date.second).ok()?;
    let sign: i8 = if date.tz_before_gmt { -1 } else { 1 };
    let hours = i8::try_from(date.tz_hour).ok()?;
    let minutes = i8::try_from(date.tz_minute).ok()?;
    let offset = UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?;
    PrimitiveDateTime::new(day, time)
        .assume_offset(offset)
        .format(&Rfc3339)
        .ok()
}

/// Whether a machine sent the message on its own, so that a receiver that answers mail
/// does not answer it: RFC 3834 `Auto-Submitted` with anything but `no`, the
/// `X-Autoreply` and `X-Autorespond` headers autoresponders add, `Precedence`
/// `auto_reply`, `bulk` or `junk`, and `X-Auto-Response-Suppress`, with which Exchange
/// and mass mailers ask not to be answered.
fn is_auto_reply(raw: &[u8], headers: &[Header<'_>]) -> bool {
    let keyword = |header: &Header<'_>| {
        let value = header_value(raw, header);
        let items = semicolon_list(&value);
        let first = items.first().map_or("", String::as_str);
        first
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    headers.iter().any(|header| {
        let name = header.name.as_str();
        let is = |expected: &str| name.eq_ignore_ascii_case(expected);
        if is("x-autoreply") || is("x-autorespond") || is("x-auto-response-suppress") {
            true
        } else if is("auto-submitted") {
            // An empty value counts too: answering a robot costs more than not
            // answering a person who sent a malformed header.
            keyword(header) != "no"
        } else if is("precedence") {
            matches!(keyword(header).as_str(), "auto_reply" | "bulk" | "junk")
        } else {
            false
        }
    })
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

/// Reads one `Authentication-Results` value (RFC 8601):
/// `authserv-id [version]; method[/version]=result (comment) ptype.prop=value; …`.
///
/// Lenient, as headers in the wild are: a missing authserv-id, unknown methods and
/// properties are skipped, and a result word we do not know leaves its method null.
fn authentication_results(value: &str) -> AuthenticationResults {
    let mut results = AuthenticationResults {
        spf: None,
        dkim: None,
        dmarc: None,
        authserv_id: None,
    };
    for (i, item) in semicolon_list(value).iter().enumerate() {
        let item = item.trim();
        if i == 0 && (item.starts_with('"') || !item.contains('=')) {
            results.authserv_id = authserv_id(item);
            continue;
        }
        let Some((method, result)) = item.split_once('=') else {
            continue;
        };
        let method = method.split('/').next().unwrap_or("").trim();
        let Some(verdict) = result.split_whitespace().next().and_then(auth_verdict) else {
            continue;
        };
        if method.eq_ignore_ascii_case("spf") {
            results.spf = results.spf.or(Some(verdict));
        } else if method.eq_ignore_ascii_case("dkim") {
            // One signature that verifies is enough for the message, whatever others
            // (mailing-list footers break signatures) say.
            results.dkim = match results.dkim {
                Some(AuthVerdict::Pass) => Some(AuthVerdict::Pass),
                _ if verdict == AuthVerdict::Pass => Some(AuthVerdict::Pass),
                earlier => earlier.or(Some(verdict)),
            };
        } else if method.eq_ignore_ascii_case("dmarc") {
            results.dmarc = results.dmarc.or(Some(verdict));
        }
    }
    results
}

/// The authserv-id at the start of the header: a token or a quoted string, followed by
/// an optional version number.
fn authserv_id(item: &str) -> Option<String> {
    let id = match item.strip_prefix('"') {
        Some(quoted) => {
            let mut id = String::new();
            let mut chars = quoted.chars();
            while let Some(ch) = chars.next() {
                match ch {
                    '"' => break,
                    '\\' => id.extend(chars.next()),
                    ch => id.push(ch),
                }
            }
            id
        }
        None => item.split_whitespace().next().unwrap_or("").to_owned(),
    };
    (!id.is_empty()).then_some(id)
}

fn auth_verdict(word: &str) -> Option<AuthVerdict> {
    Some(match word.to_ascii_lowercase().as_str() {
        "pass" => AuthVerdict::Pass,
        // `hardfail` is RFC 5451's old name for SPF `fail`.
        "fail" | "hardfail" => AuthVerdict::Fail,
        "softfail" => AuthVerdict::Softfail,
        "neutral" => AuthVerdict::Neutral,
        "none" => AuthVerdict::None,
        "temperror" => AuthVerdict::Temperror,
        "permerror" => AuthVerdict::Permerror,
        "policy" => AuthVerdict::Policy,
        _ => return None,
    })
}

/// The `;`-separated items of a structured header value, with RFC 5322 comments
/// (nested, `\`-escaped) removed; inside a quoted string `;` and `(` are text.
fn semicolon_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if depth > 0 => {
                chars.next();
            }
            '(' if depth > 0 => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    // `pass(ok)` is two words.
                    item.push(' ');
                }
            }
            _ if depth > 0 => {}
            '\\' if quoted => {
                item.push('\\');
                item.extend(chars.next());
            }
            '"' => {
                quoted = !quoted;
                item.push('"');
            }
            _ if quoted => item.push(ch),
            '(' => depth = 1,
            ';' => items.push(std::mem::take(&mut item)),
            ch => item.push(ch),
        }
    }
    items.push(item);
    items
}

fn rfc3339(at: OffsetDateTime) -> String {
    // Formatting fails only for years outside 0..=9999 or offsets with seconds; the
    // second try fixes the latter, and a clock that far off still gets a readable stamp.
    at.format(&Rfc3339)
        .or_else(|_| at.to_offset(UtcOffset::UTC).format(&Rfc3339))
        .unwrap_or_else(|_| at.to_string())
}

/// All plain-text body parts joined, HTML parts rendered to text. Joined rather than
/// taking the first, so that e.g. a mailing-list footer in its own part is not dropped.
fn text_body(message: &Message<'_>) -> Option<String> {
    join_bodies(message, &message.text_body, |body| match body {
        PartType::Text(text) => Some(Cow::Borrowed(text.as_ref())),
        PartType::Html(html) => Some(Cow::Owned(html_to_text(html))),
        _ => None,
    })
}

/// All HTML body parts joined, plain-text parts between them converted. Null when the
/// message has no HTML at all: an HTML version we invented is not the sender's.
fn html_body(message: &Message<'_>) -> Option<String> {
    let has_html = message
        .html_body
        .iter()
        .filter_map(|&id| message.parts.get(id as usize))
        .any(|part| matches!(part.body, PartType::Html(_)));
    if !has_html {
        return None;
    }
    join_bodies(message, &message.html_body, |body| match body {
        PartType::Html(html) => Some(Cow::Borrowed(html.as_ref())),
        PartType::Text(text) => Some(Cow::Owned(text_to_html(text))),
        _ => None,
    })
}

fn join_bodies<'m>(
    message: &'m Message<'_>,
    ids: &[u32],
    render: impl Fn(&'m PartType<'_>) -> Option<Cow<'m, str>>,
) -> Option<String> {
    let mut joined: Option<String> = None;
    for part in ids.iter().filter_map(|&id| message.parts.get(id as usize)) {
        let Some(rendered) = render(&part.body) else {
            continue;
        };
        match &mut joined {
            None => joined = Some(rendered.into_owned()),
            Some(out) => {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&rendered);
            }
        }
    }
    joined
}

/// Plain text from HTML, for messages that have no plain-text part.
///
/// mail-parser's `html_to_text` only breaks lines at `<br>` and `</p>` and runs words
/// together across other block elements ("Tomatoes" + "Plant" → "TomatoesPlant"), so this
/// is a small converter of our own: block elements break lines, whitespace collapses
/// except in `<pre>`, the content of `style`/`script`/`title`/`template` and comments is
/// dropped, and entities are decoded with mail-parser's table. It only ever slices the
/// input at ASCII bytes, so it cannot split a character.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut pending_space = false;
    let mut in_pre = false;
    let mut rest = html;

    while let Some(ch) = rest.chars().next() {
        if ch == '<' {
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            let after = &rest[1..];
            let is_tag = after
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b"/!?".contains(&b));
            if is_tag {
                let end = tag_end(after);
                let tag = &after[..end];
                rest = after.get(end + 1..).unwrap_or("");
                let closing = tag.starts_with('/');
                let name_len = tag
                    .trim_start_matches('/')
                    .bytes()
                    .take_while(u8::is_ascii_alphanumeric)
                    .count();
                let name = tag.trim_start_matches('/')[..name_len].to_ascii_lowercase();
                match name.as_str() {
                    "style" | "script" | "title" | "template" if !closing => {
                        rest = skip_element(rest, &name);
                    }
                    "br" => line_break(&mut out, 1, true),
                    "pre" => {
                        in_pre = !closing;
                        line_break(&mut out, 2, false);
                    }
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "dl"
                    | "table" | "blockquote" | "hr" => line_break(&mut out, 2, false),
                    "div" | "li" | "tr" | "dt" | "dd" | "section" | "article" | "header"
                    | "footer" | "nav" | "aside" | "main" | "figure" | "figcaption" | "address"
                    | "form" | "fieldset" | "center" => {
                        line_break(&mut out, 1, false);
                    }
                    "td" | "th" => pending_space = true,
                    _ => {}
                }
                if out.ends_with('\n') {
                    pending_space = false;
                }
                continue;
            }
        }

        let (text, len) = if ch == '&' {
            // `&name;` or `&#123;`; anything else (`AT&T`) is a literal ampersand. The
            // bound keeps a text full of `&` linear.
            let name_len = rest.as_bytes()[1..]
                .iter()
                .take(32)
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'#')
                .count();
            if name_len > 0 && rest.as_bytes().get(name_len + 1) == Some(&b';') {
                let mut decoded = String::new();
                add_html_token(&mut decoded, &rest.as_bytes()[..name_len + 2], false);
                (Cow::Owned(decoded), name_len + 2)
            } else {
                (Cow::Borrowed("&"), 1)
            }
        } else {
            (Cow::Borrowed(&rest[..ch.len_utf8()]), ch.len_utf8())
        };
        rest = &rest[len..];

        for ch in text.chars() {
            if in_pre {
                if ch != '\r' {
                    out.push(ch);
                }
            } else if ch.is_whitespace() {
                // Unicode whitespace, so runs of `&nbsp;` spacers collapse too.
                pending_space = true;
            } else {
                if pending_space && !out.is_empty() && !out.ends_with('\n') {
                    out.push(' ');
                }
                pending_space = false;
                out.push(ch);
            }
        }
    }

    out.truncate(out.trim_end().len());
    out
}

/// Where a tag that starts at `after` (just past its `<`) ends; a `>` inside a quoted
/// attribute value does not end it. Quotes count only right after `=`, so a stray
/// apostrophe (`<img alt=it's>`) cannot swallow the rest of the document.
fn tag_end(after: &str) -> usize {
    let mut quote = None;
    let mut last = 0u8;
    for (i, b) in after.bytes().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') if last == b'=' => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return i,
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            last = b;
        }
    }
    after.len()
}

/// What follows the closing tag of a raw-text element such as `style`; nothing when it
/// is never closed, as a browser would also show nothing.
fn skip_element<'h>(html: &'h str, name: &str) -> &'h str {
    let mut from = 0;
    while let Some(found) = html[from..].find("</") {
        let start = from + found + 2;
        let candidate = html.as_bytes().get(start..start + name.len());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes())) {
            return html[start..]
                .find('>')
                .map_or("", |end| &html[start + end + 1..]);
        }
        from = start;
    }
    ""
}

/// Ends the current line and leaves up to `lines` line ends; `hard` (for `<br>`) always
/// adds one, block elements only make sure there are enough.
fn line_break(out: &mut String, lines: usize, hard: bool) {
    out.truncate(out.trim_end_matches(' ').len());
    if out.is_empty() {
        return;
    }
    if hard {
        out.push('\n');
        return;
    }
    let present = out.len() - out.trim_end_matches('\n').len();
    for _ in present..lines {
        out.push('\n');
    }
}

/// A plain-text part as HTML, for joining it to HTML parts.
fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => {}
            '\n' => out.push_str("<br>\n"),
            ch => out.push(ch),
        }
    }
    out
}

fn attachment(
    raw: &[u8],
    part: &MessagePart<'_>,
    mode: AttachmentMode,
    max_inline: Option<u64>,
) -> Option<Attachment> {
    let content = attachment_bytes(raw, part)?;
    let size = content.len() as u64;
    let inline = match mode {
        AttachmentMode::Inline => max_inline.is_none_or(|max| size <= max),
        AttachmentMode::Metadata | AttachmentMode::Omit => false,
    };
    let content_type = match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(subtype) => format!("{}/{}", ct.ctype(), subtype),
            None => ct.ctype().to_owned(),
        }
        .to_ascii_lowercase(),
        // RFC 2046 defaults; inside multipart/digest mail-parser has already made the
        // part a message.
        None if matches!(part.body, PartType::Message(_)) => "message/rfc822".to_owned(),
        None => "text/plain".to_owned(),
    };
    let disposition = match part.content_disposition() {
        Some(cd) if cd.is_inline() => Disposition::Inline,
        _ => Disposition::Attachment,
    };
    let content_id = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentId)
        .and_then(|h| ids(&h.value).into_iter().next());

    Some(Attachment {
        filename: part.attachment_name().map(str::to_owned),
        content_type,
        size,
        content_id,
        disposition,
        content_base64: inline.then(|| BASE64.encode(&content)),
        content_omitted: !inline,
    })
}

/// The attachment as a file: transfer encoding undone, nothing else.
fn attachment_bytes<'r>(raw: &'r [u8], part: &'r MessagePart<'_>) -> Option<Cow<'r, [u8]>> {
    let body = raw.get(part.offset_body as usize..part.offset_end as usize);
    match &part.body {
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
            Some(Cow::Borrowed(bytes.as_ref()))
        }
        // A forwarded message is sent as the message itself. mail-parser keeps its bytes
        // (decoded, if it was base64) in the nested message; the part's own body slice
        // is the fallback.
        PartType::Message(nested) => nested
            .parts
            .first()
            .and_then(|root| {
                nested
                    .raw_message
                    .get(root.offset_header as usize..root.offset_end as usize)
            })
            .or(body)
            .map(Cow::Borrowed),
        // mail-parser has converted text parts to UTF-8, lossily where the charset is
        // unknown or lies. An attached file must arrive as the sender's bytes, so undo
        // only the transfer encoding, from the raw part.
        PartType::Text(_) | PartType::Html(_) => {
            let body = body?;
            let (end, decoded) = match part.encoding {
                Encoding::QuotedPrintable => {
                    MessageStream::new(body).decode_quoted_printable_mime(b"")
                }
                Encoding::Base64 => MessageStream::new(body).decode_base64_mime(b""),
                Encoding::None => return Some(Cow::Borrowed(body)),
            };
            // The parser decoded this part once already, so failing now is unexpected;
            // the undecoded body is still better than nothing.
            Some(if end == usize::MAX {
                Cow::Borrowed(body)
            } else {
                decoded
            })
        }
        PartType::Multipart(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use time::macros::datetime;

    const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eml");

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

    fn strip_cr(bytes: &[u8]) -> Vec<u8> {
        bytes.iter().copied().filter(|&b| b != b'\r').collect()
    }

    fn add_cr(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
        for &b in bytes {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    /// What must not depend on line endings: drops `size` and `raw` (checked against
    /// the input separately) and turns CRLF into LF in strings and attachment bytes.
    fn normalise_line_endings(value: &mut Value) {
        fn strings(value: &mut Value) {
            match value {
                Value::String(s) => *s = s.replace("\r\n", "\n"),
                Value::Array(items) => items.iter_mut().for_each(strings),
                Value::Object(map) => map.values_mut().for_each(strings),
                _ => {}
            }
        }
        let data = value.as_object_mut().unwrap();
        data.remove("size");
        data.remove("raw");
        for attachment in data["attachments"].as_array_mut().unwrap() {
            if let Some(content) = attachment["content_base64"].as_str() {
                let lf = strip_crlf_pairs(&BASE64.decode(content).unwrap());
                attachment["size"] = lf.len().into();
                attachment["content_base64"] = BASE64.encode(lf).into();
            }
        }
        strings(value);
    }

    fn strip_crlf_pairs(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for (i, &b) in bytes.iter().enumerate() {
            if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
                out.push(b);
            }
        }
        out
    }

    /// Golden files in mail-parser's style: `NNN-name.eml` with the expected `data` in
    /// `NNN-name.json`, run with LF and with CRLF line endings. `UPDATE_GOLDEN=1`
    /// rewrites the JSON; review every change by eye before committing it.
    #[test]
    fn golden_files() {
        let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
        let mut emls: Vec<PathBuf> = std::fs::read_dir(GOLDEN_DIR)
            .unwrap_or_else(|e| panic!("cannot read {GOLDEN_DIR}: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .collect();
        emls.sort();
        assert!(!emls.is_empty(), "no .eml files in {GOLDEN_DIR}");

        let mut failures = Vec::new();
        for eml in &emls {
            if let Err(failure) = run_golden(eml, update) {
                failures.push(failure);
            }
        }
        assert!(
            failures.is_empty(),
            "golden files differ; the actual output is saved next to them. Check it by \
             eye, then UPDATE_GOLDEN=1 rewrites the .json files:\n{}",
            failures.join("\n")
        );
    }

    fn run_golden(eml: &Path, update: bool) -> Result<(), String> {
        let stem = eml.file_stem().unwrap().to_str().unwrap();
        let expected_path = eml.with_extension("json");
        let lf = strip_cr(&std::fs::read(eml).unwrap());
        let crlf = add_cr(&lf);
        // Output of an earlier failure would otherwise outlive the fix.
        for stale in ["failed", "crlf.failed"] {
            let _ = std::fs::remove_file(eml.with_extension(stale));
        }

        let lf_data = event_data(&meta(stem), &lf);
        // Serialised from the struct, not a `Value`, so the file keeps the field order.
        let actual = serde_json::to_string_pretty(&lf_data).unwrap() + "\n";
        let round_trip: EventData = serde_json::from_str(&actual).unwrap();
        assert_eq!(round_trip, lf_data, "{stem}: JSON does not read back");

        if update {
            std::fs::write(&expected_path, &actual).unwrap();
        } else {
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if actual != expected {
                let failed = eml.with_extension("failed");
                std::fs::write(&failed, &actual).unwrap();
                return Err(format!("  LF:   {}", failed.display()));
            }
        }

        let crlf_data = event_data(&meta(stem), &crlf);
        assert_eq!(crlf_data.size, crlf.len() as u64, "{stem}: CRLF size");
        let expected_raw = lf_data.raw.as_ref().map(|_| BASE64.encode(&crlf));
        assert_eq!(crlf_data.raw, expected_raw, "{stem}: CRLF raw");
        let mut lf_value = serde_json::to_value(&lf_data).unwrap();
        let mut crlf_value = serde_json::to_value(&crlf_data).unwrap();
        normalise_line_endings(&mut lf_value);
        normalise_line_endings(&mut crlf_value);
        if crlf_value != lf_value {
            let failed = eml.with_extension("crlf.failed");
            let crlf_actual = serde_json::to_string_pretty(&crlf_value).unwrap() + "\n";
            std::fs::write(&failed, crlf_actual).unwrap();
            return Err(format!(
                "  CRLF: {} (line endings normalised; compare with the LF output)",
                failed.display()
            ));
        }
        Ok(())
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
        let data = event_data_with(&meta("1"), raw, |_| panic!("parser bug"));
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
            ("<ul><li>x</li><li>y</li></ul>after", "x\ny\n\nafter"),
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

    /// Every prefix of every golden message (what a dropped connection or a bug upstream
    /// could hand us) and some byte soup: each must give an event, and an event without
    /// structure must carry the raw bytes.
    #[test]
    fn hostile_input_always_produces_an_event() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\0".to_vec(),
            b":".to_vec(),
            b"\n\n\n".to_vec(),
            b"Subject".to_vec(),
            b"Subject: =?utf-8?b?////?= =?\xff?q?=ZZ?=\r\n\r\n".to_vec(),
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n".to_vec(),
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n".to_vec(),
            b"Content-Type: text/plain; charset=\"\xff\xfe\"\r\nContent-Transfer-Encoding: \
              base64\r\n\r\n\xff\xff\xff\r\n"
                .to_vec(),
        ];
        // A small LCG keeps the soup the same on every run.
        let mut seed: u32 = 0x1234_5678;
        for len in [1, 7, 64, 1000] {
            let soup = (0..len).map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            });
            inputs.push(soup.collect());
        }
        for entry in std::fs::read_dir(GOLDEN_DIR).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "eml") {
                let crlf = add_cr(&strip_cr(&std::fs::read(path).unwrap()));
                inputs.extend((0..crlf.len()).map(|end| crlf[..end].to_vec()));
            }
        }

        for input in &inputs {
            let event = build_event(&meta("1"), input);
            assert_eq!(event.data.size, input.len() as u64);
            if event.data.parse_error.is_some() {
                assert_eq!(BASE64.decode(event.data.raw.unwrap()).unwrap(), *input);
            } else {
                assert!(!event.data.headers.is_empty());
            }
        }
    }
}
