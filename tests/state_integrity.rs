//! The state under trouble: a full disk (a small tmpfs), the state directory removed
//! while running, a truncated database. Nothing unsafe may happen, a full disk must heal
//! by itself, and a damaged or vanished state must stop pophook with a clear message
//! rather than start over silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::scripted::{Script, Scripted};
use common::setup::{config, hook, message, scripted_mailbox};

/// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped. Needs
/// root (the test suite runs as root: see scripts/test.sh).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs for the disk-full test: run the tests as root (scripts/test.sh does)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file until it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = vec![0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_deletes_nothing_and_heals_when_space_returns() {
    let tmpfs = Tmpfs::mount("16m");
    let server = Scripted::start(Script {
        messages: (1..=3).map(message).collect(),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "state_dir: {}\nwebhook:\n{}\nmailboxes:\n{}\n",
        tmpfs.path().join("state").display(),
        hook(&receiver.url(), ""),
        scripted_mailbox("box", server.port(), "")
    );
    let cfg = pophook::config::from_yaml(&yaml).unwrap();
    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(pophook::service::run(cfg, shutdown));
    wait_until(
        "the first messages are delivered",
        Duration::from_secs(20),
        || server.remaining().is_empty(),
    )
    .await;

    // Two more (idle) cycles, so that forgetting the deleted messages is saved too.
    let sessions = server.sessions();
    wait_until("two idle cycles", Duration::from_secs(20), || {
        server.sessions() >= sessions + 2
    })
    .await;
    let filler = tmpfs.fill();
    for n in 4..=6 {
        server.push_message(message(n), &format!("uid-{n}"));
    }
    wait_until(
        "the new messages are posted",
        Duration::from_secs(20),
        || receiver.accepted().len() >= 6,
    )
    .await;
    // Posted, but their deliveries cannot be saved: nothing is deleted meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        server.remaining().len(),
        3,
        "nothing deleted while the state cannot be saved"
    );
    assert!(!run.is_finished(), "a full disk is not fatal");

    std::fs::remove_file(filler).unwrap();
    wait_until(
        "pophook recovers by itself",
        Duration::from_secs(40),
        || server.remaining().is_empty(),
    )
    .await;
    trigger.trigger();
    run.await.unwrap().expect("a clean stop after recovering");
    let ids: std::collections::HashSet<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6, "every message, any repeat with the same id");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_directory_removed_while_running_stops_pophook_with_an_error() {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver.url(), ""),
        &scripted_mailbox("box", server.port(), ""),
    );
    let (_trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(pophook::service::run(cfg.config.clone(), shutdown));
    wait_until("the message is delivered", Duration::from_secs(20), || {
        server.remaining().is_empty()
    })
    .await;
    let state = &cfg.config.state_dir;
    std::fs::rename(state, state.with_extension("moved")).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("pophook stops by itself")
        .unwrap();
    let error = result.expect_err("stopping is an error").to_string();
    assert!(error.contains("removed or replaced"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_database_is_refused_at_start_with_a_message_naming_what_to_do() {
    let server = Scripted::start(Script {
        messages: (1..=40).map(message).collect(),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver.url(), ""),
        &scripted_mailbox("box", server.port(), "    delete: false\n"),
    );
    let output = cfg.pophook(&["once"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(receiver.requests().len(), 40);

    // Cut the database file short, as a crash of the disk or a bad copy would.
    let db = cfg.config.state_dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);

    let output = cfg.pophook(&["once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("pophook-ledger.json") || stderr.contains("move the directory aside"),
        "names what to do: {stderr}"
    );
    assert_eq!(receiver.requests().len(), 40, "nothing posted again");
}
