//! Golden files in mail-parser's style: each `tests/fixtures/eml/NNN-name.eml` beside the
//! expected event `data` in `NNN-name.json`, checked with LF and with CRLF line endings.
//!
//! A mismatch writes the actual output to `NNN-name.failed` (or `.crlf.failed`) and names
//! it in the panic. `UPDATE_GOLDEN=1` rewrites the `.json` files: review every change by
//! eye before committing it, since the expected output must be what is *right* for the
//! message, not whatever the code happens to produce.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use pophook::event::{build_event, AttachmentMode, EventMeta};
use serde_json::Value;
use time::macros::datetime;

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eml");

/// Fields that describe the delivery rather than the message bytes: the corpus pins
/// what pophook reads from mail.
const NOT_FROM_THE_MESSAGE: &[&str] = &["id", "mailbox", "uidl", "received_at", "truncated"];

fn meta() -> EventMeta<'static> {
    EventMeta {
        mailbox: "golden",
        uidl: "1",
        received_at: datetime!(2024-03-16 12:00:00 UTC),
        include_raw: false,
        truncated: false,
        attachments: AttachmentMode::Inline,
        max_inline_attachment_size: None,
    }
}

fn strip_cr(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|&b| b != b'\r').collect()
}

fn add_cr(lf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lf.len() + lf.len() / 16);
    for &b in lf {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The event's `data` as compared: without the fields that are not the message's.
fn golden_value(raw: &[u8]) -> Value {
    let mut value = serde_json::to_value(build_event(&meta(), raw).data).unwrap();
    let data = value.as_object_mut().unwrap();
    for field in NOT_FROM_THE_MESSAGE {
        data.remove(*field);
    }
    value
}

/// What must not depend on line endings: `size` and `raw` (checked separately) go, and
/// CRLF becomes LF in strings and in attachment bytes.
fn normalise_line_endings(value: &mut Value) {
    fn strings(value: &mut Value) {
        match value {
            Value::String(s) => *s = s.replace("\r\n", "\n"),
            Value::Array(items) => items.iter_mut().for_each(strings),
            Value::Object(map) => map.values_mut().for_each(strings),
            _ => {}
        }
    }
    let data = value.as_object_mut().unwrap();
    data.remove("size");
    data.remove("raw");
    for attachment in data["attachments"].as_array_mut().unwrap() {
        if let Some(content) = attachment["content_base64"].as_str() {
            // Both sides lose their CRLF pairs, so binary content compares unchanged.
            let lf = strip_crlf_pairs(&BASE64.decode(content).unwrap());
            attachment["size"] = lf.len().into();
            attachment["content_base64"] = BASE64.encode(lf).into();
        }
    }
    strings(value);
}

fn strip_crlf_pairs(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

fn golden_files() -> Vec<PathBuf> {
    let mut emls: Vec<PathBuf> = std::fs::read_dir(GOLDEN_DIR)
        .unwrap_or_else(|e| panic!("cannot read {GOLDEN_DIR}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    emls.sort();
    assert!(emls.len() >= 30, "the corpus in {GOLDEN_DIR} went missing");
    emls
}

fn run_golden(eml: &Path, update: bool) -> Result<(), String> {
    let expected_path = eml.with_extension("json");
    let lf = strip_cr(&std::fs::read(eml).unwrap());
    let crlf = add_cr(&lf);
    // Output of an earlier failure would otherwise outlive the fix.
    for stale in ["failed", "crlf.failed"] {
        let _ = std::fs::remove_file(eml.with_extension(stale));
    }

    let lf_value = golden_value(&lf);
    let actual = serde_json::to_string_pretty(&lf_value).unwrap() + "\n";
    if update {
        std::fs::write(&expected_path, &actual).unwrap();
    } else {
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            let failed = eml.with_extension("failed");
            std::fs::write(&failed, &actual).unwrap();
            return Err(format!("  LF:   {}", failed.display()));
        }
    }

    let crlf_value = golden_value(&crlf);
    if crlf_value["size"] != crlf.len() {
        return Err(format!(
            "  CRLF: {}: size is not the CRLF size",
            eml.display()
        ));
    }
    let expected_raw = match lf_value["raw"] {
        Value::Null => Value::Null,
        _ => Value::from(BASE64.encode(&crlf)),
    };
    if crlf_value["raw"] != expected_raw {
        return Err(format!(
            "  CRLF: {}: raw is not the CRLF bytes",
            eml.display()
        ));
    }
    let (mut lf_value, mut crlf_value) = (lf_value, crlf_value);
    normalise_line_endings(&mut lf_value);
    normalise_line_endings(&mut crlf_value);
    if crlf_value != lf_value {
        let failed = eml.with_extension("crlf.failed");
        let crlf_actual = serde_json::to_string_pretty(&crlf_value).unwrap() + "\n";
        std::fs::write(&failed, crlf_actual).unwrap();
        return Err(format!(
            "  CRLF: {} (line endings normalised; compare with the LF output)",
            failed.display()
        ));
    }
    Ok(())
}

#[test]
fn golden_messages_give_the_expected_events_with_lf_and_with_crlf() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let failures: Vec<String> = golden_files()
        .iter()
        .filter_map(|eml| run_golden(eml, update).err())
        .collect();
    assert!(
        failures.is_empty(),
        "golden files differ; the actual output is saved next to them. Check it by eye, \
         then UPDATE_GOLDEN=1 rewrites the .json files:\n{}",
        failures.join("\n")
    );
}

/// Every `.eml` has its `.json`, and nothing else lies in the corpus, so a fixture cannot
/// be skipped by a typo in its name.
#[test]
fn every_golden_message_has_its_expected_output() {
    // The other test is writing the files right now.
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        return;
    }
    for entry in std::fs::read_dir(GOLDEN_DIR).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".failed") || name == ".gitignore" {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("eml") => assert!(path.with_extension("json").exists(), "{name}: no .json"),
            Some("json") => assert!(path.with_extension("eml").exists(), "{name}: no .eml"),
            _ => panic!("{name}: not part of a golden pair"),
        }
    }
}

/// Every prefix of every golden message (what a dropped connection or a bug upstream
/// could hand us) and some byte soup: each must give an event, and an event without
/// structure must carry the raw bytes.
#[test]
fn hostile_input_always_produces_an_event() {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\0".to_vec(),
        b":".to_vec(),
        b"\n\n\n".to_vec(),
        b"Subject".to_vec(),
        b"Subject: =?utf-8?b?////?= =?\xff?q?=ZZ?=\r\n\r\n".to_vec(),
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n".to_vec(),
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n".to_vec(),
        b"Content-Type: text/plain; charset=\"\xff\xfe\"\r\nContent-Transfer-Encoding: \
          base64\r\n\r\n\xff\xff\xff\r\n"
            .to_vec(),
    ];
    // A small LCG keeps the soup the same on every run.
    let mut seed: u32 = 0x1234_5678;
    for len in [1, 7, 64, 1000] {
        let soup = (0..len).map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        });
        inputs.push(soup.collect());
    }
    for entry in std::fs::read_dir(GOLDEN_DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "eml") {
            let crlf = add_cr(&strip_cr(&std::fs::read(path).unwrap()));
            inputs.extend((0..crlf.len()).map(|end| crlf[..end].to_vec()));
        }
    }

    for input in &inputs {
        let event = build_event(&meta(), input);
        assert_eq!(event.data.size, input.len() as u64);
        if event.data.parse_error.is_some() {
            assert_eq!(BASE64.decode(event.data.raw.unwrap()).unwrap(), *input);
        } else {
            assert!(!event.data.headers.is_empty());
        }
    }
}

/// The body pophook posts is assembled without building each attachment's base64 as
/// a string first (issue 10); it must be exactly the event, for every golden message,
/// with LF and CRLF, with `raw` included and attachments inline.
#[test]
fn the_streamed_body_is_the_event() {
    let meta = EventMeta {
        include_raw: true,
        ..meta()
    };
    let mut checked = 0;
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let lf = strip_cr(&std::fs::read(&path).unwrap());
        for raw in [lf.clone(), add_cr(&lf)] {
            let (id, body, parse_error) = pophook::event::serialize_event(&meta, &raw);
            let streamed: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            let mut expected = serde_json::to_value(build_event(&meta, &raw)).unwrap();
            expected["timestamp"] = streamed["timestamp"].clone();
            assert_eq!(streamed, expected, "{}", path.display());
            assert_eq!(streamed["data"]["id"], id.as_str());
            assert_eq!(
                streamed["data"]["parse_error"].as_str(),
                parse_error.as_deref()
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked} messages checked");
}
