//! Each case is checked the way a receiver reads it: the text is parsed again, and every
//! part must decode to the bytes the original part decodes to.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::*;

/// What a receiver gets from a part: its decoded bytes (text in its own charset
/// decoded by the parser), by position.
fn decoded(message: &Message) -> Vec<Vec<u8>> {
    message
        .parts
        .iter()
        .map(|part| match &part.body {
            PartType::Text(text) | PartType::Html(text) => text.as_bytes().to_vec(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.to_vec(),
            PartType::Message(inner) => decoded(inner).concat(),
            PartType::Multipart(_) => Vec::new(),
        })
        .collect()
}

/// The text is 7-bit where bodies were 8-bit, and decodes as the original does.
fn assert_same_when_decoded(original: &[u8]) -> String {
    let text = raw_email_text(original);
    let before = MessageParser::new().parse(original).unwrap();
    let after = MessageParser::new().parse(text.as_bytes()).unwrap();
    assert_eq!(decoded(&after), decoded(&before), "{text}");
    assert_eq!(after.subject(), before.subject());
    assert_eq!(after.message_id(), before.message_id());
    text
}

const LATIN1_TEXT: &[u8] = b"From: a@example.org\r\nSubject: latin-1\r\nMessage-ID: <l1@example.org>\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe aus K\xf6ln\r\nzweite Zeile mit = und Leerzeichen am Ende   \r\n";

#[test]
fn a_utf8_message_goes_as_it_is() {
    let message = "Subject: ok\r\n\r\nGrüße\r\n".as_bytes();
    assert_eq!(raw_email_text(message).as_bytes(), message);
}

#[test]
fn an_eight_bit_latin1_body_becomes_quoted_printable_and_reads_the_same() {
    let text = assert_same_when_decoded(LATIN1_TEXT);
    assert!(text.is_ascii(), "{text}");
    assert!(!text.contains('\u{fffd}'));
    let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap(),
        "Grüße aus Köln\r\nzweite Zeile mit = und Leerzeichen am Ende   \r\n"
    );
    // The field is changed in place, not added beside the old one.
    assert_eq!(
        text.matches("Content-Transfer-Encoding").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
        "{text}"
    );
    assert!(text.starts_with("From: a@example.org\r\nSubject: latin-1\r\n"));
}

#[test]
fn parts_of_every_kind_are_encoded_and_utf8_parts_are_left_alone() {
    let mut message = b"From: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nKein Feld: \xe9t\xe9\r\n--b1\r\nContent-Type: text/html; charset=windows-1252\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>\x93quoted\x94 \x96 dash</p>\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nunver\xc3\xa4ndert\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    let blob: Vec<u8> = (0u8..=255).chain([b'\r', b'\n', 0xff, b'\r']).collect();
    message.extend_from_slice(&blob);
    message.extend_from_slice(b"\r\n--b1--\r\n");
    let text = assert_same_when_decoded(&message);
    assert!(text.contains("unverändert"), "a UTF-8 part stays: {text}");
    let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
    let blob_part = parsed.attachment(0).unwrap();
    assert_eq!(blob_part.attachment_name(), Some("blob.bin"));
    assert_eq!(blob_part.contents(), &blob[..]);
    let html = parsed.parts.iter().find_map(|p| match &p.body {
        PartType::Html(html) => Some(html.as_ref()),
        _ => None,
    });
    assert_eq!(html, Some("<p>“quoted” – dash</p>"));
    assert!(
        text.contains("Content-Transfer-Encoding: base64\r\n"),
        "{text}"
    );
}

#[test]
fn a_forwarded_message_keeps_its_type_and_its_own_parts_are_encoded() {
    let mut message = b"From: a@example.org\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
    message.extend_from_slice(LATIN1_TEXT);
    message.extend_from_slice(b"\r\n--o--\r\n");
    let text = assert_same_when_decoded(&message);
    assert!(text.is_ascii(), "{text}");
    assert_eq!(
        text.matches("Content-Type: message/rfc822\r\n\r\n").count(),
        1
    );
}

#[test]
fn lf_line_endings_and_a_missing_field_are_handled() {
    let message = b"Subject: lf\nContent-Type: text/plain; charset=iso-8859-1\n\nca\xe7a\nva\n";
    let text = assert_same_when_decoded(message);
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\n"),
        "{text}"
    );
}

#[test]
fn only_bytes_no_encoding_can_carry_are_replaced() {
    let message =
        b"Subject: Gr\xfc\xdfe\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nK\xf6ln\r\n";
    let text = raw_email_text(message);
    assert!(text.starts_with("Subject: Gr\u{fffd}\u{fffd}e\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nK=F6ln"), "{text}");
    let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.body_text(0).unwrap(), "Köln\r\n");
}
