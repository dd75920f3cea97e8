//! How the `pophook` binary ends when something hangs. SIGTERM while a POST is in
//! flight: `run` ends within `shutdown_timeout` whatever the receiver does, exits 1
//! when it had to abandon the POST (the message stays on the server), and exits 0 when
//! the POST in hand finished within the grace. A `once` whose state cannot go on is
//! ended by the watchdog, not left frozen. Its stderr goes to a file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, message, scripted_mailbox, TestConfig};

/// One message on a scripted server, posted to `receiver` with a webhook timeout far
/// longer than the test, under `shutdown_timeout`.
async fn setup(receiver: &Receiver, shutdown_timeout: &str) -> (Scripted, TestConfig) {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        ..Script::default()
    })
    .await;
    let cfg = config(
        &format!("  url: {}\n  timeout: 600s", receiver.url()),
        &scripted_mailbox("box", server.port(), ""),
    );
    let yaml = format!("shutdown_timeout: {shutdown_timeout}\n{}", cfg.yaml);
    std::fs::write(cfg.path(), &yaml).unwrap();
    (server, cfg)
}

/// Starts `pophook <command>` on `cfg`, its stderr into a file, and returns once its
/// POST reached `receiver`; the path of that file comes back too.
async fn start_until_posted(
    command: &str,
    cfg: &TestConfig,
    receiver: &Receiver,
) -> (tokio::process::Child, PathBuf) {
    let stderr = cfg.dir.path().join("stderr.log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
        .args([command, "--config"])
        .arg(cfg.path())
        .env_remove("RUST_LOG")
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "pophook never posted: {}",
            log(&stderr)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, stderr)
}

/// Starts `pophook run`, waits until its POST reached `receiver`, sends SIGTERM and
/// returns the exit status, how long the exit took after the signal, and the log.
async fn sigterm_during_the_post(
    cfg: &TestConfig,
    receiver: &Receiver,
) -> (ExitStatus, Duration, String) {
    let (mut child, stderr) = start_until_posted("run", cfg, receiver).await;
    let pid = child.id().unwrap().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("pophook still runs 30 s after SIGTERM: {}", log(&stderr)))
        .unwrap();
    (status, signalled.elapsed(), log(&stderr))
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
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
    let (mut child, stderr) = start_until_posted("once", &cfg, &receiver).await;
    // The POST never answers, so `once` itself would wait for the webhook's 600 s
    // timeout; the state writer notices the directory is gone within 5 s and the
    // watchdog ends the process.
    let state = &cfg.config.state_dir;
    std::fs::rename(state, state.with_extension("moved")).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("`once` still runs 20 s later: {}", log(&stderr)))
        .unwrap();
    let log = log(&stderr);
    assert_eq!(status.code(), Some(70), "exit {status}:\n{log}");
    assert!(log.contains("removed or replaced"), "{log}");
    assert_eq!(server.remaining(), vec![message(1)], "the message stays");
}
