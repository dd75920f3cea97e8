//! The raw message as JSON text (Postmark's `RawEmail`). JSON carries Unicode, and a
//! message is bytes: most are UTF-8 or 7-bit and go as they are, but mail with 8-bit
//! bodies in a legacy charset (`Content-Transfer-Encoding: 8bit` in ISO-8859-1, say)
//! is common, and replacing those bytes would corrupt exactly the text a receiver reads.
//!
//! So such bodies are re-encoded first, as an MTA does when it relays 8-bit mail to a
//! 7-bit hop (RFC 6152): text parts as quoted-printable, other parts as base64, with their
//! `Content-Transfer-Encoding` changed to match. A MIME parser decodes them to the very
//! same bytes in the same charset. Only 8-bit bytes where no encoding can go (raw header
//! values, a multipart's preamble or epilogue, a part that claims an encoding it does
//! not have) are replaced by U+FFFD.

use base64::Engine as _;
use mail_parser::{Encoding, HeaderName, MessageParser, MessagePart, PartType};

/// `message` as text: itself when it is UTF-8, else with its 8-bit bodies encoded.
pub fn raw_email_text(message: &[u8]) -> String {
    match std::str::from_utf8(message) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            // mail-parser is fuzzed but not proven (pophook's event catches its panics
            // too): one that panics here leaves the bytes to be replaced, as before.
            let encoded = std::panic::catch_unwind(|| encode_eight_bit_bodies(message, 0));
            match encoded {
                Ok(encoded) => String::from_utf8_lossy(&encoded).into_owned(),
                Err(_) => String::from_utf8_lossy(message).into_owned(),
            }
        }
    }
}

/// A replacement of `message[start..end]`.
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// Forwarded messages inside forwarded messages deeper than this are left as they are
/// (each level is parsed again; hostile mail may nest without end).
const MAX_DEPTH: usize = 8;

/// `message` with every body that is not UTF-8 transfer-encoded (see the module);
/// `depth`: how many forwarded messages it is inside.
fn encode_eight_bit_bodies(message: &[u8], depth: usize) -> Vec<u8> {
    let Some(parsed) = MessageParser::new().parse(message) else {
        return message.to_vec();
    };
    let newline: &[u8] = if message.windows(2).any(|w| w == b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut edits = Vec::new();
    // A nested message's parts are not in this list: it is handled whole, below.
    for part in &parsed.parts {
        let (start, end) = (part.offset_body as usize, part.offset_end as usize);
        let Some(body) = message.get(start..end) else {
            continue;
        };
        if std::str::from_utf8(body).is_ok() {
            continue;
        }
        let (encoding, encoded) = match &part.body {
            // Its children are parts of this list; 8-bit bytes in a preamble or an
            // epilogue have no encoding to go in.
            PartType::Multipart(_) => continue,
            // RFC 2046 §5.2.1: a message/rfc822 part is never encoded itself; its own
            // parts are.
            PartType::Message(_) if depth >= MAX_DEPTH => continue,
            PartType::Message(_) => {
                edits.push(Edit {
                    start,
                    end,
                    with: encode_eight_bit_bodies(body, depth + 1),
                });
                continue;
            }
            // Already quoted-printable or base64, yet with 8-bit bytes: the message's
            // own error, which re-encoding would not undo.
            _ if part.encoding != Encoding::None => continue,
            PartType::Text(_) | PartType::Html(_) => {
                ("quoted-printable", quoted_printable::encode(body))
            }
            _ => ("base64", base64_lines(body, newline)),
        };
        edits.push(transfer_encoding(message, part, encoding, newline));
        edits.push(Edit {
            start,
            end,
            with: encoded,
        });
    }
    apply(message, edits)
}

/// The edit that makes `part`'s `Content-Transfer-Encoding` say `encoding`: its value
/// replaced, or the field added after the part's headers.
fn transfer_encoding(message: &[u8], part: &MessagePart, encoding: &str, newline: &[u8]) -> Edit {
    let field = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentTransferEncoding);
    match field {
        Some(field) => {
            let (start, end) = (field.offset_start as usize, field.offset_end as usize);
            // The value's range ends with its line break; keep one.
            let ends_line = message.get(start..end).is_some_and(|v| v.ends_with(b"\n"));
            let mut with = format!(" {encoding}").into_bytes();
            if ends_line {
                with.extend_from_slice(newline);
            }
            Edit { start, end, with }
        }
        None => {
            // Last among the part's headers: before the blank line that ends them.
            let body = part.offset_body as usize;
            let head = message.get(..body).unwrap_or_default();
            let at = if head.ends_with(b"\r\n") {
                body - 2
            } else if head.ends_with(b"\n") {
                body - 1
            } else {
                body
            };
            let mut with = format!("Content-Transfer-Encoding: {encoding}").into_bytes();
            with.extend_from_slice(newline);
            Edit {
                start: at,
                end: at,
                with,
            }
        }
    }
}

/// Base64 in lines of 76 characters (RFC 2045 §6.8).
fn base64_lines(bytes: &[u8], newline: &[u8]) -> Vec<u8> {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(text.len() + text.len() / 76 * 2 + 2);
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(newline);
    }
    out
}

/// `message` with `edits` made; edits that overlap an earlier one are skipped (they
/// cannot happen for well-formed offsets, and a skipped edit only leaves bytes as they
/// were).
fn apply(message: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = Vec::with_capacity(message.len() + message.len() / 2);
    let mut at = 0;
    for edit in edits {
        if edit.start < at || edit.end < edit.start || edit.end > message.len() {
            continue;
        }
        out.extend_from_slice(&message[at..edit.start]);
        out.extend_from_slice(&edit.with);
        at = edit.end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

#[cfg(test)]
mod tests;
