//! Reloading the configuration of a running pophook (the binary, with SIGHUP and
//! `POST /api/reload`) while mail is being delivered: an added mailbox starts, a
//! removed one stops after the message in hand, an invalid configuration is refused
//! with the old one still running, and every message arrives exactly once.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{message, scripted_mailbox};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `done` holds, polling; panics with `what` and pophook's log (at `log`)
/// after `timeout`.
async fn until(log: &Path, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; pophook's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times each webhook-id was accepted.
fn accepted_ids(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for request in receiver.accepted() {
        *ids.entry(request.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    ids
}

fn assert_once(receiver: &Receiver) {
    let twice: Vec<_> = accepted_ids(receiver)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
}

/// The fields of every JSON log line whose message starts with `message`.
fn logged(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| line["fields"].clone())
        .filter(|fields| {
            fields["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

fn hangup(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_adds_and_removes_mailboxes_under_load_and_every_message_arrives_once() {
    let a = Scripted::start(Script {
        messages: (1..=60).map(message).collect(),
        ..Script::default()
    })
    .await;
    let b = Scripted::start(Script {
        messages: (101..=120).map(message).collect(),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Each POST takes a while, so a reload always finds deliveries in flight.
    receiver.set_default(Reply::Delay(Duration::from_millis(40), 204));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let write = |mailboxes: &[(&str, u16)], extra: &str| {
        let entries: String = mailboxes
            .iter()
            .map(|(name, port)| {
                // A mailbox named "a2" is "a" with a changed webhook.
                match name.strip_suffix('2') {
                    Some(name) => {
                        scripted_mailbox(name, *port, "    webhook: {headers: {X-Config: two}}\n")
                    }
                    None => scripted_mailbox(name, *port, ""),
                }
            })
            .collect();
        std::fs::write(
            &path,
            format!(
                "state_dir: {}\nhttp: {{listen: '127.0.0.1:{port}'}}\nwebhook:\n  url: {}\n  timeout: 5s\n  max_in_flight: 1\n{extra}mailboxes:\n{entries}",
                dir.path().join("state").display(),
                receiver.url()
            ),
        )
        .unwrap();
    };
    write(&[("a", a.port())], "");
    let log = dir.path().join("stderr.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    until(
        &log,
        "a's first deliveries",
        Duration::from_secs(20),
        || receiver.accepted().len() >= 3,
    )
    .await;
    // Add b while a is delivering.
    write(&[("a", a.port()), ("b", b.port())], "");
    hangup(&child);
    until(&log, "b emptied", Duration::from_secs(30), || {
        b.remaining().is_empty()
    })
    .await;
    // Change a's webhook mid-backlog: its cycle in hand finishes, then it goes on with
    // the new configuration.
    let before_change = receiver.accepted().len();
    write(&[("a2", a.port()), ("b", b.port())], "");
    hangup(&child);
    until(&log, "the change logged", Duration::from_secs(10), || {
        logged(&log_text(), "configuration reloaded")
            .iter()
            .any(|fields| fields["changed"] == "[\"a\"]")
    })
    .await;
    // Mail that arrives after the change is certainly fetched by a later cycle, so it
    // goes out with the new webhook whether or not a's backlog was done.
    a.push_message(message(61), "uid-a61");
    until(
        &log,
        "a posting with its new webhook",
        Duration::from_secs(30),
        || {
            receiver.accepted()[before_change..]
                .iter()
                .any(|r| r.header("x-config") == Some("two"))
        },
    )
    .await;
    assert_once(&receiver);
    // Remove a, probably in the middle of its backlog: it stops after the message in
    // hand, and what it did not deliver stays on its server.
    write(&[("b", b.port())], "");
    hangup(&child);
    until(&log, "the removal logged", Duration::from_secs(10), || {
        logged(&log_text(), "configuration reloaded")
            .iter()
            .any(|fields| fields["removed"] == "[\"a\"]")
    })
    .await;
    // Its session ends with a QUIT (committing what it deleted), and it never logs in
    // again: mail arriving for it stays on the server while b goes on being polled.
    until(
        &log,
        "a's last session to QUIT",
        Duration::from_secs(20),
        || a.commands().last().is_some_and(|c| c == "QUIT"),
    )
    .await;
    let a_sessions = a.sessions();
    a.push_message(message(62), "uid-a62");
    for n in [122, 123] {
        b.push_message(message(n), &format!("uid-{n}"));
        until(&log, "b polled", Duration::from_secs(20), || {
            b.remaining().is_empty()
        })
        .await;
    }
    assert_eq!(
        a.sessions(),
        a_sessions,
        "a removed mailbox logged in again"
    );
    assert!(a.uids().contains(&"uid-a62".to_string()));
    assert_once(&receiver);

    // An invalid configuration is refused; the running one goes on.
    std::fs::write(&path, "mailboxes: []\n").unwrap();
    hangup(&child);
    until(&log, "the refusal logged", Duration::from_secs(10), || {
        !logged(&log_text(), "reload refused").is_empty()
    })
    .await;
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let reason: serde_json::Value = refused.json().await.unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("mailboxes"),
        "{reason}"
    );
    b.push_message(message(121), "uid-121");
    until(&log, "b still polled", Duration::from_secs(20), || {
        b.remaining().is_empty()
    })
    .await;

    // Back with both, through the API this time: a's remaining mail arrives.
    write(&[("a2", a.port()), ("b", b.port())], "");
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let summary: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(summary["added"], serde_json::json!(["a"]), "{summary}");
    until(&log, "a emptied", Duration::from_secs(60), || {
        a.remaining().is_empty()
    })
    .await;

    assert_once(&receiver);
    assert_eq!(
        accepted_ids(&receiver).len(),
        62 + 23,
        "every message, once"
    );
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pophook exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{}", log_text());
}
