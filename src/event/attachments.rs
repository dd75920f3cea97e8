//! One attachment of the event: its name, type and bytes as the sender attached them,
//! inline, listed without content, or left out, as the webhook's attachment mode says.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mail_parser::{HeaderName, MessagePart, MimeHeaders, PartType};

use super::body::{is_base64, transfer_decode};
use super::headers::{ids, raw_value};
use super::spool::Spool;
use super::{params, Attachment, AttachmentMode, Disposition};

pub(super) fn attachment(
    raw: &[u8],
    part: &MessagePart<'_>,
    mode: AttachmentMode,
    max_inline: Option<u64>,
    spool: Option<&mut Spool<'_>>,
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
        filename: filename(raw, part),
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
