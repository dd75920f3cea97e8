//! The `pophook` binary as cron jobs, operators and containers use it: exit codes,
//! what `check` prints and leaves alone, config errors, SIGTERM, JSON logs.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::dovecot::Dovecot;
use common::process::{Pophook, Receive};
use common::receiver::{Receiver, Reply};
use common::setup::{config, message, plain_mailbox, RETRY_AT_ONCE};

fn pophook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pophook"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pophook")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn once_exits_zero_only_when_everything_was_delivered() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw-cli");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    let cfg = config(
        &format!("  url: {}\n{RETRY_AT_ONCE}", receiver.url()),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw-cli", ""),
    );
    let path = cfg.path();
    let path = path.to_str().unwrap();

    let failed = tokio::task::block_in_place(|| pophook(&["once", "--config", path]));
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert_eq!(dovecot.message_count("support"), 1);

    receiver.set_default(Reply::Status(204));
    let ok = tokio::task::block_in_place(|| pophook(&["once", "--config", path]));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(dovecot.message_count("support"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn once_fails_when_a_mailbox_cannot_be_reached() {
    let receiver = Receiver::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &format!("  url: {}", receiver.url()),
        &plain_mailbox("gone", closed, "u", "p", ""),
    );
    let out = tokio::task::block_in_place(|| {
        pophook(&["once", "--config", cfg.path().to_str().unwrap()])
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_capabilities_and_count_and_changes_nothing() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw-check-secret");
    dovecot.deliver("support", &message(1));
    dovecot.deliver("support", &message(2));
    let receiver = Receiver::start().await;
    let cfg = config(
        &format!("  url: {}", receiver.url()),
        &plain_mailbox(
            "support",
            dovecot.plain_port(),
            "support",
            "pw-check-secret",
            "",
        ),
    );

    let out = tokio::task::block_in_place(|| {
        pophook(&["check", "--config", cfg.path().to_str().unwrap()])
    });

    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("support: ok"), "{stdout}");
    assert!(stdout.contains("2 messages"), "{stdout}");
    assert!(stdout.contains("UIDL"), "capabilities are listed: {stdout}");
    let all = format!("{stdout}{}", text(&out.stderr));
    assert!(!all.contains("pw-check-secret"));
    assert_eq!(dovecot.message_count("support"), 2, "check must not delete");
    assert!(receiver.requests().is_empty(), "check must not post");
    assert!(
        !cfg.dir.path().join("state").exists(),
        "check must not create or touch the state"
    );
}

#[test]
fn invalid_config_fails_with_one_clear_message_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "webhook: {url: 'http://127.0.0.1:1/'}\nmailboxes:\n  - {name: a, host: h, username: u, password: p, pol_interval: 5s}\n",
    )
    .unwrap();
    let out = pophook(&["once", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("pol_interval"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = pophook(&["check", "--config", "/nonexistent/pophook.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stops_cleanly_on_sigterm_with_json_logs() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    let cfg = config(
        &format!("  url: {}", receiver.url()),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let log = cfg.dir.path().join("stderr.log");
    let child = Pophook::spawn(&["--log-format", "json", "run"], &cfg.path(), &log);
    receiver.wait_for_accepted(1, Duration::from_secs(20)).await;

    // Exit 0 after SIGTERM.
    let stderr = child.stop().await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(json["level"].is_string());
    }
    assert!(stderr.contains("pophook stopped"));
    assert_eq!(dovecot.message_count("support"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_pophook_on_the_same_state_dir_refuses_to_start() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let receiver = Receiver::start().await;
    let cfg = config(
        &format!("  url: {}", receiver.url()),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let first = Pophook::spawn(&["run"], &cfg.path(), &cfg.dir.path().join("stderr.log"));
    // Wait until the first one holds the state: its database files exist.
    let state = cfg.dir.path().join("state");
    for _ in 0..100 {
        if state.join("db").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = tokio::task::block_in_place(|| {
        pophook(&["once", "--config", cfg.path().to_str().unwrap()])
    });
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another pophook"), "{stderr}");
    first.kill().await;
}

#[test]
fn a_state_database_that_cannot_be_opened_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // The state_dir is a file: sled cannot open it as a database directory.
    let state = dir.path().join("state");
    std::fs::write(&state, b"precious").unwrap();
    let path = dir.path().join("pophook.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {}\nwebhook: {{url: 'http://127.0.0.1:1/'}}\nmailboxes:\n  - {{name: a, host: 127.0.0.1, port: 1, tls: none, allow_insecure: true, username: u, password: p}}\n",
            state.display()
        ),
    )
    .unwrap();
    let out = pophook(&["once", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the state database"),
        "{stderr}"
    );
    assert!(stderr.contains("Do not delete it"), "{stderr}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b"precious",
        "never deleted or changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn receive_verifies_signatures_and_prints_each_event() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = Receive::start(secret).await;
    let url = receiver.url("/inbound");
    let client = reqwest::Client::new();

    // A forged signature is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = client
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // A real delivery is accepted and printed as one summary line.
    let cfg = config(
        &format!("  url: {url}\n  secret: {secret}"),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let outcomes = pophook::service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(dovecot.message_count("support"), 0);

    let stdout = receiver.stop().await;
    assert!(
        stdout.contains("rejected: bad signature for msg_forged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("email.received [support] from alice@example.com — \"test 1\""),
        "{stdout}"
    );
}
