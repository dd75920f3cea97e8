//! The planner's decisions, one table row at a time: no server, no clock, no sled.

use super::*;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_000_000_000_000,
    }
}

fn settings() -> Settings {
    Settings {
        delete: true,
        max_message_size: 1000,
        top: true,
    }
}

fn listing(uidls: &[&str]) -> (Vec<(u32, String)>, HashMap<u32, u64>) {
    let entries: Vec<(u32, String)> = uidls
        .iter()
        .enumerate()
        .map(|(i, u)| (i as u32 + 1, u.to_string()))
        .collect();
    let sizes = entries.iter().map(|(n, _)| (*n, 100)).collect();
    (entries, sizes)
}

fn retrying(oversized: bool) -> Record {
    Record::Retrying {
        attempts: 1,
        rejections: 0,
        drops: 0,
        next_attempt_ms: 0,
        delay_ms: Some(5000),
        last_error: "HTTP 503".into(),
        oversized,
        since: 1,
    }
}

fn parked() -> Record {
    Record::Parked {
        attempts: 3,
        last_error: "HTTP 422".into(),
        at: 1,
        oversized: false,
        since: 1,
    }
}

fn book(records: &[(&str, Record, Option<Instant>)]) -> Book {
    let mut book = Book::default();
    for (key, record, due) in records {
        book.insert_due(key.to_string(), Entry::new(record.clone()), *due);
    }
    book
}

/// The plan's record changes, as (key, next entry; `None` forgets).
fn changes(plan: &Plan) -> Vec<(&str, Option<&Entry>)> {
    plan.transitions
        .iter()
        .map(|t| (t.key.as_str(), t.to.as_ref()))
        .collect()
}

fn fetched(plan: &Plan) -> Vec<(&str, bool)> {
    plan.fetches
        .iter()
        .map(|f| (f.uidl.as_str(), f.headers_only))
        .collect()
}

#[test]
fn new_messages_are_fetched_in_mailbox_order_and_delivered_leftovers_deleted() {
    let now = now();
    let (entries, sizes) = listing(&["a", "b", "c"]);
    let book = book(&[(
        "b",
        Record::Delivered {
            at: 1,
            size: Some(100),
        },
        None,
    )]);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert_eq!(fetched(&plan), [("a", false), ("c", false)]);
    assert_eq!(plan.deletes, [(2, "b".to_string())]);
    assert_eq!(plan.listed, 3);

    let keep = Settings {
        delete: false,
        ..settings()
    };
    let plan = super::plan(&entries, &sizes, &book, now, &keep);
    assert!(plan.deletes.is_empty(), "delete: false never DELEs");
    assert_eq!(fetched(&plan), [("a", false), ("c", false)]);
}

#[test]
fn a_reused_uidl_with_another_size_is_a_new_message_not_a_leftover() {
    let (entries, mut sizes) = listing(&["a"]);
    sizes.insert(1, 432);
    let book = book(&[(
        "a",
        Record::Delivered {
            at: 1,
            size: Some(100),
        },
        None,
    )]);
    let plan = super::plan(&entries, &sizes, &book, now(), &settings());
    assert!(
        plan.deletes.is_empty(),
        "never DELE a message that was not posted"
    );
    assert_eq!(fetched(&plan), [("a", false)]);
}

#[test]
fn retries_wait_until_due_and_parked_dropped_announced_stay() {
    let now = now();
    let later = now.instant + Duration::from_secs(60);
    let earlier = now.instant - Duration::from_secs(1);
    let (entries, sizes) = listing(&["wait", "due", "park", "drop", "ann"]);
    let book = book(&[
        ("wait", retrying(false), Some(later)),
        ("due", retrying(false), Some(earlier)),
        ("park", parked(), None),
        ("drop", Record::Dropped { at: 1 }, None),
        ("ann", Record::Announced { at: 1 }, None),
    ]);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert_eq!(fetched(&plan), [("due", false)]);
    assert_eq!((plan.waiting, plan.parked_listed), (1, 1));
    assert!(plan.deletes.is_empty());
}

#[test]
fn oversized_messages_are_announced_by_headers_or_counted_as_failures_without_top() {
    let now = now();
    let (entries, mut sizes) = listing(&["big", "grew", "small"]);
    sizes.insert(1, 5000);
    let book = book(&[("grew", retrying(true), Some(now.instant))]);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert_eq!(
        fetched(&plan),
        [("big", true), ("grew", true), ("small", false)]
    );

    let no_top = Settings {
        top: false,
        ..settings()
    };
    let plan = super::plan(&entries, &sizes, &book, now, &no_top);
    assert_eq!(fetched(&plan), [("small", false)]);
    assert_eq!(
        plan.unfetchable,
        [("big".to_string(), 5000), ("grew".to_string(), 100)]
    );
}

#[test]
fn messages_sharing_a_uidl_are_all_fetched_without_a_key() {
    let (entries, sizes) = listing(&["x", "dup", "dup", "y"]);
    let plan = super::plan(&entries, &sizes, &Book::default(), now(), &settings());
    assert_eq!(plan.shared_uidl, 2);
    let keys: Vec<Option<&str>> = plan.fetches.iter().map(|f| f.key.as_deref()).collect();
    assert_eq!(keys, [Some("x"), None, None, Some("y")]);
}

#[test]
fn a_shared_uidl_whose_download_failed_waits_for_its_retry_by_position() {
    let now = now();
    let (entries, sizes) = listing(&["dup", "dup"]);
    let book = book(&[
        (
            &position_key("dup", 1),
            retrying(false),
            Some(now.instant + Duration::from_secs(5)),
        ),
        (&position_key("dup", 2), parked(), None),
    ]);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert!(plan.fetches.is_empty(), "{:?}", plan.fetches);
    assert_eq!((plan.waiting, plan.parked_listed), (1, 1));
}

#[test]
fn identify_tells_shared_uidls_apart_by_content() {
    let now = now();
    let delivered = duplicate_key("dup", "aa");
    let waiting = duplicate_key("dup", "bb");
    let book = book(&[
        (&delivered, Record::Delivered { at: 1, size: None }, None),
        (
            &waiting,
            retrying(false),
            Some(now.instant + Duration::from_secs(9)),
        ),
    ]);
    assert_eq!(
        identify("dup", "aa", &book, now, true),
        (delivered.clone(), Identified::Delete)
    );
    assert_eq!(
        identify("dup", "aa", &book, now, false).1,
        Identified::Leave
    );
    assert_eq!(identify("dup", "bb", &book, now, true).1, Identified::Leave);
    assert_eq!(
        identify("dup", "cc", &book, now, true),
        (duplicate_key("dup", "cc"), Identified::Post)
    );
}

#[test]
fn a_record_is_forgotten_only_after_a_day_and_three_listings_without_it() {
    let start = now();
    let (entries, sizes) = listing(&["other"]);
    let mut book = book(&[("gone", parked(), None)]);

    // First listing without it: marked absent, kept.
    let plan = super::plan(&entries, &sizes, &book, start, &settings());
    let [(key, Some(entry))] = changes(&plan)[..] else {
        panic!("{:?}", plan.transitions)
    };
    assert_eq!(key, "gone");
    assert_eq!(
        plan.transitions[0].from,
        Some(Entry::new(parked())),
        "decided on the record as it was read"
    );
    assert_eq!(
        entry.absent,
        Some(Absence {
            since: start.unix(),
            listings: 1
        })
    );
    assert_eq!(
        entry.record,
        parked(),
        "a parked record survives an absence"
    );
    book.insert_due(key.to_string(), entry.clone(), None);

    // Many listings but within the day: kept.
    let soon = Now {
        unix_ms: start.unix_ms + 3_600_000,
        ..start
    };
    for listings in 2..=3 {
        let plan = super::plan(&entries, &sizes, &book, soon, &settings());
        let [(key, Some(entry))] = changes(&plan)[..] else {
            panic!("{:?}", plan.transitions)
        };
        assert_eq!(entry.absent.unwrap().listings, listings);
        book.insert_due(key.to_string(), entry.clone(), None);
    }
    let plan = super::plan(&entries, &sizes, &book, soon, &settings());
    assert!(
        plan.transitions.is_empty(),
        "counted up to the threshold only, not rewritten every poll"
    );

    // A day later: forgotten.
    let day_later = Now {
        unix_ms: start.unix_ms + FORGET_AFTER.as_millis() as i64,
        ..start
    };
    let plan = super::plan(&entries, &sizes, &book, day_later, &settings());
    assert_eq!(changes(&plan), [("gone", None)]);
    assert_eq!(
        plan.transitions[0].from,
        book.get("gone").map(|s| s.entry.clone())
    );
}

#[test]
fn a_day_with_a_single_listing_forgets_nothing() {
    let start = now();
    let (entries, sizes) = listing(&[]);
    let mut book = Book::default();
    book.insert_due(
        "gone".into(),
        Entry {
            record: Record::Dropped { at: 1 },
            absent: Some(Absence {
                since: start.unix(),
                listings: 1,
            }),
        },
        None,
    );
    let day_later = Now {
        unix_ms: start.unix_ms + FORGET_AFTER.as_millis() as i64 + 1,
        ..start
    };
    let plan = super::plan(&entries, &sizes, &book, day_later, &settings());
    let [(_, Some(entry))] = changes(&plan)[..] else {
        panic!("only the second listing without it: {:?}", plan.transitions)
    };
    assert_eq!(entry.absent.unwrap().listings, 2);
}

#[test]
fn a_message_listed_again_loses_its_absence() {
    let (entries, sizes) = listing(&["back"]);
    let mut book = Book::default();
    book.insert_due(
        "back".into(),
        Entry {
            record: Record::Dropped { at: 1 },
            absent: Some(Absence {
                since: 5,
                listings: 2,
            }),
        },
        None,
    );
    let plan = super::plan(&entries, &sizes, &book, now(), &settings());
    assert_eq!(
        changes(&plan),
        [("back", Some(&Entry::new(Record::Dropped { at: 1 })))]
    );
    assert!(plan.fetches.is_empty(), "still dropped");
}

#[test]
fn renumbering_is_noticed_when_most_remembered_uidls_vanish_and_most_listed_are_new() {
    let remembered: Vec<String> = (0..12).map(|n| format!("old-{n}")).collect();
    let mut book = Book::default();
    for key in &remembered {
        book.insert_due(key.clone(), Entry::new(Record::Dropped { at: 1 }), None);
    }
    let new: Vec<String> = (0..12).map(|n| format!("new-{n}")).collect();
    let new_refs: Vec<&str> = new.iter().map(String::as_str).collect();
    let (entries, sizes) = listing(&new_refs);
    assert!(super::plan(&entries, &sizes, &book, now(), &settings()).renumbered);
    let old_refs: Vec<&str> = remembered.iter().map(String::as_str).collect();
    let (entries, sizes) = listing(&old_refs);
    assert!(!super::plan(&entries, &sizes, &book, now(), &settings()).renumbered);
}

mod outcomes;
