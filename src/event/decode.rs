//! Byte-level decoders the event needs to get right where mail-parser 0.11 does not:
//! RFC 2047 encoded-words, lenient quoted-printable and base64, charsets and UTF-7.
//!
//! Every decoder here is total: bytes it cannot decode are kept (or become U+FFFD in
//! text), because a message that reaches the receiver slightly garbled beats one that
//! loses its body.

use mail_parser::decoders::charsets::map::charset_decoder;

/// `bytes` in the named charset as text. UTF-7 is decoded here (mail-parser's decoder
/// swallows the character after a base64 run); other charsets mail-parser knows go
/// through it, and an unknown or missing charset is read as UTF-8, lossily, since that is
/// what unlabelled mail mostly is today (RFC 6532).
pub(super) fn decode_charset(charset: Option<&str>, bytes: &[u8]) -> String {
    let charset = charset.map(str::trim).unwrap_or("");
    if charset.eq_ignore_ascii_case("utf-7") || charset.eq_ignore_ascii_case("unicode-1-1-utf-7") {
        return decode_utf7(bytes);
    }
    if charset.is_empty()
        || charset.eq_ignore_ascii_case("utf-8")
        || charset.eq_ignore_ascii_case("us-ascii")
    {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match charset_decoder(charset.as_bytes()) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// UTF-7 (RFC 2152): `+` starts a run of modified base64 holding UTF-16, ended by any
/// character outside the base64 alphabet; only a `-` ending it is absorbed. `+-` is `+`.
/// Bytes that do not decode become U+FFFD and decoding goes on.
pub(super) fn decode_utf7(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'+' {
            push_lossy_byte(&mut out, bytes, &mut i);
            continue;
        }
        i += 1;
        if bytes.get(i) == Some(&b'-') {
            out.push('+');
            i += 1;
            continue;
        }
        let mut units = Vec::new();
        let (mut acc, mut nbits) = (0u32, 0u32);
        while let Some(value) = bytes.get(i).and_then(|&b| base64_value(b)) {
            acc = (acc << 6) | u32::from(value);
            nbits += 6;
            if nbits >= 16 {
                nbits -= 16;
                units.push((acc >> nbits) as u16);
                acc &= (1 << nbits) - 1;
            }
            i += 1;
        }
        out.extend(char::decode_utf16(units).map(|c| c.unwrap_or('\u{FFFD}')));
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
    }
    out
}

/// Pushes the UTF-8 character at `bytes[*i]` (or U+FFFD for an invalid byte) and moves on.
fn push_lossy_byte(out: &mut String, bytes: &[u8], i: &mut usize) {
    let len = match bytes[*i] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    };
    let end = (*i + len).min(bytes.len());
    match std::str::from_utf8(&bytes[*i..end]) {
        Ok(text) => {
            out.push_str(text);
            *i = end;
        }
        Err(_) => {
            out.push('\u{FFFD}');
            *i += 1;
        }
    }
}

fn base64_value(b: u8) -> Option<u8> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// Base64 that skips what is not in the alphabet (line ends, stray characters) and stops
/// at padding, so a damaged attachment still gives every byte that can be read.
pub(super) fn decode_base64_lenient(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut nbits) = (0u32, 0u32);
    for &b in bytes {
        if b == b'=' {
            // Padding ends a run; some encoders concatenate runs, so go on after it.
            acc = 0;
            nbits = 0;
            continue;
        }
        let Some(value) = base64_value(b) else {
            continue;
        };
        acc = (acc << 6) | u32::from(value);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7), leniently: `=XX` decodes, `=` before a line end is
/// a soft break, and any other `=` is kept with what follows it, as §6.7 suggests,
/// rather than failing the whole part. Trailing whitespace on a line is encoder padding
/// and goes.
pub(super) fn decode_quoted_printable_lenient(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let (content, line_end): (&[u8], &[u8]) = match line {
            [rest @ .., b'\r', b'\n'] => (rest, b"\r\n"),
            [rest @ .., b'\n'] => (rest, b"\n"),
            rest => (rest, b""),
        };
        let content = content.trim_ascii_end();
        let (content, soft) = match content.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (content, false),
        };
        out.extend(unescape_hex(content, b'=', false));
        if !soft {
            out.extend_from_slice(line_end);
        }
    }
    out
}

/// An unstructured header value (RFC 5322 §2.2.3, RFC 2047): unfolded, trimmed, with
/// encoded-words decoded. Whitespace between two encoded-words goes (RFC 2047 §6.2), and
/// adjacent encoded-words in one charset have their bytes joined before decoding, so a
/// character split across two words survives. Text outside encoded-words is read as
/// UTF-8 (RFC 6532), lossily.
pub(super) fn decode_unstructured(raw: &[u8]) -> String {
    let unfolded = unfold(raw);
    let mut out = String::with_capacity(unfolded.len());
    // Bytes of the encoded-words not yet decoded, all in `pending_charset`.
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_charset: Option<String> = None;
    // Whitespace seen since the last encoded-word, kept until we know what follows.
    let mut gap: &[u8] = b"";
    let mut rest: &[u8] = &unfolded;

    let flush = |out: &mut String, pending: &mut Vec<u8>, charset: &mut Option<String>| {
        if let Some(charset) = charset.take() {
            out.push_str(&decode_charset(Some(&charset), pending));
            pending.clear();
        }
    };

    while !rest.is_empty() {
        if let Some((word, after)) = encoded_word(rest) {
            let same = pending_charset
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(&word.charset));
            if !same {
                flush(&mut out, &mut pending, &mut pending_charset);
                pending_charset = Some(word.charset.clone());
            }
            // Between two encoded-words the gap is dropped either way.
            gap = b"";
            pending.extend(word.decoded);
            rest = after;
            continue;
        }
        let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if ws > 0 && pending_charset.is_some() {
            // Hold the whitespace: it goes if another encoded-word follows.
            gap = &rest[..ws];
            rest = &rest[ws..];
            continue;
        }
        flush(&mut out, &mut pending, &mut pending_charset);
        out.push_str(&String::from_utf8_lossy(gap));
        gap = b"";
        // Plain text up to the next whitespace or `=?`.
        let mut end = ws.max(1);
        while end < rest.len()
            && !rest[end].is_ascii_whitespace()
            && !(rest[end] == b'=' && rest.get(end + 1) == Some(&b'?'))
        {
            end += 1;
        }
        let (text, after) = rest.split_at(end.min(rest.len()));
        out.push_str(&String::from_utf8_lossy(text));
        rest = after;
    }
    flush(&mut out, &mut pending, &mut pending_charset);
    out.trim().to_owned()
}

/// Unfolds a header value: a line break and the whitespace after it become one space,
/// as mail-parser did before us and as readers expect (RFC 5322 §2.2.3 keeps the
/// whitespace itself, which would leave tabs in the middle of values). A line break is
/// LF or CRLF; a bare CR ends no line (nor does mail-parser end a header at one), so it
/// is the message's own character and stays.
pub(super) fn unfold(raw: &[u8]) -> Vec<u8> {
    let line_break_at = |i: usize| match raw[i] {
        b'\n' => true,
        b'\r' => raw.get(i + 1) == Some(&b'\n'),
        _ => false,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            _ if line_break_at(i) => {
                while i < raw.len() && line_break_at(i) {
                    i += 1;
                }
                let fold = raw[i..]
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if fold > 0 {
                    out.push(b' ');
                    i += fold;
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

pub(super) struct EncodedWord {
    pub charset: String,
    pub decoded: Vec<u8>,
}

/// An encoded-word `=?charset[*lang]?B|Q?text?=` at the start of `input`, and the rest.
pub(super) fn encoded_word(input: &[u8]) -> Option<(EncodedWord, &[u8])> {
    let inner = input.strip_prefix(b"=?")?;
    let q1 = inner.iter().position(|&b| b == b'?')?;
    let charset = &inner[..q1];
    let after_charset = &inner[q1 + 1..];
    let (&encoding, after_encoding) = after_charset.split_first()?;
    let text_start = after_encoding.strip_prefix(b"?")?;
    let end = text_start.windows(2).position(|w| w == b"?=")?;
    let text = &text_start[..end];
    // A word may not hold whitespace (RFC 2047 §5); refusing such runs keeps a stray
    // `=?` from eating the rest of the header.
    if charset.is_empty()
        || charset.len() > 64
        || charset.iter().any(|b| b.is_ascii_whitespace())
        || text.iter().any(|b| b.is_ascii_whitespace())
    {
        return None;
    }
    let decoded = match encoding {
        b'B' | b'b' => decode_base64_lenient(text),
        b'Q' | b'q' => decode_q(text),
        _ => return None,
    };
    // RFC 2231 §5: `charset*language`; the language is not needed for decoding.
    let charset = String::from_utf8_lossy(charset);
    let charset = charset.split('*').next().unwrap_or("").to_owned();
    Some((EncodedWord { charset, decoded }, &text_start[end + 2..]))
}

/// The `Q` encoding: `_` is a space, `=XX` a byte; anything else is itself.
fn decode_q(text: &[u8]) -> Vec<u8> {
    unescape_hex(text, b'=', true)
}

/// Undoes `<escape>XX` hex escapes (`=` in quoted-printable and `Q`, `%` in RFC 2231),
/// keeping an escape character that no two hex digits follow, as RFC 2045 §6.7 advises;
/// `underscore_is_space` for RFC 2047's `Q`.
pub(super) fn unescape_hex(text: &[u8], escape: u8, underscore_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == escape {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'_' && underscore_is_space {
            b' '
        } else {
            b
        });
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf7_absorbs_only_a_dash_after_a_base64_run() {
        let cases = [
            ("+AD4 On Monday", "> On Monday"),
            ("+AD4-On", ">On"),
            ("Hi Mom -+Jjo--!", "Hi Mom -☺-!"),
            ("+ZeVnLIqe-", "日本語"),
            ("1 +- 1 = 2", "1 + 1 = 2"),
            ("A+ImIDkQ.", "A≢Α."),
            ("+", ""),
            ("+!", "!"),
            ("plain", "plain"),
            ("+AGEAYgBj", "abc"),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_utf7(input.as_bytes()), expected, "{input}");
        }
        // Junk never panics and keeps the readable parts.
        assert_eq!(decode_utf7(b"caf\xc3\xa9 \xff+A"), "café \u{FFFD}");
    }

    #[test]
    fn quoted_printable_keeps_what_it_cannot_decode() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"caf=C3=A9", "café".as_bytes()),
            (b"soft=\nbreak", b"softbreak"),
            (b"soft=\r\nbreak\r\n", b"softbreak\r\n"),
            (b"A=0=\n9B", b"A=09B"),
            (b"50% =ZZ off", b"50% =ZZ off"),
            (b"trailing   \nspace", b"trailing\nspace"),
            (b"ends with =", b"ends with "),
            (b"=4", b"=4"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_quoted_printable_lenient(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn base64_skips_noise_and_keeps_every_readable_byte() {
        assert_eq!(decode_base64_lenient(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(decode_base64_lenient(b"aGVs bG8"), b"hello");
        assert_eq!(decode_base64_lenient(b"aGk=aGk="), b"hihi");
        assert_eq!(decode_base64_lenient(b"!!!"), b"");
    }

    #[test]
    fn encoded_words_join_their_bytes_and_drop_the_whitespace_between_them() {
        let cases = [
            // A Cyrillic letter split between two words, in B and in Q.
            ("=?utf-8?b?0J/RgNC4?= =?utf-8?b?0LLQtdGC?=", "Привет"),
            ("=?utf-8?b?0J/R?=\r\n =?UTF-8?B?gNC4?=", "При"),
            ("=?utf-8?q?=D0?= =?utf-8?q?=9F?=", "П"),
            ("=?utf-8?q?a?=   \t =?utf-8?q?b?=", "ab"),
            ("=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c"),
            ("x =?iso-8859-1?q?caf=E9?= y", "x café y"),
            ("=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", "éé"),
            ("=?utf-8*en?q?hi_there?=", "hi there"),
            ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
            ("=?utf-8?x?bad?=", "=?utf-8?x?bad?="),
            ("a =? b ?= c", "a =? b ?= c"),
            ("  folded\r\n value  ", "folded value"),
            ("tab\r\n\tfolded\n   twice", "tab folded twice"),
            // A bare CR is no line break (mail-parser ends no line at one): the
            // message's own character stays, and the fold after it is still a fold.
            ("lone\rCR\r\n folded", "lone\rCR folded"),
            ("lone\rCR\n folded", "lone\rCR folded"),
            ("Grüße", "Grüße"),
        ];
        for (raw, expected) in cases {
            assert_eq!(decode_unstructured(raw.as_bytes()), expected, "{raw}");
        }
        assert_eq!(decode_unstructured(b"\xff ok"), "\u{FFFD} ok");
    }

    #[test]
    fn unknown_charsets_read_as_utf8() {
        assert_eq!(decode_charset(Some("x-nope"), "café".as_bytes()), "café");
        assert_eq!(decode_charset(None, b"caf\xe9"), "caf\u{FFFD}");
        assert_eq!(decode_charset(Some("iso-8859-1"), b"caf\xe9"), "café");
        assert_eq!(decode_charset(Some("UTF-7"), b"+AD4 x"), "> x");
    }
}
