//! pophook's receiver formats against the receivers themselves: Action Mailbox's relay,
//! Postmark and Mailgun ingresses in a real Rails application; django-anymail's Postmark
//! and Mailgun webhooks in a real Django project (from PyPI), whose inbound signal writes
//! down what anymail parsed; and the recording receiver for what must be checked byte
//! by byte (content type, basic auth, signature). Each test ends with what a user cares
//! about: what the receiver read, and what is left on the POP3 server.

mod common;

use base64::Engine as _;
use common::django::Django;
use common::dovecot::Dovecot;
use common::process::Receive;
use common::rails::{Ingress, Rails};
use common::receiver::{Receiver, Reply};
use common::setup::{config, plain_mailbox, RETRY_AT_ONCE};
use serde_json::Value;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An attachment of the test message: its name as the receiver should decode it, the
/// `Content-Disposition` parameters that encode it, and its bytes.
struct Attachment {
    name: &'static str,
    disposition: &'static str,
    content_type: &'static str,
    bytes: Vec<u8>,
}

fn attachments() -> Vec<Attachment> {
    vec![
        Attachment {
            name: "résumé €.pdf",
            // RFC 2231 with a charset.
            disposition: "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%82%AC.pdf",
            content_type: "application/pdf",
            bytes: b"%PDF-1.4\n\x00\x01\x02\xff binary\r\n.dot\n".to_vec(),
        },
        Attachment {
            name: "日本語.png",
            // RFC 2231 continuations.
            disposition: "filename*0*=UTF-8''%E6%97%A5%E6%9C%AC; filename*1*=%E8%AA%9E.png",
            content_type: "image/png",
            bytes: (0..=255u8).collect(),
        },
        Attachment {
            name: "café.txt",
            // RFC 2231 in Latin-1.
            disposition: "filename*=iso-8859-1''caf%E9.txt",
            content_type: "text/plain",
            bytes: "Préféré\r\n.leading dot\r\n".as_bytes().to_vec(),
        },
    ]
}

/// A message with a non-ASCII subject and sender, several attachments with RFC 2231
/// names, and body lines that start with a dot (stuffed on the wire, so they test
/// dot-unstuffing end to end). `n` makes its Message-ID unique.
fn message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "Return-Path: <bounce-{n}@example.org>\r\n\
         Delivered-To: support+ticket-{n}@example.com\r\n\
         From: =?UTF-8?Q?Jos=C3=A9_Mar=C3=ADa_Pe=C3=B1a?= <jose@example.org>\r\n\
         To: Support <support@example.com>\r\n\
         Cc: =?UTF-8?B?w5hyc3RlZA==?= <orsted@example.dk>\r\n\
         Subject: =?UTF-8?B?w5xiZXIgZGllIFLDvGNrc2VuZHVuZyDigqw=?= {n}\r\n\
         Message-ID: <formats-{n}@example.org>\r\n\
         Date: Sat, 21 Nov 2026 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer-b\"\r\n\
         \r\n\
         --outer-b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Grüße aus Köln,\r\n\
         .a line that starts with a dot\r\n\
         ..two dots\r\n\
         .\r\n\
         the line above is a single dot\r\n"
    );
    for a in attachments() {
        m.push_str(&format!(
            "--outer-b\r\nContent-Type: {}\r\nContent-Disposition: attachment; {}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            a.content_type,
            a.disposition,
            BASE64.encode(&a.bytes)
        ));
    }
    m.push_str("--outer-b--\r\n");
    m.into_bytes()
}

/// What the subject of [`message`] decodes to.
fn subject(n: usize) -> String {
    format!("Über die Rücksendung € {n}")
}

/// Checks one message as django-anymail parsed it against [`message`].
fn assert_parsed_like_the_message(record: &Value, n: usize, django: &Django) {
    let context = || format!("{record:#}\n{}", django.log());
    assert_eq!(
        record["message_id"],
        format!("<formats-{n}@example.org>"),
        "{}",
        context()
    );
    assert_eq!(record["subject"], subject(n), "{}", context());
    assert_eq!(
        record["from"],
        serde_json::json!({"name": "José María Peña", "address": "jose@example.org"}),
        "{}",
        context()
    );
    assert_eq!(
        record["to"],
        serde_json::json!([{"name": "Support", "address": "support@example.com"}])
    );
    assert_eq!(
        record["cc"],
        serde_json::json!([{"name": "Ørsted", "address": "orsted@example.dk"}])
    );
    assert_eq!(
        record["envelope_recipient"],
        format!("support+ticket-{n}@example.com")
    );
    assert_eq!(record["envelope_sender"], format!("bounce-{n}@example.org"));
    let text = record["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(
            "Grüße aus Köln,\n.a line that starts with a dot\n..two dots\n.\nthe line above"
        ),
        "dot-unstuffed exactly once: {}",
        context()
    );
    let got: Vec<(String, String, Vec<u8>)> = record["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or("<none>").to_owned(),
                a["content_type"].as_str().unwrap().to_owned(),
                BASE64
                    .decode(a["content_base64"].as_str().unwrap())
                    .unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Vec<u8>)> = attachments()
        .into_iter()
        .map(|a| (a.name.to_owned(), a.content_type.to_owned(), a.bytes))
        .collect();
    assert_eq!(got, expected, "{}", context());
}

/// Runs `pophook once` on the config and returns (success, stdout + stderr).
fn once(cfg: &common::setup::TestConfig) -> (bool, String) {
    let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_arrives_byte_for_byte_as_message_rfc822_with_basic_auth_and_a_signature() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let plain = b"From: a@example.com\r\nSubject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n".to_vec();
    let sent = [message(1), plain];
    for m in &sent {
        dovecot.deliver("support", m);
    }
    let receiver = Receiver::start().await;
    receiver.require_basic_auth("actionmailbox", "relay-pass-1");
    let url = format!(
        "http://actionmailbox:relay-pass-1@{}/rails/action_mailbox/relay/inbound_emails",
        receiver.addr()
    );
    let cfg = config(
        &format!("  url: {url}\n  format: raw\n  secret: {SECRET}"),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let (ok, output) = once(&cfg);
    assert!(ok, "{output}");

    let accepted = receiver.accepted();
    // Posted concurrently (max_in_flight), so they arrive in either order.
    let mut bodies: Vec<&[u8]> = accepted.iter().map(|r| &r.body[..]).collect();
    bodies.sort();
    let mut expected: Vec<&[u8]> = sent.iter().map(|m| &m[..]).collect();
    expected.sort();
    assert_eq!(bodies, expected, "byte for byte");
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for request in &accepted {
        assert_eq!(request.path, "/rails/action_mailbox/relay/inbound_emails");
        assert_eq!(request.header("content-type"), Some("message/rfc822"));
        assert!(request.header("webhook-id").unwrap().starts_with("msg_"));
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        verifier
            .verify(&request.body, &headers)
            .expect("the Standard Webhooks signature covers the raw body too");
    }
    assert_eq!(dovecot.message_count("support"), 0, "deleted after the 2xx");
    assert!(!output.contains("relay-pass-1"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_leave_the_mail_on_the_server_and_are_never_printed() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    receiver.require_basic_auth("actionmailbox", "the-right-one");
    let url = format!(
        "http://actionmailbox:wrong-pass-9@{}/rails/action_mailbox/relay/inbound_emails",
        receiver.addr()
    );
    let cfg = config(
        &format!("  url: {url}\n  format: raw"),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let (ok, output) = once(&cfg);

    assert!(!ok, "a 401 is not a delivery: {output}");
    assert!(output.contains("401"), "{output}");
    assert_eq!(receiver.requests().len(), 1);
    assert!(receiver.accepted().is_empty());
    assert_eq!(dovecot.messages("support"), [message(1)], "left as it was");
    assert!(!output.contains("wrong-pass-9"), "{output}");
}

/// Messages 1 and 2 delivered by `pophook once` to a fresh Django at `path`, with
/// anymail's basic auth `basic_auth` (also in the URL) and Mailgun key `mailgun_key`,
/// and `webhook` lines after the URL. Returns what anymail parsed, sorted by Message-ID,
/// after checking that the mailbox was emptied and no credential was printed.
fn delivered_through_django(
    basic_auth: &str,
    mailgun_key: &str,
    path: &str,
    webhook: &str,
) -> (Vec<Value>, Django) {
    let django = Django::start(basic_auth, mailgun_key);
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    dovecot.deliver("support", &message(2));
    let cfg = config(
        &format!("  url: {}\n{webhook}", django.url(basic_auth, path)),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let (ok, output) = once(&cfg);
    assert!(ok, "{output}\n{}", django.log());

    let mut records = django.received();
    assert_eq!(records.len(), 2, "{}", django.log());
    records.sort_by_key(|r| r["message_id"].as_str().unwrap_or_default().to_owned());
    for (n, record) in [1, 2].into_iter().zip(&records) {
        assert_parsed_like_the_message(record, n, &django);
    }
    assert_eq!(dovecot.message_count("support"), 0);
    let password = basic_auth.split_once(':').unwrap().1;
    assert!(!output.contains(password), "{output}");
    assert!(!output.contains(mailgun_key), "{output}");
    (records, django)
}

#[tokio::test(flavor = "multi_thread")]
async fn django_anymail_reads_the_postmark_format() {
    let (records, _django) = tokio::task::block_in_place(|| {
        delivered_through_django(
            "pophook:pm-pass-2",
            "unused-key-2",
            "/anymail/postmark/inbound/",
            &format!("  format: postmark\n  secret: {SECRET}"),
        )
    });
    for record in &records {
        assert_eq!(record["esp"], "Postmark");
        assert!(
            record["event_id"].as_str().unwrap().starts_with("msg_"),
            "Postmark's MessageID is pophook's stable id: {record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn django_anymail_reads_the_mailgun_format() {
    let (records, _django) = tokio::task::block_in_place(|| {
        delivered_through_django(
            "pophook:mg-pass-3",
            "mailgun-signing-key-3",
            "/anymail/mailgun/inbound_mime/",
            &format!("  format: mailgun\n  mailgun_signing_key: mailgun-signing-key-3\n  secret: {SECRET}"),
        )
    });
    for record in &records {
        assert_eq!(record["esp"], "Mailgun");
    }
    assert_ne!(
        records[0]["event_id"], records[1]["event_id"],
        "anymail's event_id is Mailgun's token: one per request"
    );
}

/// The value of the `multipart/form-data` field `name` in `body`.
fn form_field(body: &[u8], name: &str) -> String {
    let body = String::from_utf8_lossy(body);
    let marker = format!("name=\"{name}\"");
    let at = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"));
    let value = &body[at..];
    let value = &value[value.find("\r\n\r\n").unwrap() + 4..];
    value[..value.find("\r\n--").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn mailgun_signs_every_attempt_afresh() {
    use hmac::Mac as _;
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Status(503)]);
    let key = "mailgun-signing-key-6";
    let cfg = config(
        &format!(
            "  url: {}/anymail/mailgun/inbound_mime/\n  format: mailgun\n  mailgun_signing_key: {key}\n{RETRY_AT_ONCE}",
            receiver.url()
        ),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    for _ in 0..3 {
        if dovecot.message_count("support") == 0 {
            break;
        }
        once(&cfg);
    }
    assert_eq!(dovecot.message_count("support"), 0);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "a 503, then the retry's 2xx");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut signed = Vec::new();
    for request in &requests {
        let (timestamp, token, signature) = (
            form_field(&request.body, "timestamp"),
            form_field(&request.body, "token"),
            form_field(&request.body, "signature"),
        );
        // Receivers refuse an old timestamp (Action Mailbox: 2 minutes).
        let at: u64 = timestamp.parse().unwrap();
        assert!(now.abs_diff(at) < 60, "timestamp {at}, now {now}");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(signature, expected);
        signed.push((token, signature));
    }
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id"),
        "the same message twice"
    );
    assert_ne!(
        signed[0], signed[1],
        "each attempt has its own token and signature"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn django_refusing_the_credentials_or_the_signature_keeps_the_mail() {
    let django = Django::start("pophook:right-pass", "right-key");
    let dovecot = Dovecot::start();
    for user in ["postmark", "mailgun"] {
        dovecot.add_user(user, "pw");
        dovecot.deliver(user, &message(1));
    }
    let mailboxes = format!(
        "{}    webhook:\n      url: {}\n      format: postmark\n{}    webhook:\n      url: {}\n      format: mailgun\n      mailgun_signing_key: wrong-key-5\n",
        plain_mailbox("postmark", dovecot.plain_port(), "postmark", "pw", ""),
        django.url("pophook:wrong-pass-4", "/anymail/postmark/inbound/"),
        plain_mailbox("mailgun", dovecot.plain_port(), "mailgun", "pw", ""),
        django.url("pophook:right-pass", "/anymail/mailgun/inbound_mime/"),
    );
    let cfg = config(&format!("  url: {}", django.url("", "/unused")), &mailboxes);

    let (ok, output) = once(&cfg);

    assert!(!ok, "{output}");
    assert!(django.received().is_empty(), "{}", django.log());
    for user in ["postmark", "mailgun"] {
        assert_eq!(dovecot.messages(user), [message(1)], "{user}: {output}");
    }
    for secret in ["wrong-pass-4", "wrong-key-5", "right-pass"] {
        assert!(!output.contains(secret), "{secret} printed: {output}");
    }
}

/// The limit the README warns about: Django answers 400 to a body over
/// DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default), and the message must stay.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_djangos_upload_limit_is_refused_and_the_mail_stays() {
    let django = Django::start("pophook:big-pass", "k");
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let big = format!(
        "From: a@example.com\r\nTo: support@example.com\r\nSubject: big\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        BASE64.encode(vec![7u8; 2 * 1024 * 1024])
    );
    dovecot.deliver("support", big.as_bytes());
    let cfg = config(
        &format!(
            "  url: {}\n  format: postmark",
            django.url("pophook:big-pass", "/anymail/postmark/inbound/")
        ),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let (ok, output) = once(&cfg);

    assert!(!ok, "{output}");
    assert!(output.contains("HTTP 400"), "{output}");
    assert!(django.received().is_empty());
    assert_eq!(dovecot.messages("support"), [big.into_bytes()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pophook_receive_prints_one_line_per_message_in_every_format() {
    let dovecot = Dovecot::start();
    let formats = ["standard", "raw", "postmark", "mailgun"];
    let mut mailboxes = String::new();
    let receiver = Receive::start(SECRET).await;
    let port = receiver.port();
    for (n, format) in formats.iter().enumerate() {
        dovecot.add_user(format, "pw");
        dovecot.deliver(format, &message(n));
        mailboxes.push_str(&plain_mailbox(
            format,
            dovecot.plain_port(),
            format,
            "pw",
            "",
        ));
        mailboxes.push_str(&format!(
            "    webhook: {{url: 'http://127.0.0.1:{port}/{format}', format: {format}}}\n"
        ));
    }
    let cfg = config(
        &format!("  url: http://127.0.0.1:{port}/\n  secret: {SECRET}\n  mailgun_signing_key: k"),
        &mailboxes,
    );

    let (ok, output) = once(&cfg);
    assert!(ok, "{output}");

    let stdout = receiver.stop().await;
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4, "one line per message:\n{stdout}");
    let expected = [
        "email.received [standard] from jose@example.org — \"Über die Rücksendung € 0\"",
        "mailgun [support+ticket-3@example.com] from jose@example.org — \"Über die Rücksendung € 3\"",
        "postmark [support+ticket-2@example.com] from jose@example.org — \"Über die Rücksendung € 2\"",
        "raw [support+ticket-1@example.com] from jose@example.org — \"Über die Rücksendung € 1\"",
    ];
    for (line, start) in lines.iter().zip(expected) {
        assert!(line.starts_with(start), "{line}\nexpected: {start}…");
        assert!(line.contains("3 attachments"), "{line}");
    }
}

/// Messages 1 and 2 delivered by `pophook once` to a fresh Rails application through
/// `ingress` (password `am-pass`, Mailgun key `am-key`), with `webhook` lines after the
/// URL. Checks what the mail gem parsed, that Action Mailbox stored the message byte for
/// byte, that the mailbox was emptied and that no credential was printed.
fn delivered_through_action_mailbox(ingress: Ingress, userinfo: &str, webhook: &str) {
    let rails = Rails::start(ingress, "am-pass", "am-key");
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    dovecot.deliver("support", &message(2));
    let cfg = config(
        &format!(
            "  url: {}\n{webhook}",
            rails.app.url(userinfo, ingress.path())
        ),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let (ok, output) = once(&cfg);
    assert!(ok, "{ingress:?}: {output}\n{}", rails.log());

    let mut records = rails.received();
    assert_eq!(records.len(), 2, "{}", rails.log());
    // Posted concurrently (max_in_flight), so recorded in either order.
    records.sort_by_key(|r| r["message_id"].as_str().unwrap_or_default().to_owned());
    for (n, record) in [1, 2].into_iter().zip(&records) {
        let context = || format!("{ingress:?}: {record:#}\n{}", rails.log());
        assert_eq!(
            record["message_id"],
            format!("formats-{n}@example.org"),
            "{}",
            context()
        );
        assert_eq!(record["subject"], subject(n), "{}", context());
        assert_eq!(
            record["from"],
            serde_json::json!([{"name": "José María Peña", "address": "jose@example.org"}])
        );
        let source = BASE64
            .decode(record["source_base64"].as_str().unwrap())
            .unwrap();
        let mut expected = Vec::new();
        if let Ingress::Mailgun = ingress {
            // Action Mailbox's Mailgun ingress writes the form's `recipient` on top.
            expected.extend(format!("X-Original-To: support+ticket-{n}@example.com\n").bytes());
        }
        expected.extend(message(n));
        assert_eq!(source, expected, "stored byte for byte: {}", context());
        let text = record["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("\n.a line that starts with a dot\r\n..two dots\r\n.\r\n")
                || text.contains("\n.a line that starts with a dot\n..two dots\n.\n"),
            "{}",
            context()
        );
        let got: Vec<(String, Vec<u8>)> = record["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap_or("<none>").to_owned(),
                    BASE64
                        .decode(a["content_base64"].as_str().unwrap())
                        .unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, Vec<u8>)> = attachments()
            .into_iter()
            .map(|a| (a.name.to_owned(), a.bytes))
            .collect();
        assert_eq!(got, expected, "{}", context());
    }
    assert_eq!(dovecot.message_count("support"), 0);
    for secret in ["am-pass", "am-key"] {
        assert!(!output.contains(secret), "{secret}: {output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn action_mailbox_relay_ingress_takes_the_raw_format() {
    tokio::task::block_in_place(|| {
        delivered_through_action_mailbox(
            Ingress::Relay,
            "actionmailbox:am-pass",
            &format!("  format: raw\n  secret: {SECRET}"),
        )
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn action_mailbox_postmark_ingress_takes_the_postmark_format() {
    tokio::task::block_in_place(|| {
        delivered_through_action_mailbox(
            Ingress::Postmark,
            "actionmailbox:am-pass",
            "  format: postmark",
        )
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn action_mailbox_mailgun_ingress_takes_the_mailgun_format() {
    tokio::task::block_in_place(|| {
        delivered_through_action_mailbox(
            Ingress::Mailgun,
            "",
            "  format: mailgun\n  mailgun_signing_key: am-key",
        )
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn action_mailbox_refusing_the_password_or_the_signature_keeps_the_mail() {
    // Each ingress with a credential of its own that is wrong: the relay's and the
    // Postmark ingress's password, the Mailgun ingress's signing key.
    let cases = [
        (
            Ingress::Relay,
            "actionmailbox:not-am-pass-6",
            "  format: raw",
            "not-am-pass-6",
        ),
        (
            Ingress::Postmark,
            "actionmailbox:not-am-pass-7",
            "  format: postmark",
            "not-am-pass-7",
        ),
        (
            Ingress::Mailgun,
            "",
            "  format: mailgun\n  mailgun_signing_key: not-am-key-8",
            "not-am-key-8",
        ),
    ];
    for (ingress, userinfo, webhook, wrong) in cases {
        let rails = tokio::task::block_in_place(|| Rails::start(ingress, "am-pass", "am-key"));
        let dovecot = Dovecot::start();
        dovecot.add_user("support", "pw");
        dovecot.deliver("support", &message(1));
        let cfg = config(
            &format!(
                "  url: {}\n{webhook}",
                rails.app.url(userinfo, ingress.path())
            ),
            &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
        );

        let (ok, output) = once(&cfg);

        assert!(!ok, "{ingress:?}: {output}");
        assert!(
            output.contains("HTTP 401"),
            "{ingress:?}: {output}\n{}",
            rails.log()
        );
        assert!(rails.received().is_empty(), "{ingress:?}");
        assert_eq!(dovecot.messages("support"), [message(1)], "{ingress:?}");
        assert!(!output.contains(wrong), "{ingress:?}: {output}");
    }
}
