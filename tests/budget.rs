//! The webhook path's shared resources (issue 10): one budget for message bytes in
//! flight across every mailbox, and parsing kept off the reactor so the endpoint and
//! every socket stay responsive while large messages are parsed.

mod common;

use std::time::{Duration, Instant};

use common::process::{free_port, Pophook};
use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, hook, scripted_mailbox};

/// A message of about `size` bytes (a long text body).
fn big_message(n: usize, size: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: big {n}\r\nMessage-ID: <big{n}@example.com>\r\n\r\n"
    )
    .into_bytes();
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    while raw.len() < size {
        raw.extend_from_slice(line.as_bytes());
    }
    raw
}

/// Three mailboxes with two 700 KiB messages each, a receiver taking 150 ms per POST,
/// and one `once` over them with `max_memory` (or the default): how many POSTs were in
/// flight at most.
async fn most_posts_in_flight(max_memory: Option<u64>) -> usize {
    let mut servers = Vec::new();
    for m in 0..3 {
        servers.push(
            Scripted::start(Script {
                messages: (0..2)
                    .map(|n| big_message(m * 10 + n, 700 * 1024))
                    .collect(),
                ..Script::default()
            })
            .await,
        );
    }
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delay(Duration::from_millis(150), 204));
    let mailboxes: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| scripted_mailbox(&format!("box{i}"), s.port(), ""))
        .collect();
    let mut cfg = config(&hook(&receiver.url(), ""), &mailboxes);
    if let Some(bytes) = max_memory {
        cfg.config.max_memory = bytes;
    }
    let outcomes = pophook::service::once(&cfg.config).await.unwrap();
    assert!(outcomes.iter().all(|o| o.is_success()), "{outcomes:?}");
    assert_eq!(receiver.accepted().len(), 6);
    for s in &servers {
        assert!(s.remaining().is_empty());
    }
    receiver.max_concurrent()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_bounds_downloads_in_flight_across_mailboxes() {
    assert_eq!(
        most_posts_in_flight(Some(1024 * 1024)).await,
        1,
        "one 700 KiB message in flight at a time within a 1 MiB budget"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_tight_budget_mailboxes_post_concurrently() {
    // The control for the test above: the bound comes from the budget, not the setup.
    assert!(most_posts_in_flight(None).await > 1);
}

/// A message whose parse is slow: one header line of `size` bytes.
fn slow_to_parse(n: usize, size: usize) -> Vec<u8> {
    let mut raw = format!("Subject: slow {n}\r\nX-Long: ").into_bytes();
    raw.extend(std::iter::repeat_n(b'a', size));
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_while_large_messages_are_parsed() {
    let size = 8 * 1024 * 1024;
    // How long one parse takes on this machine, so the bound below is relative to it.
    let sample = slow_to_parse(0, size);
    let started = Instant::now();
    let _ = pophook::delivery::formats::render(
        pophook::delivery::formats::Format::Standard,
        &pophook::event::EventMeta {
            mailbox: "m",
            uidl: "u",
            received_at: time::OffsetDateTime::now_utc(),
            include_raw: false,
            truncated: false,
            attachments: pophook::event::AttachmentMode::Inline,
            max_inline_attachment_size: None,
        },
        &sample,
    );
    let one_parse = started.elapsed();

    // Four mailboxes, each with two such messages, against the pophook binary (its own
    // runtime, as in production, so the test's servers don't share its threads).
    let mut servers = Vec::new();
    for m in 0..4 {
        servers.push(
            Scripted::with_messages((0..2).map(|n| slow_to_parse(m * 10 + n, size)).collect())
                .await,
        );
    }
    let receiver = Receiver::start().await;
    let mailboxes: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            scripted_mailbox(
                &format!("box{i}"),
                s.port(),
                "    max_message_size: 33554432\n",
            )
        })
        .collect();
    let cfg = config(&hook(&receiver.url(), ""), &mailboxes);
    let port = free_port();
    std::fs::write(
        cfg.path(),
        format!("http:\n  listen: 127.0.0.1:{port}\n{}", cfg.yaml),
    )
    .unwrap();
    let log = cfg.dir.path().join("pophook.log");
    let mut child = Pophook::spawn(&["run"], &cfg.path(), &log);
    let health = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.accepted().len() < 8 {
        assert!(Instant::now() < deadline, "the messages were not delivered");
        let asked = Instant::now();
        if let Ok(answer) = client.get(&health).send().await {
            assert_eq!(answer.status(), 200);
            slowest = slowest.max(asked.elapsed());
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.terminate().await;
    eprintln!("healthz: slowest {slowest:?}, one parse {one_parse:?}, {answered} answers");
    assert!(answered > 5, "the endpoint answered during the run");
    // Parsing on the reactor would hold /healthz for several parses (each worker busy
    // with a queue of them); off it, and no more parses than cores, the endpoint
    // answers between scheduler slices. Generous, as the machine may be loaded.
    assert!(
        slowest < one_parse * 2,
        "/healthz took {slowest:?} at worst while one parse takes {one_parse:?}"
    );
}
