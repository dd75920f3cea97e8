//! Running pophook as a service: the `http.listen` endpoint (health, readiness,
//! Prometheus metrics), `status` and `parked` with the service stopped and running,
//! `healthcheck` exit codes, and sharding. Real HTTP requests against a scripted POP3
//! server and a recording receiver.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use common::process::{eventually, free_port, get, Pophook};
use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, message, TestConfig, RETRY_AT_ONCE};
use pophook::service;
use pophook::shutdown::{self, Trigger};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn mailbox(name: &str, port: u16, extra: &str) -> String {
    common::setup::scripted_mailbox(name, port, extra)
}

fn hook(receiver: &Receiver, extra: &str) -> String {
    common::setup::hook(&receiver.url(), extra)
}

/// `cfg` with `http.listen` on `port` prepended, rewritten to its config file.
fn with_http(cfg: TestConfig, port: u16) -> TestConfig {
    let yaml = format!("http:\n  listen: 127.0.0.1:{port}\n{}", cfg.yaml);
    std::fs::write(cfg.path(), &yaml).unwrap();
    let config = pophook::config::from_yaml(&yaml).unwrap();
    TestConfig {
        config,
        yaml,
        dir: cfg.dir,
    }
}

/// The service in this process, its endpoint on a fresh port.
struct Running {
    base: String,
    trigger: Trigger,
    task: JoinHandle<Result<(), service::ServiceError>>,
}

async fn start(cfg: &TestConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(service::run_on(
        cfg.config.clone(),
        Some(listener),
        shutdown,
    ));
    Running {
        base,
        trigger,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

/// The value of the series `name{labels}` (exactly those labels) in Prometheus text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: BTreeMap<&str, &str> = series_labels
                .split(',')
                .filter(|l| !l.is_empty())
                .filter_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (series_name == name && found == wanted).then(|| value.parse().ok())?
        })
}

fn pophook(cfg: &TestConfig, args: &[&str]) -> Output {
    cfg.pophook(args)
}

fn pophook_env(cfg: &TestConfig, args: &[&str], env: &[(&str, &str)]) -> Output {
    cfg.pophook_env(args, env)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_until_a_cycle_completes_and_the_reason_names_the_mailbox() {
    let receiver = Receiver::start().await;
    // Nothing listens there: every cycle fails to connect.
    let cfg = config(&hook(&receiver, ""), &mailbox("box", free_port(), ""));
    let running = start(&cfg).await;

    assert_eq!(get(&format!("{}/healthz", running.base)).await.0, 200);
    let (status, body) = get(&format!("{}/readyz", running.base)).await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["faults"][0]["mailbox"], "box");
    let reason = ready["faults"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no cycle completed"), "{reason}");
    // Once the first attempt failed, the reason says why.
    let reason = eventually(
        "the connect error in /readyz",
        Duration::from_secs(10),
        || async {
            let (_, body) = get(&format!("{}/readyz", running.base)).await;
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
            let reason = ready["faults"][0]["reason"].as_str()?.to_string();
            reason.contains("last error").then_some(reason)
        },
    )
    .await;
    assert!(reason.contains("connect"), "{reason}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_after_a_cycle_and_not_ready_once_the_endpoint_answered_410() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox("box", server.port(), ""));
    let running = start(&cfg).await;
    let readyz = format!("{}/readyz", running.base);
    eventually("/readyz 200", Duration::from_secs(10), || async {
        (get(&readyz).await.0 == 200).then_some(())
    })
    .await;
    running.stop().await;

    let gone = Scripted::with_messages(vec![message(2)]).await;
    receiver.set_default(Reply::Status(410));
    let cfg = config(&hook(&receiver, ""), &mailbox("gone", gone.port(), ""));
    let running = start(&cfg).await;
    let readyz = format!("{}/readyz", running.base);
    let body = eventually(
        "/readyz 503 after a 410",
        Duration::from_secs(10),
        || async {
            let (status, body) = get(&readyz).await;
            (status == 503 && body.contains("410")).then_some(body)
        },
    )
    .await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["faults"][0]["mailbox"], "gone", "{body}");
    let metrics = get(&format!("{}/metrics", running.base)).await.1;
    assert_eq!(
        sample(
            &metrics,
            "pophook_endpoint_disabled",
            &[("mailbox", "gone")]
        ),
        Some(1.0),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_deliveries_bytes_and_failures_by_reason() {
    let server = Scripted::with_messages(vec![message(1), message(2)]).await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Status(500)]);
    let cfg = config(
        &hook(&receiver, RETRY_AT_ONCE),
        &mailbox("box", server.port(), ""),
    );
    let running = start(&cfg).await;
    let url = format!("{}/metrics", running.base);

    let (status, before) = get(&url).await;
    assert_eq!(status, 200);
    assert!(
        before.contains("# TYPE pophook_messages_delivered_total counter"),
        "{before}"
    );
    let box_ = [("mailbox", "box")];
    // Deliveries are counted as they happen; the DELEs are committed by the QUIT after,
    // and what a cycle fetched is counted when its report arrives, after the QUIT.
    eventually("both deleted", Duration::from_secs(15), || async {
        server.remaining().is_empty().then_some(())
    })
    .await;
    let metrics = eventually(
        "2 deliveries and the second cycle's fetch in /metrics",
        Duration::from_secs(15),
        || async {
            let text = get(&url).await.1;
            let delivered = sample(&text, "pophook_messages_delivered_total", &box_);
            let fetched = sample(&text, "pophook_messages_fetched_total", &box_);
            (delivered == Some(2.0) && fetched.is_some_and(|f| f >= 3.0)).then_some(text)
        },
    )
    .await;
    let value = |name: &str| {
        sample(&metrics, name, &box_).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        value("pophook_messages_fetched_total"),
        3.0,
        "one refetch after the 500"
    );
    assert!(value("pophook_fetched_bytes_total") > 0.0);
    assert_eq!(
        sample(
            &metrics,
            "pophook_delivery_failures_total",
            &[("mailbox", "box"), ("reason", "http_5xx")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(value("pophook_webhook_request_duration_seconds_count"), 3.0);
    assert!(value("pophook_cycle_duration_seconds_count") >= 2.0);
    let last = value("pophook_last_successful_cycle_timestamp_seconds");
    assert!(
        (last - pophook::ledger::now() as f64).abs() < 60.0,
        "{last}"
    );
    assert_eq!(value("pophook_messages_retrying"), 0.0);
    assert_eq!(value("pophook_oldest_undelivered_message_age_seconds"), 0.0);
    assert_eq!(get(&format!("{}/readyz", running.base)).await.0, 200);
    running.stop().await;
}

/// `/metrics` once `mailbox` has completed a cycle.
async fn metrics_after_a_cycle(running: &Running, mailbox: &str) -> String {
    let url = format!("{}/metrics", running.base);
    eventually("a cycle in /metrics", Duration::from_secs(10), || async {
        let text = get(&url).await.1;
        (sample(
            &text,
            "pophook_cycles_total",
            &[("mailbox", mailbox), ("result", "ok")],
        )? >= 1.0)
            .then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_age_of_the_oldest_undelivered_message_is_exported() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let cfg = config(
        &hook(&receiver, "  retry: {schedule: [0s, 1h]}"),
        &mailbox("box", server.port(), ""),
    );
    // A failure recorded two hours ago, as a previous process would have left it.
    {
        let ledger = pophook::ledger::Ledger::open(
            &cfg.config.state_dir,
            pophook::watchdog::Watchdog::default(),
        )
        .unwrap();
        ledger.put_record(
            "box",
            "uid-1",
            pophook::ledger::Record::Retrying {
                attempts: 1,
                rejections: 0,
                drops: 0,
                next_attempt_ms: pophook::ledger::now_ms() + 3_600_000,
                delay_ms: Some(3_600_000),
                last_error: "webhook answered HTTP 503".into(),
                oversized: false,
                since: pophook::ledger::now() - 7200,
            },
        );
        ledger.close().await.unwrap();
    }
    let running = start(&cfg).await;
    let metrics = metrics_after_a_cycle(&running, "box").await;
    let age = sample(
        &metrics,
        "pophook_oldest_undelivered_message_age_seconds",
        &[("mailbox", "box")],
    )
    .unwrap();
    assert!((7200.0..7300.0).contains(&age), "{age}");
    assert_eq!(
        sample(&metrics, "pophook_messages_retrying", &[("mailbox", "box")]),
        Some(1.0)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_left_alone_are_a_metric() {
    // A UIDL with spaces is invalid: the message is listed but never fetched.
    let server = Scripted::start(Script {
        messages: (1..=2).map(message).collect(),
        uids: Some(vec!["good".into(), "bad uid with spaces".into()]),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox("box", server.port(), ""));
    let running = start(&cfg).await;
    let metrics = metrics_after_a_cycle(&running, "box").await;
    assert_eq!(
        sample(
            &metrics,
            "pophook_messages_left_alone",
            &[("mailbox", "box")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(server.remaining().len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reads_the_state_when_stopped_and_the_api_when_running() {
    let server = Scripted::with_messages(vec![message(1), message(2)]).await;
    let receiver = Receiver::start().await;
    let port = free_port();
    let cfg = with_http(
        config(&hook(&receiver, ""), &mailbox("box", server.port(), "")),
        port,
    );

    // Never run: no state directory, and none is created.
    let out = tokio::task::block_in_place(|| pophook(&cfg, &["status"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("never"), "{}", text(&out.stdout));
    assert!(!cfg.config.state_dir.exists());

    let once = tokio::task::block_in_place(|| pophook(&cfg, &["once"]));
    assert!(once.status.success(), "{}", text(&once.stderr));
    let stopped = json(&tokio::task::block_in_place(|| {
        pophook(&cfg, &["status", "--json"])
    }));
    assert_eq!(stopped["running"], false);
    let row = &stopped["mailboxes"][0];
    assert_eq!(row["mailbox"], "box");
    assert_eq!(row["delivered_total"], 2);
    assert_eq!(row["last_result"], "ok");
    assert_eq!(
        (row["pending_retries"].as_u64(), row["parked"].as_u64()),
        (Some(0), Some(0))
    );
    let first_cycle_at = row["last_cycle_at"].as_i64().unwrap();

    let child = Pophook::run(&cfg, port).await;
    eventually(
        "/readyz 200 from the child",
        Duration::from_secs(10),
        || async { (get(&format!("http://127.0.0.1:{port}/readyz")).await.0 == 200).then_some(()) },
    )
    .await;
    let running = json(&tokio::task::block_in_place(|| {
        pophook(&cfg, &["status", "--json"])
    }));
    assert_eq!(running["running"], true, "{running}");
    let row = &running["mailboxes"][0];
    assert_eq!(row["delivered_total"], 2);
    assert!(row["last_cycle_at"].as_i64().unwrap() >= first_cycle_at);
    let table = tokio::task::block_in_place(|| pophook(&cfg, &["status"]));
    let stdout = text(&table.stdout);
    assert!(
        stdout.contains("running") && stdout.contains("box"),
        "{stdout}"
    );

    // The same state without http.listen: the command says what it needs.
    let no_http = cfg.dir.path().join("no-http.yaml");
    std::fs::write(&no_http, &cfg.yaml[cfg.yaml.find("state_dir").unwrap()..]).unwrap();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
            .args(["status", "--config", no_http.to_str().unwrap()])
            .output()
            .unwrap()
    });
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("running") && stderr.contains("http.listen"),
        "{stderr}"
    );
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_messages_are_listed_replayed_and_dropped_through_the_running_service() {
    let server = Scripted::with_messages(vec![message(1), message(2)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(422));
    let port = free_port();
    // An hour between polls: a replay that arrives in seconds was not the poll.
    let cfg = with_http(
        config(
            &hook(
                &receiver,
                "  retry: {schedule: [0s, 0s], max_rejections: 1}",
            ),
            &mailbox("box", server.port(), "    poll_interval: 1h\n"),
        ),
        port,
    );
    let child = Pophook::run(&cfg, port).await;

    let parked = eventually("2 parked messages", Duration::from_secs(15), || async {
        let out = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "list", "--json"]));
        let list = json(&out);
        (list.as_array().unwrap().len() == 2).then_some(list)
    })
    .await;
    assert!(parked[0]["last_error"].as_str().unwrap().contains("422"));
    let id1 = pophook::event::event_id("box", "uid-1");
    let id2 = pophook::event::event_id("box", "uid-2");

    receiver.set_default(Reply::Status(204));
    let started = Instant::now();
    let replay = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "replay", &id1]));
    let stdout = text(&replay.stdout);
    assert!(replay.status.success(), "{stdout}{}", text(&replay.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "prompt, not at the next poll"
    );
    assert!(
        stdout.contains(&id1) && stdout.contains("delivered"),
        "{stdout}"
    );
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(
        receiver.accepted()[0].header("webhook-id"),
        Some(id1.as_str())
    );
    assert_eq!(server.deleted_uids(), ["uid-1"]);

    let dropped = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "drop", &id2]));
    assert!(dropped.status.success(), "{}", text(&dropped.stderr));
    assert!(text(&dropped.stdout).contains("dropped"));
    let listed = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "list"]));
    assert!(
        text(&listed.stdout).contains("no parked messages"),
        "{}",
        text(&listed.stdout)
    );
    let unknown = tokio::task::block_in_place(|| pophook(&cfg, &["parked", "drop", "msg_unknown"]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("msg_unknown"),
        "{}",
        text(&unknown.stderr)
    );

    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).await.1;
    let box_ = [("mailbox", "box")];
    assert_eq!(
        sample(&metrics, "pophook_messages_parked", &box_),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "pophook_messages_parked_total", &box_),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "pophook_messages_delivered_total", &box_),
        Some(1.0)
    );
    assert_eq!(
        server.remaining().len(),
        1,
        "the dropped message stays on the server"
    );
    child.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_zero_only_when_healthz_answers_200() {
    let receiver = Receiver::start().await;
    let port = free_port();
    let cfg = with_http(
        config(&hook(&receiver, ""), &mailbox("box", free_port(), "")),
        port,
    );

    let down = tokio::task::block_in_place(|| pophook(&cfg, &["healthcheck"]));
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down.stdout).contains("unhealthy"),
        "{}",
        text(&down.stdout)
    );

    let (trigger, shutdown) = shutdown::channel();
    let run = tokio::spawn(service::run(cfg.config.clone(), shutdown));
    let up = eventually("healthcheck exit 0", Duration::from_secs(10), || async {
        let out = tokio::task::block_in_place(|| pophook(&cfg, &["healthcheck"]));
        out.status.success().then_some(out)
    })
    .await;
    assert!(text(&up.stdout).contains("healthy"), "{}", text(&up.stdout));
    trigger.trigger();
    run.await.unwrap().unwrap();

    // Any answer but 200 is unhealthy.
    receiver.set_default(Reply::Status(503));
    let url = receiver.url();
    let out = tokio::task::block_in_place(|| pophook(&cfg, &["healthcheck", "--url", &url]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("503"), "{}", text(&out.stdout));

    // Without http.listen there is nothing to check, and it says so.
    let bare = config(&hook(&receiver, ""), &mailbox("box", free_port(), ""));
    let out = tokio::task::block_in_place(|| pophook(&bare, &["healthcheck"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("http.listen"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shards_poll_every_mailbox_exactly_once_and_agree_on_the_split() {
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut servers = Vec::new();
    for n in 0..names.len() {
        servers.push(Scripted::with_messages(vec![message(n)]).await);
    }
    let receiver = Receiver::start().await;
    let mailboxes: String = names
        .iter()
        .zip(&servers)
        .map(|(name, server)| mailbox(name, server.port(), ""))
        .collect();
    let shards: Vec<TestConfig> = (0..2)
        .map(|index| {
            let base = config(&hook(&receiver, ""), &mailboxes);
            let yaml = format!("shard: {{index: {index}, count: 2}}\n{}", base.yaml);
            std::fs::write(base.path(), &yaml).unwrap();
            TestConfig {
                config: pophook::config::from_yaml(&yaml).unwrap(),
                yaml,
                dir: base.dir,
            }
        })
        .collect();

    let owned: Vec<Vec<String>> = shards
        .iter()
        .map(|s| s.config.mailboxes.iter().map(|m| m.name.clone()).collect())
        .collect();
    assert!(owned.iter().all(|o| !o.is_empty()), "{owned:?}");
    let mut all: Vec<String> = owned.concat();
    all.sort();
    assert_eq!(all, names, "each mailbox owned by exactly one shard");

    for shard in &shards {
        let outcomes = service::once(&shard.config).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_success()), "{outcomes:?}");
    }
    let mut delivered: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["mailbox"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    assert_eq!(delivered, names, "every mailbox delivered once");
    for (name, server) in names.iter().zip(&servers) {
        assert_eq!(
            server.sessions(),
            1,
            "{name} polled by exactly one instance"
        );
    }

    // Another process, configured through the environment, splits the same way, and
    // `check` says which shard owns each mailbox.
    let plain = config(&hook(&receiver, ""), &mailboxes);
    let out = tokio::task::block_in_place(|| {
        pophook_env(
            &plain,
            &["check"],
            &[("POPHOOK_SHARD__INDEX", "1"), ("POPHOOK_SHARD__COUNT", "2")],
        )
    });
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for name in &owned[1] {
        assert!(
            stdout.contains(&format!("{name} [shard 1/2]: ok")),
            "{stdout}"
        );
    }
    for name in &owned[0] {
        assert!(
            stdout.contains(&format!("{name} [shard 0/2]: polled by another instance")),
            "{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_counts_in_the_status_even_when_its_cycle_then_fails() {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        quit_error: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox("box", server.port(), ""));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(
        outcomes[0].result.is_err(),
        "an -ERR to QUIT fails the cycle"
    );
    let status = json(&tokio::task::block_in_place(|| {
        pophook(&cfg, &["status", "--json"])
    }));
    let row = &status["mailboxes"][0];
    assert_eq!(row["delivered_total"], 1, "{status}");
    assert_eq!(row["last_result"], "failed");
    assert!(
        row["last_error"].as_str().unwrap().contains("QUIT"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_failed_cycle_fetched_still_reaches_the_metrics() {
    let server = Scripted::start(Script {
        messages: vec![message(1), message(2)],
        quit_error: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, ""), &mailbox("box", server.port(), ""));
    let running = start(&cfg).await;
    let url = format!("{}/metrics", running.base);
    let box_ = [("mailbox", "box")];
    let metrics = eventually(
        "a failed cycle in /metrics",
        Duration::from_secs(20),
        || async {
            let (_, text) = get(&url).await;
            let failed = sample(
                &text,
                "pophook_cycles_total",
                &[("mailbox", "box"), ("result", "error")],
            );
            (failed.unwrap_or(0.0) >= 1.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        sample(&metrics, "pophook_messages_fetched_total", &box_),
        Some(2.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "pophook_fetched_bytes_total", &box_).unwrap() > 0.0);
    running.stop().await;
}
