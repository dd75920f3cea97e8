//! What an outcome makes of a record: a failed attempt, a broken download, a message
//! that outgrew the limit, the session's DELEs and QUIT, an operator's replay or drop.

use super::*;
use crate::delivery::retry::RetryPolicy;
use rand::SeedableRng;

#[test]
fn failures_follow_the_schedule_and_only_refusals_count_towards_max_rejections() {
    let policy = RetryPolicy::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let now = now();
    let outage = Failure {
        reason: "HTTP 503".into(),
        rejected: false,
        retry_after: None,
        oversized: false,
        dropped: false,
    };
    let refusal = Failure {
        reason: "HTTP 422".into(),
        rejected: true,
        ..outage.clone()
    };
    // Five outage attempts.
    let mut record = failed(None, &outage, now, &policy, &mut rng);
    for _ in 0..4 {
        record = failed(Some(&record), &outage, now, &policy, &mut rng);
    }
    let Record::Retrying {
        attempts: 5,
        rejections: 0,
        drops: 0,
        delay_ms: Some(delay),
        next_attempt_ms,
        ..
    } = record
    else {
        panic!("{record:?}")
    };
    assert_eq!(next_attempt_ms, now.unix_ms + delay as i64);
    // Then refusals: parked at the third refusal, not at the first.
    record = failed(Some(&record), &refusal, now, &policy, &mut rng);
    assert!(
        matches!(record, Record::Retrying { rejections: 1, .. }),
        "{record:?}"
    );
    record = failed(Some(&record), &refusal, now, &policy, &mut rng);
    record = failed(Some(&record), &refusal, now, &policy, &mut rng);
    assert!(
        matches!(record, Record::Parked { attempts: 8, .. }),
        "{record:?}"
    );
}

#[test]
fn a_broken_download_is_forgiven_twice_then_counts_and_goes_last() {
    let policy = RetryPolicy::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let now = now();
    let drop = Failure {
        reason: "downloading failed: closed".into(),
        rejected: false,
        retry_after: None,
        oversized: false,
        dropped: true,
    };
    let first = failed(None, &drop, now, &policy, &mut rng);
    assert!(
        matches!(
            first,
            Record::Retrying {
                attempts: 0,
                drops: 1,
                delay_ms: Some(0),
                ..
            }
        ),
        "{first:?}"
    );
    let second = failed(Some(&first), &drop, now, &policy, &mut rng);
    assert!(
        matches!(
            second,
            Record::Retrying {
                attempts: 0,
                drops: 2,
                ..
            }
        ),
        "{second:?}"
    );
    let third = failed(Some(&second), &drop, now, &policy, &mut rng);
    assert!(
        matches!(third, Record::Retrying { attempts: 1, drops: 3, delay_ms: Some(d), .. } if d > 0),
        "{third:?}"
    );
    let other = Failure {
        dropped: false,
        ..drop.clone()
    };
    let reset = failed(Some(&third), &other, now, &policy, &mut rng);
    assert!(
        matches!(
            reset,
            Record::Retrying {
                attempts: 2,
                drops: 0,
                ..
            }
        ),
        "{reset:?}"
    );

    // A message that broke the connection is fetched after the others.
    let (entries, sizes) = listing(&["a", "suspect", "c"]);
    let book = book(&[("suspect", second.clone(), Some(now.instant))]);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert_eq!(
        fetched(&plan),
        [("a", false), ("c", false), ("suspect", false)]
    );
}

#[test]
fn a_message_that_grew_too_large_is_due_at_once_as_headers_only() {
    let now = now();
    let record = grew_too_large(Some(&retrying(false)), 1000, now);
    assert!(matches!(
        record,
        Record::Retrying {
            attempts: 1,
            oversized: true,
            delay_ms: Some(0),
            ..
        }
    ));
    assert_eq!(
        delivered(true, 5, now),
        Record::Announced { at: now.unix() }
    );
    assert_eq!(
        delivered(false, 5, now),
        Record::Delivered {
            at: now.unix(),
            size: Some(5)
        }
    );
}

fn dele(key: &str, accepted: bool) -> Deleted {
    let refused = crate::pop3::codec::ErrReply {
        code: None,
        text: "read-only maildrop".into(),
    };
    Deleted {
        uidl: key.into(),
        result: if accepted { Ok(()) } else { Err(refused) },
    }
}

#[test]
fn only_quits_ok_forgets_and_only_the_delivered_records_whose_dele_was_accepted() {
    let delivered = |size| Record::Delivered {
        at: 1,
        size: Some(size),
    };
    let book = book(&[
        ("ok-1", delivered(100), None),
        ("ok-2", delivered(200), None),
        ("refused", delivered(300), None),
        // Not delivered (any more): whatever the DELE, it is not the planner's to forget.
        ("retrying", retrying(false), None),
    ]);
    let deleted = [
        dele("ok-1", true),
        dele("refused", false),
        dele("ok-2", true),
        dele("retrying", true),
        dele("no-record", true),
    ];
    let cases: [(Ending, &[&str]); 3] = [
        (Ending::QuitAccepted, &["ok-1", "ok-2"]),
        // RFC 1939: without QUIT's +OK nothing marked is removed.
        (Ending::QuitRefused, &[]),
        // The connection dropped before QUIT or before its reply.
        (Ending::Broken, &[]),
    ];
    for (ending, forgotten) in cases {
        let transitions = committed(&deleted, ending, &book);
        let keys: Vec<&str> = transitions.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, forgotten, "{ending:?}");
        for t in &transitions {
            assert_eq!(t.to, None, "{ending:?}: forgotten");
            assert_eq!(
                t.from.as_ref(),
                book.get(&t.key).map(|s| &s.entry),
                "{ending:?}: decided on the record as it is"
            );
        }
    }
}

#[test]
fn a_refused_dele_leaves_the_delivered_record_for_the_next_cycle_to_check_by_size() {
    let now = now();
    let (entries, mut sizes) = listing(&["kept"]);
    let mut book = Book::default();
    // Posted in this session (LIST said 100 bytes); the server refused its DELE.
    book.insert_due("kept".into(), Entry::new(delivered(false, 100, now)), None);
    for ending in [Ending::QuitAccepted, Ending::QuitRefused, Ending::Broken] {
        assert!(
            committed(&[dele("kept", false)], ending, &book).is_empty(),
            "{ending:?}: a refused DELE changes no record"
        );
    }

    // The next cycle: listed with the same size, so it is the delivered message: DELE
    // again, never post again.
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert_eq!(plan.deletes, [(1, "kept".to_string())]);
    assert!(plan.fetches.is_empty());
    // Listed with another size: another message reusing the UIDL, posted, not DELEd.
    sizes.insert(1, 101);
    let plan = super::plan(&entries, &sizes, &book, now, &settings());
    assert!(plan.deletes.is_empty());
    assert_eq!(fetched(&plan), [("kept", false)]);
}

#[test]
fn an_operator_replays_or_drops_only_a_parked_message_and_keeps_its_absence() {
    let now = now();
    let absent = Some(Absence {
        since: 5,
        listings: 2,
    });
    let oversized = Entry {
        record: Record::Parked {
            attempts: 3,
            last_error: "too large".into(),
            at: 1,
            oversized: true,
            since: 1,
        },
        absent,
    };
    let replay = replayed(&oversized, now).unwrap();
    assert!(
        matches!(
            replay.record,
            Record::Retrying {
                attempts: 0,
                rejections: 0,
                drops: 0,
                delay_ms: Some(0),
                oversized: true,
                ..
            }
        ),
        "a fresh schedule, still headers only: {replay:?}"
    );
    assert_eq!(
        replay.absent, absent,
        "a replay says nothing about the server"
    );
    assert_eq!(
        dropped(&oversized, now),
        Some(Entry {
            record: Record::Dropped { at: now.unix() },
            absent
        })
    );

    // Delivered after a replay, or dropped or replayed by another operator since it
    // was listed: the operator's decision does not undo that.
    let not_parked = [
        Record::Delivered {
            at: 1,
            size: Some(1),
        },
        Record::Announced { at: 1 },
        Record::Dropped { at: 1 },
        retrying(false),
    ];
    for record in not_parked {
        let entry = Entry::new(record);
        assert_eq!(replayed(&entry, now), None, "{entry:?}");
        assert_eq!(dropped(&entry, now), None, "{entry:?}");
    }
}
