//! Large base64 content (attachments, `raw`) written straight into the JSON body instead
//! of first into a `String` inside the event: the event holds a marker, and the body is
//! assembled once, at its final size, from the marker's source. An attachment that is
//! canonical base64 in the message is copied as it stands (line breaks dropped), so a
//! large message costs about its own size once more, not three times.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;

/// Where a deferred value comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Canonical base64 text in the message, with line breaks: copied without them
    /// (`len` of them).
    Base64Text {
        start: usize,
        end: usize,
        len: usize,
    },
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
            let len = content.len().div_ceil(3) * 4;
            return self.marker(Source::Base64Text { start, end, len });
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

    /// `json` cut at every marker: literal JSON (each marker's quotes included) and,
    /// between, the index of the value that replaces the marker.
    fn split(&self, json: &Bytes) -> Vec<Part> {
        let prefix = format!("\"\\u0000pophook-spool:{:016x}:", self.nonce).into_bytes();
        let closing = b"\\u0000\"";
        let mut parts = Vec::with_capacity(2 * self.items.len() + 1);
        let (mut from, mut at) = (0, 0);
        while let Some(found) = find(&json[at..], &prefix) {
            let marker = at + found;
            let after = marker + prefix.len();
            let digits = json[after..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let index = std::str::from_utf8(&json[after..after + digits])
                .ok()
                .and_then(|d| d.parse::<usize>().ok());
            match index {
                Some(index)
                    if json[after + digits..].starts_with(closing) && index < self.items.len() =>
                {
                    // The opening quote stays with the JSON before, the closing one
                    // with the JSON after.
                    parts.push(Part::Json(json.slice(from..marker + 1)));
                    parts.push(Part::Value(index));
                    from = after + digits + closing.len() - 1;
                    at = from + 1;
                }
                // Not one of ours after all: keep it as it is.
                _ => at = after,
            }
        }
        parts.push(Part::Json(json.slice(from..)));
        parts
    }

    /// The JSON body: `json` with every marker string replaced by its base64.
    pub(crate) fn assemble(&self, json: &[u8]) -> Vec<u8> {
        let json = Bytes::copy_from_slice(json);
        let parts = self.split(&json);
        let extra: usize = self.items.iter().map(encoded_len).sum();
        let mut body = Vec::with_capacity(json.len() + extra);
        for part in &parts {
            match part {
                Part::Json(text) => body.extend_from_slice(text),
                Part::Value(index) => {
                    let source = &self.items[*index];
                    source.write(source.input(self.raw), &mut body);
                }
            }
        }
        body
    }

    /// The body in pieces, made as it is sent: the base64 of `raw` (the buffer this
    /// spool reads) is never held whole, so a large message costs its own size once,
    /// not twice.
    pub(crate) fn into_spooled(self, json: Vec<u8>, raw: &Bytes) -> Spooled {
        debug_assert_eq!(raw.as_ptr(), self.raw.as_ptr());
        let json = Bytes::from(json);
        let parts = self.split(&json);
        let values: usize = parts
            .iter()
            .map(|part| match part {
                Part::Json(text) => text.len(),
                Part::Value(index) => encoded_len(&self.items[*index]),
            })
            .sum();
        // Held only while a value is made from it: with attachments in the store and
        // no `raw`, the message can go as soon as the event is built.
        let uses_raw = self
            .items
            .iter()
            .any(|item| !matches!(item, Source::Owned(_)));
        Spooled {
            raw: if uses_raw { raw.clone() } else { Bytes::new() },
            items: self.items,
            parts,
            len: values,
        }
    }
}

/// A piece of a spooled body.
#[derive(Debug)]
enum Part {
    Json(Bytes),
    /// The base64 of the spool's item at this index.
    Value(usize),
}

/// A standard event's body in pieces: literal JSON, and the base64 of parts of the
/// message (or of decoded content) made piece by piece as the body is sent.
#[derive(Debug)]
pub struct Spooled {
    raw: Bytes,
    items: Vec<Source>,
    parts: Vec<Part>,
    len: usize,
}

/// Where sending a [`Spooled`] body has got to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    part: usize,
    /// Within the part: bytes of JSON, or bytes of the source read so far.
    offset: usize,
}

/// Source bytes encoded per piece (64 KiB of base64).
const ENCODE_PIECE: usize = 48 * 1024;
/// Base64 text or JSON read per piece.
const COPY_PIECE: usize = 64 * 1024;

impl Spooled {
    /// The body's length in bytes, known before any of it is made.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next piece, at most about 64 KiB; `None` at the end.
    pub fn next_piece(&self, cursor: &mut Cursor) -> Option<Bytes> {
        loop {
            let (piece, to, len) = match self.parts.get(cursor.part)? {
                Part::Json(text) => {
                    let to = text.len().min(cursor.offset + COPY_PIECE);
                    (text.slice(cursor.offset..to), to, text.len())
                }
                Part::Value(index) => {
                    let source = &self.items[*index];
                    let input = source.input(&self.raw);
                    let to = input.len().min(cursor.offset + source.piece_len());
                    let mut piece = Vec::new();
                    source.write(&input[cursor.offset..to], &mut piece);
                    (Bytes::from(piece), to, input.len())
                }
            };
            cursor.offset = to;
            if to == len {
                cursor.part += 1;
                cursor.offset = 0;
            }
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }

    /// Every piece in order.
    pub fn pieces(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut cursor = Cursor::default();
        std::iter::from_fn(move || self.next_piece(&mut cursor))
    }

    /// The whole body in one buffer (for what needs it whole: an ed25519 signature).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.len);
        for piece in self.pieces() {
            body.extend_from_slice(&piece);
        }
        body
    }
}

fn encoded_len(source: &Source) -> usize {
    match source {
        Source::Base64Text { len, .. } => *len,
        Source::Encode { start, end } => (end - start).div_ceil(3) * 4,
        Source::Owned(bytes) => bytes.len().div_ceil(3) * 4,
    }
}

impl Source {
    /// What the value is made from: base64 text to copy, or bytes to encode.
    fn input<'a>(&'a self, raw: &'a [u8]) -> &'a [u8] {
        match self {
            Source::Base64Text { start, end, .. } | Source::Encode { start, end } => {
                &raw[*start..*end]
            }
            Source::Owned(bytes) => bytes,
        }
    }

    /// How much input one piece takes: 64 KiB of text, or 48 KiB to encode (a multiple
    /// of 3, so the pieces' base64 joins up without padding in between).
    fn piece_len(&self) -> usize {
        match self {
            Source::Base64Text { .. } => COPY_PIECE,
            _ => ENCODE_PIECE,
        }
    }

    /// Appends the base64 of `input`, a stretch of [`Source::input`].
    fn write(&self, input: &[u8], body: &mut Vec<u8>) {
        match self {
            Source::Base64Text { .. } => {
                body.extend(input.iter().copied().filter(|b| !b.is_ascii_whitespace()))
            }
            _ => encode_into(input, body),
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
    // One table lookup per byte: this runs over every base64 attachment's text, and a
    // chain of range comparisons per byte was 13% of pophook's CPU in scenario 1.
    const SKIP: u8 = 1;
    const PAD: u8 = 2;
    const DIGIT: u8 = 3;
    const CLASS: [u8; 256] = {
        let mut class = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            class[b] = match b as u8 {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => DIGIT,
                b'=' => PAD,
                b'\r' | b'\n' | b' ' | b'\t' => SKIP,
                _ => 0,
            };
            b += 1;
        }
        class
    };
    let mut count = 0usize;
    let mut pads = 0usize;
    let mut last = 0u8;
    for &b in text {
        match CLASS[usize::from(b)] {
            DIGIT if pads == 0 => {
                count += 1;
                last = b;
            }
            PAD if pads < 2 => {
                count += 1;
                pads += 1;
            }
            SKIP => {}
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
                end: raw.len(),
                len: 16
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

    #[test]
    fn a_spooled_body_sends_exactly_the_assembled_bytes_piece_by_piece() {
        // Large enough that every kind of value spans several pieces.
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = BASE64.encode(&content);
        let mut message = b"Subject: x\r\n\r\n".to_vec();
        let start = message.len();
        for line in encoded.as_bytes().chunks(76) {
            message.extend_from_slice(line);
            message.extend_from_slice(b"\r\n");
        }
        let raw = Bytes::from(message);
        let mut spool = Spool::new(&raw);
        let copied = spool.base64_of(&content, Some(&raw[start..]));
        assert!(matches!(spool.items[0], Source::Base64Text { .. }));
        let whole = spool.raw_message();
        let owned = spool.base64_of(&content[..100_001], None);
        let json = serde_json::to_vec(&serde_json::json!({
            "a": copied, "raw": whole, "b": owned, "text": "x".repeat(70_000)
        }))
        .unwrap();
        let assembled = spool.assemble(&json);
        let spooled = spool.into_spooled(json, &raw);
        assert_eq!(spooled.len(), assembled.len());
        let pieces: Vec<Bytes> = spooled.pieces().collect();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 64 * 1024));
        assert_eq!(pieces.concat(), assembled);
        assert_eq!(spooled.to_vec(), assembled);
        let value: serde_json::Value = serde_json::from_slice(&assembled).unwrap();
        assert_eq!(value["a"], encoded);
        assert_eq!(value["b"], BASE64.encode(&content[..100_001]));
    }
}
