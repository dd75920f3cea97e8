//! Large base64 content (attachments, `raw`) written straight into the JSON body instead
//! of first into a `String` inside the event: the event holds a marker, and the body is
//! assembled once, at its final size, from the marker's source. An attachment that is
//! canonical base64 in the message is copied as it stands (line breaks dropped), so a
//! large message costs about its own size once more, not three times.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// Where a deferred value comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Canonical base64 text in the message, with line breaks: copied without them.
    Base64Text { start: usize, end: usize },
    /// Bytes of the message, to encode.
    Encode { start: usize, end: usize },
    /// Decoded bytes that are not in the message as such, to encode.
    Owned(Vec<u8>),
}

pub(crate) struct Spool<'r> {
    raw: &'r [u8],
    /// Makes markers unguessable, so text in a message can never pose as one.
    nonce: u64,
    items: Vec<Source>,
}

impl<'r> Spool<'r> {
    pub(crate) fn new(raw: &'r [u8]) -> Spool<'r> {
        Spool {
            raw,
            nonce: rand::random(),
            items: Vec::new(),
        }
    }

    fn marker(&mut self, source: Source) -> String {
        self.items.push(source);
        format!(
            "\0pophook-spool:{:016x}:{}\0",
            self.nonce,
            self.items.len() - 1
        )
    }

    /// The marker for the base64 of `content`: located in the message when it is a
    /// slice of it, or found there as canonical base64 text (`encoded`, the part's
    /// body as sent), else copied.
    pub(crate) fn base64_of(&mut self, content: &[u8], encoded: Option<&[u8]>) -> String {
        if let Some(range) = self.within_raw(content) {
            return self.marker(Source::Encode {
                start: range.0,
                end: range.1,
            });
        }
        if let Some((start, end)) = encoded
            .filter(|text| canonical_base64_len(text) == Some(content.len()))
            .and_then(|text| self.within_raw(text))
        {
            return self.marker(Source::Base64Text { start, end });
        }
        self.marker(Source::Owned(content.to_vec()))
    }

    /// The marker for the base64 of the whole message.
    pub(crate) fn raw_message(&mut self) -> String {
        let end = self.raw.len();
        self.marker(Source::Encode { start: 0, end })
    }

    fn within_raw(&self, slice: &[u8]) -> Option<(usize, usize)> {
        let base = self.raw.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        (at >= base && at + slice.len() <= base + self.raw.len())
            .then(|| (at - base, at - base + slice.len()))
    }

    /// The JSON body: `json` with every marker string replaced by its base64.
    pub(crate) fn assemble(&self, json: &[u8]) -> Vec<u8> {
        let prefix = format!("\"\\u0000pophook-spool:{:016x}:", self.nonce).into_bytes();
        let extra: usize = self.items.iter().map(|s| self.encoded_len(s)).sum();
        let mut body = Vec::with_capacity(json.len() + extra);
        let mut rest = json;
        while let Some(at) = find(rest, &prefix) {
            body.extend_from_slice(&rest[..at]);
            let after = &rest[at + prefix.len()..];
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            let closing = b"\\u0000\"";
            let index = std::str::from_utf8(&after[..digits])
                .ok()
                .and_then(|d| d.parse::<usize>().ok());
            match index {
                Some(index) if after[digits..].starts_with(closing) && index < self.items.len() => {
                    body.push(b'"');
                    self.write(&self.items[index], &mut body);
                    body.push(b'"');
                    rest = &after[digits + closing.len()..];
                }
                // Not one of ours after all: keep it as it is.
                _ => {
                    body.extend_from_slice(&rest[at..at + prefix.len()]);
                    rest = after;
                }
            }
        }
        body.extend_from_slice(rest);
        body
    }

    fn encoded_len(&self, source: &Source) -> usize {
        match source {
            Source::Base64Text { start, end } => end - start,
            Source::Encode { start, end } => (end - start).div_ceil(3) * 4,
            Source::Owned(bytes) => bytes.len().div_ceil(3) * 4,
        }
    }

    fn write(&self, source: &Source, body: &mut Vec<u8>) {
        match source {
            Source::Base64Text { start, end } => body.extend(
                self.raw[*start..*end]
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace()),
            ),
            Source::Encode { start, end } => encode_into(&self.raw[*start..*end], body),
            Source::Owned(bytes) => encode_into(bytes, body),
        }
    }
}

fn encode_into(bytes: &[u8], body: &mut Vec<u8>) {
    let at = body.len();
    body.resize(at + bytes.len().div_ceil(3) * 4, 0);
    let written = BASE64
        .encode_slice(bytes, &mut body[at..])
        .expect("the buffer was sized for the encoding");
    body.truncate(at + written);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The decoded length of `text` if, line breaks aside, it is exactly what encoding
/// that many bytes with the standard alphabet and padding produces: then it can be
/// copied into the JSON instead of decoded and encoded again.
fn canonical_base64_len(text: &[u8]) -> Option<usize> {
    let mut count = 0usize;
    let mut pads = 0usize;
    let mut last = 0u8;
    for &b in text {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if pads == 0 => {
                count += 1;
                last = b;
            }
            b'=' if pads < 2 => {
                count += 1;
                pads += 1;
            }
            b'\r' | b'\n' | b' ' | b'\t' => {}
            _ => return None,
        }
    }
    if !count.is_multiple_of(4) {
        return None;
    }
    let value = match last {
        b'A'..=b'Z' => last - b'A',
        b'a'..=b'z' => last - b'a' + 26,
        b'0'..=b'9' => last - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    // The bits after the last byte must be zero, or decoding drops them.
    let unused = match pads {
        1 => value & 0b11,
        2 => value & 0b1111,
        _ => 0,
    };
    (unused == 0 && count > 0 || count == 0).then(|| count / 4 * 3 - pads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_base64_is_recognised_and_anything_else_is_not() {
        let text = BASE64.encode(b"hello world!!");
        let wrapped = format!("{}\r\n{}\r\n", &text[..8], &text[8..]);
        assert_eq!(canonical_base64_len(wrapped.as_bytes()), Some(13));
        assert_eq!(canonical_base64_len(b""), Some(0));
        assert_eq!(canonical_base64_len(b"aGk="), Some(2));
        assert_eq!(canonical_base64_len(b"aGl="), None, "non-zero unused bits");
        assert_eq!(canonical_base64_len(b"aGk"), None, "missing padding");
        assert_eq!(canonical_base64_len(b"a-k="), None, "URL alphabet");
        assert_eq!(canonical_base64_len(b"aG=k"), None, "data after padding");
    }

    #[test]
    fn markers_become_the_base64_of_their_source_and_lookalikes_stay() {
        let raw = b"Subject: x\r\n\r\naGVsbG8gd29y\r\nbGQ=\r\n";
        let text = &raw[14..];
        let mut spool = Spool::new(raw);
        let copied = spool.base64_of(b"hello world", Some(text));
        let whole = spool.raw_message();
        let owned = spool.base64_of(b"other", None);
        assert_eq!(
            spool.items[0],
            Source::Base64Text {
                start: 14,
                end: raw.len()
            }
        );
        let fake = format!("\0pophook-spool:{:016x}:99\0", spool.nonce);
        let json = serde_json::to_vec(&serde_json::json!({
            "a": copied, "raw": whole, "b": owned, "subject": fake, "t": "\u{0}pophook-spool:0:0\u{0}"
        }))
        .unwrap();
        let body = spool.assemble(&json);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["a"], BASE64.encode(b"hello world"));
        assert_eq!(value["raw"], BASE64.encode(raw));
        assert_eq!(value["b"], BASE64.encode(b"other"));
        assert_eq!(
            value["subject"],
            fake.as_str(),
            "an unknown index stays text"
        );
        assert_eq!(value["t"], "\u{0}pophook-spool:0:0\u{0}");
    }
}
