//! Text that comes from outside (a server's reply, an error's causes) made fit for
//! one log line, an error message or `pophook status`: the one place that decides
//! how, so every message reads the same and none can forge a log line.

/// Lossy UTF-8, trimmed, every control character (a line break could start a forged
/// log line, an escape sequence could rewrite the terminal) replaced by U+FFFD, and at
/// most `max_chars` characters, then `…`.
pub fn one_line(text: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(text.trim_ascii());
    let mut chars = text.chars();
    let mut out: String = chars
        .by_ref()
        .take(max_chars)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `error: cause: cause`: libraries such as reqwest keep the interesting part
/// ("connection refused", "certificate verify failed") in the sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_replaces_control_characters_and_caps_the_length() {
        assert_eq!(
            one_line(b"  ok\r\nforged\x1b[2J ", 100),
            "ok\u{FFFD}\u{FFFD}forged\u{FFFD}[2J"
        );
        assert_eq!(one_line("héllo".as_bytes(), 2), "hé…");
        assert_eq!(one_line(b"abc", 3), "abc");
        assert_eq!(one_line(b"\xffx", 10), "\u{FFFD}x");
    }

    #[test]
    fn error_chain_names_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&error),
            "error sending request: connection refused"
        );
    }
}
