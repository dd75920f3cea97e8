//! Golden files in mail-parser's style: each `tests/fixtures/eml/NNN-name.eml` beside the
//! expected event `data` in `NNN-name.json`, checked with LF and with CRLF line endings.
//! The LF variant turns each CRLF into LF and nothing else (a lone CR is the message's
//! own) and must give the `.json` exactly; the CRLF run may differ from it only by what
//! the line-ending change explains, so a stray or lost CR shows.
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

/// The message with LF line endings: each CRLF becomes LF, and a lone CR (which the
/// message really has) stays.
fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
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

/// The decoded contents of the message's base64 parts, found by reading it as lines: the
/// body after a `Content-Transfer-Encoding: base64` header section, up to a boundary.
/// Such content does not depend on the message's line endings.
fn base64_contents(lf: &[u8]) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut lines = lf.split(|&b| b == b'\n');
    while let Some(line) = lines.next() {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        let Some(encoding) = line.strip_prefix("content-transfer-encoding:") else {
            continue;
        };
        if encoding.trim() != "base64" {
            continue;
        }
        // The rest of the part's header section, then its body.
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
        }
        let mut text = Vec::new();
        for line in lines.by_ref() {
            if line.starts_with(b"--") {
                break;
            }
            text.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        }
        if let Ok(bytes) = BASE64.decode(&text) {
            found.push(bytes);
        }
    }
    found
}

/// The CRLF run's `data` brought back to what the LF run must give, undoing only what
/// the line-ending change explains: `size` and `raw` go (checked separately), CRLF
/// becomes LF in strings, and an attachment that is not base64-encoded (`base64` holds
/// those contents) may be the LF run's bytes with each LF turned into CRLF; a base64
/// one must be the same bytes in both runs. The LF run's value is only stripped of
/// `size` and `raw`: it must match exactly.
fn crlf_as_lf(crlf: &mut Value, lf: &mut Value, base64: &[Vec<u8>]) {
    fn strings(value: &mut Value) {
        match value {
            Value::String(s) => *s = s.replace("\r\n", "\n"),
            Value::Array(items) => items.iter_mut().for_each(strings),
            Value::Object(map) => map.values_mut().for_each(strings),
            _ => {}
        }
    }
    for value in [&mut *crlf, &mut *lf] {
        let data = value.as_object_mut().unwrap();
        data.remove("size");
        data.remove("raw");
    }
    let lf_attachments = lf["attachments"].as_array().unwrap();
    for (n, attachment) in crlf["attachments"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        let lf_content = lf_attachments
            .get(n)
            .and_then(|a| a["content_base64"].as_str())
            .map(|c| BASE64.decode(c).unwrap());
        let (Some(content), Some(lf_content)) = (attachment["content_base64"].as_str(), lf_content)
        else {
            continue;
        };
        let content = BASE64.decode(content).unwrap();
        let explained = content == lf_content
            || (!base64.contains(&lf_content) && content == add_cr(&lf_content));
        // Otherwise the CRLF run's bytes stay, and the comparison shows them.
        if explained {
            attachment["size"] = lf_content.len().into();
            attachment["content_base64"] = BASE64.encode(lf_content).into();
        }
    }
    // Base64 holds no CR or LF: converting every string leaves the contents alone.
    strings(crlf);
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
    let lf = crlf_to_lf(&std::fs::read(eml).unwrap());
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
    crlf_as_lf(&mut crlf_value, &mut lf_value, &base64_contents(&lf));
    if crlf_value != lf_value {
        let failed = eml.with_extension("crlf.failed");
        let crlf_actual = serde_json::to_string_pretty(&crlf_value).unwrap() + "\n";
        std::fs::write(&failed, crlf_actual).unwrap();
        return Err(format!(
            "  CRLF: {} (CRLF turned into LF where line endings explain it; compare \
             with the LF output)",
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

/// The harness itself: the CRLF run passes only when its difference from the LF run is
/// the line-ending change; a stray CR, a lost CR or changed base64 bytes show.
#[test]
fn the_crlf_comparison_forgives_only_the_line_ending_change() {
    let event = |subject: &str, content: &[u8]| {
        serde_json::json!({
            "size": 1,
            "raw": null,
            "subject": subject,
            "attachments": [{"size": content.len(), "content_base64": BASE64.encode(content)}],
        })
    };
    let same = |lf: Value, crlf: Value, base64: &[Vec<u8>]| {
        let (mut lf, mut crlf) = (lf, crlf);
        crlf_as_lf(&mut crlf, &mut lf, base64);
        crlf == lf
    };
    let text = b"a\rb\nc\r\n".to_vec();
    let lf = || event("x\ry\nz", &text);
    // What CRLF line endings explain: CRLF in strings, and in a part not in base64.
    assert!(same(lf(), event("x\ry\r\nz", &add_cr(&text)), &[]));
    assert!(same(
        lf(),
        event("x\ry\r\nz", &text),
        std::slice::from_ref(&text)
    ));
    // What they do not: a CR left before the line end, a lone CR lost, base64 bytes
    // changed.
    assert!(!same(lf(), event("x\ry\r\nz\r", &text), &[]));
    assert!(!same(lf(), event("xy\r\nz", &text), &[]));
    assert!(!same(
        lf(),
        event("x\ry\r\nz", &add_cr(&text)),
        std::slice::from_ref(&text)
    ));
    assert!(!same(lf(), event("x\ry\r\nz", b"ab\r\nc\r\r\n"), &[]));
    assert_eq!(
        base64_contents(b"A: b\nContent-Transfer-Encoding: Base64\nX: y\n\nAA0B\nDQo=\n--b\n"),
        [b"\0\r\x01\r\n".to_vec()]
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
            let crlf = add_cr(&crlf_to_lf(&std::fs::read(path).unwrap()));
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
        let lf = crlf_to_lf(&std::fs::read(&path).unwrap());
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
