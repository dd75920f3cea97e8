//! Scenario 9 (issue 13): one message with a 40 MiB binary attachment (base64 in the
//! message) delivered by `pophook once` with `webhook.attachments: store` to a real
//! S3-compatible server the bench starts on 127.0.0.1 (`s3s-fs`, which checks every
//! SigV4 signature and keeps each object as a file under `<root>/<bucket>/<key>`).
//! The targets: the POST body under 64 KiB plus the text and HTML bodies, and
//! pophook's peak RSS under 2× the attachment. Every run also checks that the event
//! lists the attachment with its size and SHA-256, without content, and that the one
//! object in the bucket is the attachment, byte for byte (size and SHA-256).

use std::fs;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::corpus::{self, Corpus};
use crate::receiver::Received;
use crate::report::{self, Detail, Row, RunResult, Stored};
use crate::s3::{S3, SECRET_KEY};
use crate::{check_arrivals, Bench, GlobalConfig, MailboxConfig, Options, PASSWORD};

pub const SCENARIO: u8 = 9;
const USER: &str = "bench9";
/// The attachment, decoded: also what `report` judges the peak RSS against.
pub const ATTACHMENT: usize = 40 * 1024 * 1024;
/// The allowance for the POST body beyond the text and HTML bodies.
pub const BODY_ALLOWANCE: u64 = 64 * 1024;
const BUCKET: &str = "bench";
const TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(bench: &Bench, options: &Options) -> Row {
    let size = if options.quick {
        ATTACHMENT / 10
    } else {
        ATTACHMENT
    };
    let (corpus, file) = corpus::with_file("s9", size, 9);
    let expected = Expected {
        size: file.len() as u64,
        sha256: hex(&Sha256::digest(&file)),
    };
    drop(file);
    bench.dovecot.add_user(USER, PASSWORD);
    eprintln!(
        "== scenario {SCENARIO}: 1 message, {:.1} MiB, with a {:.1} MiB attachment, attachments: store (s3s-fs)",
        corpus.bytes() as f64 / 1024.0 / 1024.0,
        size as f64 / 1024.0 / 1024.0
    );
    let s3 = S3::start();
    eprintln!(
        "s3s-fs on {}, objects under {}",
        s3.endpoint(),
        s3.root().display()
    );
    let tries = (0..options.repeat)
        .map(|_| Row {
            scenario: SCENARIO,
            run: report::STORE_RUN.into(),
            messages: corpus.len(),
            bytes: corpus.bytes(),
            delivers: true,
            result: once(bench, &s3, &corpus, &expected),
        })
        .collect();
    let row = report::median(tries);
    crate::print_row(&row);
    row
}

/// What the store must hold.
struct Expected {
    size: u64,
    sha256: String,
}

/// One `pophook once` into an empty bucket.
fn once(bench: &Bench, s3: &S3, corpus: &Corpus, expected: &Expected) -> RunResult {
    let bucket = s3.root().join(BUCKET);
    if bucket.exists() {
        if let Err(e) = fs::remove_dir_all(&bucket) {
            return RunResult::Failed(format!("empty {}: {e}", bucket.display()));
        }
    }
    s3.create_bucket(BUCKET);
    bench.deliver(corpus, USER);
    bench.receiver.reset(Duration::ZERO);
    let global = GlobalConfig {
        storage: Some(s3.storage_yaml(BUCKET, SECRET_KEY, "")),
        ..GlobalConfig::default()
    };
    let mailbox = MailboxConfig {
        max_message_size: Some(crate::HUGE_LIMIT),
        ..MailboxConfig::new("bench", USER)
    };
    let result = match bench.once(&global, &[mailbox], TIMEOUT) {
        Ok(child) => {
            let received = bench.receiver.take();
            let checked = match check_arrivals(&corpus.message_ids, &received.message_ids) {
                Some(problem) => Err(problem),
                None => check_event(&bucket, &received, expected),
            };
            match checked {
                Ok(stored) => child.measured(bench.check_empty(USER), Some(Detail::Stored(stored))),
                Err(problem) => child.measured(Some(problem), None),
            }
        }
        Err(e) => RunResult::Failed(format!("{e}\ns3s-fs's log:\n{}", s3.log())),
    };
    if !result.is_ok() {
        bench.empty(USER);
    }
    result
}

/// The event lists the attachment in the store with the right size and SHA-256 and no
/// content, and the bucket holds exactly that object with those bytes.
fn check_event(bucket: &Path, received: &Received, expected: &Expected) -> Result<Stored, String> {
    let body = received
        .last_body
        .as_deref()
        .ok_or("the POST body was too large to keep: the attachment was not stored?")?;
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the POST body is not JSON: {e}"))?;
    let data = &event["data"];
    let attachments = data["attachments"]
        .as_array()
        .ok_or("the event has no attachments array")?;
    let [attachment] = attachments.as_slice() else {
        return Err(format!(
            "{} attachments in the event, 1 sent",
            attachments.len()
        ));
    };
    if attachment["size"].as_u64() != Some(expected.size) {
        return Err(format!(
            "the event's attachment size is {}, {} sent",
            attachment["size"], expected.size
        ));
    }
    if attachment["sha256"].as_str() != Some(expected.sha256.as_str()) {
        return Err(format!(
            "the event's attachment sha256 is {}, {} sent",
            attachment["sha256"], expected.sha256
        ));
    }
    if !attachment["content_base64"].is_null() || attachment["url"].as_str().is_none() {
        return Err("the attachment is inline or has no url".into());
    }
    let key = attachment["storage_key"]
        .as_str()
        .ok_or("the attachment has no storage_key")?;
    let objects = count_files(bucket);
    if objects != 1 {
        return Err(format!("{objects} objects in the bucket, 1 expected"));
    }
    let path = bucket.join(key);
    let object = fs::read(&path).map_err(|e| format!("read the object {key}: {e}"))?;
    if object.len() as u64 != expected.size {
        return Err(format!(
            "the object {key} has {} bytes, {} sent",
            object.len(),
            expected.size
        ));
    }
    let sha256 = hex(&Sha256::digest(&object));
    if sha256 != expected.sha256 {
        return Err(format!(
            "the object {key} has sha256 {sha256}, {} sent",
            expected.sha256
        ));
    }
    let text_len = |field: &str| data[field].as_str().map_or(0, |s| s.len() as u64);
    Ok(Stored {
        body_bytes: received.body_bytes,
        text_bytes: text_len("text"),
        html_bytes: text_len("html"),
        object_bytes: object.len() as u64,
    })
}

/// Files under `dir`, at any depth.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
