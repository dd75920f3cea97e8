//! Postmark's inbound webhook JSON, for handlers written against Postmark (Action
//! Mailbox's Postmark ingress, django-anymail, laravel-mailbox, hand-written ones).
//!
//! Built from pophook's own event, so both formats read the message the same way, plus
//! `RawEmail`, which Action Mailbox reads exclusively and anymail prefers: a receiver that
//! parses the message itself gets every byte-level detail the JSON fields smooth over.

use serde::Serialize;

use crate::event::{self, AttachmentMode, EmailAddress, EventMeta};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Inbound {
    from: String,
    from_name: String,
    from_full: Full,
    to: String,
    to_full: Vec<Full>,
    cc: String,
    cc_full: Vec<Full>,
    bcc: String,
    bcc_full: Vec<Full>,
    reply_to: String,
    original_recipient: String,
    subject: String,
    date: String,
    mailbox_hash: String,
    #[serde(rename = "MessageID")]
    message_id: String,
    message_stream: &'static str,
    text_body: String,
    html_body: String,
    stripped_text_reply: String,
    tag: String,
    headers: Vec<NameValue>,
    attachments: Vec<Attachment>,
    raw_email: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Full {
    email: String,
    name: String,
    mailbox_hash: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment {
    name: String,
    content: String,
    content_type: String,
    #[serde(rename = "ContentID")]
    content_id: String,
    content_length: u64,
}

/// Fields Postmark takes out of `Headers` because they have their own keys. anymail
/// refuses a `Headers` list that repeats them when it builds the message from the
/// fields (without `RawEmail`), so they must not appear twice.
const OWN_KEYS: [&str; 7] = ["from", "to", "cc", "bcc", "subject", "date", "reply-to"];

/// The JSON body, and the parse error when the message could not be parsed (it still
/// goes out whole in `RawEmail`).
///
/// Postmark sends every attachment with its content, so `attachments` and
/// `max_inline_attachment_size` do not apply; `RawEmail` is always there.
pub fn render(meta: &EventMeta<'_>, message: &[u8]) -> (Vec<u8>, Option<String>) {
    let event = event::build_event(
        &EventMeta {
            include_raw: false,
            attachments: AttachmentMode::Inline,
            max_inline_attachment_size: None,
            ..*meta
        },
        message,
    );
    let data = event.data;
    let full = |a: &EmailAddress| Full {
        email: a.address.clone().unwrap_or_default(),
        name: a.name.clone().unwrap_or_default(),
        mailbox_hash: a
            .address
            .as_deref()
            .and_then(crate::event::recipient::mailbox_hash)
            .unwrap_or_default(),
    };
    let header = |name: &str| {
        data.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim().to_owned())
            .unwrap_or_default()
    };
    // Postmark puts Return-Path first, and anymail takes a leading Return-Path as the
    // envelope sender.
    let mut headers: Vec<NameValue> = data
        .headers
        .iter()
        .filter(|h| !OWN_KEYS.iter().any(|k| h.name.eq_ignore_ascii_case(k)))
        .map(|h| NameValue {
            name: h.name.clone(),
            value: h.value.trim().to_owned(),
        })
        .collect();
    if let Some(at) = headers
        .iter()
        .position(|h| h.name.eq_ignore_ascii_case("return-path"))
    {
        let return_path = headers.remove(at);
        headers.insert(0, return_path);
    }
    let text = data.text.clone().unwrap_or_default();
    let inbound = Inbound {
        from: data
            .from
            .first()
            .and_then(|a| a.address.clone())
            .unwrap_or_default(),
        from_name: data
            .from
            .first()
            .and_then(|a| a.name.clone())
            .unwrap_or_default(),
        from_full: data.from.first().map(full).unwrap_or(Full {
            email: String::new(),
            name: String::new(),
            mailbox_hash: String::new(),
        }),
        to: display_list(&data.to),
        to_full: data.to.iter().map(full).collect(),
        cc: display_list(&data.cc),
        cc_full: data.cc.iter().map(full).collect(),
        bcc: display_list(&data.bcc),
        bcc_full: data.bcc.iter().map(full).collect(),
        reply_to: data
            .reply_to
            .iter()
            .filter_map(|a| a.address.as_deref())
            .collect::<Vec<_>>()
            .join(", "),
        original_recipient: data.recipient.clone().unwrap_or_default(),
        subject: data.subject.clone().unwrap_or_default(),
        date: header("date"),
        mailbox_hash: data.mailbox_hash.clone().unwrap_or_default(),
        message_id: data.id.clone(),
        message_stream: "inbound",
        // The event's own reply stripping: null means nothing was quoted, and then the
        // whole text is the reply.
        stripped_text_reply: data.stripped_text.clone().unwrap_or_else(|| text.clone()),
        text_body: text,
        html_body: data.html.clone().unwrap_or_default(),
        tag: String::new(),
        headers,
        attachments: data
            .attachments
            .iter()
            .map(|a| Attachment {
                name: a.filename.clone().unwrap_or_default(),
                content: a.content_base64.clone().unwrap_or_default(),
                content_type: a.content_type.clone(),
                content_id: a.content_id.clone().unwrap_or_default(),
                content_length: a.size,
            })
            .collect(),
        // JSON carries text: 8-bit bodies in another charset are transfer-encoded
        // first, so they decode to the same bytes (see `eight_bit`).
        raw_email: super::eight_bit::raw_email_text(message),
    };
    let body = serde_json::to_vec(&inbound).expect("the Postmark JSON always serialises");
    (body, data.parse_error)
}

/// `"Name" <address>, address`, as Postmark writes `To`, `Cc` and `Bcc`.
fn display_list(addresses: &[EmailAddress]) -> String {
    addresses
        .iter()
        .filter_map(|a| {
            let address = a.address.as_deref()?;
            Some(match a.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => format!(
                    "\"{}\" <{address}>",
                    name.replace('\\', "\\\\").replace('"', "\\\"")
                ),
                None => address.to_owned(),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::formats::tests::meta;
    use base64::Engine as _;
    use serde_json::Value;

    const MESSAGE: &str = "Return-Path: <bounce@example.org>\r\n\
        Delivered-To: support+ticket-42@example.com\r\n\
        From: =?UTF-8?Q?Jos=C3=A9_Mar=C3=ADa?= <jose@example.org>\r\n\
        To: \"Support \\\"Desk\\\"\" <support+ticket-42@example.com>, other@example.com\r\n\
        Cc: Carl <carl@example.com>\r\n\
        Reply-To: replies@example.org\r\n\
        Subject: =?UTF-8?B?w4ljaGFudGlsbG9uIOKCrA==?=\r\n\
        Date: Sat, 21 Nov 2026 10:00:00 +0100\r\n\
        Message-ID: <m1@example.org>\r\n\
        X-Spam-Status: No\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\
        \r\n\
        --b\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        \r\n\
        Thanks!\r\n\
        \r\n\
        On Fri, 20 Nov 2026, Support wrote:\r\n\
        > How can we help?\r\n\
        --b\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.bin\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        AAEC/w==\r\n\
        --b--\r\n";

    fn rendered() -> Value {
        let (body, error) = render(&meta(false), MESSAGE.as_bytes());
        assert_eq!(error, None);
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn fields_are_named_and_filled_as_postmark_documents_them() {
        let json = rendered();
        assert_eq!(json["From"], "jose@example.org");
        assert_eq!(json["FromName"], "José María");
        assert_eq!(
            json["FromFull"],
            serde_json::json!({"Email": "jose@example.org", "Name": "José María", "MailboxHash": ""})
        );
        assert_eq!(
            json["To"],
            "\"Support \\\"Desk\\\"\" <support+ticket-42@example.com>, other@example.com"
        );
        assert_eq!(json["ToFull"][0]["MailboxHash"], "ticket-42");
        assert_eq!(json["CcFull"][0]["Name"], "Carl");
        assert_eq!(json["Bcc"], "");
        assert_eq!(json["BccFull"], serde_json::json!([]));
        assert_eq!(json["ReplyTo"], "replies@example.org");
        assert_eq!(json["OriginalRecipient"], "support+ticket-42@example.com");
        assert_eq!(json["MailboxHash"], "ticket-42");
        assert_eq!(json["Subject"], "Échantillon €");
        assert_eq!(json["Date"], "Sat, 21 Nov 2026 10:00:00 +0100");
        assert_eq!(
            json["MessageID"],
            crate::event::event_id("support", "UID1"),
            "the stable event id, so receivers that dedupe on it keep working"
        );
        assert_eq!(json["MessageStream"], "inbound");
        assert_eq!(json["Tag"], "");
        assert_eq!(json["RawEmail"], MESSAGE);
        assert!(json["TextBody"]
            .as_str()
            .unwrap()
            .contains("> How can we help?"));
        assert_eq!(json["StrippedTextReply"], "Thanks!");
        assert_eq!(json["HtmlBody"], "");
    }

    #[test]
    fn headers_leave_out_the_fields_with_their_own_keys_and_start_with_return_path() {
        let json = rendered();
        let names: Vec<&str> = json["Headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Return-Path",
                "Delivered-To",
                "Message-ID",
                "X-Spam-Status",
                "MIME-Version",
                "Content-Type"
            ]
        );
        assert_eq!(json["Headers"][0]["Value"], "<bounce@example.org>");
    }

    #[test]
    fn attachments_carry_their_decoded_name_and_bytes() {
        let json = rendered();
        let attachment = &json["Attachments"][0];
        assert_eq!(attachment["Name"], "résumé.bin");
        assert_eq!(attachment["ContentType"], "application/octet-stream");
        assert_eq!(attachment["ContentLength"], 4);
        assert_eq!(attachment["ContentID"], "");
        let content = base64::engine::general_purpose::STANDARD
            .decode(attachment["Content"].as_str().unwrap())
            .unwrap();
        assert_eq!(content, [0, 1, 2, 255]);
    }

    #[test]
    fn an_unparseable_message_still_goes_out_whole_in_raw_email() {
        let (body, error) = render(&meta(false), b"\r\nno header fields at all\r\n");
        assert!(error.is_some());
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["RawEmail"], "\r\nno header fields at all\r\n");
        assert_eq!(json["Subject"], "");
    }

    #[test]
    fn a_reply_without_a_quote_is_all_stripped_text_reply() {
        let message =
            b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nOnly new text\r\n";
        let (body, error) = render(&meta(false), message);
        assert!(error.is_none(), "{error:?}");
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["TextBody"].as_str().unwrap().trim_end(),
            "Only new text"
        );
        assert_eq!(json["StrippedTextReply"], json["TextBody"]);
    }
}
