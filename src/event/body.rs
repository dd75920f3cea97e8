//! Which parts are the message's text and HTML, decoded from the raw bytes: the best of
//! each `multipart/alternative`, the root of each `multipart/related`, all of `mixed`.
//!
//! mail-parser decides structure; the choice among alternatives, the lenient transfer
//! decoding and the charsets are ours, so that no body is lost or shown twice.

use mail_parser::{HeaderName, HeaderValue, Message, MessagePart, MimeHeaders, PartType};

use super::decode::{decode_base64_lenient, decode_charset, decode_quoted_printable_lenient};
use super::html::{html_to_text, text_to_html};
use super::params::{self, Params};

/// Deeper than this, multiparts are read as `mixed` without recursion, so a hostile
/// message cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Html,
}

/// The bodies and the parts that are attachments, by index into `message.parts`.
#[derive(Debug, Default)]
pub(super) struct Bodies {
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<usize>,
}

pub(super) fn bodies(raw: &[u8], message: &Message<'_>) -> Bodies {
    // Flags by part index rather than searches through lists, so that a message of many
    // thousands of parts stays linear.
    let mut listed = vec![false; message.parts.len()];
    for &id in &message.attachments {
        if let Some(flag) = listed.get_mut(id as usize) {
            *flag = true;
        }
    }
    let reader = Reader {
        raw,
        message,
        listed,
    };
    let mut dropped = Vec::new();
    let text_parts = reader.walk(0, Kind::Plain, 0, &mut dropped);
    let html_parts = reader.walk(0, Kind::Html, 0, &mut dropped);

    let text = reader.join(&text_parts, Kind::Plain);
    let html = html_parts
        .iter()
        .any(|&(_, kind)| kind == Kind::Html)
        .then(|| reader.join(&html_parts, Kind::Html))
        .flatten();

    // Attachments: what mail-parser lists, less the parts we read as bodies, plus text
    // parts that are neither a body nor a lesser alternative (the non-root parts of a
    // `multipart/related`, say), so that nothing silently disappears.
    let mut skip = vec![false; message.parts.len()];
    for id in dropped
        .iter()
        .copied()
        .chain(text_parts.iter().chain(&html_parts).map(|&(id, _)| id))
    {
        if let Some(flag) = skip.get_mut(id) {
            *flag = true;
        }
    }
    let attachments = (0..message.parts.len())
        .filter(|&id| !skip[id])
        .filter(|&id| reader.listed[id] || reader.leaf_kind(id).is_some())
        .collect();
    Bodies {
        text,
        html,
        attachments,
    }
}

struct Reader<'r, 'm> {
    raw: &'r [u8],
    message: &'r Message<'m>,
    /// Whether mail-parser listed part `i` as an attachment.
    listed: Vec<bool>,
}

impl Reader<'_, '_> {
    /// The body leaves under part `id` in order, for a reader that prefers `want`.
    /// Leaves of alternatives not chosen go to `dropped`.
    fn walk(
        &self,
        id: usize,
        want: Kind,
        depth: usize,
        dropped: &mut Vec<usize>,
    ) -> Vec<(usize, Kind)> {
        let Some(part) = self.message.parts.get(id) else {
            return Vec::new();
        };
        let PartType::Multipart(children) = &part.body else {
            return self
                .leaf_kind(id)
                .map(|kind| (id, kind))
                .into_iter()
                .collect();
        };
        let children: Vec<usize> = children.iter().map(|&c| c as usize).collect();
        if depth >= MAX_DEPTH {
            return self.flat_leaves(&children);
        }
        let subtype = part
            .content_type()
            .and_then(|ct| ct.subtype())
            .unwrap_or("mixed")
            .to_ascii_lowercase();
        match subtype.as_str() {
            // RFC 2046 §5.1.4: versions of one content, in increasing preference. Take
            // the last that is what the reader wants (for text: plain text only, not an
            // HTML version with a plain footer), else the last with anything.
            "alternative" => {
                let versions: Vec<Vec<(usize, Kind)>> = children
                    .iter()
                    .map(|&c| self.walk(c, want, depth + 1, dropped))
                    .collect();
                let fits = |v: &Vec<(usize, Kind)>| match want {
                    Kind::Plain => !v.is_empty() && v.iter().all(|&(_, k)| k == Kind::Plain),
                    Kind::Html => v.iter().any(|&(_, k)| k == Kind::Html),
                };
                let best = versions
                    .iter()
                    .rposition(fits)
                    .or_else(|| versions.iter().rposition(|v| !v.is_empty()));
                let mut chosen = Vec::new();
                for (n, version) in versions.into_iter().enumerate() {
                    if Some(n) == best {
                        chosen = version;
                    } else {
                        dropped.extend(version.into_iter().map(|(id, _)| id));
                    }
                }
                chosen
            }
            // RFC 2387: the root (named by `start`, else the first part) is the body;
            // the other parts are what it refers to.
            "related" => {
                let start = part
                    .headers
                    .iter()
                    .find(|h| h.name == HeaderName::ContentType)
                    .map(|h| self.params(h))
                    .and_then(|p| p.get("start").map(|s| trim_id(s).to_owned()));
                let root = start
                    .and_then(|start| {
                        children
                            .iter()
                            .copied()
                            .find(|&c| self.content_id(c).as_deref() == Some(start.as_str()))
                    })
                    .or(children.first().copied());
                root.map(|root| self.walk(root, want, depth + 1, dropped))
                    .unwrap_or_default()
            }
            _ => children
                .iter()
                .flat_map(|&c| self.walk(c, want, depth + 1, dropped))
                .collect(),
        }
    }

    /// Every leaf under `children`, without recursion.
    fn flat_leaves(&self, children: &[usize]) -> Vec<(usize, Kind)> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = children.iter().rev().copied().collect();
        while let Some(id) = stack.pop() {
            match self.message.parts.get(id).map(|p| &p.body) {
                Some(PartType::Multipart(inner)) => {
                    stack.extend(inner.iter().rev().map(|&c| c as usize));
                }
                Some(_) => out.extend(self.leaf_kind(id).map(|kind| (id, kind))),
                None => {}
            }
        }
        out
    }

    /// Whether part `id` is body text: a `text/plain` (or untyped) or `text/html` part
    /// that is neither `Content-Disposition: attachment` nor named like a file, read
    /// from its headers. mail-parser's own verdict depends on where it met the part among
    /// alternatives, and it lists a text part it could not decode as an unnamed
    /// attachment, which loses the body.
    fn leaf_kind(&self, id: usize) -> Option<Kind> {
        let part = self.message.parts.get(id)?;
        if !matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
            return None;
        }
        // mail-parser's stand-in body for a message that ends inside its header section:
        // such a message has no body, so `text` stays null rather than "".
        if id == 0 && part.is_encoding_problem && part.offset_body as usize >= self.raw.len() {
            return None;
        }
        let content_type = self.header_params(part, HeaderName::ContentType);
        let disposition = self.header_params(part, HeaderName::ContentDisposition);
        let kind = match content_type.as_ref().map_or("", |p| p.value.as_str()) {
            "" | "text/plain" => Kind::Plain,
            "text/html" => Kind::Html,
            _ => return None,
        };
        if disposition
            .as_ref()
            .is_some_and(|p| p.value == "attachment")
        {
            return None;
        }
        // A name makes a part in a multipart a file; a message that is one text part is
        // still read, name or not.
        let named = content_type.is_some_and(|p| p.get("name").is_some())
            || disposition.is_some_and(|p| p.get("filename").is_some());
        (id == 0 || !named).then_some(kind)
    }

    /// All the leaves as one text (`Kind::Plain`) or one HTML document.
    fn join(&self, leaves: &[(usize, Kind)], target: Kind) -> Option<String> {
        let mut joined: Option<String> = None;
        for &(id, kind) in leaves {
            let Some(part) = self.message.parts.get(id) else {
                continue;
            };
            let decoded = self.decode(part);
            let rendered = match (kind, target) {
                (Kind::Plain, Kind::Html) => text_to_html(&decoded),
                (Kind::Html, Kind::Plain) => html_to_text(&decoded),
                _ => decoded,
            };
            match &mut joined {
                None => joined = Some(rendered),
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

    /// A text part's content from the raw bytes: transfer encoding undone leniently,
    /// then the charset.
    fn decode(&self, part: &MessagePart<'_>) -> String {
        let body = self
            .raw
            .get(part.offset_body as usize..part.offset_end as usize)
            .unwrap_or_default();
        let bytes = match transfer_decode(part, body) {
            // A "base64" body that is plainly not base64 is text someone mislabelled;
            // its bytes say more than whatever decoding them would.
            _ if is_base64(part) && !looks_like_base64(body) => body.into(),
            decoded => decoded,
        };
        let charset = self
            .header_params(part, HeaderName::ContentType)
            .and_then(|p| p.get("charset").map(str::to_owned));
        decode_charset(charset.as_deref(), &bytes)
    }

    fn header_params(&self, part: &MessagePart<'_>, name: HeaderName<'static>) -> Option<Params> {
        part.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.params(h))
    }

    fn params(&self, header: &mail_parser::Header<'_>) -> Params {
        let value = self
            .raw
            .get(header.offset_start as usize..header.offset_end as usize)
            .unwrap_or_default();
        params::parse(value)
    }

    fn content_id(&self, id: usize) -> Option<String> {
        let part = self.message.parts.get(id)?;
        let header = part
            .headers
            .iter()
            .find(|h| h.name == HeaderName::ContentId)?;
        let value = self
            .raw
            .get(header.offset_start as usize..header.offset_end as usize)?;
        Some(trim_id(String::from_utf8_lossy(value).trim()).to_owned())
    }
}

fn trim_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// The part's bytes with its `Content-Transfer-Encoding` undone, leniently. Read from
/// the header, since mail-parser forgets the encoding of a part it could not decode.
pub(super) fn transfer_decode<'b>(
    part: &MessagePart<'_>,
    body: &'b [u8],
) -> std::borrow::Cow<'b, [u8]> {
    match transfer_encoding(part).as_deref() {
        Some("quoted-printable") => decode_quoted_printable_lenient(body).into(),
        Some("base64") => decode_base64_lenient(body).into(),
        _ => body.into(),
    }
}

pub(super) fn is_base64(part: &MessagePart<'_>) -> bool {
    transfer_encoding(part).as_deref() == Some("base64")
}

fn looks_like_base64(body: &[u8]) -> bool {
    body.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"+/=".contains(&b) || b.is_ascii_whitespace())
}

fn transfer_encoding(part: &MessagePart<'_>) -> Option<String> {
    part.headers
        .iter()
        .find(|h| h.name == HeaderName::ContentTransferEncoding)
        .and_then(|h| match &h.value {
            HeaderValue::Text(text) => Some(text.trim().to_ascii_lowercase()),
            _ => None,
        })
}

/// Inserts the blank line a part's header section lacks, so that a part written as
/// `--b`, `Content-Type: text/html`, `<html>…` keeps its body instead of mail-parser
/// reading it (and the next boundary) as headers. `None` when nothing needed fixing.
///
/// Only the lines right after a boundary of one of `boundaries` are looked at: the first
/// line there that is neither a header field, a folded continuation nor blank starts the
/// body, as RFC 5322 readers that recover from this do.
pub(super) fn repair_part_headers(raw: &[u8], boundaries: &[Vec<u8>]) -> Option<Vec<u8>> {
    if boundaries.is_empty() {
        return None;
    }
    let is_boundary = |line: &[u8]| {
        let line = line.trim_ascii_end();
        line.strip_prefix(b"--")
            .is_some_and(|rest| boundaries.iter().any(|b| rest == b.as_slice()))
    };
    let mut out: Option<Vec<u8>> = None;
    let mut in_headers = false;
    let mut done = 0;
    let mut offset = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let start = offset;
        offset += line.len();
        if !in_headers {
            in_headers = is_boundary(line);
            continue;
        }
        let content = line.trim_ascii_end();
        if content.is_empty() {
            in_headers = false;
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' || is_header_line(content) {
            continue;
        }
        // The body starts here without its blank line.
        let fixed = out.get_or_insert_with(|| Vec::with_capacity(raw.len() + 16));
        fixed.extend_from_slice(&raw[done..start]);
        fixed.extend_from_slice(if line.ends_with(b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        });
        done = start;
        in_headers = is_boundary(line);
    }
    out.map(|mut fixed| {
        fixed.extend_from_slice(&raw[done..]);
        fixed
    })
}

/// `Name:` with a name of printable ASCII other than `:` (RFC 5322 §3.6.8), allowing the
/// whitespace before the colon that old mail has.
fn is_header_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = line[..colon].trim_ascii_end();
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
}

/// Whether some part lacks the blank line after its headers: a part's header section,
/// as mail-parser read it, holds a line that is no header field, or bytes no part covers
/// (where a part mail-parser lost lies) need the repair. Only header sections and such
/// gaps are read, so a large healthy message costs next to nothing.
pub(super) fn needs_header_repair(raw: &[u8], message: &Message<'_>) -> bool {
    let bad_section = message.parts.iter().skip(1).any(|part| {
        let Some(section) = raw.get(part.offset_header as usize..part.offset_body as usize) else {
            return false;
        };
        for line in section.split(|&b| b == b'\n') {
            let content = line.trim_ascii_end();
            if content.is_empty() {
                return false;
            }
            if !(line[0] == b' ' || line[0] == b'\t' || is_header_line(content)) {
                return true;
            }
        }
        false
    });
    if bad_section {
        return true;
    }
    // What each part covers: a multipart only its header section (its children cover
    // the rest), any other part all of itself.
    let mut covered: Vec<(usize, usize)> = message
        .parts
        .iter()
        .map(|part| {
            let end = match part.body {
                PartType::Multipart(_) => part.offset_body,
                _ => part.offset_end,
            };
            (part.offset_header as usize, end as usize)
        })
        .collect();
    covered.sort_unstable();
    let boundaries = boundaries(message);
    let mut from = 0;
    for (start, end) in covered.into_iter().chain([(raw.len(), raw.len())]) {
        if start > from {
            let gap = raw.get(from..start).unwrap_or_default();
            if repair_part_headers(gap, &boundaries).is_some() {
                return true;
            }
        }
        from = from.max(end);
    }
    false
}

/// Every multipart boundary mail-parser found, so the repair knows which lines are
/// boundaries.
pub(super) fn boundaries(message: &Message<'_>) -> Vec<Vec<u8>> {
    message
        .parts
        .iter()
        .filter_map(|part| part.content_type())
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .filter_map(|ct| ct.attribute("boundary"))
        .map(|b| b.as_bytes().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_without_its_blank_line_gets_one_and_nothing_else_changes() {
        let b = vec![b"b".to_vec()];
        let fix = |raw: &str| {
            repair_part_headers(raw.as_bytes(), &b).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            fix("--b\nContent-Type: text/html\n<p>x</p>\n--b--\n").as_deref(),
            Some("--b\nContent-Type: text/html\n\n<p>x</p>\n--b--\n")
        );
        assert_eq!(
            fix("--b\r\nContent-Type: text/plain\r\n text\r\n--b\r\nX: y\r\n--b--\r\n").as_deref(),
            Some("--b\r\nContent-Type: text/plain\r\n text\r\n\r\n--b\r\nX: y\r\n\r\n--b--\r\n")
        );
        for fine in [
            "--b\nContent-Type: text/plain\n\nbody\n--b--\n",
            "--b\n\nno headers\n--b--\n",
            "not a boundary\n<p>\n",
            "--bb\nContent-Type: text/plain\nbody\n",
        ] {
            assert_eq!(fix(fine), None, "{fine}");
        }
        assert_eq!(repair_part_headers(b"--b\nx\n", &[]), None);
    }

    /// The check that spares healthy messages the full scan must still see both ways a
    /// missing blank line shows: junk in a header section, or a part mail-parser lost.
    #[test]
    fn only_messages_that_need_it_are_scanned_for_the_repair() {
        let needs = |raw: &str| {
            let message = mail_parser::MessageParser::default()
                .parse(raw.as_bytes())
                .unwrap();
            needs_header_repair(raw.as_bytes(), &message)
        };
        let head = "Subject: x\nContent-Type: multipart/mixed; boundary=\"b\"\n\n";
        assert!(!needs(&format!(
            "{head}preamble\n--b\nContent-Type: text/plain\n\nhi\n--b\n\
             Content-Type: message/rfc822\n\nSubject: in\n\nbody\n--b--\nepilogue\n"
        )));
        assert!(!needs("Subject: x\n\njust text\n--b\nnot: a part\n"));
        // Junk in the first part's headers; the last part lost entirely.
        assert!(needs(&format!(
            "{head}--b\nContent-Type: text/plain\ntext\n--b\n\
             Content-Type: text/html\n\n<p>x</p>\n--b--\n"
        )));
        assert!(needs(&format!(
            "{head}--b\nContent-Type: text/plain\n\ntext\n--b\n\
             Content-Type: text/html\n<p>x</p>\n--b--\n"
        )));
    }
}
