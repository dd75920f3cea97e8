//! Sans-IO decoding of what a POP3 server sends: status lines, multi-line bodies
//! (dot-unstuffed, terminators kept as received) and listing lines, with line and size bounds.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// A line longer than this (terminator included) without an LF is an error.
pub const DEFAULT_MAX_LINE: usize = 512 * 1024;

/// Longest server-chosen text we copy into an [`ErrReply`]; the rest is cut so that a
/// hostile server cannot flood the logs through a half-megabyte `-ERR` line.
const MAX_REPLY_TEXT: usize = 300;

/// How many characters of hostile input a [`CodecError::Malformed`] message may quote.
const MAX_QUOTE: usize = 100;

/// RFC 1939: a unique-id is 1 to 70 characters in the range 0x21..=0x7E.
const MAX_UID_LEN: usize = 70;

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Text after `+OK` (one leading space stripped, no line terminator).
    Ok(Bytes),
    /// A `-ERR` reply.
    Err(ErrReply),
    /// A SASL continuation (`+ text` or a lone `+`): the text after `+ `, possibly empty.
    Continue(Bytes),
}

/// A `-ERR` reply, with its RFC 2449 response code if the server sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrReply {
    pub code: Option<ResponseCode>,
    /// Lossy UTF-8 of the rest of the line, code bracket removed, trimmed; control
    /// characters replaced by U+FFFD and cut at a few hundred characters, because this text
    /// ends up in logs.
    pub text: String,
}

/// Response codes of RFC 2449 and RFC 3206; they tell a transient failure from a permanent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: another session holds the maildrop lock.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too soon after the last session.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server-side problem.
    SysTemp,
    /// `[SYS/PERM]`: a permanent server-side problem.
    SysPerm,
    /// `[AUTH]`: the credentials are wrong.
    Auth,
    /// Any other bracketed code, as the server spelled it.
    Other(String),
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseCode::InUse => "IN-USE",
            ResponseCode::LoginDelay => "LOGIN-DELAY",
            ResponseCode::SysTemp => "SYS/TEMP",
            ResponseCode::SysPerm => "SYS/PERM",
            ResponseCode::Auth => "AUTH",
            ResponseCode::Other(code) => code,
        })
    }
}

/// A response the decoder cannot accept. Every variant is fatal for the session: the
/// buffer is left in an unspecified state, so the connection must be dropped.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error(
        "server sent a line over {limit} bytes without a line end; the session is dropped \
         (is this really a POP3 server?)"
    )]
    LineTooLong { limit: usize },
    #[error("multi-line response exceeded {limit} bytes; the session is dropped")]
    ResponseTooLarge { limit: usize },
    #[error("server sent a malformed response: {0}; the session is dropped")]
    Malformed(String),
}

/// Decodes one status line at a time. Never consumes more than that one line, so
/// pipelined responses stay in the buffer for the next decoder.
///
/// A decoder belongs to one buffer: between calls it remembers how far it searched.
#[derive(Debug, Clone)]
pub struct StatusDecoder {
    max_line: usize,
    /// Bytes at the front of the buffer already searched for LF without success.
    scanned: usize,
}

impl StatusDecoder {
    /// `max_line` bounds a line including its terminator.
    pub fn new(max_line: usize) -> Self {
        StatusDecoder {
            max_line,
            scanned: 0,
        }
    }

    /// `Ok(None)`: the line is incomplete; append more bytes and call again.
    /// Otherwise consumes exactly one line including its terminator.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Status>, CodecError> {
        let Some(len) = find_line_end(buf, &mut self.scanned, self.max_line)? else {
            return Ok(None);
        };
        parse_status(buf.split_to(len).freeze()).map(Some)
    }
}

fn parse_status(line: Bytes) -> Result<Status, CodecError> {
    let content = line.slice(..strip_line_end(&line).len());
    // Case-insensitive and lenient about the space after the keyword: a server that gets
    // the spelling slightly wrong still gave an unambiguous answer.
    if starts_with_ignore_case(&content, b"+OK") {
        let mut text = content.slice(3..);
        if text.first() == Some(&b' ') {
            text.advance(1);
        }
        Ok(Status::Ok(text))
    } else if starts_with_ignore_case(&content, b"-ERR") {
        Ok(Status::Err(ErrReply::parse(&content[4..])))
    } else if &content[..] == b"+" {
        Ok(Status::Continue(Bytes::new()))
    } else if content.starts_with(b"+ ") {
        Ok(Status::Continue(content.slice(2..)))
    } else {
        Err(CodecError::Malformed(format!(
            "status line {} is neither +OK, -ERR nor a \"+\" continuation",
            quote(&content)
        )))
    }
}

impl ErrReply {
    fn parse(rest: &[u8]) -> ErrReply {
        let rest = rest.trim_ascii_start();
        if let Some(inner) = rest.strip_prefix(b"[") {
            if let Some(close) = inner.iter().position(|&b| b == b']') {
                return ErrReply {
                    code: Some(ResponseCode::parse(&inner[..close])),
                    text: sanitize(&inner[close + 1..]),
                };
            }
        }
        ErrReply {
            code: None,
            text: sanitize(rest),
        }
    }
}

impl ResponseCode {
    fn parse(inner: &[u8]) -> ResponseCode {
        let inner = inner.trim_ascii();
        let known = [
            (&b"IN-USE"[..], ResponseCode::InUse),
            (b"LOGIN-DELAY", ResponseCode::LoginDelay),
            (b"SYS/TEMP", ResponseCode::SysTemp),
            (b"SYS/PERM", ResponseCode::SysPerm),
            (b"AUTH", ResponseCode::Auth),
        ];
        known
            .into_iter()
            .find(|(name, _)| inner.eq_ignore_ascii_case(name))
            .map(|(_, code)| code)
            .unwrap_or_else(|| ResponseCode::Other(sanitize(inner)))
    }
}

/// Decodes the body of a multi-line response (the part after its `+OK` line) up to the
/// terminating `.` line, which it consumes but does not return.
///
/// Lines starting with `..` lose their first `.`; everything else, line terminators
/// included (CRLF or bare LF), is returned exactly as received. A line `.x` is kept as is:
/// a correct server never sends one, and keeping the byte loses nothing from a server that
/// forgot to dot-stuff. After returning a body the decoder is ready for the next response.
///
/// A decoder belongs to one buffer: between calls it remembers how far it searched.
#[derive(Debug, Clone)]
pub struct MultiLineDecoder {
    max_line: usize,
    max_total: usize,
    /// Unstuffed lines of the response so far.
    body: BytesMut,
    /// Bytes of the incomplete line at the front of the buffer already searched for LF.
    scanned: usize,
}

impl MultiLineDecoder {
    /// `max_line` bounds each line including its terminator; `max_total` bounds the body.
    pub fn new(max_line: usize, max_total: usize) -> Self {
        Self::with_capacity(max_line, max_total, 0)
    }

    /// Like `new`, with room for `expected` body bytes reserved up front (LIST's size):
    /// a large message is then copied once, not re-allocated as it doubles.
    pub fn with_capacity(max_line: usize, max_total: usize, expected: usize) -> Self {
        MultiLineDecoder {
            max_line,
            max_total,
            body: BytesMut::with_capacity(expected.min(max_total)),
            scanned: 0,
        }
    }

    /// `Ok(None)`: the terminator has not arrived; append more bytes and call again.
    /// Complete lines are moved out of `buf` as they are decoded, an incomplete one stays.
    ///
    /// Why this is linear in the response size however it is chunked: the LF search
    /// starts where the previous call stopped (`scanned`), so every byte is searched once;
    /// each complete line is then copied into `body` once, after looking at no more than
    /// its first three bytes. Nothing is ever rescanned.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let mut start = 0;
        let finished = loop {
            let Some(len) = find_line_end(&buf[start..], &mut self.scanned, self.max_line)? else {
                break false;
            };
            let line = &buf[start..start + len];
            start += len;
            if line == b".\r\n" || line == b".\n" {
                break true;
            }
            let line = if line.starts_with(b"..") {
                &line[1..]
            } else {
                line
            };
            if self.body.len() + line.len() > self.max_total {
                return Err(CodecError::ResponseTooLarge {
                    limit: self.max_total,
                });
            }
            self.body.extend_from_slice(line);
        };
        // One advance per call rather than one per line keeps short-line listings cheap.
        buf.advance(start);
        Ok(finished.then(|| self.body.split().freeze()))
    }

    /// Body bytes decoded so far for the response in progress (for progress and size checks).
    pub fn received(&self) -> usize {
        self.body.len()
    }
}

/// Finds the end of the line at the front of `pending`, resuming the search at `*scanned`.
/// Returns the line's length including its LF, or `None` (and remembers how far it got).
///
/// Only the first `max_line` bytes are ever searched: once that many are buffered without
/// an LF the line is too long, whether or not more bytes have arrived, so memory stays bounded.
fn find_line_end(
    pending: &[u8],
    scanned: &mut usize,
    max_line: usize,
) -> Result<Option<usize>, CodecError> {
    let window = pending.len().min(max_line);
    // `min` so that a caller who shrank the buffer behind our back gets a rescan, not a panic.
    let from = (*scanned).min(window);
    match pending[from..window].iter().position(|&b| b == b'\n') {
        Some(at) => {
            *scanned = 0;
            Ok(Some(from + at + 1))
        }
        None if !pending.is_empty() && window == max_line => {
            Err(CodecError::LineTooLong { limit: max_line })
        }
        None => {
            *scanned = window;
            Ok(None)
        }
    }
}

/// Lines of a multi-line body: split at LF, a trailing CR stripped, no empty piece after a
/// final LF.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lines { rest: body }
}

struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&self.rest[..at], &self.rest[at + 1..]),
            None => (self.rest, &b""[..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// The text of a `STAT` reply, `"2 320"` → `(2, 320)`: message count and mailbox size in
/// octets. Text after the two numbers is allowed (RFC 1939 lets servers add some).
pub fn parse_stat(ok_text: &[u8]) -> Result<(u32, u64), CodecError> {
    let mut words = words(ok_text);
    let parsed = number(words.next(), "message count")
        .and_then(|count| Ok((count, number(words.next(), "mailbox size")?)));
    parsed.map_err(|reason| {
        CodecError::Malformed(format!(
            "STAT reply {} is not \"<count> <octets>\": {reason}",
            quote(ok_text)
        ))
    })
}

/// One line of a `LIST` listing, `"1 1205"` → `(1, 1205)`: message number and size in
/// octets. Text after the two numbers is allowed.
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), CodecError> {
    let mut words = words(line);
    let parsed = message_number(words.next())
        .and_then(|msg| Ok((msg, number(words.next(), "message size")?)));
    parsed.map_err(|reason| {
        CodecError::Malformed(format!(
            "LIST line {} is not \"<msg> <octets>\": {reason}",
            quote(line)
        ))
    })
}

/// One line of a `UIDL` listing, `"1 whqtswO00WBw418f9t5JxYwZ"` → `(1, "whqtswO00WBw418f9t5JxYwZ")`.
///
/// The unique-id must be what RFC 1939 allows (1 to 70 bytes, each 0x21..=0x7E). It is
/// checked rather than cut or cleaned because it is the key that decides whether a
/// message was already delivered: guessing here could deliver twice or never.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), CodecError> {
    let line_trimmed = line.trim_ascii();
    let split = line_trimmed
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(line_trimmed.len());
    let (msg, uid) = line_trimmed.split_at(split);
    let parsed = message_number(Some(msg)).and_then(|msg| Ok((msg, unique_id(uid.trim_ascii())?)));
    parsed.map_err(|reason| {
        CodecError::Malformed(format!(
            "UIDL line {} is not \"<msg> <unique-id>\": {reason}",
            quote(line)
        ))
    })
}

fn unique_id(uid: &[u8]) -> Result<String, String> {
    if uid.is_empty() {
        return Err("the unique-id is missing".into());
    }
    if uid.len() > MAX_UID_LEN {
        return Err(format!(
            "the unique-id is {} bytes long, RFC 1939 allows at most {MAX_UID_LEN}",
            uid.len()
        ));
    }
    if let Some(at) = uid.iter().position(|b| !(0x21..=0x7E).contains(b)) {
        return Err(format!(
            "the unique-id has byte 0x{:02X} at position {at}, RFC 1939 allows only 0x21..=0x7E",
            uid[at]
        ));
    }
    // Every byte is printable ASCII, so this conversion cannot fail or change anything.
    Ok(uid.iter().map(|&b| char::from(b)).collect())
}

/// The capabilities of a `CAPA` body, one entry per non-empty line, trimmed, as the server
/// spelled them (compare case-insensitively), except that control characters become
/// U+FFFD: `pophook check` prints these lines, and a server must not write to the terminal.
pub fn parse_capa(body: &[u8]) -> Vec<String> {
    lines(body)
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .map(|line| crate::text::one_line(line, usize::MAX))
        .collect()
}

fn words(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty())
}

fn message_number(word: Option<&[u8]>) -> Result<u32, String> {
    match number(word, "message number")? {
        0 => Err("message number 0 does not exist, POP3 numbers messages from 1".into()),
        msg => Ok(msg),
    }
}

/// A decimal number. Digits only: `str::parse` would also take a sign, which no server sends.
fn number<T: std::str::FromStr>(word: Option<&[u8]>, what: &str) -> Result<T, String> {
    let word = word
        .filter(|word| !word.is_empty())
        .ok_or_else(|| format!("the {what} is missing"))?;
    if !word.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "the {what} {} is not a decimal number",
            quote(word)
        ));
    }
    std::str::from_utf8(word)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| format!("the {what} {} is out of range", quote(word)))
}

/// The line without its LF and one CR before it.
fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Server text for a human (see [`crate::text::one_line`]).
fn sanitize(text: &[u8]) -> String {
    crate::text::one_line(text, MAX_REPLY_TEXT)
}

/// Hostile bytes quoted for an error message: escaped so they cannot forge log lines,
/// and capped so they cannot flood them.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        if out.len() > MAX_QUOTE {
            out.push_str(&format!("\"… ({} bytes)", bytes.len()));
            return out;
        }
        out.extend(std::ascii::escape_default(b).map(char::from));
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
