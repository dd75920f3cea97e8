//! How the `pophook` binary ends when something hangs. SIGTERM while a POST is in
//! flight: `run` ends within `shutdown_timeout` whatever the receiver does, exits 1
//! when it had to abandon the POST (the message stays on the server), and exits 0 when
//! the POST in hand finished within the grace. A `once` whose state cannot go on is
//! ended by the watchdog, not left frozen. Its stderr goes to a file.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::process::Pophook;
use common::receiver::{Receiver, Reply};
use common::scripted::Scripted;
use common::setup::{config, message, scripted_mailbox, TestConfig};

/// One message on a scripted server, posted to `receiver` with a webhook timeout far
/// longer than the test, under `shutdown_timeout`.
async fn setup(receiver: &Receiver, shutdown_timeout: &str) -> (Scripted, TestConfig) {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let cfg = config(
        &format!("  url: {}\n  timeout: 600s", receiver.url()),
        &scripted_mailbox("box", server.port(), ""),
    );
    let yaml = format!("shutdown_timeout: {shutdown_timeout}\n{}", cfg.yaml);
    std::fs::write(cfg.path(), &yaml).unwrap();
    (server, cfg)
}

/// Starts `pophook <command>` on `cfg`, its stderr into a file, and returns once its
/// POST reached `receiver`.
async fn start_until_posted(command: &str, cfg: &TestConfig, receiver: &Receiver) -> Pophook {
    let stderr = cfg.dir.path().join("stderr.log");
    let child = Pophook::spawn(&[command], &cfg.path(), &stderr);
    child
        .until("pophook to post", Duration::from_secs(20), || {
            !receiver.requests().is_empty()
        })
        .await;
    child
}

/// Starts `pophook run`, waits until its POST reached `receiver`, sends SIGTERM and
/// returns the exit status, how long the exit took after the signal, and the log.
async fn sigterm_during_the_post(
    cfg: &TestConfig,
    receiver: &Receiver,
) -> (ExitStatus, Duration, String) {
    let mut child = start_until_posted("run", cfg, receiver).await;
    let signalled = Instant::now();
    let status = child.terminate().await;
    (status, signalled.elapsed(), child.log())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_abandons_a_post_that_never_answers_within_shutdown_timeout_and_exits_1() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delay(Duration::from_secs(3600), 204));
    let (server, cfg) = setup(&receiver, "2s").await;

    let (status, took, log) = sigterm_during_the_post(&cfg, &receiver).await;

    assert!(
        took < Duration::from_secs(4),
        "SIGTERM took {took:?} with shutdown_timeout 2s:\n{log}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "exit {status} after abandoning the POST:\n{log}"
    );
    assert!(
        log.contains("shutdown grace ran out during the POST"),
        "the abandoned message is named:\n{log}"
    );
    assert!(
        log.contains("shutdown abandoned 1 unfinished POST") && log.contains("uid-1"),
        "the exit status is explained:\n{log}"
    );
    assert_eq!(server.remaining(), vec![message(1)], "the message stays");
    assert!(server.deleted_uids().is_empty());
    assert!(
        !server.commands().iter().any(|c| c.starts_with("DELE")),
        "{:?}",
        server.commands()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_post_in_hand_finish_within_the_grace_and_exits_0() {
    let receiver = Receiver::start().await;
    // Answered a second after it arrives; the grace for the message in hand is two
    // thirds of 6 s.
    receiver.set_default(Reply::Delay(Duration::from_secs(1), 204));
    let (server, cfg) = setup(&receiver, "6s").await;

    let (status, took, log) = sigterm_during_the_post(&cfg, &receiver).await;

    assert!(
        took < Duration::from_secs(6),
        "SIGTERM took {took:?}:\n{log}"
    );
    assert_eq!(status.code(), Some(0), "exit {status}:\n{log}");
    assert!(!log.contains("abandon"), "{log}");
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(server.deleted_uids(), ["uid-1"], "delivered, then deleted");
    assert!(log.contains("pophook stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_ends_a_once_whose_state_directory_vanished_with_status_70() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delay(Duration::from_secs(3600), 204));
    let (server, cfg) = setup(&receiver, "2s").await;
    let mut child = start_until_posted("once", &cfg, &receiver).await;
    // The POST never answers, so `once` itself would wait for the webhook's 600 s
    // timeout; the state writer notices the directory is gone within 5 s and the
    // watchdog ends the process.
    let state = &cfg.config.state_dir;
    std::fs::rename(state, state.with_extension("moved")).unwrap();
    let status = child.exit_within(Duration::from_secs(20)).await;
    let log = child.log();
    assert_eq!(status.code(), Some(70), "exit {status}:\n{log}");
    assert!(log.contains("removed or replaced"), "{log}");
    assert_eq!(server.remaining(), vec![message(1)], "the message stays");
}
