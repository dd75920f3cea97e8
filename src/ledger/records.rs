//! What pophook remembers about one message, and how it is keyed. Plain data: the
//! ledger stores it, the planner (`mailbox::plan`) decides every transition.

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What is known about one message. Times are unix seconds, `next_attempt_ms` unix
/// milliseconds. A message with no record is new.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Record {
    /// The webhook answered 2xx; delete it (when `delete: true`) and never post it again.
    /// `size` is LIST's size when it was fetched: a leftover whose listed size differs
    /// is another message that reuses the UIDL, so it is posted rather than deleted.
    Delivered {
        at: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// An attempt failed (the POST, or fetching the message); try again at
    /// `next_attempt_ms`. `oversized`: only its headers are posted, as a truncated event.
    Retrying {
        /// Attempts so far, of every kind.
        attempts: u32,
        /// Of those, how many the endpoint refused (4xx): `max_rejections` counts these.
        #[serde(default)]
        rejections: u32,
        /// Connections that broke while this message was downloading, in a row. The
        /// first few are retried at once (a flaky network); from [`DROPS_FORGIVEN`] on,
        /// each is an attempt on the schedule, so a message that always breaks the
        /// connection is parked instead of holding the mailbox.
        #[serde(default, skip_serializing_if = "is_zero")]
        drops: u32,
        next_attempt_ms: i64,
        /// The wait that was scheduled: a retry time read back from the state is
        /// capped at now + this, so a clock stepped back cannot postpone it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        last_error: String,
        #[serde(default)]
        oversized: bool,
        /// When the first attempt failed (unix seconds): the age of an undelivered message.
        #[serde(default)]
        since: i64,
    },
    /// Retries are exhausted; left on the server until replayed or dropped.
    Parked {
        attempts: u32,
        last_error: String,
        at: i64,
        #[serde(default)]
        oversized: bool,
        /// When the first attempt failed (unix seconds).
        #[serde(default)]
        since: i64,
    },
    /// An oversized message whose headers were posted (truncated); it stays on the server.
    Announced { at: i64 },
    /// An operator dropped it from the parked list; it stays on the server, never posted.
    Dropped { at: i64 },
}

impl Record {
    /// A short name for listings: delivered, retrying, parked, announced, dropped.
    pub fn status(&self) -> &'static str {
        match self {
            Record::Delivered { .. } => "delivered",
            Record::Retrying { .. } => "retrying",
            Record::Parked { .. } => "parked",
            Record::Announced { .. } => "announced",
            Record::Dropped { .. } => "dropped",
        }
    }

    /// Retrying or parked: not delivered yet, and the age counts.
    pub fn undelivered_since(&self) -> Option<i64> {
        match self {
            Record::Retrying { since, .. } | Record::Parked { since, .. } => Some(*since),
            _ => None,
        }
    }
}

/// Connections broken while downloading the same message that are retried at once,
/// before each further one counts as an attempt.
pub const DROPS_FORGIVEN: u32 = 2;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A record as stored: the record, and since when its message is missing from the
/// server's listings (a record is forgotten only after a sustained absence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<Absence>,
}

impl Entry {
    pub fn new(record: Record) -> Entry {
        Entry {
            record,
            absent: None,
        }
    }
}

/// One record's change as the planner decides it: from the entry the decision was made
/// on (`None`: there was no record) to the next one (`None`: forget the record). The
/// ledger applies it only if the record is still `from`, so a decision never overwrites
/// a change that landed after it was read (an operator's drop while a cycle planned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub key: String,
    pub from: Option<Entry>,
    pub to: Option<Entry>,
}

/// A message missing from listings: since when (unix seconds) and in how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absence {
    pub since: i64,
    pub listings: u32,
}

/// An endpoint that answered 410 Gone, for the webhook configuration it was seen with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledEndpoint {
    /// Identifies the webhook configuration; a changed configuration re-enables.
    pub fingerprint: String,
    /// The URL without userinfo and query, for messages.
    pub url: String,
    pub at: i64,
}

/// What the last cycles of one mailbox did, written after each cycle so `pophook
/// status` can show it whether or not the service is running. Times are unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleLog {
    /// When the last cycle ended.
    pub last_cycle_at: Option<i64>,
    pub last_cycle_ms: u64,
    pub last_result: Option<CycleResult>,
    /// When a cycle last ended without error (POP3 reached, listing done).
    pub last_success_at: Option<i64>,
    /// Events the webhook accepted, over every cycle recorded in this state.
    pub delivered_total: u64,
    /// The latest error (a failed session or a failed POST), kept until a newer one.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// Listed messages the last cycle left alone (unusable UIDL).
    #[serde(default)]
    pub skipped: u64,
}

/// How a cycle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleResult {
    /// Everything listed is delivered or deliberately left alone.
    Ok,
    /// Reached, but some messages failed, wait for a retry or are parked.
    Undelivered,
    /// The webhook answered 410 Gone: nothing is posted until its configuration changes.
    EndpointDisabled,
    /// The session failed (connect, login, protocol, state).
    Failed,
}

impl CycleResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            CycleResult::Ok => "ok",
            CycleResult::Undelivered => "undelivered",
            CycleResult::EndpointDisabled => "endpoint_disabled",
            CycleResult::Failed => "failed",
        }
    }
}

/// The event id for a (mailbox, UIDL) pair: `msg_` and 32 hex digits of
/// SHA-256(mailbox, 0x00, uidl).
///
/// It is derived rather than stored so that a retry, a restart or even a lost state
/// database sends the same id and the receiver can drop the duplicate. The 0x00 keeps
/// ("ab", "c") and ("a", "bc") apart. Changing this re-delivers every message under a new
/// id, so the test pins a known value.
pub fn event_id(mailbox: &str, uidl: &str) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(mailbox.as_bytes());
    hasher.update([0u8]);
    hasher.update(uidl.as_bytes());
    let digest = hasher.finalize();

    let mut id = String::with_capacity(4 + 32);
    id.push_str("msg_");
    for byte in &digest[..16] {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How a message is keyed within its mailbox: its UIDL, or, when the server gives
/// several messages the same UIDL, the UIDL and the SHA-256 of the content. UIDLs are
/// printable ASCII without spaces (RFC 1939), so the space cannot be part of one.
pub fn duplicate_key(uidl: &str, sha256_hex: &str) -> String {
    format!("{uidl} sha256:{sha256_hex}")
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_absence_and_sizes_existed_still_read() {
        let old = br#"{"status":"retrying","attempts":2,"next_attempt_ms":5,"last_error":"x"}"#;
        let entry: Entry = serde_json::from_slice(old).unwrap();
        assert_eq!(entry.absent, None);
        assert!(matches!(
            entry.record,
            Record::Retrying {
                attempts: 2,
                rejections: 0,
                drops: 0,
                delay_ms: None,
                ..
            }
        ));
        let delivered: Entry = serde_json::from_slice(br#"{"status":"delivered","at":3}"#).unwrap();
        assert_eq!(delivered.record, Record::Delivered { at: 3, size: None });
    }

    #[test]
    fn an_entry_round_trips_with_its_absence() {
        let entry = Entry {
            record: Record::Parked {
                attempts: 3,
                last_error: "HTTP 422".into(),
                at: 9,
                oversized: false,
                since: 8,
            },
            absent: Some(Absence {
                since: 100,
                listings: 2,
            }),
        };
        let bytes = serde_json::to_vec(&entry).unwrap();
        assert_eq!(serde_json::from_slice::<Entry>(&bytes).unwrap(), entry);
    }
}
