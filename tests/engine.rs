//! The delivery engine under the faults that used to stall, loop or lose mail (issue
//! 9): a message the server refuses or that breaks the connection, oversized mail on
//! a server without TOP, DELE refused, QUIT not committing, shared and reused UIDLs,
//! forgetting too soon, LOGIN-DELAY and the breaker's probe after an outage. Scripted
//! POP3 server (faults a real one won't make on demand) + recording receiver. How often
//! the task cycles (breaker, 410, clock) is tested on paused time in `mailbox::task`.

mod common;

use std::time::Duration;

use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, message, TestConfig};
use pophook::ledger::{Ledger, Record};
use pophook::mailbox::CycleReport;
use pophook::service;
use pophook::watchdog::Watchdog;

fn mailbox(port: u16, extra: &str) -> String {
    common::setup::scripted_mailbox("box", port, extra)
}

fn hook(receiver: &Receiver, extra: &str) -> String {
    common::setup::hook(&receiver.url(), extra)
}

/// One `once` run: the report, or the error text.
async fn once(cfg: &TestConfig) -> Result<CycleReport, String> {
    let mut outcomes = service::once(&cfg.config).await.unwrap();
    outcomes.remove(0).result
}

fn records(cfg: &TestConfig) -> Vec<(String, Record)> {
    let ledger = Ledger::open(&cfg.config.state_dir, Watchdog::default()).unwrap();
    let mut all: Vec<(String, Record)> = ledger
        .records(Some("box"))
        .into_iter()
        .map(|(_, key, record)| (key, record))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn record(cfg: &TestConfig, key: &str) -> Option<Record> {
    records(cfg)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, r)| r)
}

/// The subjects that arrived, sorted: with `max_in_flight` above 1 POSTs may arrive in
/// any order.
fn subjects(receiver: &Receiver) -> Vec<String> {
    let mut subjects: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| {
            r.json()["data"]["subject"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_server_refuses_to_retr_does_not_hold_up_the_others() {
    let server = Scripted::start(Script {
        messages: (1..=3).map(message).collect(),
        retr_error_uids: vec!["uid-2".into()],
        pipelining: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, "  retry: {schedule: [0s, 0s, 0s]}"),
        &mailbox(server.port(), ""),
    );

    let report = once(&cfg)
        .await
        .expect("one refused RETR does not fail the cycle");
    assert_eq!(
        (report.delivered, report.fetch_failed),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(subjects(&receiver), ["test 1", "test 3"]);
    assert_eq!(
        server.uids(),
        ["uid-2"],
        "the others deleted in the same session"
    );
    assert!(matches!(
        record(&cfg, "uid-2"),
        Some(Record::Retrying { attempts: 1, .. })
    ));

    // Each cycle is an attempt on its schedule; when the schedule is used up it parks.
    let _ = once(&cfg).await;
    let _ = once(&cfg).await;
    assert!(
        matches!(
            record(&cfg, "uid-2"),
            Some(Record::Parked { attempts: 3, .. })
        ),
        "{:?}",
        record(&cfg, "uid-2")
    );
    let report = once(&cfg).await.unwrap();
    assert_eq!((report.fetched, report.parked_listed), (0, 1));
    assert!(
        !report.is_clean(),
        "`once` exits 1 while a message is parked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_whose_download_always_breaks_the_connection_is_parked_and_the_rest_flow() {
    let server = Scripted::start(Script {
        messages: (1..=3).map(message).collect(),
        drop_during_retr_uid: Some("uid-2".into()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, "  retry: {schedule: [0s, 0s, 0s]}"),
        &mailbox(server.port(), ""),
    );
    // Two drops are forgiven (a flaky network), then each is an attempt on the
    // schedule: parked after 2 + 3. Meanwhile it is fetched last, so the others flow.
    for _ in 0..6 {
        let _ = once(&cfg).await;
    }
    assert_eq!(subjects(&receiver), ["test 1", "test 3"]);
    assert_eq!(server.uids(), ["uid-2"]);
    assert!(
        matches!(record(&cfg, "uid-2"), Some(Record::Parked { .. })),
        "{:?}",
        record(&cfg, "uid-2")
    );
    let attempts = server
        .commands()
        .iter()
        .filter(|c| c.starts_with("RETR"))
        .count();
    assert!(attempts <= 2 + 5 + 1, "bounded attempts, got {attempts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_on_a_server_without_top_is_an_attempt_not_a_stall() {
    let mut big = message(2);
    big.extend(std::iter::repeat_n(b'x', 20_000));
    big.extend(b"\r\n");
    let server = Scripted::start(Script {
        messages: vec![message(1), big, message(3)],
        top: false,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, "  retry: {schedule: [0s, 0s]}"),
        &mailbox(server.port(), "    max_message_size: 8192\n"),
    );
    let report = once(&cfg).await.unwrap();
    assert_eq!(
        (report.delivered, report.fetch_failed),
        (2, 1),
        "{report:?}"
    );
    assert!(
        !server
            .commands()
            .iter()
            .any(|c| c.starts_with("RETR 2") || c.starts_with("TOP")),
        "neither downloaded nor asked for by TOP"
    );
    let Some(Record::Retrying { last_error, .. }) = record(&cfg, "uid-2") else {
        panic!("{:?}", record(&cfg, "uid-2"));
    };
    assert!(last_error.contains("max_message_size"), "{last_error}");
    let _ = once(&cfg).await;
    assert!(matches!(record(&cfg, "uid-2"), Some(Record::Parked { .. })));
    assert_eq!(server.uids(), ["uid-2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_deles_cause_neither_a_reconnect_loop_nor_a_second_post() {
    // A read-only maildrop with 50 messages delivered earlier and one new one.
    let server = Scripted::start(Script {
        messages: (1..=51).map(message).collect(),
        dele_error: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    commit_every: 50\n"),
    );
    let report = tokio::time::timeout(Duration::from_secs(60), once(&cfg))
        .await
        .expect("`once` ends")
        .unwrap();
    assert_eq!(report.delivered, 51);
    assert!(report.dele_refused >= 51, "{report:?}");
    let first = server.sessions();
    assert!(first <= 2, "{first} sessions for one `once`");

    let report = tokio::time::timeout(Duration::from_secs(60), once(&cfg))
        .await
        .expect("`once` ends")
        .unwrap();
    assert_eq!(report.delivered, 0, "nothing posted twice");
    assert_eq!(server.sessions() - first, 1, "one session per cycle");
    assert_eq!(receiver.requests().len(), 51);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_per_cycle_commits_a_large_backlog_with_one_quit() {
    let server = Scripted::start(Script {
        messages: (1..=120).map(message).collect(),
        pipelining: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    let report = once(&cfg).await.unwrap();
    assert_eq!((report.delivered, report.deleted), (120, 120));
    assert_eq!(server.sessions(), 1);
    assert_eq!(server.commands().iter().filter(|c| *c == "QUIT").count(), 1);
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_interval_quits_and_continues_in_a_new_session() {
    let server = Scripted::with_messages((1..=6).map(message).collect()).await;
    let receiver = Receiver::start().await;
    // Every POST takes 300 ms; a 500 ms interval QUITs after about two messages.
    receiver.set_default(Reply::Delay(Duration::from_millis(300), 204));
    let cfg = config(
        &hook(&receiver, "  max_in_flight: 1"),
        &mailbox(server.port(), "    commit_interval: 500ms\n"),
    );
    let report = once(&cfg).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(server.remaining().is_empty());
    let quits = server.commands().iter().filter(|c| *c == "QUIT").count();
    assert!((2..=6).contains(&quits), "{quits} QUITs");
    assert_eq!(receiver.requests().len(), 6, "nothing posted twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_reused_after_its_message_was_deleted_is_posted_not_deleted_unposted() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    once(&cfg).await.unwrap();
    assert!(server.remaining().is_empty());
    assert_eq!(
        record(&cfg, "uid-1"),
        None,
        "forgotten after the QUIT that removed it"
    );

    // The server restarts its UID list: a new message gets the old UID at once.
    server.push_message(message(2), "uid-1");
    let report = once(&cfg).await.unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(subjects(&receiver), ["test 1", "test 2"]);
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_whose_listed_size_changed_is_posted_before_it_is_deleted() {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        quit_error: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    assert!(once(&cfg).await.is_err(), "QUIT -ERR: nothing committed");
    assert!(matches!(
        record(&cfg, "uid-1"),
        Some(Record::Delivered { .. })
    ));
    // Another message now carries the UID (different size): it must not be DELEd unposted.
    server.take_message("uid-1").unwrap();
    let mut other = message(2);
    other.extend(b"A longer body than the first one had.\r\n");
    server.push_message(other, "uid-1");
    let _ = once(&cfg).await;
    assert_eq!(subjects(&receiver), ["test 1", "test 2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sharing_a_uidl_are_delivered_and_deleted_each_with_its_own_id() {
    let server = Scripted::start(Script {
        messages: (1..=3).map(message).collect(),
        uids: Some(vec!["same".into(), "same".into(), "other".into()]),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    let report = once(&cfg).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.delivered, report.shared_uidl), (3, 2));
    assert!(server.remaining().is_empty());
    let ids: std::collections::HashSet<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "distinct ids");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_uidls_with_delete_false_are_posted_once() {
    let server = Scripted::start(Script {
        messages: (1..=2).map(message).collect(),
        uids: Some(vec!["same".into(), "same".into()]),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    delete: false\n"),
    );
    assert!(once(&cfg).await.unwrap().is_clean());
    assert!(once(&cfg).await.unwrap().is_clean());
    assert_eq!(
        receiver.requests().len(),
        2,
        "each posted once, then recognised by content"
    );
    assert_eq!(server.remaining().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listed_message_left_alone_makes_once_fail() {
    let server = Scripted::start(Script {
        messages: (1..=2).map(message).collect(),
        uids: Some(vec!["good".into(), "bad uid with spaces".into()]),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    let report = once(&cfg).await.unwrap();
    assert_eq!((report.delivered, report.skipped), (1, 1));
    assert!(
        !report.is_clean(),
        "`once` exits 1 while something is left alone"
    );
    let output = cfg.pophook(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["mailboxes"][0]["left_alone"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_message_stays_dropped_when_one_listing_misses_it() {
    let server = Scripted::with_messages((1..=2).map(message).collect()).await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Status(422); 6]);
    let cfg = config(
        &hook(
            &receiver,
            "  max_in_flight: 1\n  retry: {schedule: [0s, 0s, 0s, 0s]}",
        ),
        &mailbox(server.port(), "    delete: false\n"),
    );
    for _ in 0..3 {
        let _ = once(&cfg).await;
    }
    assert!(matches!(record(&cfg, "uid-1"), Some(Record::Parked { .. })));
    let id = pophook::event::event_id("box", "uid-1");
    assert!(cfg.pophook(&["parked", "drop", &id]).status.success());

    // One listing without it (another client moved it away), then it is back.
    let held = server.take_message("uid-1").unwrap();
    let _ = once(&cfg).await;
    assert!(
        matches!(record(&cfg, "uid-1"), Some(Record::Dropped { .. })),
        "{:?}",
        record(&cfg, "uid-1")
    );
    server.push_message(held, "uid-1");
    let posts = receiver.requests().len();
    let _ = once(&cfg).await;
    assert_eq!(
        receiver.requests().len(),
        posts,
        "an operator's drop is not undone"
    );
    assert!(matches!(record(&cfg, "uid-2"), Some(Record::Parked { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_rejections_counts_refusals_not_outage_retries() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    // Four outage failures, then a refusal: not parked yet (max_rejections is 3).
    receiver.push_replies([
        Reply::Status(503),
        Reply::Status(503),
        Reply::Status(503),
        Reply::Status(503),
        Reply::Status(422),
    ]);
    let cfg = config(
        &hook(
            &receiver,
            "  retry: {schedule: [0s, 0s, 0s, 0s, 0s, 0s, 0s, 0s]}",
        ),
        &mailbox(server.port(), ""),
    );
    for _ in 0..5 {
        let _ = once(&cfg).await;
    }
    assert!(
        matches!(
            record(&cfg, "uid-1"),
            Some(Record::Retrying {
                attempts: 5,
                rejections: 1,
                ..
            })
        ),
        "{:?}",
        record(&cfg, "uid-1")
    );
    let _ = once(&cfg).await;
    assert!(
        server.remaining().is_empty(),
        "delivered on the next attempt"
    );
}

/// Waits until the receiver got `n` requests, however answered.
async fn wait_for_requests(receiver: &Receiver, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while receiver.requests().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} webhook requests, got {}",
            receiver.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_the_first_post_goes_alone_and_then_up_to_max_in_flight() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    // Two POSTs fail; after that each takes a while, so POSTs sent together overlap.
    receiver.push_replies([Reply::Status(503), Reply::Status(503)]);
    receiver.set_default(Reply::Delay(Duration::from_millis(300), 204));
    let cfg = config(
        &hook(
            &receiver,
            "  max_in_flight: 3\n  retry: {schedule: [0s, 0s, 0s, 0s, 0s]}",
        ),
        &mailbox(server.port(), ""),
    );
    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(service::run(cfg.config.clone(), shutdown));
    // The first cycle's only POST fails: the breaker holds the mailbox off for 1 s,
    // and meanwhile more mail arrives than `max_in_flight`.
    wait_for_requests(&receiver, 1).await;
    for n in 2..=6 {
        server.push_message(message(n), &format!("uid-{n}"));
    }
    // The next cycle probes with one message; it fails too, and nothing else is
    // posted before the breaker's next (2 s) wait is over.
    wait_for_requests(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 2, "the probe is a single POST");
    assert_eq!(receiver.max_concurrent(), 1);
    // The probe after that is accepted: the rest go up to three at a time.
    receiver.wait_for_accepted(6, Duration::from_secs(15)).await;
    trigger.trigger();
    run.await.unwrap().unwrap();
    assert_eq!(receiver.max_concurrent(), 3);
    assert_eq!(subjects(&receiver).len(), 6);
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_session_starts_sooner_than_login_delay_after_the_last() {
    let server = Scripted::start(Script {
        messages: (1..=4).map(message).collect(),
        raw_replies: vec![(
            "CAPA".into(),
            b"+OK\r\nUSER\r\nTOP\r\nUIDL\r\nLOGIN-DELAY 3\r\n.\r\n".to_vec(),
        )],
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Each POST takes 300 ms and a session commits after 200 ms: without LOGIN-DELAY
    // the four messages would take four sessions in about a second and a half.
    receiver.set_default(Reply::Delay(Duration::from_millis(300), 204));
    let cfg = config(
        &hook(&receiver, "  max_in_flight: 1"),
        &mailbox(server.port(), "    commit_interval: 200ms\n"),
    );
    let report = once(&cfg).await.unwrap();
    assert!(
        report.more && !report.is_clean(),
        "`once` leaves the rest for later: {report:?}"
    );
    assert_eq!(
        server.sessions(),
        1,
        "`once` does not log in again within LOGIN-DELAY"
    );

    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(service::run(cfg.config.clone(), shutdown));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    trigger.trigger();
    run.await.unwrap().unwrap();
    assert_eq!(
        server.sessions(),
        2,
        "`run` waits LOGIN-DELAY (3 s) after its first login"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quit_whose_reply_never_comes_forgets_nothing_and_posts_nothing_twice() {
    // QUIT's reply is garbage: whether the server removed anything is unknown.
    let server = Scripted::start(Script {
        messages: (1..=2).map(message).collect(),
        raw_replies: vec![("QUIT".into(), b"\r\n".to_vec())],
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    assert!(once(&cfg).await.is_err());
    let kept = records(&cfg);
    assert!(
        kept.len() == 2
            && kept
                .iter()
                .all(|(_, r)| matches!(r, Record::Delivered { size: Some(_), .. })),
        "delivered records and their sizes are kept: {kept:?}"
    );

    // The next cycle finds them as leftovers of the same size: DELE, no second POST.
    let _ = once(&cfg).await;
    assert_eq!(receiver.requests().len(), 2, "nothing posted twice");
    assert_eq!(records(&cfg), kept, "still not committed, still remembered");
    assert_eq!(server.remaining().len(), 2);
}
