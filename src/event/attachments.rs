//! One attachment of the event: its name, type and bytes as the sender attached them,
//! inline, listed without content, left out, or in the object store, as the webhook's
//! attachment mode says.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};

use super::body::{is_base64, transfer_decode};
use super::headers::{ids, raw_value};
use super::spool::Spool;
use super::{params, Attachment, AttachmentMode, Disposition, Stashing};

/// Where a stored attachment is noted: its place in the event and in the message.
pub(super) struct Target<'a, 'p> {
    pub(super) stashing: &'a Stashing<'a>,
    /// Its place among the message's attachments: part of the key.
    pub(super) index: usize,
    /// Its place in mail-parser's parts, to take its bytes from later.
    pub(super) part: usize,
    pub(super) pending: &'p mut Vec<Pending>,
}

/// An attachment listed with its URL whose bytes are still in the parsed message.
pub(super) struct Pending {
    pub(super) part: usize,
    pub(super) key: String,
    pub(super) content_type: String,
}

pub(super) fn attachment(
    raw: &[u8],
    part: &MessagePart<'_>,
    mode: AttachmentMode,
    max_inline: Option<u64>,
    spool: Option<&mut Spool<'_>>,
    store: Option<Target<'_, '_>>,
) -> Option<Attachment> {
    let content = attachment_bytes(raw, part)?;
    let size = content.len() as u64;
    let inline = match (mode, &store) {
        (AttachmentMode::Inline, _) => max_inline.is_none_or(|max| size <= max),
        (AttachmentMode::Store, Some(target)) => size <= target.stashing.stash.larger_than,
        // Without a store (a format that renders no URLs) it is listed only.
        (AttachmentMode::Store, None) | (AttachmentMode::Metadata | AttachmentMode::Omit, _) => {
            false
        }
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
    let filename = filename(raw, part);
    let (mut url, mut storage_key, mut sha256) = (None, None, None);
    if let (false, AttachmentMode::Store, Some(target)) = (inline, mode, store) {
        let storage = target.stashing.stash.storage;
        let key =
            storage.attachment_key(target.stashing.event_id, target.index, filename.as_deref());
        url = Some(storage.presign_get(&key));
        sha256 = Some(hex_sha256(&content));
        target.pending.push(Pending {
            part: target.part,
            key: key.clone(),
            content_type: content_type.clone(),
        });
        storage_key = Some(key);
    }

    Some(Attachment {
        filename,
        content_type,
        size,
        content_id,
        disposition,
        content_base64: inline.then(|| match spool {
            // Base64 in the message as sent: the JSON can take it as it stands.
            Some(spool) => {
                let sent = is_base64(part)
                    .then(|| raw.get(part.offset_body as usize..part.offset_end as usize))
                    .flatten();
                spool.base64_of(&content, sent)
            }
            None => BASE64.encode(&content),
        }),
        content_omitted: !inline,
        url,
        storage_key,
        sha256,
    })
}

fn hex_sha256(content: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(content)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The content of attachment part `part` for the store. Bytes mail-parser decoded are
/// moved out of the message (it is dropped next), so a large base64 attachment costs
/// its decoded size once, not twice; the rare other kinds are copied.
pub(super) fn take_content(raw: &[u8], message: &mut Message<'_>, part: usize) -> Bytes {
    let Some(part) = message.parts.get_mut(part) else {
        return Bytes::new();
    };
    match &mut part.body {
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => match std::mem::take(bytes) {
            Cow::Owned(owned) => Bytes::from(owned),
            Cow::Borrowed(borrowed) => Bytes::copy_from_slice(borrowed),
        },
        _ => attachment_bytes(raw, part)
            .map(|content| Bytes::from(content.into_owned()))
            .unwrap_or_default(),
    }
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
        // only the transfer encoding, from the raw part, leniently: a damaged part still
        // gives every byte that can be read.
        PartType::Text(_) | PartType::Html(_) => Some(transfer_decode(part, body?)),
        PartType::Multipart(_) => None,
    }
}

/// The file name: `Content-Disposition`'s `filename`, else `Content-Type`'s `name`
/// (RFC 2183, RFC 2046), read from the raw header so RFC 2231 and RFC 2047 forms and
/// folds anywhere in the value decode.
fn filename(raw: &[u8], part: &MessagePart<'_>) -> Option<String> {
    let param = |header: HeaderName<'static>, name: &str| {
        part.headers
            .iter()
            .find(|h| h.name == header)
            .and_then(|h| {
                params::parse(raw_value(raw, h))
                    .get(name)
                    .map(str::to_owned)
            })
            .filter(|value| !value.is_empty())
    };
    param(HeaderName::ContentDisposition, "filename")
        .or_else(|| param(HeaderName::ContentType, "name"))
}
