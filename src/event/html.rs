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
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "dl"
                    | "table" | "blockquote" | "hr" => line_break(&mut out, 2, false),
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
                if pending_space && !out.is_empty() && !out.ends_with('\n') {
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
