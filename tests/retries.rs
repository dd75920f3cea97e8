//! Delivery that survives faults: retry schedules kept in the state, parking and its
//! commands, 410 Gone, oversized messages, commit batches, QUIT trouble, renumbered
//! UIDLs, login backoff and shutdown. Scripted POP3 server + recording receiver.

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

async fn once(cfg: &TestConfig) -> CycleReport {
    let outcomes = service::once(&cfg.config).await.unwrap();
    outcomes[0]
        .result
        .clone()
        .unwrap_or_else(|e| panic!("cycle failed: {e}"))
}

fn record(cfg: &TestConfig, uidl: &str) -> Option<Record> {
    // Dropping the last handle closes the database, so the next cycle can open it.
    let ledger = Ledger::open(&cfg.config.state_dir, Watchdog::default()).unwrap();
    ledger.get("box", uidl)
}

fn pophook(cfg: &TestConfig, args: &[&str]) -> std::process::Output {
    cfg.pophook(args)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_schedule_lives_in_the_state_so_a_restart_neither_resets_nor_skips_it() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let cfg = config(
        &hook(&receiver, "  retry: {schedule: [0s, 1h, 2h]}"),
        &mailbox(server.port(), ""),
    );

    let report = once(&cfg).await;
    assert_eq!((report.fetched, report.failed), (1, 1));
    let Some(Record::Retrying {
        attempts: 1,
        next_attempt_ms,
        last_error,
        ..
    }) = record(&cfg, "uid-1")
    else {
        panic!("expected a retry record, got {:?}", record(&cfg, "uid-1"));
    };
    assert!(last_error.contains("503"), "{last_error}");
    let in_an_hour = pophook::ledger::now_ms() + 3_600_000;
    assert!(
        (next_attempt_ms - in_an_hour).abs() < 7 * 60_000,
        "about 1h ± jitter"
    );

    // A new process (same state): the message is not due, so nothing is downloaded.
    receiver.set_default(Reply::Status(204));
    let report = once(&cfg).await;
    assert_eq!((report.fetched, report.waiting), (0, 1));
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(server.remaining().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::RetryAfter(429, 1800)]);
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    once(&cfg).await;
    let Some(Record::Retrying {
        next_attempt_ms, ..
    }) = record(&cfg, "uid-1")
    else {
        panic!("expected a retry record");
    };
    let wait_ms = next_attempt_ms - pophook::ledger::now_ms();
    assert!(
        wait_ms > 1_700_000 && wait_ms <= 1_800_000,
        "Retry-After 1800s, got {wait_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_parked_and_can_be_listed_replayed_and_dropped() {
    let server = Scripted::with_messages(vec![message(1), message(2)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(422));
    let cfg = config(
        &hook(
            &receiver,
            "  retry: {schedule: [0s, 0s, 0s, 0s, 0s], max_rejections: 2}",
        ),
        &mailbox(server.port(), ""),
    );

    // A 4xx does not mean the endpoint is down, so every message is tried each cycle.
    let first = once(&cfg).await;
    assert_eq!((first.failed, first.parked), (2, 0));
    let second = once(&cfg).await;
    assert_eq!((second.failed, second.parked), (2, 2));
    let third = once(&cfg).await;
    assert_eq!(
        (third.fetched, third.parked_listed),
        (0, 2),
        "parked messages are not fetched"
    );
    assert_eq!(
        server.remaining().len(),
        2,
        "parked mail stays on the server"
    );
    assert_eq!(receiver.requests().len(), 4);

    let listed = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "list", "--json"]));
    assert!(listed.status.success());
    let parked: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(parked.as_array().unwrap().len(), 2);
    assert_eq!(parked[0]["attempts"], 2);
    assert!(parked[0]["last_error"].as_str().unwrap().contains("422"));
    let id1 = pophook::event::event_id("box", "uid-1");
    let id2 = pophook::event::event_id("box", "uid-2");

    // Replay one: the endpoint works again, so it is delivered and deleted.
    receiver.set_default(Reply::Status(204));
    let replay = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "replay", &id1]));
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(stdout.contains(&id1), "{stdout}");
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(
        receiver.accepted()[0].header("webhook-id"),
        Some(id1.as_str())
    );
    assert_eq!(server.deleted_uids(), ["uid-1"]);

    // Drop the other: never posted, still on the server.
    let dropped = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "drop", &id2]));
    assert!(dropped.status.success());
    let report = once(&cfg).await;
    assert_eq!(report.fetched, 0);
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(server.remaining().len(), 1);
    let listed = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "list"]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no parked messages"));

    let unknown = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "drop", "msg_unknown"]));
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("msg_unknown"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_endpoint_until_the_configuration_changes() {
    let server = Scripted::with_messages(vec![message(1), message(2)]).await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Status(410)]);
    // One POST at a time, so "nothing after the 410" is exact (with more in flight,
    // those already sent still finish; nothing new starts).
    let cfg = config(
        &hook(&receiver, "  max_in_flight: 1"),
        &mailbox(server.port(), ""),
    );

    let report = once(&cfg).await;
    assert!(report.endpoint_disabled);
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing more is posted after a 410"
    );
    let report = once(&cfg).await;
    assert!(report.endpoint_disabled && report.fetched == 0);
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(server.remaining().len(), 2, "all mail stays on the server");

    // A changed webhook configuration (here a new header) enables it again.
    let fixed = config(
        &hook(&receiver, "  max_in_flight: 1\n  headers: {X-Fixed: 'yes'}"),
        &mailbox(server.port(), ""),
    );
    let yaml = fixed.yaml.replace(
        &fixed.config.state_dir.display().to_string(),
        &cfg.config.state_dir.display().to_string(),
    );
    let fixed = pophook::config::from_yaml(&yaml).unwrap();
    let outcomes = service::once(&fixed).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(receiver.accepted().len(), 2);
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_is_announced_once_by_its_headers_and_stays() {
    let mut big = b"From: big@example.com\r\nSubject: huge\r\n\r\n".to_vec();
    big.extend(
        std::iter::repeat_n(
            b"0123456789012345678901234567890123456789\r\n".as_slice(),
            200,
        )
        .flatten(),
    );
    let server = Scripted::with_messages(vec![message(1), big]).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    max_message_size: 4096\n"),
    );

    let report = once(&cfg).await;
    assert_eq!(report.delivered, 2);
    let events: Vec<serde_json::Value> = receiver.accepted().iter().map(|r| r.json()).collect();
    let truncated = events
        .iter()
        .find(|e| e["data"]["subject"] == "huge")
        .unwrap();
    assert_eq!(truncated["data"]["truncated"], true);
    assert!(truncated["data"]["size"].as_u64().unwrap() < 4096);
    assert!(server.commands().iter().any(|c| c == "TOP 2 0"));
    assert!(
        !server.commands().iter().any(|c| c == "RETR 2"),
        "never downloaded whole"
    );
    assert_eq!(
        server.deleted_uids(),
        ["uid-1"],
        "the oversized message stays"
    );

    once(&cfg).await;
    assert_eq!(receiver.accepted().len(), 2, "announced only once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_larger_than_list_said_is_cut_off_and_then_announced() {
    let mut big = b"From: liar@example.com\r\nSubject: understated\r\n\r\n".to_vec();
    big.extend(
        std::iter::repeat_n(b"x".repeat(78).as_slice(), 1000).flat_map(|l| [l, b"\r\n"].concat()),
    );
    let server = Scripted::start(Script {
        messages: vec![big],
        raw_replies: vec![("LIST".into(), b"+OK\r\n1 100\r\n.\r\n".to_vec())],
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    max_message_size: 8192\n"),
    );

    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("8192"), "{error}");
    assert!(receiver.requests().is_empty());

    let report = once(&cfg).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(receiver.accepted()[0].json()["data"]["truncated"], true);
    assert_eq!(server.remaining().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletions_are_committed_in_batches_of_commit_every() {
    let server = Scripted::with_messages((1..=5).map(message).collect()).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    commit_every: 2\n"),
    );

    let report = once(&cfg).await;
    assert_eq!((report.delivered, report.deleted), (5, 5));
    assert!(server.remaining().is_empty());
    let commands = server.commands();
    let mut deles_since_quit = 0;
    for c in &commands {
        if c.starts_with("DELE") {
            deles_since_quit += 1;
            assert!(
                deles_since_quit <= 2,
                "more than commit_every DELEs before a QUIT: {commands:?}"
            );
        } else if c == "QUIT" {
            deles_since_quit = 0;
        }
    }
    assert_eq!(commands.iter().filter(|c| *c == "QUIT").count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn once_goes_on_for_as_many_sessions_as_the_backlog_needs() {
    // 150 sessions of one DELE each: no cap on sessions silently leaves mail behind
    // (an earlier engine stopped after 100 and exited 1 with 5,000 messages left).
    let server = Scripted::with_messages((1..=150).map(message).collect()).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    commit_every: 1\n"),
    );

    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert!(server.remaining().is_empty());
    assert_eq!(receiver.accepted().len(), 150);
    assert_eq!(server.sessions(), 150);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_to_quit_deletes_nothing_and_reposts_nothing() {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        quit_error: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].result.is_err(), "an -ERR to QUIT is reported");
    assert_eq!(server.remaining().len(), 1);
    assert!(matches!(
        record(&cfg, "uid-1"),
        Some(Record::Delivered { .. })
    ));
    // Next cycle: DELE again, no second POST.
    let _ = service::once(&cfg.config).await.unwrap();
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(
        server.commands().iter().filter(|c| *c == "DELE 1").count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_stalls_at_quit_recovers_next_cycle() {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        stall_on: Some("QUIT".into()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(server.port(), "    timeout: 1s\n"),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0]
        .result
        .as_ref()
        .unwrap_err()
        .contains("sent nothing"));
    assert_eq!(
        server.remaining().len(),
        1,
        "no committed QUIT, nothing deleted"
    );
    assert_eq!(receiver.requests().len(), 1);
    assert!(matches!(
        record(&cfg, "uid-1"),
        Some(Record::Delivered { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn renumbered_uidls_are_reported() {
    let messages: Vec<Vec<u8>> = (1..=12).map(message).collect();
    let before = Scripted::with_messages(messages.clone()).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver, ""),
        &mailbox(before.port(), "    delete: false\n"),
    );
    let report = once(&cfg).await;
    assert!(!report.renumbered);
    assert_eq!(report.delivered, 12);

    // The "migrated" server lists the same mail under new UIDLs.
    let after = Scripted::start(Script {
        messages,
        uids: Some((1..=12).map(|n| format!("new-{n}")).collect()),
        ..Script::default()
    })
    .await;
    let yaml = cfg
        .yaml
        .replace(&before.port().to_string(), &after.port().to_string());
    let moved = pophook::config::from_yaml(&yaml).unwrap();
    let outcomes = service::once(&moved).await.unwrap();
    let report = outcomes[0].result.as_ref().unwrap();
    assert!(report.renumbered, "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_mailbox_is_backed_off_not_hammered() {
    let server = Scripted::start(Script {
        login_error: Some("-ERR [IN-USE] locked".into()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox(server.port(), ""));
    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(service::run(cfg.config.clone(), shutdown));
    // poll_interval is 1s; backing off doubles it: sessions at about 0, 1, 3, 7 s.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    trigger.trigger();
    run.await.unwrap().unwrap();
    let sessions = server.sessions();
    assert!((2..=4).contains(&sessions), "{sessions} sessions in 6.5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_during_a_slow_post_ends_in_bounded_time_and_deletes_nothing_unacknowledged() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delay(Duration::from_secs(60), 204));
    let dir_cfg = config(
        &hook(&receiver, "  timeout: 120s"),
        &mailbox(server.port(), ""),
    );
    let yaml = format!(
        "shutdown_timeout: 3s\n{}",
        dir_cfg
            .yaml
            .replace("  timeout: 3s\n  timeout: 120s", "  timeout: 120s")
    );
    let config = pophook::config::from_yaml(&yaml).unwrap();
    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(service::run(config, shutdown));
    while receiver.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("run must end within the shutdown timeout")
        .unwrap()
        .unwrap();
    assert_eq!(server.remaining().len(), 1);
    assert!(
        record(&dir_cfg, "uid-1").is_none(),
        "nothing recorded for an unacknowledged POST"
    );
    assert!(
        server.commands().contains(&"QUIT".to_string()),
        "clean QUIT on shutdown"
    );
}
