//! Parked messages: those whose retries ran out. They stay on the server; an operator
//! lists them, replays them (a fresh retry schedule, tried at once) or drops them
//! (never posted, left on the server).

use serde::{Deserialize, Serialize};

use crate::ledger::event_id;
use crate::ledger::{self, Ledger, Record, StateError};
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

/// Gives each message a fresh retry schedule, due now. The next cycle of its mailbox
/// fetches and posts it, and deletes it after a 2xx as usual.
pub async fn unpark(ledger: &Ledger, messages: &[ParkedMessage]) -> Result<(), StateError> {
    for m in messages {
        ledger.put_record(
            &m.mailbox,
            &m.uidl,
            Record::Retrying {
                attempts: 0,
                rejections: 0,
                drops: 0,
                next_attempt_ms: 0,
                delay_ms: Some(0),
                last_error: m.last_error.clone(),
                oversized: m.oversized,
                since: ledger::now(),
            },
        );
    }
    ledger.flush().await
}

/// Forgets the messages as deliveries: never posted, left on the server. Pruned from
/// the state once they are gone from the server.
pub async fn drop(ledger: &Ledger, messages: &[ParkedMessage]) -> Result<(), StateError> {
    for m in messages {
        ledger.put_record(&m.mailbox, &m.uidl, Record::Dropped { at: ledger::now() });
    }
    ledger.flush().await
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
    use super::*;
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
}
