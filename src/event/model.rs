//! The event on the wire: what receivers read, field by field. Plain data; building
//! it is the parent module's job.

use serde::{Deserialize, Serialize};

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
