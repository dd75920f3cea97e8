//! Reloading the configuration of a running pophook (the binary, with SIGHUP and
//! `POST /api/reload`) while mail is being delivered: an added mailbox starts, a
//! removed one stops after the message in hand, an invalid configuration is refused
//! with the old one still running, and every message arrives exactly once. A removed
//! mailbox leaves /metrics, /readyz and /api/status; keys only a restart applies are
//! named when a reload finds them changed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::process::{free_port, get, try_get, Pophook};
use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{message, scripted_mailbox};

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

#[tokio::test(flavor = "multi_thread")]
async fn sighup_adds_and_removes_mailboxes_under_load_and_every_message_arrives_once() {
    let a = Scripted::with_messages((1..=60).map(message).collect()).await;
    let b = Scripted::with_messages((101..=120).map(message).collect()).await;
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
    let child = Pophook::spawn(&["--log-format", "json", "run"], &path, &log);

    child
        .until("a's first deliveries", Duration::from_secs(20), || {
            receiver.accepted().len() >= 3
        })
        .await;
    // Add b while a is delivering.
    write(&[("a", a.port()), ("b", b.port())], "");
    child.signal("HUP");
    child
        .until("b emptied", Duration::from_secs(30), || {
            b.remaining().is_empty()
        })
        .await;
    // Change a's webhook mid-backlog: its cycle in hand finishes, then it goes on with
    // the new configuration.
    let before_change = receiver.accepted().len();
    write(&[("a2", a.port()), ("b", b.port())], "");
    child.signal("HUP");
    child
        .until("the change logged", Duration::from_secs(10), || {
            logged(&child.log(), "configuration reloaded")
                .iter()
                .any(|fields| fields["changed"] == "[\"a\"]")
        })
        .await;
    // Mail that arrives after the change is certainly fetched by a later cycle, so it
    // goes out with the new webhook whether or not a's backlog was done.
    a.push_message(message(61), "uid-a61");
    child
        .until(
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
    child.signal("HUP");
    child
        .until("the removal logged", Duration::from_secs(10), || {
            logged(&child.log(), "configuration reloaded")
                .iter()
                .any(|fields| fields["removed"] == "[\"a\"]")
        })
        .await;
    // Its session ends with a QUIT (committing what it deleted), and it never logs in
    // again: mail arriving for it stays on the server while b goes on being polled.
    child
        .until("a's last session to QUIT", Duration::from_secs(20), || {
            a.commands().last().is_some_and(|c| c == "QUIT")
        })
        .await;
    let a_sessions = a.sessions();
    a.push_message(message(62), "uid-a62");
    for n in [122, 123] {
        b.push_message(message(n), &format!("uid-{n}"));
        child
            .until("b polled", Duration::from_secs(20), || {
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
    child.signal("HUP");
    child
        .until("the refusal logged", Duration::from_secs(10), || {
            !logged(&child.log(), "reload refused").is_empty()
        })
        .await;
    let (code, reason) = post_reload(port).await;
    assert_eq!(code, 400, "{reason}");
    assert!(
        reason["error"].as_str().unwrap().contains("mailboxes"),
        "{reason}"
    );
    b.push_message(message(121), "uid-121");
    child
        .until("b still polled", Duration::from_secs(20), || {
            b.remaining().is_empty()
        })
        .await;

    // Back with both, through the API this time: a's remaining mail arrives.
    write(&[("a2", a.port()), ("b", b.port())], "");
    let (code, summary) = post_reload(port).await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["added"], serde_json::json!(["a"]), "{summary}");
    child
        .until("a emptied", Duration::from_secs(60), || {
            a.remaining().is_empty()
        })
        .await;

    assert_once(&receiver);
    assert_eq!(
        accepted_ids(&receiver).len(),
        62 + 23,
        "every message, once"
    );
    child.stop().await;
}

/// `POST /api/reload`: its status and JSON answer.
async fn post_reload(port: u16) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/reload"))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// The value of `name{mailbox="MAILBOX"}` in Prometheus text.
fn series(metrics: &str, name: &str, mailbox: &str) -> Option<f64> {
    let prefix = format!("{name}{{mailbox=\"{mailbox}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

/// The lines of `metrics` that carry the label `mailbox="MAILBOX"`.
fn labelled<'a>(metrics: &'a str, mailbox: &str) -> Vec<&'a str> {
    let label = format!("mailbox=\"{mailbox}\"");
    metrics.lines().filter(|l| l.contains(&label)).collect()
}

/// The mailbox "gone" in `metrics` (its retrying message, two hours old) and in the
/// service's /readyz (not ready) and /api/status at `base`.
async fn shows_gone(base: &str, metrics: &str) {
    assert_eq!(
        series(metrics, "pophook_messages_retrying", "gone"),
        Some(1.0),
        "{metrics}"
    );
    let age = series(
        metrics,
        "pophook_oldest_undelivered_message_age_seconds",
        "gone",
    );
    assert!(age.is_some_and(|age| age >= 7200.0), "{metrics}");
    let (code, ready) = get(&format!("{base}/readyz")).await;
    assert!(code == 503 && ready.contains("\"gone\""), "{code} {ready}");
    let (_, status) = get(&format!("{base}/api/status")).await;
    assert!(status.contains("\"gone\""), "{status}");
}

/// An alert on a removed mailbox's oldest undelivered message must clear: after the
/// reload its series are gone from /metrics (not frozen at their last values), and
/// /readyz and /api/status no longer name it. Added back under the same name, it shows
/// again with what the state still holds for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_mailbox_leaves_metrics_readiness_and_status_and_shows_again_when_added_back() {
    let keep = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let port = free_port();
    // Nothing listens there: "gone" never completes a cycle, so it is not ready.
    let gone_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // And its state holds a message that first failed two hours ago.
    {
        use pophook::ledger::{self, Ledger, Record};
        let ledger = Ledger::open(&state, pophook::watchdog::Watchdog::default()).unwrap();
        ledger.put_record(
            "gone",
            "uid-1",
            Record::Retrying {
                attempts: 1,
                rejections: 0,
                drops: 0,
                next_attempt_ms: ledger::now_ms() + 3_600_000,
                delay_ms: Some(3_600_000),
                last_error: "webhook answered HTTP 503".into(),
                oversized: false,
                since: ledger::now() - 7200,
            },
        );
        ledger.close().await.unwrap();
    }
    let path = dir.path().join("config.yaml");
    let write = |with_gone: bool| {
        let mut entries = scripted_mailbox("keep", keep.port(), "");
        if with_gone {
            entries += &scripted_mailbox("gone", gone_port, "");
        }
        std::fs::write(
            &path,
            format!(
                "state_dir: {}\nhttp: {{listen: '127.0.0.1:{port}'}}\nwebhook: {{url: {}}}\nmailboxes:\n{entries}",
                state.display(),
                receiver.url()
            ),
        )
        .unwrap();
    };
    write(true);
    let log = dir.path().join("stderr.log");
    let child = Pophook::spawn(&["--log-format", "json", "run"], &path, &log);
    let base = format!("http://127.0.0.1:{port}");
    let metrics_url = format!("{base}/metrics");

    let metrics = child
        .eventually("both mailboxes cycled", Duration::from_secs(20), || async {
            let metrics = try_get(&metrics_url).await?.1;
            let cycled = |mailbox, result| {
                labelled(&metrics, mailbox).iter().any(|line| {
                    line.starts_with("pophook_cycles_total{")
                        && line.contains(&format!("result=\"{result}\""))
                })
            };
            (cycled("keep", "ok") && cycled("gone", "error")).then_some(metrics)
        })
        .await;
    shows_gone(&base, &metrics).await;

    write(false);
    let (code, summary) = post_reload(port).await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["removed"], serde_json::json!(["gone"]), "{summary}");
    let metrics = get(&metrics_url).await.1;
    assert_eq!(labelled(&metrics, "gone"), Vec::<&str>::new(), "{metrics}");
    assert!(
        series(&metrics, "pophook_messages_retrying", "keep").is_some(),
        "{metrics}"
    );
    let (code, ready) = get(&format!("{base}/readyz")).await;
    assert!(code == 200 && !ready.contains("gone"), "{code} {ready}");
    let (_, status) = get(&format!("{base}/api/status")).await;
    assert!(!status.contains("gone"), "{status}");

    write(true);
    let (code, summary) = post_reload(port).await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["added"], serde_json::json!(["gone"]), "{summary}");
    shows_gone(&base, &get(&metrics_url).await.1).await;
    child.stop().await;
}

/// A reload cannot move the endpoint, the state, the shutdown grace or the memory
/// bound of a running service. When the file changes them, the reload applies the rest
/// (an added mailbox starts) and names those keys, never a secret's value, in a warning
/// and in the API's answer; the endpoint stays where it was. A changed shard applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_names_the_changed_keys_that_need_a_restart_and_applies_the_rest() {
    const TOKEN: &str = "reload-token-8c1f0a7e5d3b";
    let a = Scripted::start(Script::default()).await;
    let b = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let (port, moved_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {}\nhttp: {{listen: '127.0.0.1:{port}'}}\nwebhook: {{url: {}}}\nmailboxes:\n{}",
            dir.path().join("state").display(),
            receiver.url(),
            scripted_mailbox("a", a.port(), ""),
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let child = Pophook::spawn(&["--log-format", "json", "run"], &path, &log);
    let health = format!("http://127.0.0.1:{port}/healthz");
    child.wait_healthy(port).await;

    std::fs::write(
        &path,
        format!(
            "state_dir: {}\nshutdown_timeout: 7s\nmax_memory: 8388608\nshard: {{index: 0, count: 1}}\nhttp: {{listen: '127.0.0.1:{moved_port}', token: {TOKEN}}}\nwebhook: {{url: {}}}\nmailboxes:\n{}{}",
            dir.path().join("state2").display(),
            receiver.url(),
            scripted_mailbox("a", a.port(), ""),
            scripted_mailbox("b", b.port(), ""),
        ),
    )
    .unwrap();
    let restart = serde_json::json!([
        "http.listen",
        "http.token",
        "max_memory",
        "shutdown_timeout",
        "state_dir"
    ]);
    // Through the running endpoint, which still asks for no token.
    let (code, summary) = post_reload(port).await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["added"], serde_json::json!(["b"]), "{summary}");
    assert_eq!(summary["need_restart"], restart, "{summary}");
    // The rest applied: b started and delivered.
    receiver.wait_for_accepted(1, Duration::from_secs(20)).await;
    // The warning names the keys, and so does a SIGHUP's.
    child.signal("HUP");
    child
        .until("two warnings", Duration::from_secs(10), || {
            logged(&child.log(), "restart pophook to apply").len() == 2
        })
        .await;
    for warning in logged(&child.log(), "restart pophook to apply") {
        assert_eq!(
            warning["settings"], "http.listen, http.token, max_memory, shutdown_timeout, state_dir",
            "{warning}"
        );
    }
    assert!(!child.log().contains(TOKEN), "the token was logged");
    // The shard applied too, and the status says so.
    let (_, status) = get(&format!("http://127.0.0.1:{port}/api/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["shard"], "0/1", "{status}");
    // The endpoint did not move.
    assert!(try_get(&health).await.is_some());
    assert!(try_get(&format!("http://127.0.0.1:{moved_port}/healthz"))
        .await
        .is_none());
    child.stop().await;
}
