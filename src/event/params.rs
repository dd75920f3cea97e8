//! `Content-Type` and `Content-Disposition` values read from the raw header bytes:
//! the leading `type/subtype` or disposition, and parameters with RFC 2231 and RFC 2047.
//!
//! mail-parser 0.11 keeps the whitespace between encoded-words in a parameter and loses
//! a parameter whose value starts on a folded line, so attachment names are read here.

use super::decode::{decode_charset, decode_unstructured, unescape_hex, unfold};

/// A parsed `value; name=param; …` field.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Params {
    /// The part before the first `;`, lower case, e.g. `text/plain` or `attachment`.
    pub value: String,
    /// Parameter names in lower case with their decoded values, RFC 2231 continuations
    /// already joined.
    pub params: Vec<(String, String)>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `name…=value` item before continuations are joined.
struct Item {
    /// The name without `*N` and `*`.
    base: String,
    /// The continuation number, for `name*N` and `name*N*`.
    section: Option<u32>,
    /// `name*` or `name*N*`: percent-encoded, possibly with `charset'lang'` first.
    extended: bool,
    value: Vec<u8>,
}

pub(super) fn parse(raw: &[u8]) -> Params {
    let unfolded = unfold(raw);
    let items = split_items(&unfolded);
    let mut items = items.into_iter();
    let value = items
        .next()
        .map(|first| {
            String::from_utf8_lossy(first.trim_ascii())
                .to_ascii_lowercase()
                .replace(char::is_whitespace, "")
        })
        .unwrap_or_default();

    let mut parsed: Vec<Item> = Vec::new();
    for item in items {
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = String::from_utf8_lossy(item[..eq].trim_ascii()).to_ascii_lowercase();
        let value = unquote(item[eq + 1..].trim_ascii());
        let (name, extended) = match name.strip_suffix('*') {
            Some(name) => (name.to_owned(), true),
            None => (name, false),
        };
        let (base, section) = match name.rsplit_once('*') {
            Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
                (base.to_owned(), n.parse().ok())
            }
            _ => (name, None),
        };
        if base.is_empty() {
            continue;
        }
        parsed.push(Item {
            base,
            section,
            extended,
            value,
        });
    }

    let mut params: Vec<(String, String)> = Vec::new();
    for item in &parsed {
        if params.iter().any(|(name, _)| *name == item.base) {
            continue;
        }
        let same: Vec<&Item> = parsed.iter().filter(|i| i.base == item.base).collect();
        params.push((item.base.clone(), assemble(&same)));
    }
    Params { value, params }
}

/// The value of one parameter from all its items. RFC 2231 forms win over a plain
/// `name=`, which senders add as a fallback for old readers.
fn assemble(items: &[&Item]) -> String {
    let mut sections: Vec<&Item> = items
        .iter()
        .copied()
        .filter(|i| i.section.is_some())
        .collect();
    if sections.is_empty() {
        if let Some(ext) = items.iter().find(|i| i.extended) {
            let (charset, bytes) = percent_decoded_with_charset(&ext.value);
            return decode_charset(charset.as_deref(), &bytes);
        }
        // A plain value: encoded-words in it are not RFC-conformant but common, and
        // whitespace between them goes as in any header (RFC 2047 §6.2).
        return items
            .first()
            .map_or_else(String::new, |i| decode_unstructured(&i.value));
    }
    sections.sort_by_key(|i| i.section);
    let mut charset = None;
    let mut bytes = Vec::new();
    for (n, item) in sections.iter().enumerate() {
        if item.extended {
            if n == 0 {
                let (cs, decoded) = percent_decoded_with_charset(&item.value);
                charset = cs;
                bytes.extend(decoded);
            } else {
                bytes.extend(percent_decode(&item.value));
            }
        } else {
            bytes.extend_from_slice(&item.value);
        }
    }
    decode_charset(charset.as_deref(), &bytes)
}

/// `charset'language'%XX…` → (charset, bytes); without the two quotes, all is value.
fn percent_decoded_with_charset(value: &[u8]) -> (Option<String>, Vec<u8>) {
    let mut parts = value.splitn(3, |&b| b == b'\'');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(charset), Some(_language), Some(rest)) => {
            let charset = String::from_utf8_lossy(charset).trim().to_owned();
            (
                (!charset.is_empty()).then_some(charset),
                percent_decode(rest),
            )
        }
        _ => (None, percent_decode(value)),
    }
}

fn percent_decode(value: &[u8]) -> Vec<u8> {
    unescape_hex(value, b'%', false)
}

/// A quoted string without its quotes and escapes, or a token as it is.
fn unquote(value: &[u8]) -> Vec<u8> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => break,
            b'\\' => out.extend(bytes.next()),
            b => out.push(b),
        }
    }
    out
}

/// The `;`-separated items, with comments outside quoted strings removed.
fn split_items(value: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut item = Vec::new();
    let (mut depth, mut quoted) = (0usize, false);
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' if quoted || depth > 0 => {
                if depth == 0 {
                    item.push(b);
                    item.extend(bytes.next());
                } else {
                    bytes.next();
                }
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            b'"' => {
                quoted = !quoted;
                item.push(b);
            }
            b';' if !quoted => items.push(std::mem::take(&mut item)),
            b => item.push(b),
        }
    }
    items.push(item);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(raw: &str, name: &str) -> Option<String> {
        parse(raw.as_bytes()).get(name).map(str::to_owned)
    }

    #[test]
    fn parameters_decode_every_way_mail_writes_them() {
        let cases = [
            ("attachment; filename=plain.txt", "plain.txt"),
            (
                "attachment; filename=\"quoted; \\\"x\\\".txt\"",
                "quoted; \"x\".txt",
            ),
            // A fold right after `=`.
            ("attachment; filename=\r\n\t\"folded.txt\"", "folded.txt"),
            ("attachment; filename =  \"spaced.txt\"", "spaced.txt"),
            // Encoded-words in a quoted value, folded: the whitespace between goes.
            (
                "attachment; filename=\"=?utf-8?q?sygn?=\r\n       =?utf-8?q?=2E2Ds?=\"",
                "sygn.2Ds",
            ),
            ("attachment; filename*=utf-8''%E2%82%AC.txt", "€.txt"),
            ("attachment; filename*=iso-8859-1'de'Gr%FC%DFe", "Grüße"),
            ("attachment; filename*=''no-charset", "no-charset"),
            (
                "attachment; filename*1=\"b.txt\"; filename*0*=utf-8''%C3%A4-",
                "ä-b.txt",
            ),
            // RFC 2231 wins over the fallback, wherever it stands.
            (
                "attachment; filename=old.txt; filename*=utf-8''new.txt",
                "new.txt",
            ),
            (
                "attachment (a comment); filename=\"(not a comment)\"",
                "(not a comment)",
            ),
            ("attachment; filename=\"Übersicht.txt\"", "Übersicht.txt"),
            ("attachment; FileName=\"case.txt\"", "case.txt"),
        ];
        for (raw, expected) in cases {
            assert_eq!(get(raw, "filename").as_deref(), Some(expected), "{raw}");
        }
        assert_eq!(parse(b"Text/Plain ; charset=utf-8").value, "text/plain");
        assert_eq!(
            get("text/plain; charset=\"UTF-8\"", "charset").unwrap(),
            "UTF-8"
        );
        assert_eq!(get("attachment", "filename"), None);
        for junk in [
            "",
            ";",
            "=",
            ";;=;",
            "a; =b",
            "a; b*=",
            "a; b*9999999999=x",
            "\"",
            "(",
        ] {
            parse(junk.as_bytes());
        }
    }
}
