//! What pophook remembers, in sled: which (mailbox, UIDL) pairs were delivered. Keyed
//! by UIDL, never by message number, because numbers change between sessions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is known about one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Record {
    /// The webhook answered 2xx; `at` is unix seconds.
    Delivered { at: i64 },
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
        Ok(State { db, messages })
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
        let record = Record::Delivered {
            at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let bytes = serde_json::to_vec(&record).expect("a record always serialises");
        self.messages.insert(key(mailbox, uidl), bytes)?;
        Ok(())
    }

    /// Makes every change so far durable; DELE must wait for this.
    pub async fn flush(&self) -> Result<(), StateError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Forgets the mailbox's messages whose UIDL the server no longer lists, so the
    /// state stays as large as the mailbox. Returns how many were forgotten.
    pub fn prune(&self, mailbox: &str, present: &HashSet<&str>) -> Result<usize, StateError> {
        let prefix = key(mailbox, "");
        let mut removed = 0;
        for entry in self.messages.scan_prefix(&prefix) {
            let (k, _) = entry?;
            let uidl = std::str::from_utf8(&k[prefix.len()..]).unwrap_or_default();
            if !present.contains(uidl) {
                self.messages.remove(&k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// How many messages of this mailbox are remembered.
    pub fn count(&self, mailbox: &str) -> usize {
        self.messages.scan_prefix(key(mailbox, "")).count()
    }
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

    #[tokio::test]
    async fn prune_forgets_only_what_the_server_no_longer_lists() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        for uid in ["1", "2", "3"] {
            state.mark_delivered("a", uid).unwrap();
        }
        state.mark_delivered("ab", "1").unwrap();
        let present: HashSet<&str> = ["2"].into_iter().collect();
        assert_eq!(state.prune("a", &present).unwrap(), 2);
        assert!(state.is_delivered("a", "2").unwrap());
        assert!(!state.is_delivered("a", "1").unwrap());
        // A mailbox whose name starts with another's is untouched.
        assert!(state.is_delivered("ab", "1").unwrap());
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
