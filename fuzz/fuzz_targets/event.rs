//! Arbitrary message bytes through `build_event`, with and without `include_raw`, in
//! every attachment mode (the first input byte picks it and the inline size limit).
//!
//! pophook's own code must not panic, the event must serialise to JSON and read back
//! unchanged, the body pophook posts (assembled with the base64 streamed in) must be
//! that same event, and a message that could not be parsed (a MIME parser panic included)
//! must still carry its original bytes in `raw`: they are deleted from the server next.
//! The same bytes as Postmark's `RawEmail` text must not panic either.
#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pophook::event::{build_event, serialize_event, AttachmentMode, Event, EventMeta};
use std::sync::Once;

/// libfuzzer aborts on any panic. A panic inside mail-parser is part of the contract
/// under test instead: `build_event` catches it and sends the message raw, which the
/// checks below verify. (mail-parser 0.11.9 trips a `debug_assert!` on some inputs, and
/// fuzz builds have debug assertions on.) A panic anywhere else still aborts.
fn tolerate_mail_parser_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|at| at.file().contains("/mail-parser-"));
            if !in_parser {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|input: &[u8]| {
    tolerate_mail_parser_panics();
    // The first byte picks the attachment settings; the rest is the message.
    let Some((&settings, raw)) = input.split_first() else {
        return;
    };
    let attachments = match settings % 3 {
        0 => AttachmentMode::Inline,
        1 => AttachmentMode::Metadata,
        _ => AttachmentMode::Omit,
    };
    let max_inline = (settings & 4 != 0).then(|| u64::from(settings >> 3) * 16);
    for include_raw in [false, true] {
        let meta = EventMeta {
            mailbox: "fuzz",
            uidl: "uid-1",
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            include_raw,
            truncated: false,
            attachments,
            max_inline_attachment_size: max_inline,
        };
        let event = build_event(&meta, raw);
        let json = serde_json::to_vec(&event).expect("an event serialises to JSON");
        let back: Event = serde_json::from_slice(&json).expect("the JSON reads back");
        assert_eq!(back, event, "the event changed through JSON");
        let (id, body, _) = serialize_event(&meta, raw);
        let mut posted: Event = serde_json::from_slice(&body).expect("the posted body is JSON");
        posted.timestamp = event.timestamp.clone();
        assert_eq!(posted, event, "the posted body is not the event");
        assert_eq!(id, event.data.id);

        let data = &event.data;
        assert_eq!(data.size, raw.len() as u64);
        match &data.raw {
            Some(encoded) => {
                let decoded = BASE64.decode(encoded).expect("raw is standard base64");
                assert_eq!(decoded, raw, "raw is not the message as retrieved");
            }
            None => {
                assert!(
                    data.parse_error.is_none(),
                    "parse_error without raw: message lost"
                );
                assert!(!include_raw, "include_raw set but raw missing");
            }
        }
        if attachments == AttachmentMode::Omit {
            assert!(data.attachments.is_empty(), "attachments: omit sent some");
        }
        for attachment in &data.attachments {
            match &attachment.content_base64 {
                Some(content) => {
                    assert!(!attachment.content_omitted);
                    assert_eq!(
                        attachments,
                        AttachmentMode::Inline,
                        "content in {attachments:?}"
                    );
                    assert!(
                        max_inline.is_none_or(|max| attachment.size <= max),
                        "over the inline limit"
                    );
                    let content = BASE64
                        .decode(content)
                        .expect("attachment content is base64");
                    assert_eq!(content.len() as u64, attachment.size);
                }
                None => {
                    assert!(
                        attachment.content_omitted,
                        "content missing without content_omitted"
                    );
                    let over_limit = max_inline.is_some_and(|max| attachment.size > max);
                    assert!(
                        attachments != AttachmentMode::Inline || over_limit,
                        "inline content dropped"
                    );
                }
            }
        }
    }
    // Postmark's `RawEmail`: never a panic, and a UTF-8 message goes as it is.
    let text = pophook::delivery::formats::eight_bit::raw_email_text(raw);
    if let Ok(utf8) = std::str::from_utf8(raw) {
        assert_eq!(text, utf8, "a UTF-8 message changed in RawEmail");
    }
});
