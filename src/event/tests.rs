use super::*;
use std::fmt::Write as _;

use time::macros::datetime;

/// `webhook.attachments`: inline, metadata, omit, and the inline size limit.
mod attachment_modes;

fn meta(uidl: &str) -> EventMeta<'_> {
    EventMeta {
        mailbox: "support",
        uidl,
        received_at: datetime!(2024-03-16 12:00:00 UTC),
        include_raw: false,
        truncated: false,
        attachments: AttachmentMode::Inline,
        max_inline_attachment_size: None,
    }
}

#[test]
fn event_id_is_stable_and_distinct_per_mailbox_and_uidl() {
    // Pinned: a new value would make every receiver see old messages as new.
    assert_eq!(
        event_id("support", "UID1"),
        "msg_4a9f8127042050ca245177da931ac704"
    );
    assert_eq!(event_id("support", "UID1"), event_id("support", "UID1"));
    assert_ne!(event_id("support", "UID1"), event_id("sales", "UID1"));
    assert_ne!(event_id("support", "UID1"), event_id("support", "UID2"));
    assert_ne!(event_id("ab", "c"), event_id("a", "bc"));

    let raw = b"Subject: hi\r\n\r\nbody\r\n";
    let event = build_event(&meta("UID1"), raw);
    assert_eq!(event.id(), event_id("support", "UID1"));
    assert_eq!(event.id(), build_event(&meta("UID1"), raw).id());
}

#[test]
fn raw_is_sent_only_when_asked_for_or_when_parsing_failed() {
    let good = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
    let event = build_event(&meta("1"), good);
    assert_eq!(event.data.raw, None);
    assert_eq!(event.data.parse_error, None);

    let with_raw = EventMeta {
        include_raw: true,
        ..meta("1")
    };
    let event = build_event(&with_raw, good);
    assert_eq!(BASE64.decode(event.data.raw.unwrap()).unwrap(), good);

    for bad in [&b""[..], b"\r\n\r\njust a body, no header section\r\n"] {
        let event = build_event(&meta("1"), bad);
        let raw = event.data.raw.expect("raw must be forced on parse failure");
        assert_eq!(BASE64.decode(raw).unwrap(), bad);
        assert!(event.data.parse_error.unwrap().contains("`raw`"));
        assert!(event.data.headers.is_empty());
        assert_eq!((event.data.text, event.data.html), (None, None));
        assert_eq!(event.data.size, bad.len() as u64);
    }
}

#[test]
fn a_panic_while_parsing_becomes_a_parse_error_with_raw() {
    let raw = b"Subject: hi\r\n\r\nbody\r\n";
    let (data, _) = event_data_with(&meta("1"), raw, |_, _| panic!("parser bug"), None, None);
    assert!(data.parse_error.unwrap().contains("panicked"));
    assert_eq!(BASE64.decode(data.raw.unwrap()).unwrap(), raw);
    assert_eq!(data.id, event_id("support", "1"));
}

#[test]
fn envelope_has_type_and_rfc3339_timestamps() {
    let before = OffsetDateTime::now_utc();
    let event = build_event(&meta("1"), b"Subject: hi\r\n\r\nbody\r\n");
    let json = serde_json::to_value(&event).unwrap();

    assert_eq!(json["type"], "email.received");
    assert!(json.get("kind").is_none());
    let timestamp = OffsetDateTime::parse(json["timestamp"].as_str().unwrap(), &Rfc3339)
        .expect("timestamp is RFC 3339");
    assert!(timestamp >= before && timestamp <= OffsetDateTime::now_utc());
    assert_eq!(json["data"]["received_at"], "2024-03-16T12:00:00Z");
    assert_eq!(json["data"]["truncated"], false);

    let truncated = EventMeta {
        truncated: true,
        ..meta("1")
    };
    assert!(
        build_event(&truncated, b"Subject: hi\r\n\r\n")
            .data
            .truncated
    );

    // Headers that end without the blank line: no body at all, so no text.
    for headers_only in [&b"Subject: hi\r\n"[..], b"Subject: hi"] {
        assert_eq!(build_event(&meta("1"), headers_only).data.text, None);
    }
    assert_eq!(
        build_event(&meta("1"), b"Subject: hi\r\n\r\n")
            .data
            .text
            .as_deref(),
        Some("")
    );
}

#[test]
fn dates_keep_the_sender_offset_and_impossible_dates_are_null() {
    let date = |header: &str| {
        let raw = format!("Date: {header}\r\nSubject: x\r\n\r\n");
        build_event(&meta("1"), raw.as_bytes()).data.date
    };
    assert_eq!(
        date("Tue, 5 Mar 2024 08:15:30 -0530").as_deref(),
        Some("2024-03-05T08:15:30-05:30")
    );
    assert_eq!(
        date("Tue, 5 Mar 2024 08:15:30 +0000").as_deref(),
        Some("2024-03-05T08:15:30Z")
    );
    assert_eq!(date("Fri, 30 Feb 2024 08:15:30 +0000"), None);
    assert_eq!(date("yesterday"), None);
    // Zones no clock uses: mail-parser wraps them by 24 hours.
    assert_eq!(date("Tue, 30 Nov 1999 23:56:33 -3000"), None);
    assert_eq!(date("Tue, 30 Nov 1999 23:56:33 +2400"), None);
    assert_eq!(date("Tue, 30 Nov 1999 23:56:33 +0199"), None);
}

/// RFC 5322 §4.3 obsolete forms, which old clients and some robots still write.
#[test]
fn obsolete_date_forms_read_as_rfc_5322_says() {
    let date = |header: &str| {
        let raw = format!("Date: {header}\r\nSubject: x\r\n\r\n");
        build_event(&meta("1"), raw.as_bytes()).data.date
    };
    let cases = [
        // Two-digit years: 00-49 are 20xx, 50-99 19xx.
        ("21 Nov 97 09:55:06 GMT", "1997-11-21T09:55:06Z"),
        ("Fri, 21 Nov 03 09:55:06 +0100", "2003-11-21T09:55:06+01:00"),
        // Named US zones.
        ("Fri, 21 Nov 1997 09:55:06 EST", "1997-11-21T09:55:06-05:00"),
        ("Fri, 21 Nov 1997 09:55:06 PDT", "1997-11-21T09:55:06-07:00"),
        ("Fri, 21 Nov 1997 09:55:06 UT", "1997-11-21T09:55:06Z"),
        // No seconds, no day name, comments and extra whitespace.
        (
            "Thu, 13 Feb 1969 23:32 -0330 (Newfoundland Time)",
            "1969-02-13T23:32:00-03:30",
        ),
        (
            "  13   Feb   1969   23:32:10   -0330  ",
            "1969-02-13T23:32:10-03:30",
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(date(header).as_deref(), Some(expected), "{header}");
    }
}

#[test]
fn html_only_mail_reads_as_text() {
    let cases = [
        (
            "<html><head><title>T</title><style>p{}</style></head><body>\n\
                 <h1>News</h1><div>one</div><div>two</div><!-- hidden --></body></html>",
            "News\n\none\ntwo",
        ),
        ("a<br>b<br/><br>c", "a\nb\n\nc"),
        ("<ul><li>x</li><li>y</li></ul>after", "- x\n- y\n\nafter"),
        (
            "<ol><li>one<li> two <ul><li>inner</li></ul></li></ol>",
            "1. one\n2. two\n  - inner",
        ),
        (
            "Read <a href=\"https://x.test/t?a=1&amp;b=2\">the terms</a>, \
                 <a href='https://x.test/'>https://x.test/</a>, \
                 <a href=\"mailto:a@x.test\">mail us</a>, \
                 <a data-href=\"https://no\" href=https://y.test/>y</a> \
                 <a href=\"https://pixel.test/\"><img src=\"p.gif\"></a>end",
            "Read the terms <https://x.test/t?a=1&b=2>, https://x.test/, mail us, \
                 y <https://y.test/> end",
        ),
        (
            "<table><tr><td>Tea</td><td>2.50</td></tr></table>",
            "Tea 2.50",
        ),
        (
            "AT&T &amp; caf&eacute;&nbsp;&nbsp;&#9731; &bogus; 1 < 2",
            "AT&T & café ☃ &bogus; 1 < 2",
        ),
        ("<pre>  keep\n    this</pre>", "  keep\n    this"),
        ("<a title=\"x>y\" href=\"/\">link</a> text", "link text"),
        ("<img alt=it's><p>still here</p>", "still here"),
        ("<img alt = 'a>b'>after", "after"),
        ("<script>never()</script>shown", "shown"),
        ("<style>unclosed", ""),
        ("<p>unclosed <b", "unclosed"),
    ];
    for (html, text) in cases {
        assert_eq!(html_to_text(html), text, "for {html:?}");
    }
}

#[test]
fn a_forwarded_message_arrives_as_its_own_bytes() {
    let inner = "From: Mia <mia@example.com>\r\nSubject: inner\r\n\
                     Content-Type: multipart/alternative; boundary=\"in\"\r\n\r\n\
                     --in\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
                     --in\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--in--";
    let raw = format!(
        "From: a@example.com\r\nSubject: fwd\r\n\
             Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
             --out\r\nContent-Type: text/plain\r\n\r\nsee below\r\n\
             --out\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n\
             --out\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--out--\r\n",
        BASE64.encode(inner)
    );

    let event = build_event(&meta("1"), raw.as_bytes());
    assert_eq!(event.data.text.as_deref(), Some("see below"));
    assert_eq!(event.data.attachments.len(), 2);
    for attachment in &event.data.attachments {
        assert_eq!(attachment.content_type, "message/rfc822");
        let content = BASE64
            .decode(attachment.content_base64.as_ref().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(content).unwrap(), inner);
        assert_eq!(attachment.size, inner.len() as u64);
    }
}

#[test]
fn deeply_nested_multiparts_produce_an_event() {
    const DEPTH: usize = 200;
    let mut raw = String::from("From: a@example.com\r\nSubject: deep\r\n");
    for level in 0..DEPTH {
        write!(
            raw,
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
        )
        .unwrap();
    }
    raw.push_str("Content-Type: text/plain\r\n\r\nthe innermost text\r\n");
    for level in (0..DEPTH).rev() {
        write!(raw, "--b{level}--\r\n").unwrap();
    }

    let event = build_event(&meta("1"), raw.as_bytes());
    assert_eq!(event.data.parse_error, None);
    assert_eq!(event.data.subject.as_deref(), Some("deep"));
    assert!(event
        .data
        .text
        .is_some_and(|t| t.contains("the innermost text")));
}

#[test]
fn thousands_of_parts_produce_an_event() {
    const PARTS: usize = 5_000;
    let mut raw = String::from(
        "From: a@example.com\r\nSubject: many\r\n\
             Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n",
    );
    for n in 0..PARTS {
        write!(
            raw,
            "--p\r\nContent-Type: application/octet-stream; name=\"f{n}.bin\"\r\n\
                 Content-Disposition: attachment\r\n\r\npart {n}\r\n"
        )
        .unwrap();
    }
    raw.push_str("--p--\r\n");

    let event = build_event(&meta("1"), raw.as_bytes());
    assert_eq!(event.data.parse_error, None);
    assert_eq!(event.data.attachments.len(), PARTS);
    let last = event.data.attachments.last().unwrap();
    assert_eq!(last.filename.as_deref(), Some("f4999.bin"));
    let content = last.content_base64.as_ref().unwrap();
    assert_eq!(BASE64.decode(content).unwrap(), b"part 4999");
}

#[test]
fn automatic_replies_are_flagged_so_receivers_do_not_answer_them() {
    let auto_reply = |header: &str| {
        let raw = format!("From: a@example.com\r\n{header}\r\nSubject: x\r\n\r\nbody\r\n");
        build_event(&meta("1"), raw.as_bytes()).data.auto_reply
    };
    for header in [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "auto-submitted: Auto-Replied; owner-email=\"bob@example.net\"",
        "Auto-Submitted: (vacation) auto-notified",
        "Auto-Submitted:",
        "X-Autoreply: yes",
        "X-Autorespond: Vacation",
        "Precedence: bulk",
        "Precedence: JUNK",
        "Precedence: auto_reply",
        "X-Auto-Response-Suppress: OOF, AutoReply",
    ] {
        assert!(auto_reply(header), "{header}");
    }
    for header in [
        "Auto-Submitted: no",
        "Auto-Submitted: No (a person wrote this)",
        "Precedence: list",
        "Precedence: bulky",
        "X-Mailer: autoreply-maker",
    ] {
        assert!(!auto_reply(header), "{header}");
    }
}

#[test]
fn delivery_status_notifications_are_bounces_and_other_reports_are_not() {
    let bounce = |content_type: &str, part_type: &str| {
        let raw = format!(
            "From: MAILER-DAEMON@example.net\r\nSubject: x\r\n\
                 Content-Type: {content_type}; boundary=\"b\"\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n\
                 --b\r\nContent-Type: {part_type}\r\n\r\nAction: failed\r\n--b--\r\n"
        );
        build_event(&meta("1"), raw.as_bytes()).data.bounce
    };
    assert!(bounce(
        "multipart/report; report-type=delivery-status",
        "message/delivery-status"
    ));
    assert!(bounce(
        "Multipart/Report; Report-Type=\"Delivery-Status\"",
        "text/plain"
    ));
    assert!(bounce("multipart/mixed", "message/delivery-status"));
    assert!(bounce("multipart/mixed", "message/global-delivery-status"));
    // A read receipt (RFC 8098) is a report but not a bounce.
    assert!(!bounce(
        "multipart/report; report-type=disposition-notification",
        "message/disposition-notification"
    ));
    assert!(!bounce("multipart/mixed", "text/plain"));

    // Someone forwarding a bounce has not bounced anything.
    let forwarded = "From: a@example.com\r\nSubject: fwd\r\n\
             Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n\
             --out\r\nContent-Type: text/plain\r\n\r\nwhy did this bounce?\r\n\
             --out\r\nContent-Type: message/rfc822\r\n\r\n\
             From: MAILER-DAEMON@example.net\r\nSubject: failed\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"in\"\r\n\r\n\
             --in\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--in--\r\n\
             --out--\r\n";
    let event = build_event(&meta("1"), forwarded.as_bytes());
    assert_eq!(event.data.attachments.len(), 1);
    assert!(!event.data.bounce);
}

#[test]
fn authentication_results_are_read_leniently() {
    use AuthVerdict as V;
    let read = |value: &str| {
        let r = authentication_results(value);
        (r.authserv_id, r.spf, r.dkim, r.dmarc)
    };
    let id = |id: &str| Some(id.to_owned());
    let cases = [
        (
            "mx.example.com; spf=pass smtp.mailfrom=a@example.org; \
                 dkim=pass header.d=example.org; dmarc=fail header.from=example.org",
            (
                id("mx.example.com"),
                Some(V::Pass),
                Some(V::Pass),
                Some(V::Fail),
            ),
        ),
        (
            "mx.example.com 1; spf=softfail",
            (id("mx.example.com"), Some(V::Softfail), None, None),
        ),
        (
            "\"mx; odd \\\"id\\\"\"; spf=neutral",
            (id("mx; odd \"id\""), Some(V::Neutral), None, None),
        ),
        ("example.org; none", (id("example.org"), None, None, None)),
        // No authserv-id at all.
        (
            "spf=pass; dkim=fail",
            (None, Some(V::Pass), Some(V::Fail), None),
        ),
        // Comments may hold `;`, `=` and nested parentheses.
        (
            "mx (a;b=c (d)) ; spf=pass(ok; dkim=fail) smtp.mailfrom=x; dmarc = temperror",
            (id("mx"), Some(V::Pass), None, Some(V::Temperror)),
        ),
        // So may quoted property values.
        (
            "mx; dkim=fail header.b=\"x;spf=fail\"; spf=permerror",
            (id("mx"), Some(V::Permerror), Some(V::Fail), None),
        ),
        // DKIM: a pass anywhere wins, otherwise the first result.
        (
            "mx; dkim=fail; dkim=neutral",
            (id("mx"), None, Some(V::Fail), None),
        ),
        (
            "mx; dkim=policy; dkim/1=pass; dkim=fail",
            (id("mx"), None, Some(V::Pass), None),
        ),
        // The first SPF and DMARC result counts.
        (
            "mx; spf=fail; spf=pass; dmarc=none; dmarc=pass",
            (id("mx"), Some(V::Fail), None, Some(V::None)),
        ),
        (
            "MX; SPF=Pass; DKIM=TempError; dmarc=hardfail",
            (id("MX"), Some(V::Pass), Some(V::Temperror), Some(V::Fail)),
        ),
        // Unknown methods and words are skipped, not guessed at.
        (
            "mx; dkim-atps=pass; spf=bogus; iprev=pass; dmarc=",
            (id("mx"), None, None, None),
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(read(value), expected, "{value}");
    }

    let garbage = [
        "",
        ";",
        ";;;",
        "(((",
        ")))",
        "\"",
        "\\",
        "=;=;=",
        "mx; =pass; spf",
        "mx; spf=(pass)",
    ];
    for value in garbage {
        let r = authentication_results(value);
        assert_eq!((r.spf, r.dkim, r.dmarc), (None, None, None), "{value}");
    }
    let long = "héllo.example (ü;\\)) ; spf=pass (\"x\\\" ; dkim=\"fail\"";
    for end in (0..=long.len()).filter(|&end| long.is_char_boundary(end)) {
        authentication_results(&long[..end]);
    }
}

#[test]
fn the_topmost_authentication_results_header_counts() {
    let raw = "Authentication-Results: mx.example.com; spf=pass; dkim=none\r\n\
                   Received: from relay by mx.example.com\r\n\
                   Authentication-Results: relay.example.org; spf=fail; dmarc=pass\r\n\
                   From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    let results = build_event(&meta("1"), raw.as_bytes())
        .data
        .authentication_results
        .unwrap();
    assert_eq!(
        results,
        AuthenticationResults {
            spf: Some(AuthVerdict::Pass),
            dkim: Some(AuthVerdict::None),
            dmarc: None,
            authserv_id: Some("mx.example.com".to_owned()),
        }
    );
    let json = serde_json::to_value(&results).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "spf": "pass", "dkim": "none", "dmarc": null, "authserv_id": "mx.example.com"
        })
    );
}

/// The readers pophook wrote for headers, parameters, encodings and replies see
/// whatever a sender writes: every prefix of some nasty values and of byte soup built
/// from the characters they care about must come back without a panic.
#[test]
fn own_readers_survive_every_prefix_of_hostile_values() {
    let mut values: Vec<Vec<u8>> = [
        "=?utf-8?b?0J/R?= =?utf-8?q?=9F=?= \"q\\\" (c(d)\\) <a@b> x@y, g:;",
        "attachment; filename*0*=utf-8''%E2%82; filename*1=\"x\"; name=\"=?x?q?a?=\"",
        "+AD4-+ZeVnLIqe +/v8- +",
        "=0=\r\n9 =\n=ZZ=4",
        "On Mon, X <a@b>\nwrote:\n> q\n-- \nFrom: a\nSent: b",
        "<ol><li><a href='https://x'>y</a><a href=\"<ul><li>",
    ]
    .iter()
    .map(|v| v.as_bytes().to_vec())
    .collect();
    let alphabet = b"=?\"\\()<>,:;@*'%+-_ \t\r\nabQB0\xc3\xa9\xff";
    let mut seed: u32 = 0x9e37_79b9;
    for _ in 0..20 {
        let soup = (0..200).map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            alphabet[(seed >> 16) as usize % alphabet.len()]
        });
        values.push(soup.collect());
    }
    for value in &values {
        for end in 0..=value.len() {
            let bytes = &value[..end];
            let text = String::from_utf8_lossy(bytes);
            address::parse_addresses(bytes);
            params::parse(bytes);
            decode::decode_unstructured(bytes);
            decode::decode_utf7(bytes);
            decode::decode_quoted_printable_lenient(bytes);
            decode::decode_base64_lenient(bytes);
            reply::stripped_text(&text);
            html_to_text(&text);
        }
    }
}
