//! `attachments: store` and `raw: store` against a real S3-compatible server (s3s-fs,
//! which checks every SigV4 signature): large attachments go to the store and small
//! ones inline, presigned URLs fetch the bytes, a store that refuses keeps the mail on
//! the POP3 server for the retry schedule, a retry overwrites the same objects, and
//! `check` names what is wrong without printing the secret; a store behind a private CA
//! is reached through `storage.tls_ca_file`, and without it the error names that key.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use common::certs::TestCerts;
use common::process::free_port;
use common::receiver::{Receiver, Reply};
use common::s3::{S3, SECRET_KEY};
use common::scripted::{Script, Scripted};
use common::setup::{scripted_mailbox, TestConfig, RETRY_AT_ONCE};
use pophook::ledger::{Ledger, Record};
use pophook::mailbox::CycleReport;
use pophook::service;
use pophook::watchdog::Watchdog;

const BUCKET: &str = "mail";
const WRONG_SECRET: &str = "not-the-secret-key-4711";
const LARGE: usize = 5 * 1024 * 1024;

/// Deterministic bytes that do not compress or repeat.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn base64_lines(bytes: &[u8]) -> String {
    let text = BASE64.encode(bytes);
    text.as_bytes()
        .chunks(76)
        .map(|line| format!("{}\r\n", std::str::from_utf8(line).unwrap()))
        .collect()
}

/// A message with a large PDF and a small text file attached.
fn message(large: &[u8], small: &[u8]) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: support@example.com\r\nSubject: with files\r\n\
         Message-ID: <files@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"report 2026.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"report 2026.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\
         --b1\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\
         Content-Disposition: attachment; filename=\"notes.txt\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\
         --b1--\r\n",
        base64_lines(large),
        base64_lines(small)
    )
    .into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A configuration with the receiver, the scripted POP3 server and `storage`.
fn config(receiver: &Receiver, port: u16, webhook_extra: &str, storage: &str) -> TestConfig {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let yaml = format!(
        "state_dir: {}\nwebhook:\n  url: {}\n  timeout: 10s\n  attachments: store\n  store_larger_than: 100000\n{webhook_extra}\nmailboxes:\n{}\n{storage}\n",
        state.display(),
        receiver.url(),
        scripted_mailbox("box", port, "    timeout: 10s\n"),
    );
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    let config = pophook::config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
    TestConfig { config, yaml, dir }
}

async fn once(cfg: &TestConfig) -> CycleReport {
    let outcomes = service::once(&cfg.config).await.unwrap();
    outcomes[0]
        .result
        .clone()
        .unwrap_or_else(|e| panic!("cycle failed: {e}"))
}

fn record(cfg: &TestConfig, uidl: &str) -> Option<Record> {
    let ledger = Ledger::open(&cfg.config.state_dir, Watchdog::default()).unwrap();
    ledger.get("box", uidl)
}

async fn fetch(url: &str) -> Vec<u8> {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "GET of a presigned URL");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_attachment_is_stored_a_small_one_inline_and_the_urls_fetch_the_bytes() {
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let (large, small) = (pseudo_random(LARGE, 7), b"small notes\n".to_vec());
    let raw = message(&large, &small);
    let server = Scripted::with_messages(vec![raw.clone()]).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &receiver,
        server.port(),
        "  raw: store\n",
        &s3.storage_yaml(BUCKET, SECRET_KEY, ""),
    );

    let report = once(&cfg).await;
    assert_eq!((report.delivered, report.failed), (1, 0), "{}", s3.log());
    assert!(server.remaining().is_empty(), "delivered, so DELEd");
    let requests = receiver.accepted();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].body.len() < 64 * 1024,
        "the POST stays small: {} bytes",
        requests[0].body.len()
    );
    let event = requests[0].json();
    // The documented schema covers the storage fields.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/event.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&event)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let data = &event["data"];
    let id = data["id"].as_str().unwrap();
    let attachments = data["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2);

    let stored = &attachments[0];
    assert_eq!(stored["filename"], "report 2026.pdf");
    assert_eq!(stored["size"], LARGE as u64);
    assert_eq!(stored["content_base64"], serde_json::Value::Null);
    assert_eq!(
        stored["storage_key"],
        format!("mail/{id}/0-report_2026.pdf")
    );
    assert_eq!(stored["sha256"], hex(&Sha256::digest(&large)));
    // A plain GET, no credentials: the signature is in the URL.
    let fetched = fetch(stored["url"].as_str().unwrap()).await;
    assert_eq!(hex(&Sha256::digest(&fetched)), stored["sha256"]);
    assert!(fetched == large);

    let inline = &attachments[1];
    assert_eq!(inline["filename"], "notes.txt");
    assert_eq!(
        BASE64
            .decode(inline["content_base64"].as_str().unwrap())
            .unwrap(),
        small
    );
    assert_eq!(inline["url"], serde_json::Value::Null);
    assert_eq!(inline["storage_key"], serde_json::Value::Null);
    assert_eq!(inline["sha256"], serde_json::Value::Null);

    assert_eq!(data["raw"], serde_json::Value::Null);
    let fetched_raw = fetch(data["raw_url"].as_str().unwrap()).await;
    assert!(
        fetched_raw == raw,
        "raw_url serves the message as retrieved"
    );

    let keys: Vec<String> = s3.objects(BUCKET).into_iter().map(|(key, _)| key).collect();
    assert_eq!(
        keys,
        [
            format!("mail/{id}/0-report_2026.pdf"),
            format!("mail/{id}/raw.eml")
        ]
    );
}

/// A store that refuses: nothing is posted, the mail stays, the next cycle tries again.
async fn a_refusing_store_keeps_the_mail_and_retries(
    secret: &str,
    create_bucket: bool,
    says: &str,
) {
    let s3 = S3::start();
    if create_bucket {
        s3.create_bucket(BUCKET);
    }
    the_mail_stays_and_is_retried(&s3.storage_yaml(BUCKET, secret, ""), secret, &[says]).await;
}

/// With a store that fails, over two cycles: nothing is posted, the mail stays on the
/// POP3 server, its record counts the attempts and holds an error that says each of
/// `says` and neither `secret` nor a signature.
async fn the_mail_stays_and_is_retried(storage: &str, secret: &str, says: &[&str]) {
    let raw = message(&pseudo_random(200_000, 3), b"x");
    let server = Scripted::with_messages(vec![raw]).await;
    let receiver = Receiver::start().await;
    let cfg = config(&receiver, server.port(), RETRY_AT_ONCE, storage);

    for attempt in 1..=2u32 {
        let report = once(&cfg).await;
        assert_eq!((report.fetched, report.failed, report.delivered), (1, 1, 0));
        assert_eq!(
            receiver.requests().len(),
            0,
            "not posted without its objects"
        );
        assert_eq!(server.remaining().len(), 1, "the mail stays on the server");
        match record(&cfg, "uid-1") {
            Some(Record::Retrying {
                attempts,
                last_error,
                ..
            }) => {
                assert_eq!(attempts, attempt, "retried on the normal schedule");
                assert!(says.iter().all(|s| last_error.contains(s)), "{last_error}");
                assert!(!last_error.contains(secret) && !last_error.contains("X-Amz-Signature"));
            }
            other => panic!("expected a retry record, got {other:?}"),
        }
    }
    assert!(server.deleted_uids().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_key_keeps_the_mail_on_the_server_and_it_is_retried() {
    a_refusing_store_keeps_the_mail_and_retries(WRONG_SECRET, true, "refused the credentials")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_keeps_the_mail_on_the_server_and_it_is_retried() {
    a_refusing_store_keeps_the_mail_and_retries(SECRET_KEY, false, "bucket does not exist").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_failed_post_overwrites_the_same_objects() {
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let raw = message(&pseudo_random(300_000, 5), &pseudo_random(200_000, 9));
    let server = Scripted::with_messages(vec![raw]).await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Status(500)]);
    let cfg = config(
        &receiver,
        server.port(),
        &format!("  raw: store\n{RETRY_AT_ONCE}"),
        &s3.storage_yaml(BUCKET, SECRET_KEY, ""),
    );

    let report = once(&cfg).await;
    assert_eq!((report.failed, report.delivered), (1, 0));
    let after_failure = s3.objects(BUCKET);
    assert_eq!(after_failure.len(), 3, "two attachments and the message");
    assert_eq!(server.remaining().len(), 1);

    let report = once(&cfg).await;
    assert_eq!((report.failed, report.delivered), (0, 1));
    assert_eq!(
        s3.objects(BUCKET),
        after_failure,
        "the same keys with the same bytes: nothing new"
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let keys = |n: usize| -> Vec<serde_json::Value> {
        requests[n].json()["data"]["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["storage_key"].clone())
            .collect()
    };
    assert_eq!(keys(0), keys(1));
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_a_wrong_secret_and_a_missing_bucket_without_printing_the_secret() {
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let server = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let run = |bucket: &str, secret: &str| {
        let cfg = config(
            &receiver,
            server.port(),
            "",
            &s3.storage_yaml(bucket, secret, ""),
        );
        let output = cfg.pophook(&["check"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), all)
    };

    let (ok, output) = run(BUCKET, SECRET_KEY);
    assert!(ok, "{output}");
    assert!(output.contains("storage: ok"), "{output}");
    assert!(
        s3.objects(BUCKET).is_empty(),
        "the check object is deleted again"
    );

    let (ok, output) = run(BUCKET, WRONG_SECRET);
    assert!(!ok, "{output}");
    assert!(
        output.contains("storage: FAILED") && output.contains("refused the credentials"),
        "{output}"
    );
    assert!(
        output.contains("storage.secret_key"),
        "says what to fix: {output}"
    );
    assert!(
        !output.contains(WRONG_SECRET) && !output.contains("X-Amz-Signature"),
        "{output}"
    );

    let (ok, output) = run("no-such-bucket", SECRET_KEY);
    assert!(!ok, "{output}");
    assert!(output.contains("bucket does not exist"), "{output}");
    assert!(!output.contains(SECRET_KEY), "{output}");

    // Nothing listens there any more.
    let unreachable = {
        let port = free_port();
        format!("storage:\n  endpoint: http://127.0.0.1:{port}\n  bucket: {BUCKET}\n  access_key: a\n  secret_key: {SECRET_KEY}\n")
    };
    let cfg = config(&receiver, server.port(), "", &unreachable);
    let output = cfg.pophook(&["check"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(text.contains("storage unreachable"), "{text}");
}

/// A TLS front for s3s-fs (which speaks plain http), with a certificate from a private
/// CA: what an operator's MinIO or Garage behind their own CA looks like to pophook.
struct TlsFront {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(certs: &TestCerts, upstream: &str) -> TlsFront {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            native_tls::TlsAcceptor::new(certs.identity()).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        TlsFront { port, task }
    }

    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// s3s-fs behind a TLS front, its bucket created, and the `storage` section for it
/// with `extra` keys.
async fn store_behind_tls(certs: &TestCerts, extra: &str) -> (S3, TlsFront, String) {
    let s3 = S3::start();
    s3.create_bucket(BUCKET);
    let front = TlsFront::start(certs, &s3.endpoint()).await;
    let yaml = s3
        .storage_yaml(BUCKET, SECRET_KEY, extra)
        .replace(&s3.endpoint(), &front.endpoint());
    (s3, front, yaml)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_behind_a_private_ca_is_trusted_through_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let ca = format!("  tls_ca_file: {}\n", certs.ca_cert.display());
    let (s3, _front, storage) = store_behind_tls(&certs, &ca).await;
    let large = pseudo_random(300_000, 11);
    let server = Scripted::with_messages(vec![message(&large, b"x")]).await;
    let receiver = Receiver::start().await;
    let cfg = config(&receiver, server.port(), "", &storage);

    let report = once(&cfg).await;
    assert_eq!((report.delivered, report.failed), (1, 0), "{}", s3.log());
    assert!(server.remaining().is_empty(), "delivered, so DELEd");
    let requests = receiver.accepted();
    assert_eq!(requests.len(), 1);
    let stored = &requests[0].json()["data"]["attachments"][0];
    assert_eq!(stored["sha256"], hex(&Sha256::digest(&large)));
    let objects = s3.objects(BUCKET);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].0, stored["storage_key"].as_str().unwrap());
    assert_eq!(hex(&Sha256::digest(&objects[0].1)), stored["sha256"]);
    // The presigned URL names the https endpoint and fetches through it.
    let url = stored["url"].as_str().unwrap();
    assert!(url.starts_with("https://localhost:"), "{url}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&certs.ca_cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let fetched = trusting
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(fetched == large);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tls_ca_file_a_private_ca_is_a_clear_error_and_the_mail_stays() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let (s3, _front, storage) = store_behind_tls(&certs, "").await;
    // The error names the fix.
    the_mail_stays_and_is_retried(&storage, SECRET_KEY, &["TLS", "`storage.tls_ca_file`"]).await;
    assert!(s3.objects(BUCKET).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reaches_a_store_behind_a_private_ca_only_with_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let ca = format!("  tls_ca_file: {}\n", certs.ca_cert.display());
    let (s3, front, trusting) = store_behind_tls(&certs, &ca).await;
    let server = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let check = |storage: &str| {
        let output = config(&receiver, server.port(), "", storage).pophook(&["check"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), all)
    };

    let (ok, output) = check(&trusting);
    assert!(ok && output.contains("storage: ok"), "{output}");
    assert!(s3.objects(BUCKET).is_empty(), "the check object is deleted");

    let untrusting = s3
        .storage_yaml(BUCKET, SECRET_KEY, "")
        .replace(&s3.endpoint(), &front.endpoint());
    let (ok, output) = check(&untrusting);
    assert!(!ok, "{output}");
    assert!(
        output.contains("storage: FAILED") && output.contains("`storage.tls_ca_file`"),
        "{output}"
    );
}

#[test]
fn an_unreadable_or_non_pem_tls_ca_file_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, says) in [
        (&missing, "cannot read"),
        (&not_pem, "is not a PEM certificate"),
    ] {
        let yaml = format!(
            "webhook:\n  url: http://127.0.0.1:8080/\n  attachments: store\nmailboxes:\n{}\n\
             storage:\n  endpoint: https://127.0.0.1:9000\n  bucket: {BUCKET}\n  access_key: a\n  secret_key: {SECRET_KEY}\n  tls_ca_file: {}\n",
            scripted_mailbox("box", 110, ""),
            file.display()
        );
        let e = pophook::config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(
            e.contains("`storage.tls_ca_file`")
                && e.contains(says)
                && e.contains(&file.display().to_string()),
            "{e}"
        );
        assert!(!e.contains(SECRET_KEY), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_ca_changes_the_fingerprints_so_a_reload_applies_it() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca_a, ca_b) = (
        TestCerts::generate(dir_a.path()).ca_cert,
        TestCerts::generate(dir_b.path()).ca_cert,
    );
    let server = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let trusted = dir_a.path().join("trusted.pem");
    let storage = |extra: &str| {
        format!("storage:\n  endpoint: https://localhost:9000\n  bucket: {BUCKET}\n  access_key: a\n  secret_key: {SECRET_KEY}\n{extra}")
    };
    let fingerprints = |extra: &str| {
        let cfg = config(&receiver, server.port(), "", &storage(extra));
        (
            cfg.config.storage.as_ref().unwrap().fingerprint(),
            cfg.config.mailboxes[0].fingerprint(),
        )
    };
    let with_ca = format!("  tls_ca_file: {}\n", trusted.display());
    std::fs::copy(&ca_a, &trusted).unwrap();
    let first = fingerprints(&with_ca);
    assert_eq!(
        fingerprints(&with_ca),
        first,
        "stable while nothing changes"
    );
    assert_ne!(fingerprints(""), first);
    // The same path, another certificate: what renewing a CA in place looks like.
    std::fs::copy(&ca_b, &trusted).unwrap();
    let renewed = fingerprints(&with_ca);
    assert_ne!(renewed.0, first.0);
    assert_ne!(renewed.1, first.1, "the mailbox restarts with the new CA");
}
