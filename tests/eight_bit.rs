//! Mail with 8-bit bodies in a legacy charset, through the `postmark` format, read by the
//! real receivers that parse `RawEmail` themselves (django-anymail, Action Mailbox's
//! Postmark ingress): what they decode must be the message's text and attachment, not
//! replacement characters. JSON carries text, so pophook transfer-encodes such bodies.

mod common;

use base64::Engine as _;
use common::django::Django;
use common::dovecot::Dovecot;
use common::rails::{Ingress, Rails};
use common::setup::{config, plain_mailbox};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The attachment's bytes: every 8-bit value, no line breaks.
fn blob() -> Vec<u8> {
    (0x80u8..=0xff).collect()
}

/// A Latin-1 text part sent as 8-bit (no `Content-Transfer-Encoding`, as many older
/// mailers do) and a binary attachment sent as `binary`.
fn latin1_message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Ana <ana@example.org>\r\nTo: support@example.com\r\nSubject: latin-1 {n}\r\nMessage-ID: <latin1-{n}@example.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(b"Gr\xfc\xdfe aus K\xf6ln, \xe7a va?\r\n");
    m.extend_from_slice(b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: binary\r\n\r\n");
    m.extend_from_slice(&blob());
    m.extend_from_slice(b"\r\n--b--\r\n");
    m
}

/// Runs `pophook once` against a fresh Dovecot holding message 1, posting to `url`.
fn deliver(url: &str) -> (Dovecot, bool, String) {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &latin1_message(1));
    let cfg = config(
        &format!("  url: {url}\n  format: postmark\n"),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let out = cfg.pophook(&["once"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (dovecot, out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn django_anymail_reads_a_latin1_eight_bit_body_and_a_binary_attachment() {
    tokio::task::block_in_place(|| {
        let django = Django::start("pophook:pm-pass-8", "unused-key-8");
        let url = django.url("pophook:pm-pass-8", "/anymail/postmark/inbound/");
        let (dovecot, ok, output) = deliver(&url);
        assert!(ok, "{output}\n{}", django.log());
        let records = django.received();
        assert_eq!(records.len(), 1, "{}", django.log());
        let record = &records[0];
        let text = record["text"].as_str().unwrap_or_default();
        assert!(text.contains("Grüße aus Köln, ça va?"), "{record:#}");
        assert!(!text.contains('\u{fffd}'), "{record:#}");
        let attachment = &record["attachments"][0];
        assert_eq!(attachment["name"], "blob.bin", "{record:#}");
        assert_eq!(
            BASE64
                .decode(attachment["content_base64"].as_str().unwrap())
                .unwrap(),
            blob()
        );
        assert_eq!(dovecot.message_count("support"), 0);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn action_mailbox_reads_a_latin1_eight_bit_body_from_the_postmark_format() {
    tokio::task::block_in_place(|| {
        let rails = Rails::start(Ingress::Postmark, "am-pass", "am-key");
        let url = rails
            .app
            .url("actionmailbox:am-pass", Ingress::Postmark.path());
        let (dovecot, ok, output) = deliver(&url);
        assert!(ok, "{output}\n{}", rails.log());
        let records = rails.received();
        assert_eq!(records.len(), 1, "{}", rails.log());
        let text = records[0]["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("Grüße aus Köln, ça va?"),
            "{:#}\n{}",
            records[0],
            rails.log()
        );
        assert_eq!(dovecot.message_count("support"), 0);
    });
}
