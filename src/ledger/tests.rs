//! The ledger against a real sled database in a temporary directory.

use super::*;

fn open(dir: &Path) -> Ledger {
    Ledger::open(dir, Watchdog::default()).unwrap()
}

fn delivered() -> Record {
    Record::Delivered { at: 1, size: None }
}

fn retrying(next_attempt_ms: i64, delay_ms: Option<u64>) -> Record {
    Record::Retrying {
        attempts: 1,
        rejections: 0,
        drops: 0,
        next_attempt_ms,
        delay_ms,
        last_error: "HTTP 503".into(),
        oversized: false,
        since: 1,
    }
}

#[tokio::test]
async fn records_survive_a_reopen_and_stay_per_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        for uid in ["1", "2", "3"] {
            ledger.put_record("a", uid, delivered());
        }
        ledger.put_record("ab", "1", retrying(5, Some(1)));
        ledger.remove("a", "2");
        ledger.close().await.unwrap();
    }
    let ledger = open(dir.path());
    assert_eq!(ledger.get("a", "1"), Some(delivered()));
    assert_eq!(ledger.get("a", "2"), None);
    assert_eq!(ledger.get("b", "1"), None);
    assert_eq!(ledger.records(Some("a")).len(), 2);
    assert_eq!(ledger.records(None).len(), 3);
    assert!(matches!(
        ledger.get("ab", "1"),
        Some(Record::Retrying { .. })
    ));
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_database_so_it_can_be_reopened_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    ledger.put_record("a", "1", delivered());
    drop(ledger);
    let again = open(dir.path());
    assert_eq!(again.get("a", "1"), Some(delivered()), "flushed on close");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    match Ledger::open(dir.path(), Watchdog::default()) {
        Err(StateError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open of a locked state directory succeeded"),
    }
}

#[tokio::test]
async fn endpoints_and_cycle_logs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = CycleLog {
        last_cycle_at: Some(10),
        delivered_total: 3,
        ..CycleLog::default()
    };
    {
        let ledger = open(dir.path());
        ledger.disable_endpoint(
            "a",
            DisabledEndpoint {
                fingerprint: "f1".into(),
                url: "https://x/".into(),
                at: 1,
            },
        );
        ledger.put_cycle_log("a", log.clone());
        ledger.close().await.unwrap();
    }
    let ledger = open(dir.path());
    assert!(ledger.disabled_endpoint("a", || "f1".into()).is_some());
    assert!(ledger.disabled_endpoint("b", || "f1".into()).is_none());
    assert!(ledger.disabled_endpoint("a", || "f2".into()).is_none());
    assert!(
        ledger.disabled_endpoint("a", || "f1".into()).is_none(),
        "forgotten once the configuration changed"
    );
    assert_eq!(ledger.cycle_log("a"), log);
    assert!(ledger.records(None).is_empty(), "kept apart from messages");
}

/// Removes `n` message records behind pophook's back, as a truncated or partly zeroed
/// file loses them.
fn lose_records(dir: &Path, n: usize) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree("messages").unwrap();
    let keys: Vec<_> = tree.iter().keys().take(n).map(Result::unwrap).collect();
    for key in keys {
        tree.remove(key).unwrap();
    }
    db.flush().unwrap();
}

/// The marker file's record count.
fn marker_records(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join("pophook-ledger.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["records"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn after_a_clean_close_even_a_few_lost_records_are_refused() {
    // Closed by `close` (the service's shutdown, the end of `once`) and by dropping the
    // last handle (a CLI command): both record the exact count.
    for by_drop in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = open(dir.path());
            // Grown in steps, so the cheap updates between flushes lag behind.
            for n in 0..100 {
                ledger.put_record("a", &n.to_string(), delivered());
                if n % 10 == 9 {
                    ledger.flush().await.unwrap();
                }
            }
            if by_drop {
                drop(ledger);
            } else {
                ledger.close().await.unwrap();
            }
        }
        assert_eq!(marker_records(dir.path()), 100, "exact at a clean close");
        lose_records(dir.path(), 5);
        let error = Ledger::open(dir.path(), Watchdog::default()).err().unwrap();
        let text = error.to_string();
        assert!(
            matches!(
                error,
                StateError::Damaged {
                    expected: 100,
                    found: 95,
                    ..
                }
            ),
            "closed by drop: {by_drop}: {text}"
        );
        assert!(
            text.contains("pophook-ledger.json") && text.contains("Restore the directory"),
            "names what to do: {text}"
        );
    }
}

#[tokio::test]
async fn between_clean_closes_the_marker_lags_by_less_than_its_slack() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    for n in 0..1000u64 {
        ledger.put_record("a", &n.to_string(), delivered());
        ledger.flush().await.unwrap();
        // What a crash right now would leave: this many records could go missing
        // unnoticed, and no more.
        let marker = marker_records(dir.path());
        assert!(marker <= n + 1, "never above the database");
        assert!(
            n + 1 - marker < super::store::slack(marker),
            "{} records, marker {marker}",
            n + 1
        );
    }
}

#[tokio::test]
async fn removals_reach_the_marker_before_sled_so_a_crash_after_them_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        for n in 0..200 {
            ledger.put_record("a", &n.to_string(), delivered());
        }
        ledger.close().await.unwrap();
    }
    assert_eq!(marker_records(dir.path()), 200);
    // What the writer thread does with 150 removals (after a QUIT, or forgetting),
    // then a crash before any flush of the ledger's own. sled writes its log buffer out
    // whenever it fills, so the removals may be on disk anyway: dropping the store
    // without closing it is that worst case (sled flushes on drop).
    {
        let mut store = super::store::Store::open(dir.path()).unwrap();
        store.load(|_, _, _, _| {}).unwrap();
        for n in 0..150 {
            store
                .apply(Tree::Messages, &message_key("a", &n.to_string()), None)
                .unwrap();
        }
        drop(store);
        writer::wait_for_unlock(dir.path());
    }
    let ledger = open(dir.path());
    assert_eq!(
        ledger.records(None).len(),
        50,
        "accepted, nothing else lost"
    );
}

#[tokio::test]
async fn a_database_replaced_by_an_empty_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        ledger.put_record("a", "1", delivered());
        ledger.close().await.unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "pophook-ledger.json" {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    assert!(matches!(
        Ledger::open(dir.path(), Watchdog::default()),
        Err(StateError::Damaged { found: 0, .. })
    ));
}

#[tokio::test]
async fn a_database_sled_cannot_open_is_refused_naming_the_state_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        ledger.put_record("a", "1", delivered());
        ledger.close().await.unwrap();
    }
    // sled's own settings file damaged: sled refuses it, before any marker check.
    std::fs::write(dir.path().join("conf"), b"\0\0\0\0garbage").unwrap();
    let error = Ledger::open(dir.path(), Watchdog::default()).err().unwrap();
    let text = error.to_string();
    assert!(matches!(error, StateError::Open { .. }), "{text}");
    assert!(
        text.contains(&dir.path().display().to_string())
            && text.contains("Do not delete it")
            && text.contains("move the directory aside"),
        "names the state and what to do: {text}"
    );
}

#[tokio::test]
async fn forgetting_records_lowers_the_marker_so_a_clean_restart_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        for n in 0..10 {
            ledger.put_record("a", &n.to_string(), delivered());
        }
        ledger.flush().await.unwrap();
        for n in 0..10 {
            ledger.remove("a", &n.to_string());
        }
        ledger.close().await.unwrap();
    }
    let ledger = open(dir.path());
    assert!(ledger.records(None).is_empty());
}

#[tokio::test]
async fn a_state_directory_removed_while_running_is_fatal() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    let ledger = open(&dir);
    ledger.put_record("a", "1", delivered());
    ledger.flush().await.unwrap();
    std::fs::rename(&dir, parent.path().join("moved")).unwrap();
    ledger.put_record("a", "2", delivered());
    let error = ledger.flush().await.unwrap_err();
    assert!(error.is_fatal(), "{error}");
    assert!(ledger.watchdog().fatal().is_some());
    assert!(ledger.watchdog().health().is_err(), "/healthz turns 503");
}

#[tokio::test]
async fn a_retry_time_in_the_far_future_is_capped_at_its_scheduled_wait() {
    let dir = tempfile::tempdir().unwrap();
    // Written by a process whose clock was an hour ahead: due in an hour by the wall
    // clock, though the wait scheduled was 10 s.
    let record = retrying(now_ms() + 3_600_000, Some(10_000));
    {
        let ledger = open(dir.path());
        ledger.put_record("a", "1", record.clone());
        let due = ledger.with_book("a", |b| b.earliest_due()).unwrap();
        assert!(due <= Instant::now() + Duration::from_secs(10));
        ledger.close().await.unwrap();
    }
    let ledger = open(dir.path());
    let due = ledger.with_book("a", |b| b.earliest_due()).unwrap();
    assert!(
        due <= Instant::now() + Duration::from_secs(10),
        "also when loaded"
    );
    // Records from before `delay_ms` existed get the longest default step as a cap.
    ledger.put_record("a", "2", retrying(now_ms() + 100 * 3_600_000, None));
    let slot_due = ledger.with_book("a", |b| b.get("2").unwrap().due.unwrap());
    assert!(slot_due <= Instant::now() + LEGACY_RETRY_CAP);
}

#[tokio::test]
async fn the_retry_index_follows_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    ledger.put_record("a", "late", retrying(now_ms() + 60_000, Some(60_000)));
    ledger.put_record("a", "soon", retrying(now_ms() + 1_000, Some(1_000)));
    let soon = ledger.with_book("a", |b| b.earliest_due()).unwrap();
    assert!(soon <= Instant::now() + Duration::from_secs(1));
    ledger.put_record("a", "soon", delivered());
    let late = ledger.with_book("a", |b| b.earliest_due()).unwrap();
    assert!(late > Instant::now() + Duration::from_secs(50));
    ledger.remove("a", "late");
    assert_eq!(ledger.with_book("a", |b| b.earliest_due()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_flushes_share_the_one_writer_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let mut tasks = tokio::task::JoinSet::new();
    for m in 0..50 {
        let ledger = ledger.clone();
        tasks.spawn(async move {
            for n in 0..20 {
                ledger.put_record(&format!("box{m}"), &n.to_string(), delivered());
                ledger.flush().await.unwrap();
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .expect("no flush may hang");
    assert_eq!(ledger.records(None).len(), 1000);
}

#[test]
fn event_ids_are_pinned_and_keep_mailbox_and_uidl_apart() {
    // Pinned: a new value would make every receiver see old messages as new.
    assert_eq!(
        super::event_id("support", "UID1"),
        "msg_4a9f8127042050ca245177da931ac704"
    );
    assert_ne!(super::event_id("ab", "c"), super::event_id("a", "bc"));
}

#[tokio::test]
async fn loading_sizes_each_book_for_its_own_records_not_the_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = open(dir.path());
        for uid in 0..30 {
            ledger.put_record("a", &uid.to_string(), delivered());
        }
        for uid in 0..300 {
            ledger.put_record("b", &uid.to_string(), delivered());
        }
        ledger.close().await.unwrap();
    }
    let ledger = open(dir.path());
    // "a" comes first and is reserved for all 330 records still to come: it must be cut
    // back to its 30, or a state of many mailboxes would hold many maps sized for all.
    for (mailbox, records) in [("a", 30), ("b", 300)] {
        let capacity = ledger.with_book(mailbox, |b| b.entries.capacity());
        let own = HashMap::<String, Slot>::with_capacity(records).capacity();
        assert_eq!(capacity, own, "{mailbox}");
        assert_eq!(ledger.records(Some(mailbox)).len(), records);
    }
}
