//! The state under trouble: a full disk (a small tmpfs), the state directory removed
//! while running, a truncated or partly zeroed database, records lost after a clean
//! stop, and records legitimately removed before a kill. Nothing unsafe may happen, a full disk must heal
//! by itself, and a damaged or vanished state must stop pophook with a clear message
//! rather than start over silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{until, Pophook};
use common::receiver::Receiver;
use common::scripted::Scripted;
use common::setup::{config, hook, message, scripted_mailbox, TestConfig};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_deletes_nothing_and_heals_when_space_returns() {
    let tmpfs = Tmpfs::mount("16m");
    let server = Scripted::with_messages((1..=3).map(message).collect()).await;
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
    until(
        "the first messages are delivered",
        Duration::from_secs(20),
        || server.remaining().is_empty(),
    )
    .await;

    // Two more (idle) cycles, so that forgetting the deleted messages is saved too.
    let sessions = server.sessions();
    until("two idle cycles", Duration::from_secs(20), || {
        server.sessions() >= sessions + 2
    })
    .await;
    let filler = tmpfs.fill();
    for n in 4..=6 {
        server.push_message(message(n), &format!("uid-{n}"));
    }
    until(
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
    until(
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
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver.url(), ""),
        &scripted_mailbox("box", server.port(), ""),
    );
    let (_trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(pophook::service::run(cfg.config.clone(), shutdown));
    until("the message is delivered", Duration::from_secs(20), || {
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

/// `n` messages delivered by `once` with `delete: false`, so the state keeps a record
/// of each and `once` closes it cleanly.
async fn delivered_and_kept(n: usize) -> (Scripted, Receiver, TestConfig) {
    let server = Scripted::with_messages((1..=n).map(message).collect()).await;
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
    assert_eq!(receiver.requests().len(), n);
    assert_eq!(marker_records(&cfg), n as u64, "exact after a clean close");
    (server, receiver, cfg)
}

fn marker_records(cfg: &TestConfig) -> u64 {
    let bytes = std::fs::read(cfg.config.state_dir.join("pophook-ledger.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["records"]
        .as_u64()
        .unwrap()
}

/// Starts `once` on a damaged state and returns how many records the refusal says the
/// database holds: it must be the marker's refusal (not sled's, not a start).
fn refused_as_damaged(cfg: &TestConfig, expected: usize) -> u64 {
    let output = cfg.pophook(&["once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    let claim = format!("pophook-ledger.json says it held at least {expected}: it was damaged, truncated or replaced");
    assert!(stderr.contains(&claim), "the marker's refusal: {stderr}");
    assert!(
        stderr.contains("Restore the directory from a backup")
            && stderr.contains("to start over deliberately, stop pophook and delete"),
        "names what to do: {stderr}"
    );
    let found = stderr
        .split(" holds ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in: {stderr}"));
    assert!(found < expected as u64, "{stderr}");
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_few_records_lost_after_a_clean_stop_are_refused_at_start() {
    let (_server, receiver, cfg) = delivered_and_kept(120).await;
    // Five records lost behind pophook's back: fewer than the marker's slack between
    // clean stops, so only the exact count written at the clean stop catches it.
    {
        let db = sled::open(&cfg.config.state_dir).unwrap();
        let tree = db.open_tree("messages").unwrap();
        let keys: Vec<_> = tree.iter().keys().take(5).map(Result::unwrap).collect();
        for key in keys {
            tree.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    assert_eq!(refused_as_damaged(&cfg, 120), 115);
    assert_eq!(receiver.requests().len(), 120, "nothing posted again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_database_is_refused_at_start_with_a_message_naming_what_to_do() {
    let (_server, receiver, cfg) = delivered_and_kept(40).await;
    // Cut the database file short, as a crash of the disk or a bad copy would. sled
    // opens what is left without a word; the marker is what refuses it.
    let db = cfg.config.state_dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    refused_as_damaged(&cfg, 40);
    assert_eq!(receiver.requests().len(), 40, "nothing posted again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partly_zeroed_database_is_refused_at_start() {
    use std::io::{Seek, SeekFrom, Write};
    let (_server, receiver, cfg) = delivered_and_kept(120).await;
    // 4 KiB of zeros in the middle of sled's log: sled stops reading at the damage and
    // opens with what came before it, silently; the marker is what refuses it.
    let db = cfg.config.state_dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[0u8; 4096]).unwrap();
    drop(file);
    refused_as_damaged(&cfg, 120);
    assert_eq!(receiver.requests().len(), 120, "nothing posted again");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_removed_after_quit_then_a_kill_are_not_refused_at_start() {
    let (server, receiver, cfg) = delivered_and_kept(200).await;
    // Now deleting: the 200 delivered messages are DELEd and, after QUIT, forgotten —
    // far below the marker's 200 — and pophook dies without a clean close.
    std::fs::write(
        cfg.path(),
        cfg.yaml
            .replace("    delete: false\n", "    delete: true\n"),
    )
    .unwrap();
    let child = Pophook::spawn(&["run"], &cfg.path(), &cfg.dir.path().join("stderr.log"));
    child
        .until("the messages are deleted", Duration::from_secs(30), || {
            server.remaining().is_empty()
        })
        .await;
    let sessions = server.sessions();
    child
        .until("an idle cycle after it", Duration::from_secs(20), || {
            server.sessions() > sessions
        })
        .await;
    child.kill().await; // SIGKILL: no clean close, the marker keeps its last write
    assert!(marker_records(&cfg) < 200, "lowered before the removals");

    let output = cfg.pophook(&["once"]);
    assert!(
        output.status.success(),
        "a healthy state is accepted: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(receiver.requests().len(), 200, "nothing posted again");
}
