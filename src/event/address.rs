//! Address headers (`From`, `To`, …) read from the raw bytes into mailboxes, leniently:
//! RFC 5322 groups, comments, routes and quoted strings, and the mistakes mail makes.
//!
//! mail-parser 0.11 runs two mailboxes without a comma into one made-up address and drops
//! the space between an encoded-word and a quoted word, so addresses are parsed here.

use super::decode::{decode_unstructured, unfold};
use super::EmailAddress;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom, dot-atom or anything else that is not a special: `john.q`, `a@b.c`.
    Word(Vec<u8>),
    /// A quoted string's content, escapes undone.
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Special(u8),
}

/// (token, whether whitespace or a comment stood before it)
fn tokens(value: &[u8]) -> Vec<(Token, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut spaced = false;
    while i < value.len() {
        let b = value[i];
        match b {
            b if b.is_ascii_whitespace() => {
                spaced = true;
                i += 1;
                continue;
            }
            b'"' => {
                let mut content = Vec::new();
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    content.extend(value.get(i));
                    i += 1;
                }
                i += 1;
                out.push((Token::Quoted(content), spaced));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut content = Vec::new();
                while i < value.len() {
                    match value[i] {
                        b'\\' => {
                            i += 1;
                            content.extend(value.get(i));
                        }
                        b'(' => {
                            if depth > 0 {
                                content.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            content.push(b')');
                        }
                        b => content.push(b),
                    }
                    i += 1;
                }
                out.push((Token::Comment(content), spaced));
                // A comment separates words like whitespace does.
                spaced = true;
                continue;
            }
            b'<' | b'>' | b',' | b':' | b';' => {
                out.push((Token::Special(b), spaced));
                i += 1;
            }
            _ => {
                let start = i;
                while i < value.len()
                    && !value[i].is_ascii_whitespace()
                    && !b"\"(<>,:;".contains(&value[i])
                {
                    i += 1;
                }
                out.push((Token::Word(value[start..i].to_vec()), spaced));
            }
        }
        spaced = false;
    }
    out
}

/// One mailbox being read.
#[derive(Default)]
struct Pending {
    phrase: Vec<(Token, bool)>,
    comments: Vec<Vec<u8>>,
    /// `Some` once `<` was seen; the address read inside the brackets so far.
    angle: Option<Vec<u8>>,
    angle_closed: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.phrase.is_empty() && self.angle.is_none()
    }

    fn finish(self, out: &mut Vec<EmailAddress>) {
        if let Some(address) = self.angle {
            let address = String::from_utf8_lossy(&address).into_owned();
            out.push(EmailAddress {
                name: phrase_text(&self.phrase),
                address: (!address.is_empty()).then_some(address),
            });
            return;
        }
        // No angle brackets: the words are an address, `a@b (Name)` in the old style.
        let at_words = self
            .phrase
            .iter()
            .filter(|(t, _)| matches!(t, Token::Word(w) if w.contains(&b'@')))
            .count();
        if at_words > 1 {
            // `a@b c@d`: a missing comma; each is an address, nothing is made up.
            for (token, _) in &self.phrase {
                if let Token::Word(word) = token {
                    if word.contains(&b'@') {
                        out.push(EmailAddress {
                            name: None,
                            address: Some(String::from_utf8_lossy(word).into_owned()),
                        });
                    }
                }
            }
            return;
        }
        // `Ann ann@example.com`: a name before a bare address, brackets forgotten.
        let full_address = |w: &[u8]| {
            w.iter()
                .position(|&b| b == b'@')
                .is_some_and(|at| at > 0 && at + 1 < w.len())
        };
        if at_words == 1 && self.phrase.len() > 1 {
            let at = self
                .phrase
                .iter()
                .position(|(t, _)| matches!(t, Token::Word(w) if full_address(w)));
            if let Some(at) = at {
                let mut name = self.phrase.clone();
                if let (Token::Word(address), _) = name.remove(at) {
                    out.push(EmailAddress {
                        name: phrase_text(&name),
                        address: Some(String::from_utf8_lossy(&address).into_owned()),
                    });
                    return;
                }
            }
        }
        let words = self
            .phrase
            .iter()
            .filter(|(t, _)| !matches!(t, Token::Comment(_)));
        if at_words == 0 && self.phrase.len() > 1 {
            // Words and no address at all: a name, not an address.
            out.push(EmailAddress {
                name: phrase_text(&self.phrase),
                address: None,
            });
            return;
        }
        let mut address = Vec::new();
        for (token, _) in words {
            push_address_token(&mut address, token);
        }
        if address.is_empty() {
            return;
        }
        let name = self
            .comments
            .first()
            .map(|c| decode_unstructured(c))
            .filter(|c| !c.is_empty());
        out.push(EmailAddress {
            name,
            address: Some(String::from_utf8_lossy(&address).into_owned()),
        });
    }
}

fn push_address_token(address: &mut Vec<u8>, token: &Token) {
    match token {
        Token::Word(word) => address.extend_from_slice(word),
        // A quoted local part stays quoted: `"john doe"@example.com`.
        Token::Quoted(content) => {
            address.push(b'"');
            for &b in content {
                if b == b'"' || b == b'\\' {
                    address.push(b'\\');
                }
                address.push(b);
            }
            address.push(b'"');
        }
        Token::Comment(_) | Token::Special(_) => {}
    }
}

/// The display name: the words joined as written (one space where there was any) and
/// then decoded like any header text, so encoded-words lose the space between them and
/// keep the one before a quoted word.
fn phrase_text(phrase: &[(Token, bool)]) -> Option<String> {
    let mut joined = Vec::new();
    for (token, spaced) in phrase {
        let text = match token {
            Token::Word(bytes) | Token::Quoted(bytes) => bytes,
            Token::Comment(_) | Token::Special(_) => continue,
        };
        if *spaced && !joined.is_empty() {
            joined.push(b' ');
        }
        joined.extend_from_slice(text);
    }
    let name = decode_unstructured(&joined);
    (!name.is_empty()).then_some(name)
}

/// Every mailbox in one address header's raw value, groups flattened.
pub(super) fn parse_addresses(raw: &[u8]) -> Vec<EmailAddress> {
    let value = unfold(raw);
    let mut out = Vec::new();
    let mut pending = Pending::default();
    for (token, spaced) in tokens(&value) {
        let in_angle = pending.angle.is_some() && !pending.angle_closed;
        match token {
            Token::Special(b'<') if !in_angle => {
                if pending.angle_closed {
                    // `A <a@x> B <b@x>`: a missing comma between two mailboxes.
                    std::mem::take(&mut pending).finish(&mut out);
                }
                pending.angle = Some(Vec::new());
            }
            Token::Special(b'>') if in_angle => pending.angle_closed = true,
            // `<@route1,@route2:user@host>`: the obsolete route is dropped.
            Token::Special(b':' | b',') if in_angle => {
                if let Some(address) = &mut pending.angle {
                    address.clear();
                }
            }
            Token::Special(b':') => {
                // A group name; its members are listed like any other mailbox.
                pending = Pending::default();
            }
            Token::Special(b',' | b';') => {
                if !pending.is_empty() {
                    std::mem::take(&mut pending).finish(&mut out);
                }
            }
            Token::Special(_) => {}
            Token::Comment(comment) => {
                if !in_angle {
                    pending.comments.push(comment);
                }
            }
            word @ (Token::Word(_) | Token::Quoted(_)) => {
                if in_angle {
                    if let Some(address) = &mut pending.angle {
                        push_address_token(address, &word);
                    }
                } else {
                    if pending.angle_closed {
                        std::mem::take(&mut pending).finish(&mut out);
                    }
                    pending.phrase.push((word, spaced));
                }
            }
        }
    }
    if !pending.is_empty() {
        pending.finish(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> Vec<(Option<String>, Option<String>)> {
        parse_addresses(raw.as_bytes())
            .into_iter()
            .map(|a| (a.name, a.address))
            .collect()
    }

    fn named(name: &str, address: &str) -> (Option<String>, Option<String>) {
        (Some(name.to_owned()), Some(address.to_owned()))
    }

    fn bare(address: &str) -> (Option<String>, Option<String>) {
        (None, Some(address.to_owned()))
    }

    #[test]
    fn addresses_read_as_rfc_5322_and_its_appendix_write_them() {
        let cases = [
            ("a@example.com", vec![bare("a@example.com")]),
            ("Ann <a@example.com>", vec![named("Ann", "a@example.com")]),
            (
                "\"Doe, John\" <j@x.test>",
                vec![named("Doe, John", "j@x.test")],
            ),
            (
                "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
                vec![named("Pete", "pete@silly.test")],
            ),
            (
                "Mary Smith <@machine.tld:mary@example.net>, , jdoe@test.example",
                vec![
                    named("Mary Smith", "mary@example.net"),
                    bare("jdoe@test.example"),
                ],
            ),
            (
                "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, z@x",
                vec![
                    named("Ed Jones", "c@a.test"),
                    bare("joe@where.test"),
                    named("John", "jdoe@one.test"),
                    bare("z@x"),
                ],
            ),
            ("undisclosed-recipients:;", vec![]),
            (
                "old@example.com (Old Style)",
                vec![named("Old Style", "old@example.com")],
            ),
            (
                "\"john doe\"@example.com",
                vec![bare("\"john doe\"@example.com")],
            ),
            (
                "=?utf-8?q?Gabr=C3=ADel?= \"A.\" <g@example.is>",
                vec![named("Gabríel A.", "g@example.is")],
            ),
            (
                "=?utf-8?q?=D0=94?= =?utf-8?q?=D0=BC?= <d@x.ru>",
                vec![named("Дм", "d@x.ru")],
            ),
            (
                "Jörg <jörg@bücher.example>",
                vec![named("Jörg", "jörg@bücher.example")],
            ),
            // Mistakes seen in real mail: nothing made up, nothing lost.
            (
                "Bob Dunite <bob@extern> Bobby Dunite <bobby@extern>",
                vec![
                    named("Bob Dunite", "bob@extern"),
                    named("Bobby Dunite", "bobby@extern"),
                ],
            ),
            ("a@x b@y", vec![bare("a@x"), bare("b@y")]),
            (
                "Ann Example ann@example.com",
                vec![named("Ann Example", "ann@example.com")],
            ),
            ("john.doe @ example.com", vec![bare("john.doe@example.com")]),
            ("<a@x><b@y>", vec![bare("a@x"), bare("b@y")]),
            ("Ann <a@example.com", vec![named("Ann", "a@example.com")]),
            ("<>", vec![(None, None)]),
            ("Just A Name", vec![(Some("Just A Name".to_owned()), None)]),
        ];
        for (raw, expected) in cases {
            assert_eq!(read(raw), expected, "{raw}");
        }
        for junk in [
            "",
            ",",
            ";;",
            "<",
            ">",
            "\"",
            "(",
            ")",
            ":",
            "<:>",
            "a <b <c>> d",
        ] {
            parse_addresses(junk.as_bytes());
        }
    }
}
