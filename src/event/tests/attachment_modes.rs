use super::*;

/// A 3-octet and a 100-octet attachment, in that order.
fn two_attachments() -> String {
    format!(
        "From: a@example.com\r\nSubject: files\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --b\r\nContent-Type: text/csv; name=\"small.csv\"\r\n\
             Content-Disposition: attachment; filename=\"small.csv\"\r\n\r\na,b\r\n\
             --b\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"big.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        BASE64.encode([0u8; 100])
    )
}

fn attachments_with(
    mode: AttachmentMode,
    max_inline_attachment_size: Option<u64>,
) -> Vec<Attachment> {
    let meta = EventMeta {
        attachments: mode,
        max_inline_attachment_size,
        ..meta("1")
    };
    build_event(&meta, two_attachments().as_bytes())
        .data
        .attachments
}

/// (filename, size, decoded content or None when omitted)
fn summary(attachments: &[Attachment]) -> Vec<(&str, u64, Option<Vec<u8>>)> {
    attachments
        .iter()
        .map(|a| {
            assert_eq!(a.content_omitted, a.content_base64.is_none());
            let content = a.content_base64.as_ref().map(|c| BASE64.decode(c).unwrap());
            (a.filename.as_deref().unwrap(), a.size, content)
        })
        .collect()
}

#[test]
fn inline_mode_sends_every_attachment_with_its_content() {
    let attachments = attachments_with(AttachmentMode::Inline, None);
    assert_eq!(
        summary(&attachments),
        [
            ("small.csv", 3, Some(b"a,b".to_vec())),
            ("big.bin", 100, Some(vec![0; 100])),
        ]
    );
    assert_eq!(AttachmentMode::default(), AttachmentMode::Inline);
}

#[test]
fn metadata_mode_lists_every_attachment_without_content() {
    let attachments = attachments_with(AttachmentMode::Metadata, None);
    assert_eq!(
        summary(&attachments),
        [("small.csv", 3, None), ("big.bin", 100, None)]
    );
    assert!(attachments.iter().all(|a| a.content_omitted));
    assert_eq!(attachments[0].content_type, "text/csv");
    // A limit does not bring content back.
    assert_eq!(
        attachments_with(AttachmentMode::Metadata, Some(1000)),
        attachments
    );
}

#[test]
fn omit_mode_sends_no_attachments_and_the_message_is_otherwise_unchanged() {
    assert_eq!(attachments_with(AttachmentMode::Omit, None), []);
    let meta = EventMeta {
        attachments: AttachmentMode::Omit,
        ..meta("1")
    };
    let event = build_event(&meta, two_attachments().as_bytes());
    assert_eq!(event.data.text.as_deref(), Some("see attached"));
    // A message we cannot parse still goes out whole.
    let event = build_event(&meta, b"");
    assert_eq!(event.data.raw.as_deref(), Some(""));
}

#[test]
fn inline_mode_leaves_out_only_attachments_over_the_size_limit() {
    assert_eq!(
        summary(&attachments_with(AttachmentMode::Inline, Some(50))),
        [
            ("small.csv", 3, Some(b"a,b".to_vec())),
            ("big.bin", 100, None)
        ]
    );
    // The limit is inclusive.
    assert_eq!(
        summary(&attachments_with(AttachmentMode::Inline, Some(100))),
        summary(&attachments_with(AttachmentMode::Inline, None))
    );
    assert_eq!(
        summary(&attachments_with(AttachmentMode::Inline, Some(2))),
        [("small.csv", 3, None), ("big.bin", 100, None)]
    );
}

#[test]
fn attachment_modes_are_spelled_in_lower_case() {
    for (json, mode) in [
        ("\"inline\"", AttachmentMode::Inline),
        ("\"metadata\"", AttachmentMode::Metadata),
        ("\"omit\"", AttachmentMode::Omit),
    ] {
        assert_eq!(serde_json::from_str::<AttachmentMode>(json).unwrap(), mode);
    }
    assert!(serde_json::from_str::<AttachmentMode>("\"Inline\"").is_err());
}
