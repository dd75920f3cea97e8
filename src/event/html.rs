//! HTML to plain text for the `text` field when a message has no plain-text part, and
//! plain text to HTML for joining a text part into the `html` field.

use std::borrow::Cow;

use mail_parser::decoders::html::add_html_token;

/// Plain text from HTML, for messages that have no plain-text part.
///
/// mail-parser's `html_to_text` only breaks lines at `<br>` and `</p>` and runs words
/// together across other block elements ("Tomatoes" + "Plant" → "TomatoesPlant"), so this
/// is a small converter of our own: block elements break lines, whitespace collapses
/// except in `<pre>`, the content of `style`/`script`/`title`/`template` and comments is
/// dropped, and entities are decoded with mail-parser's table. It only ever slices the
/// input at ASCII bytes, so it cannot split a character.
pub(super) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut pending_space = false;
    let mut in_pre = false;
    // Open lists (`None` for `ul`, the next number for `ol`) and links (where their
    // text starts in `out`, and the target).
    let mut lists: Vec<Option<u32>> = Vec::new();
    let mut links: Vec<(usize, String)> = Vec::new();
    let mut rest = html;

    while let Some(ch) = rest.chars().next() {
        if ch == '<' {
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            let after = &rest[1..];
            let is_tag = after
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b"/!?".contains(&b));
            if is_tag {
                let end = tag_end(after);
                let tag = &after[..end];
                rest = after.get(end + 1..).unwrap_or("");
                let closing = tag.starts_with('/');
                let name_len = tag
                    .trim_start_matches('/')
                    .bytes()
                    .take_while(u8::is_ascii_alphanumeric)
                    .count();
                let name = tag.trim_start_matches('/')[..name_len].to_ascii_lowercase();
                match name.as_str() {
                    "style" | "script" | "title" | "template" if !closing => {
                        rest = skip_element(rest, &name);
                    }
                    "br" => line_break(&mut out, 1, true),
                    "pre" => {
                        in_pre = !closing;
                        line_break(&mut out, 2, false);
                    }
                    "ul" | "ol" => {
                        if closing {
                            lists.pop();
                        }
                        // A nested list is part of its item: no blank line around it.
                        line_break(&mut out, if lists.is_empty() { 2 } else { 1 }, false);
                        if !closing && lists.len() < MAX_LIST_DEPTH {
                            lists.push((name == "ol").then_some(1));
                        }
                    }
                    // A marker per item, so a list reads as one: `- x`, `1. y`.
                    "li" if !closing => {
                        line_break(&mut out, 1, false);
                        let depth = lists.len().saturating_sub(1);
                        out.extend(std::iter::repeat_n("  ", depth));
                        match lists.last_mut() {
                            Some(Some(n)) => {
                                out.push_str(&format!("{n}. "));
                                *n += 1;
                            }
                            _ => out.push_str("- "),
                        }
                    }
                    // Bounded by the input: every entry is a tag in it.
                    "a" if !closing => links.push((out.len(), href(tag).unwrap_or_default())),
                    // The target of a web link follows its text, as plain-text mail
                    // writes it, unless the text is the address already: a reset-password
                    // link must survive as text. Image-only links stay out (tracking).
                    "a" => {
                        if let Some((start, target)) = links.pop() {
                            let text = out.get(start..).unwrap_or("").trim();
                            let web =
                                target.starts_with("https://") || target.starts_with("http://");
                            if web && !text.is_empty() && text != target {
                                out.push_str(&format!(" <{target}>"));
                            }
                        }
                    }
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "dl" | "table"
                    | "blockquote" | "hr" => line_break(&mut out, 2, false),
                    "div" | "li" | "tr" | "dt" | "dd" | "section" | "article" | "header"
                    | "footer" | "nav" | "aside" | "main" | "figure" | "figcaption" | "address"
                    | "form" | "fieldset" | "center" => {
                        line_break(&mut out, 1, false);
                    }
                    "td" | "th" => pending_space = true,
                    _ => {}
                }
                if out.ends_with('\n') {
                    pending_space = false;
                }
                continue;
            }
        }

        let (text, len) = if ch == '&' {
            // `&name;` or `&#123;`; anything else (`AT&T`) is a literal ampersand. The
            // bound keeps a text full of `&` linear.
            let name_len = rest.as_bytes()[1..]
                .iter()
                .take(32)
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'#')
                .count();
            if name_len > 0 && rest.as_bytes().get(name_len + 1) == Some(&b';') {
                let mut decoded = String::new();
                add_html_token(&mut decoded, &rest.as_bytes()[..name_len + 2], false);
                (Cow::Owned(decoded), name_len + 2)
            } else {
                (Cow::Borrowed("&"), 1)
            }
        } else {
            (Cow::Borrowed(&rest[..ch.len_utf8()]), ch.len_utf8())
        };
        rest = &rest[len..];

        for ch in text.chars() {
            if in_pre {
                if ch != '\r' {
                    out.push(ch);
                }
            } else if ch.is_whitespace() {
                // Unicode whitespace, so runs of `&nbsp;` spacers collapse too.
                pending_space = true;
            } else {
                if pending_space && !out.is_empty() && !out.ends_with(['\n', ' ']) {
                    out.push(' ');
                }
                pending_space = false;
                out.push(ch);
            }
        }
    }

    out.truncate(out.trim_end().len());
    out
}

/// Lists nest no deeper than this in what we track; deeper ones still render.
const MAX_LIST_DEPTH: usize = 32;

/// The `href` of an `a` tag (its text after `<`), `&amp;` decoded.
fn href(tag: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("href") {
        let at = from + found;
        from = at + 4;
        // `data-href` or `hreflang` are other attributes.
        let before = lower[..at].chars().next_back();
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let rest = tag[at + 4..].trim_start();
        let Some(value) = rest.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let target = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
        };
        return Some(target.trim().replace("&amp;", "&"));
    }
    None
}

/// Where a tag that starts at `after` (just past its `<`) ends; a `>` inside a quoted
/// attribute value does not end it. Quotes count only right after `=`, so a stray
/// apostrophe (`<img alt=it's>`) cannot swallow the rest of the document.
fn tag_end(after: &str) -> usize {
    let mut quote = None;
    let mut last = 0u8;
    for (i, b) in after.bytes().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') if last == b'=' => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return i,
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            last = b;
        }
    }
    after.len()
}

/// What follows the closing tag of a raw-text element such as `style`; nothing when it
/// is never closed, as a browser would also show nothing.
fn skip_element<'h>(html: &'h str, name: &str) -> &'h str {
    let mut from = 0;
    while let Some(found) = html[from..].find("</") {
        let start = from + found + 2;
        let candidate = html.as_bytes().get(start..start + name.len());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes())) {
            return html[start..]
                .find('>')
                .map_or("", |end| &html[start + end + 1..]);
        }
        from = start;
    }
    ""
}

/// Ends the current line and leaves up to `lines` line ends; `hard` (for `<br>`) always
/// adds one, block elements only make sure there are enough.
fn line_break(out: &mut String, lines: usize, hard: bool) {
    out.truncate(out.trim_end_matches(' ').len());
    if out.is_empty() {
        return;
    }
    if hard {
        out.push('\n');
        return;
    }
    let present = out.len() - out.trim_end_matches('\n').len();
    for _ in present..lines {
        out.push('\n');
    }
}

/// A plain-text part as HTML, for joining it to HTML parts.
pub(super) fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => {}
            '\n' => out.push_str("<br>\n"),
            ch => out.push(ch),
        }
    }
    out
}
