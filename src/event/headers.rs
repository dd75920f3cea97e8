//! Header fields read from the raw bytes: names as spelled, values decoded, the date,
//! and the verdicts other servers wrote (automatic replies, authentication, spam).

use mail_parser::{Header, HeaderValue};
use serde_json::Number;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

use super::decode::decode_unstructured;
use super::{AuthVerdict, AuthenticationResults, Spam};

/// The field name as the sender spelled it (`Message-Id`), not mail-parser's canonical
/// spelling (`Message-ID`): the event reports the message, not our parser.
pub(super) fn header_name(raw: &[u8], header: &Header<'_>) -> String {
    raw.get(header.offset_field as usize..header.offset_start as usize)
        .and_then(|field| field.split(|&b| b == b':').next())
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_else(|| header.name.as_str().to_owned())
}

/// The field value, unfolded, with RFC 2047 encoded-words decoded.
///
/// mail-parser parses addresses, dates, ids and content types into structures, and
/// printing those back would be our invention (and drop comments, odd spacing, anything
/// it did not understand). So every value is re-read from the raw bytes and decoded as
/// unstructured text: adjacent encoded-words in one charset are joined before decoding
/// (mail-parser 0.11 decodes each alone and breaks a character split between them), and
/// invalid UTF-8 becomes U+FFFD rather than failing.
pub(super) fn header_value(raw: &[u8], header: &Header<'_>) -> String {
    decode_unstructured(raw_value(raw, header))
}

/// The raw bytes of a field's value, folds included.
pub(super) fn raw_value<'r>(raw: &'r [u8], header: &Header<'_>) -> &'r [u8] {
    raw.get(header.offset_start as usize..header.offset_end as usize)
        .unwrap_or_default()
}

/// Message ids from an id header, which mail-parser has already stripped of `<>`.
pub(super) fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// The `Date` header in RFC 3339, keeping the sender's offset. Built through `time` so
/// that impossible dates (30 February, hour 25) become null instead of a string that
/// looks valid but is not.
///
/// mail-parser reads the date, obsolete forms included, but wraps a numeric zone past
/// 24 hours (`-3000` becomes `-06:00`); the zone is therefore read again from the raw
/// value, and one that no clock uses makes the date null.
pub(super) fn date_rfc3339(raw_value: &[u8], date: &mail_parser::DateTime) -> Option<String> {
    let month = Month::try_from(date.month).ok()?;
    let day = Date::from_calendar_date(i32::from(date.year), month, date.day).ok()?;
    let time = Time::from_hms(date.hour, date.minute, date.second).ok()?;
    let offset = match numeric_zone(raw_value) {
        Some(zone) => zone?,
        None => {
            let sign: i8 = if date.tz_before_gmt { -1 } else { 1 };
            let hours = i8::try_from(date.tz_hour).ok()?;
            let minutes = i8::try_from(date.tz_minute).ok()?;
            UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
    };
    PrimitiveDateTime::new(day, time)
        .assume_offset(offset)
        .format(&Rfc3339)
        .ok()
}

/// The `±hhmm` zone that ends a date (comments aside): `None` when the date ends in a
/// named zone or nothing, `Some(None)` when the numbers are out of range (RFC 3339
/// allows hours 00-23 and minutes 00-59 only).
fn numeric_zone(raw_value: &[u8]) -> Option<Option<UtcOffset>> {
    let value = String::from_utf8_lossy(raw_value);
    let mut depth = 0usize;
    let without_comments: String = value
        .chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect();
    let zone = without_comments.split_whitespace().last()?;
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1i8, &zone[1..]),
        b'-' => (-1i8, &zone[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits[..2].parse().ok()?;
    let minutes: i8 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return Some(None);
    }
    Some(UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok())
}

/// Whether a machine sent the message on its own, so that a receiver that answers mail
/// does not answer it: RFC 3834 `Auto-Submitted` with anything but `no`, the
/// `X-Autoreply` and `X-Autorespond` headers autoresponders add, `Precedence`
/// `auto_reply`, `bulk` or `junk`, and `X-Auto-Response-Suppress`, with which Exchange
/// and mass mailers ask not to be answered.
pub(super) fn is_auto_reply(raw: &[u8], headers: &[Header<'_>]) -> bool {
    let keyword = |header: &Header<'_>| {
        let value = header_value(raw, header);
        let items = semicolon_list(&value);
        let first = items.first().map_or("", String::as_str);
        first
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    headers.iter().any(|header| {
        let name = header.name.as_str();
        let is = |expected: &str| name.eq_ignore_ascii_case(expected);
        if is("x-autoreply") || is("x-autorespond") || is("x-auto-response-suppress") {
            true
        } else if is("auto-submitted") {
            // An empty value counts too: answering a robot costs more than not
            // answering a person who sent a malformed header.
            keyword(header) != "no"
        } else if is("precedence") {
            matches!(keyword(header).as_str(), "auto_reply" | "bulk" | "junk")
        } else {
            false
        }
    })
}

/// Reads one `Authentication-Results` value (RFC 8601):
/// `authserv-id [version]; method[/version]=result (comment) ptype.prop=value; …`.
///
/// Lenient, as headers in the wild are: a missing authserv-id, unknown methods and
/// properties are skipped, and a result word we do not know leaves its method null.
pub(super) fn authentication_results(value: &str) -> AuthenticationResults {
    let mut results = AuthenticationResults {
        spf: None,
        dkim: None,
        dmarc: None,
        authserv_id: None,
    };
    for (i, item) in semicolon_list(value).iter().enumerate() {
        let item = item.trim();
        if i == 0 && (item.starts_with('"') || !item.contains('=')) {
            results.authserv_id = authserv_id(item);
            continue;
        }
        let Some((method, result)) = item.split_once('=') else {
            continue;
        };
        let method = method.split('/').next().unwrap_or("").trim();
        let Some(verdict) = result.split_whitespace().next().and_then(auth_verdict) else {
            continue;
        };
        if method.eq_ignore_ascii_case("spf") {
            results.spf = results.spf.or(Some(verdict));
        } else if method.eq_ignore_ascii_case("dkim") {
            // One signature that verifies is enough for the message, whatever others
            // (mailing-list footers break signatures) say.
            results.dkim = match results.dkim {
                Some(AuthVerdict::Pass) => Some(AuthVerdict::Pass),
                _ if verdict == AuthVerdict::Pass => Some(AuthVerdict::Pass),
                earlier => earlier.or(Some(verdict)),
            };
        } else if method.eq_ignore_ascii_case("dmarc") {
            results.dmarc = results.dmarc.or(Some(verdict));
        }
    }
    results
}

/// The authserv-id at the start of the header: a token or a quoted string, followed by
/// an optional version number.
fn authserv_id(item: &str) -> Option<String> {
    let id = match item.strip_prefix('"') {
        Some(quoted) => {
            let mut id = String::new();
            let mut chars = quoted.chars();
            while let Some(ch) = chars.next() {
                match ch {
                    '"' => break,
                    '\\' => id.extend(chars.next()),
                    ch => id.push(ch),
                }
            }
            id
        }
        None => item.split_whitespace().next().unwrap_or("").to_owned(),
    };
    (!id.is_empty()).then_some(id)
}

fn auth_verdict(word: &str) -> Option<AuthVerdict> {
    Some(match word.to_ascii_lowercase().as_str() {
        "pass" => AuthVerdict::Pass,
        // `hardfail` is RFC 5451's old name for SPF `fail`.
        "fail" | "hardfail" => AuthVerdict::Fail,
        "softfail" => AuthVerdict::Softfail,
        "neutral" => AuthVerdict::Neutral,
        "none" => AuthVerdict::None,
        "temperror" => AuthVerdict::Temperror,
        "permerror" => AuthVerdict::Permerror,
        "policy" => AuthVerdict::Policy,
        _ => return None,
    })
}

/// The `;`-separated items of a structured header value, with RFC 5322 comments
/// (nested, `\`-escaped) removed; inside a quoted string `;` and `(` are text.
pub(super) fn semicolon_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if depth > 0 => {
                chars.next();
            }
            '(' if depth > 0 => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    // `pass(ok)` is two words.
                    item.push(' ');
                }
            }
            _ if depth > 0 => {}
            '\\' if quoted => {
                item.push('\\');
                item.extend(chars.next());
            }
            '"' => {
                quoted = !quoted;
                item.push('"');
            }
            _ if quoted => item.push(ch),
            '(' => depth = 1,
            ';' => items.push(std::mem::take(&mut item)),
            ch => item.push(ch),
        }
    }
    items.push(item);
    items
}

/// The spam verdict of the topmost header a scanner wrote, in this order of preference:
/// `X-Spam-Status` (SpamAssassin, and Rspamd in its compatible mode), `X-Spamd-Result`
/// (Rspamd), `X-Spam-Flag` or `X-Spam-Score`, `X-Forefront-Antispam-Report` (Microsoft
/// 365's SCL, 5 and up being spam). Null when there is none we can read.
///
/// Only as trustworthy as the server that wrote it: a sender can add these headers too.
pub(super) fn spam(raw: &[u8], headers: &[Header<'_>]) -> Option<Spam> {
    let first = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| header_value(raw, h))
    };
    let verdict = |flagged: bool, score: Option<f64>, source: &str| Spam {
        flagged,
        score: score.and_then(Number::from_f64),
        source: source.to_owned(),
    };
    let yes = |word: &str| {
        let word = word.trim().to_ascii_lowercase();
        word.starts_with("yes") || word == "true"
    };

    if let Some(status) = first("X-Spam-Status") {
        // `Yes, score=7.3 required=5.0 tests=…` (`hits=` in old versions).
        let flag = status.split([',', ' ', '\t']).next().unwrap_or("");
        let (is_yes, is_no) = (yes(flag), flag.trim().eq_ignore_ascii_case("no"));
        if is_yes || is_no {
            let score = status
                .split([',', ' ', '\t', ';'])
                .find_map(|w| w.strip_prefix("score=").or_else(|| w.strip_prefix("hits=")))
                .and_then(|s| s.parse().ok());
            return Some(verdict(is_yes, score, "x-spam-status"));
        }
    }
    if let Some(result) = first("X-Spamd-Result") {
        // `default: False [0.90 / 15.00]; SYMBOL(1.0)[…]; …`
        let head = result.split(';').next().unwrap_or("");
        if let Some((_, rest)) = head.split_once(':') {
            let flag = rest.split_whitespace().next().unwrap_or("");
            let score = rest
                .split_once('[')
                .and_then(|(_, s)| s.split('/').next())
                .and_then(|s| s.trim().parse().ok());
            if flag.eq_ignore_ascii_case("true") || flag.eq_ignore_ascii_case("false") {
                return Some(verdict(yes(flag), score, "x-spamd-result"));
            }
        }
    }
    let flag = first("X-Spam-Flag");
    let score = first("X-Spam-Score")
        .or_else(|| first("X-Rspamd-Score"))
        .and_then(|s| s.split_whitespace().next().and_then(|s| s.parse().ok()));
    if let Some(flag) = &flag {
        return Some(verdict(yes(flag), score, "x-spam-flag"));
    }
    if score.is_some() {
        // A score alone is no verdict; `X-Spam: Yes` is Rspamd's.
        let flagged = first("X-Spam").is_some_and(|v| yes(&v));
        return Some(verdict(flagged, score, "x-spam-score"));
    }
    if let Some(report) = first("X-Forefront-Antispam-Report") {
        // `CIP:…;CTRY:;LANG:en;SCL:5;SRV:;IPV:NLI;SFV:SPM;…`
        let field = |name: &str| {
            report.split(';').find_map(|item| {
                let (key, value) = item.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let scl: Option<i32> = field("SCL").and_then(|s| s.parse().ok());
        let sfv = field("SFV").unwrap_or_default().to_ascii_uppercase();
        if scl.is_some() || !sfv.is_empty() {
            let flagged = scl.is_some_and(|scl| scl >= 5) || sfv == "SPM";
            return Some(verdict(
                flagged,
                scl.map(f64::from),
                "x-forefront-antispam-report",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn spam_of(fields: &str) -> Option<(bool, Option<f64>, String)> {
        let raw = format!("{fields}\r\nSubject: x\r\n\r\nbody\r\n");
        let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
        spam(raw.as_bytes(), &message.parts[0].headers)
            .map(|s| (s.flagged, s.score.and_then(|n| n.as_f64()), s.source))
    }

    #[test]
    fn spam_verdicts_are_read_from_the_scanners_headers() {
        let v = |flagged: bool, score: Option<f64>, source: &str| {
            Some((flagged, score, source.to_owned()))
        };
        let cases = [
            (
                "X-Spam-Status: Yes, score=7.3 required=5.0 tests=BAYES_99,URIBL_BLACK\r\n\
                 \tautolearn=no version=3.4.6",
                v(true, Some(7.3), "x-spam-status"),
            ),
            (
                "X-Spam-Status: No, score=-0.1 required=5.0",
                v(false, Some(-0.1), "x-spam-status"),
            ),
            (
                "X-Spam-Status: No, hits=1.2",
                v(false, Some(1.2), "x-spam-status"),
            ),
            (
                "X-Spamd-Result: default: True [16.50 / 15.00]; BAYES_SPAM(5.10)[99.9%]",
                v(true, Some(16.5), "x-spamd-result"),
            ),
            (
                "X-Spamd-Result: default: False [0.90 / 15.00]; MIME_GOOD(-0.10)[text/plain]",
                v(false, Some(0.9), "x-spamd-result"),
            ),
            (
                "X-Spam-Flag: YES\r\nX-Spam-Score: 12.1",
                v(true, Some(12.1), "x-spam-flag"),
            ),
            ("X-Spam-Flag: NO", v(false, None, "x-spam-flag")),
            ("X-Spam-Score: 3.5", v(false, Some(3.5), "x-spam-score")),
            (
                "X-Rspamd-Score: 9.2\r\nX-Spam: Yes",
                v(true, Some(9.2), "x-spam-score"),
            ),
            (
                "X-Forefront-Antispam-Report: CIP:203.0.113.5;CTRY:;LANG:en;SCL:5;SRV:;\r\n\
                 \tIPV:NLI;SFV:SPM;H:mail.example.com;PTR:;CAT:SPM;SFS:",
                v(true, Some(5.0), "x-forefront-antispam-report"),
            ),
            (
                "X-Forefront-Antispam-Report: CIP:203.0.113.5;SCL:1;SFV:NSPM",
                v(false, Some(1.0), "x-forefront-antispam-report"),
            ),
            (
                "X-Forefront-Antispam-Report: SFV:SKN;SCL:-1",
                v(false, Some(-1.0), "x-forefront-antispam-report"),
            ),
            // The topmost header counts, as with Authentication-Results.
            (
                "X-Spam-Status: No, score=0.0\r\nX-Spam-Status: Yes, score=99",
                v(false, Some(0.0), "x-spam-status"),
            ),
        ];
        for (fields, expected) in cases {
            assert_eq!(spam_of(fields), expected, "{fields}");
        }
        for nothing in [
            "X-Other: 1",
            "X-Spam-Status: maybe",
            "X-Spamd-Result: garbage",
            "X-Spam-Score: high",
            "X-Forefront-Antispam-Report: CIP:1.2.3.4",
        ] {
            assert_eq!(spam_of(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn numeric_zones_past_a_day_make_the_date_null() {
        let zone = |value: &str| numeric_zone(value.as_bytes());
        assert_eq!(zone("Tue, 30 Nov 1999 23:56:33 -3000"), Some(None));
        assert_eq!(zone("Tue, 30 Nov 1999 23:56:33 +0560"), Some(None));
        assert_eq!(
            zone("Tue, 30 Nov 1999 23:56:33 -0330 (NST)"),
            Some(UtcOffset::from_hms(-3, -30, 0).ok())
        );
        assert_eq!(zone("Tue, 30 Nov 1999 23:56:33 EST"), None);
        assert_eq!(zone(""), None);
        assert_eq!(zone("+12"), None);
    }
}
