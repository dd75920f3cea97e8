//! What pophook remembers, in sled: per (mailbox, UIDL), whether a message was
//! delivered, is waiting for a retry, or is parked; which endpoints answered 410; and
//! what each mailbox's last cycle did (for `pophook status`).
//! Keyed by UIDL, never by message number, because numbers change between sessions.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is known about one message. Times are unix seconds, `next_attempt_ms` unix
/// milliseconds. A message with no record is new.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Record {
    /// The webhook answered 2xx; delete it (when `delete: true`) and never post it again.
    Delivered { at: i64 },
    /// A POST failed; try again at `next_attempt_ms`. `oversized`: only its headers are
    /// posted, as a truncated event.
    Retrying {
        attempts: u32,
        next_attempt_ms: i64,
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
}

/// An endpoint that answered 410 Gone, for the webhook configuration it was seen with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledEndpoint {
    /// Identifies the webhook configuration; a changed configuration re-enables.
    pub fingerprint: String,
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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state directory {dir} is in use by another pophook process; run one pophook per `state_dir`")]
    Locked { dir: PathBuf },
    #[error("cannot open the state database in {dir}: {reason}. Do not delete it: to rebuild, stop pophook and move the directory aside; every message still on the server is then delivered again, with the same webhook-id")]
    Open { dir: PathBuf, reason: String },
    #[error("state database error: {0}")]
    Db(#[from] sled::Error),
    #[error("a state record is unreadable ({0}); move the state directory aside to rebuild it")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct State {
    db: sled::Db,
    messages: sled::Tree,
    endpoints: sled::Tree,
    cycles: sled::Tree,
}

impl State {
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StateError::Locked {
                    dir: dir.to_path_buf(),
                }
            }
            other => StateError::Open {
                dir: dir.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
        let messages = db.open_tree("messages")?;
        let endpoints = db.open_tree("disabled_endpoints")?;
        let cycles = db.open_tree("cycle_log")?;
        Ok(State {
            db,
            messages,
            endpoints,
            cycles,
        })
    }

    pub fn get(&self, mailbox: &str, uidl: &str) -> Result<Option<Record>, StateError> {
        match self.messages.get(key(mailbox, uidl))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    pub fn is_delivered(&self, mailbox: &str, uidl: &str) -> Result<bool, StateError> {
        Ok(matches!(
            self.get(mailbox, uidl)?,
            Some(Record::Delivered { .. })
        ))
    }

    /// Records a delivery. Not durable until [`State::flush`] returns.
    pub fn mark_delivered(&self, mailbox: &str, uidl: &str) -> Result<(), StateError> {
        self.put(mailbox, uidl, &Record::Delivered { at: now() })
    }

    /// Stores a record. Not durable until [`State::flush`] returns.
    pub fn put(&self, mailbox: &str, uidl: &str, record: &Record) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(record).expect("a record always serialises");
        self.messages.insert(key(mailbox, uidl), bytes)?;
        Ok(())
    }

    /// Forgets one message.
    pub fn remove(&self, mailbox: &str, uidl: &str) -> Result<(), StateError> {
        self.messages.remove(key(mailbox, uidl))?;
        Ok(())
    }

    /// Every record of one mailbox, or of all mailboxes with `None`, as
    /// (mailbox, uidl, record).
    pub fn records(
        &self,
        mailbox: Option<&str>,
    ) -> Result<Vec<(String, String, Record)>, StateError> {
        let prefix = mailbox.map(|m| key(m, "")).unwrap_or_default();
        let mut out = Vec::new();
        for entry in self.messages.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let Some(split) = k.iter().position(|b| *b == 0) else {
                return Err(StateError::Corrupt(
                    "a key without a mailbox separator".into(),
                ));
            };
            let record: Record =
                serde_json::from_slice(&v).map_err(|e| StateError::Corrupt(e.to_string()))?;
            out.push((
                String::from_utf8_lossy(&k[..split]).into_owned(),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                record,
            ));
        }
        Ok(out)
    }

    /// The earliest `next_attempt_ms` among the mailbox's retrying messages.
    pub fn earliest_retry_ms(&self, mailbox: &str) -> Result<Option<i64>, StateError> {
        Ok(self
            .records(Some(mailbox))?
            .into_iter()
            .filter_map(|(_, _, r)| match r {
                Record::Retrying {
                    next_attempt_ms, ..
                } => Some(next_attempt_ms),
                _ => None,
            })
            .min())
    }

    /// The mailbox's endpoint answered 410 for this webhook configuration.
    pub fn disable_endpoint(
        &self,
        mailbox: &str,
        endpoint: &DisabledEndpoint,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(endpoint).expect("serialises");
        self.endpoints.insert(mailbox.as_bytes(), bytes)?;
        Ok(())
    }

    /// Whether the mailbox's endpoint is disabled; a record made for another
    /// configuration (`fingerprint`) no longer counts and is removed.
    pub fn disabled_endpoint(
        &self,
        mailbox: &str,
        fingerprint: &str,
    ) -> Result<Option<DisabledEndpoint>, StateError> {
        let Some(bytes) = self.endpoints.get(mailbox.as_bytes())? else {
            return Ok(None);
        };
        let endpoint: DisabledEndpoint =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt(e.to_string()))?;
        if endpoint.fingerprint == fingerprint {
            Ok(Some(endpoint))
        } else {
            self.endpoints.remove(mailbox.as_bytes())?;
            Ok(None)
        }
    }

    /// The mailbox's cycle log; empty if no cycle was recorded yet.
    pub fn cycle_log(&self, mailbox: &str) -> Result<CycleLog, StateError> {
        match self.cycles.get(mailbox.as_bytes())? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt(e.to_string()))
            }
            None => Ok(CycleLog::default()),
        }
    }

    /// Stores the mailbox's cycle log. Not durable until the next [`State::flush`] (or
    /// sled's own periodic flush): losing it loses only status information.
    pub fn put_cycle_log(&self, mailbox: &str, log: &CycleLog) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(log).expect("a cycle log always serialises");
        self.cycles.insert(mailbox.as_bytes(), bytes)?;
        Ok(())
    }

    /// Makes every change so far durable; DELE must wait for this.
    pub async fn flush(&self) -> Result<(), StateError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Mailbox names cannot contain NUL (config validates them), so the separator makes
/// one mailbox's keys never a prefix of another's.
fn key(mailbox: &str, uidl: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(mailbox.len() + 1 + uidl.len());
    key.extend_from_slice(mailbox.as_bytes());
    key.push(0);
    key.extend_from_slice(uidl.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_survives_reopen_and_is_per_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = State::open(dir.path()).unwrap();
            state.mark_delivered("a", "uid-1").unwrap();
            state.flush().await.unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        assert!(state.is_delivered("a", "uid-1").unwrap());
        assert!(!state.is_delivered("b", "uid-1").unwrap());
        assert!(!state.is_delivered("a", "uid-2").unwrap());
    }

    #[test]
    fn one_mailboxs_records_never_include_another_whose_name_it_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        for uid in ["1", "2", "3"] {
            state.mark_delivered("a", uid).unwrap();
        }
        state.mark_delivered("ab", "1").unwrap();
        let a = state.records(Some("a")).unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|(mailbox, _, _)| mailbox == "a"));
        state.remove("a", "1").unwrap();
        assert!(!state.is_delivered("a", "1").unwrap());
        assert!(state.is_delivered("ab", "1").unwrap());
    }

    #[tokio::test]
    async fn records_of_every_kind_round_trip_and_list_by_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let retrying = Record::Retrying {
            attempts: 2,
            next_attempt_ms: 5_000,
            last_error: "HTTP 503".into(),
            oversized: false,
            since: 1,
        };
        let parked = Record::Parked {
            attempts: 10,
            last_error: "HTTP 500".into(),
            at: 1,
            oversized: true,
            since: 1,
        };
        state.put("a", "r", &retrying).unwrap();
        state.put("a", "p", &parked).unwrap();
        state
            .put(
                "b",
                "x",
                &Record::Retrying {
                    attempts: 1,
                    next_attempt_ms: 1_000,
                    last_error: String::new(),
                    oversized: false,
                    since: 1,
                },
            )
            .unwrap();
        state.flush().await.unwrap();
        assert_eq!(state.get("a", "r").unwrap(), Some(retrying));
        let a = state.records(Some("a")).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a
            .iter()
            .any(|(m, u, r)| m == "a" && u == "p" && *r == parked));
        assert_eq!(state.records(None).unwrap().len(), 3);
        assert_eq!(state.earliest_retry_ms("a").unwrap(), Some(5_000));
        assert_eq!(state.earliest_retry_ms("b").unwrap(), Some(1_000));
    }

    #[test]
    fn a_disabled_endpoint_stays_disabled_until_its_configuration_changes() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let gone = DisabledEndpoint {
            fingerprint: "f1".into(),
            url: "https://x/".into(),
            at: 1,
        };
        state.disable_endpoint("a", &gone).unwrap();
        assert_eq!(state.disabled_endpoint("a", "f1").unwrap(), Some(gone));
        assert_eq!(state.disabled_endpoint("b", "f1").unwrap(), None);
        assert_eq!(state.disabled_endpoint("a", "f2").unwrap(), None);
        assert_eq!(
            state.disabled_endpoint("a", "f1").unwrap(),
            None,
            "forgotten once the config changed"
        );
    }

    #[tokio::test]
    async fn the_cycle_log_is_per_mailbox_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = CycleLog {
            last_cycle_at: Some(10),
            last_cycle_ms: 120,
            last_result: Some(CycleResult::Undelivered),
            last_success_at: Some(10),
            delivered_total: 3,
            last_error: Some("webhook answered HTTP 500".into()),
            last_error_at: Some(9),
        };
        {
            let state = State::open(dir.path()).unwrap();
            assert_eq!(state.cycle_log("a").unwrap(), CycleLog::default());
            state.put_cycle_log("a", &log).unwrap();
            state.flush().await.unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.cycle_log("a").unwrap(), log);
        assert_eq!(state.cycle_log("b").unwrap(), CycleLog::default());
        assert!(
            state.records(None).unwrap().is_empty(),
            "kept apart from messages"
        );
    }

    #[test]
    fn a_second_process_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = State::open(dir.path()).unwrap();
        // sled's lock is per process file handle; a second open in the same process
        // exercises the same lock a second process would hit.
        match State::open(dir.path()) {
            Err(StateError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("second open of a locked state directory succeeded"),
        }
    }
}
