//! Parked messages: those whose retries ran out. They stay on the server; an operator
//! lists them, replays them (a fresh retry schedule, tried at once) or drops them
//! (never posted, left on the server).

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::ledger::event_id;
use crate::ledger::{Entry, Ledger, Record, StateError, Transition};
use crate::mailbox::plan::{self, Now};
use crate::mailbox::Mailbox;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParkedMessage {
    pub mailbox: String,
    pub uidl: String,
    /// The event id (`webhook-id`) the message is posted with.
    pub id: String,
    pub attempts: u32,
    pub last_error: String,
    /// Unix seconds.
    pub parked_at: i64,
    pub oversized: bool,
}

/// Every parked message, optionally of one mailbox, oldest first.
pub fn list(ledger: &Ledger, mailbox: Option<&str>) -> Vec<ParkedMessage> {
    let mut parked: Vec<ParkedMessage> = ledger
        .records(mailbox)
        .into_iter()
        .filter_map(|(mailbox, uidl, record)| match record {
            Record::Parked {
                attempts,
                last_error,
                at,
                oversized,
                ..
            } => Some(ParkedMessage {
                id: event_id(&mailbox, &uidl),
                mailbox,
                uidl,
                attempts,
                last_error,
                parked_at: at,
                oversized,
            }),
            _ => None,
        })
        .collect();
    parked.sort_by_key(|p| (p.parked_at, p.mailbox.clone(), p.uidl.clone()));
    parked
}

/// The parked messages that `ids` name (all of them when `ids` is empty), or an error
/// naming the first id that is not parked.
pub fn select(
    ledger: &Ledger,
    mailbox: Option<&str>,
    ids: &[String],
) -> Result<Vec<ParkedMessage>, SelectError> {
    let parked = list(ledger, mailbox);
    if ids.is_empty() {
        return Ok(parked);
    }
    ids.iter()
        .map(|id| {
            parked
                .iter()
                .find(|p| &p.id == id)
                .cloned()
                .ok_or_else(|| SelectError::NotParked(id.clone()))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0} is not a parked message (see `pophook parked list`)")]
    NotParked(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Gives each message a fresh retry schedule, due now ([`plan::replayed`]). The next
/// cycle of its mailbox fetches and posts it, and deletes it after a 2xx as usual.
pub async fn unpark(ledger: &Ledger, messages: &[ParkedMessage]) -> Result<(), StateError> {
    decide(ledger, messages, plan::replayed, "replayed");
    ledger.flush().await
}

/// Forgets the messages as deliveries ([`plan::dropped`]): never posted, left on the
/// server. Pruned from the state once they are gone from the server.
pub async fn drop(ledger: &Ledger, messages: &[ParkedMessage]) -> Result<(), StateError> {
    decide(ledger, messages, plan::dropped, "dropped");
    ledger.flush().await
}

/// Applies the planner's decision to each message's record as it is now. One that is
/// no longer parked (a cycle delivered it, or another operator got there first since it
/// was listed) is left as it is, and said so.
fn decide(
    ledger: &Ledger,
    messages: &[ParkedMessage],
    next: fn(&Entry, Now) -> Option<Entry>,
    done: &str,
) {
    let now = Now::current();
    for m in messages {
        let from = ledger.entry(&m.mailbox, &m.uidl);
        let Some(to) = from.as_ref().and_then(|entry| next(entry, now)) else {
            let status = from.map_or("forgotten", |e| e.record.status());
            warn!(mailbox = %m.mailbox, id = %m.id, status, "not {done}: the message is no longer parked");
            continue;
        };
        let transition = Transition {
            key: m.uidl.clone(),
            from,
            to: Some(to),
        };
        if !ledger.apply(&m.mailbox, [transition]).is_empty() {
            warn!(mailbox = %m.mailbox, id = %m.id, "not {done}: its record changed meanwhile; see `pophook parked list`");
        }
    }
}

/// What became of one replayed message after its mailbox's cycle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replayed {
    pub id: String,
    pub mailbox: String,
    /// `delivered and deleted`, `delivered`, `announced`, `queued` (its mailbox has not
    /// cycled yet), `retrying`, `parked` or `dropped`.
    pub status: String,
    /// The webhook took it.
    pub delivered: bool,
}

/// The answer to a replay: each message, and the mailbox cycles that failed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayReport {
    pub messages: Vec<Replayed>,
    pub errors: Vec<MailboxError>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxError {
    pub mailbox: String,
    pub error: String,
}

impl ReplayReport {
    /// Every message delivered and every cycle clean.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.messages.iter().all(|m| m.delivered)
    }
}

/// Selected messages of mailboxes this instance does not poll (removed from the
/// configuration, or another shard's): replaying them does nothing until one does.
pub fn unpolled(selected: &[ParkedMessage], mailboxes: &[Mailbox]) -> Vec<MailboxError> {
    let mut names: Vec<&str> = selected
        .iter()
        .map(|p| p.mailbox.as_str())
        .filter(|name| !mailboxes.iter().any(|m| m.name == *name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| MailboxError {
            mailbox: name.to_string(),
            error: "this instance does not poll that mailbox (not in its configuration, or another shard's); its messages are delivered when an instance polling it runs".into(),
        })
        .collect()
}

/// Reads where each replayed message stands now.
pub fn outcomes(ledger: &Ledger, replayed: &[ParkedMessage]) -> Vec<Replayed> {
    replayed
        .iter()
        .map(|m| {
            let (status, delivered) = match ledger.get(&m.mailbox, &m.uidl) {
                // Delivered, deleted and then forgotten because the server no longer lists it.
                None => ("delivered and deleted", true),
                Some(Record::Retrying { attempts: 0, .. }) => ("queued", false),
                Some(record @ (Record::Delivered { .. } | Record::Announced { .. })) => {
                    (record.status(), true)
                }
                Some(record) => (record.status(), false),
            };
            Replayed {
                id: m.id.clone(),
                mailbox: m.mailbox.clone(),
                status: status.to_string(),
                delivered,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ledger::Absence;
    use crate::watchdog::Watchdog;

    fn parked(ledger: &Ledger, mailbox: &str, uidl: &str, at: i64) {
        ledger.put_record(
            mailbox,
            uidl,
            Record::Parked {
                attempts: 3,
                last_error: "HTTP 422".into(),
                at,
                oversized: false,
                since: at,
            },
        );
    }

    #[tokio::test]
    async fn list_select_unpark_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        parked(&ledger, "a", "u1", 20);
        parked(&ledger, "b", "u2", 10);
        ledger.put_record("a", "u3", Record::Delivered { at: 1, size: None });

        let all = list(&ledger, None);
        assert_eq!(
            all.iter().map(|p| p.uidl.as_str()).collect::<Vec<_>>(),
            ["u2", "u1"],
            "oldest first, delivered ones are not parked"
        );
        assert_eq!(all[0].id, event_id("b", "u2"));
        assert_eq!(list(&ledger, Some("a")).len(), 1);

        let one = select(&ledger, None, &[event_id("a", "u1")]).unwrap();
        assert_eq!(one.len(), 1);
        let missing = select(&ledger, None, &["msg_nope".into()]).unwrap_err();
        assert!(missing.to_string().contains("msg_nope"));

        unpark(&ledger, &one).await.unwrap();
        assert!(matches!(
            ledger.get("a", "u1"),
            Some(Record::Retrying {
                attempts: 0,
                next_attempt_ms: 0,
                ..
            })
        ));
        let queued = outcomes(&ledger, &one);
        assert_eq!(
            (queued[0].status.as_str(), queued[0].delivered),
            ("queued", false)
        );
        ledger.put_record("a", "u1", Record::Delivered { at: 2, size: None });
        assert!(outcomes(&ledger, &one)[0].delivered);
        let rest = select(&ledger, Some("b"), &[]).unwrap();
        drop(&ledger, &rest).await.unwrap();
        assert!(matches!(
            ledger.get("b", "u2"),
            Some(Record::Dropped { .. })
        ));
        assert!(list(&ledger, None).is_empty());
    }

    /// A cycle's plan for a mailbox whose listing is empty: every record is absent.
    fn plan_empty_listing(ledger: &Ledger, mailbox: &str) -> plan::Plan {
        let settings = plan::Settings {
            delete: true,
            max_message_size: 1000,
            top: true,
        };
        ledger.with_book(mailbox, |book| {
            plan::plan(&[], &HashMap::new(), book, Now::current(), &settings)
        })
    }

    /// The lost update of the audit: a cycle plans from the records, an operator's drop
    /// lands, then the cycle writes its plan (an absence mark on the parked record).
    #[tokio::test]
    async fn a_drop_that_lands_while_a_cycle_plans_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        parked(&ledger, "a", "gone", 10);
        let planned = plan_empty_listing(&ledger, "a");
        assert_eq!(planned.transitions.len(), 1, "{planned:?}");

        let selected = select(&ledger, None, &[event_id("a", "gone")]).unwrap();
        drop(&ledger, &selected).await.unwrap();
        let stale = ledger.apply("a", planned.transitions);

        assert_eq!(stale.len(), 1, "the plan's decision is skipped");
        assert!(
            matches!(ledger.get("a", "gone"), Some(Record::Dropped { .. })),
            "the operator's drop survives: {:?}",
            ledger.get("a", "gone")
        );
        // The next plan starts from the drop: it marks the dropped record absent.
        let next = plan_empty_listing(&ledger, "a");
        assert!(ledger.apply("a", next.transitions).is_empty());
        let entry = ledger.entry("a", "gone").unwrap();
        assert!(matches!(entry.record, Record::Dropped { .. }));
        assert_eq!(entry.absent.map(|a| a.listings), Some(1));
    }

    #[tokio::test]
    async fn a_replay_that_lands_while_a_cycle_forgets_the_record_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        let record = Record::Parked {
            attempts: 3,
            last_error: "HTTP 422".into(),
            at: 1,
            oversized: false,
            since: 1,
        };
        let absent = Some(Absence {
            since: crate::ledger::now() - 2 * 86_400,
            listings: 2,
        });
        ledger.put("a", "gone", Entry { record, absent });
        let planned = plan_empty_listing(&ledger, "a");
        assert!(planned.transitions[0].to.is_none(), "{planned:?}");

        let selected = select(&ledger, None, &[]).unwrap();
        unpark(&ledger, &selected).await.unwrap();
        assert_eq!(ledger.apply("a", planned.transitions).len(), 1);
        assert!(
            matches!(
                ledger.get("a", "gone"),
                Some(Record::Retrying { attempts: 0, .. })
            ),
            "the replay survives: {:?}",
            ledger.get("a", "gone")
        );
    }

    #[tokio::test]
    async fn a_drop_of_a_message_delivered_since_it_was_listed_leaves_it_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        parked(&ledger, "a", "u1", 10);
        let selected = select(&ledger, None, &[]).unwrap();
        // Replayed by someone else and delivered by a cycle in between.
        let delivered = Record::Delivered {
            at: 11,
            size: Some(5),
        };
        ledger.put_record("a", "u1", delivered.clone());
        drop(&ledger, &selected).await.unwrap();
        unpark(&ledger, &selected).await.unwrap();
        assert_eq!(ledger.get("a", "u1"), Some(delivered));
    }
}
