//! The sled database behind the ledger, and the marker file beside it that lets a
//! damaged or replaced database be told apart from a new one. Only the ledger's writer
//! thread touches it after loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{now, CycleLog, DisabledEndpoint, Entry};
use super::StateError;

/// The marker: records the database held at its last clean flush. Written beside the
/// database; never larger than the durable count, so fewer records at start means
/// records were lost.
const MARKER: &str = "pophook-ledger.json";

/// sled's page cache; the ledger keeps its own copy of every record in memory, so
/// sled's cache only has to hold what is being written.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    Messages,
    Endpoints,
    Cycles,
    /// Sealed OAuth2 refresh tokens, by mailbox (sealed by the OAuth2 token source).
    Tokens,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Marker {
    created_at: i64,
    records: u64,
    flushed_at: i64,
}

/// Everything but the message records (handed out one by one as they are read), read
/// once at start.
#[derive(Default)]
pub struct Loaded {
    pub endpoints: HashMap<String, DisabledEndpoint>,
    pub cycles: HashMap<String, CycleLog>,
    pub tokens: HashMap<String, Vec<u8>>,
    pub count: u64,
}

pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    messages: sled::Tree,
    endpoints: sled::Tree,
    cycles: sled::Tree,
    tokens: sled::Tree,
    /// The state directory's identity when opened: a directory removed or replaced
    /// under a running pophook is noticed before the next flush.
    identity: Option<(u64, u64)>,
    marker: Marker,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            // Only the writer thread flushes: sled 0.34 can deadlock when its own
            // background flusher and an explicit flush run at once.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
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
        let tokens = db.open_tree("oauth2_refresh_tokens")?;
        restrict_files(dir);
        Ok(Store {
            dir: dir.to_path_buf(),
            db,
            messages,
            endpoints,
            cycles,
            tokens,
            identity: identity(dir),
            marker: Marker::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Message records in the database (a scan; used after a reopen).
    pub fn count(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Reads every record, handing each message record to `each` (mailbox, key, entry)
    /// so that no second copy of a large state is built, and refuses a database that
    /// holds fewer records than the marker says it held at its last clean flush.
    pub fn load(
        &mut self,
        mut each: impl FnMut(String, String, Entry),
    ) -> Result<Loaded, StateError> {
        let mut loaded = Loaded::default();
        for entry in self.messages.iter() {
            let (k, v) = entry?;
            let Some(split) = k.iter().position(|b| *b == 0) else {
                return Err(StateError::Corrupt(
                    "a key without a mailbox separator".into(),
                ));
            };
            let entry: Entry =
                serde_json::from_slice(&v).map_err(|e| StateError::Corrupt(e.to_string()))?;
            each(
                String::from_utf8_lossy(&k[..split]).into_owned(),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                entry,
            );
            loaded.count += 1;
        }
        for entry in self.endpoints.iter() {
            let (k, v) = entry?;
            let endpoint =
                serde_json::from_slice(&v).map_err(|e| StateError::Corrupt(e.to_string()))?;
            loaded
                .endpoints
                .insert(String::from_utf8_lossy(&k).into_owned(), endpoint);
        }
        for entry in self.cycles.iter() {
            let (k, v) = entry?;
            let log = serde_json::from_slice(&v).map_err(|e| StateError::Corrupt(e.to_string()))?;
            loaded
                .cycles
                .insert(String::from_utf8_lossy(&k).into_owned(), log);
        }
        for entry in self.tokens.iter() {
            let (k, v) = entry?;
            loaded
                .tokens
                .insert(String::from_utf8_lossy(&k).into_owned(), v.to_vec());
        }
        let path = self.dir.join(MARKER);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
                    StateError::Corrupt(format!("{} is unreadable: {e}", path.display()))
                })?;
                if loaded.count < marker.records {
                    return Err(StateError::Damaged {
                        dir: self.dir.clone(),
                        expected: marker.records,
                        found: loaded.count,
                        marker: path,
                    });
                }
                self.marker = marker;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new state, or one written before the marker existed: trust it as is.
                self.marker = Marker {
                    created_at: now(),
                    records: loaded.count,
                    flushed_at: now(),
                };
                self.write_marker(true)?;
            }
            Err(e) => {
                return Err(StateError::Open {
                    dir: self.dir.clone(),
                    reason: format!("cannot read {}: {e}", path.display()),
                })
            }
        }
        Ok(loaded)
    }

    /// Applies one write; returns how the message count changed (-1, 0, +1).
    pub fn apply(&self, tree: Tree, key: &[u8], value: Option<&[u8]>) -> Result<i64, sled::Error> {
        let tree_ref = match tree {
            Tree::Messages => &self.messages,
            Tree::Endpoints => &self.endpoints,
            Tree::Cycles => &self.cycles,
            Tree::Tokens => &self.tokens,
        };
        let old = match value {
            Some(value) => tree_ref.insert(key, value)?,
            None => tree_ref.remove(key)?,
        };
        Ok(match (tree, old.is_some(), value.is_some()) {
            (Tree::Messages, false, true) => 1,
            (Tree::Messages, true, false) => -1,
            _ => 0,
        })
    }

    /// The state directory is still the one that was opened.
    pub fn check_directory(&self) -> Result<(), StateError> {
        let now = identity(&self.dir);
        let db_file = self.dir.join("db");
        if now.is_none() || now != self.identity || !db_file.exists() {
            return Err(StateError::Vanished {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Makes every write durable. `count` is the number of message records after it:
    /// the marker is lowered (durably) before a flush that removes records, and raised
    /// after one that adds enough of them, so it never claims more than the database
    /// holds and is rewritten only when it would otherwise lag far behind.
    pub fn flush(&mut self, count: u64) -> Result<(), StateError> {
        if count < self.marker.records {
            self.marker.records = count;
            self.write_marker(true)?;
        }
        self.db.flush()?;
        let lag = count - self.marker.records;
        if lag > 0 && (self.marker.records == 0 || lag >= (self.marker.records / 8).max(64)) {
            self.marker.records = count;
            self.marker.flushed_at = now();
            self.write_marker(false)?;
        }
        Ok(())
    }

    fn write_marker(&self, durable: bool) -> Result<(), StateError> {
        let path = self.dir.join(MARKER);
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.marker).expect("the marker serialises");
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&tmp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            if durable {
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| StateError::Io {
            what: format!("writing {}", path.display()),
            source: e,
        })
    }
}

/// The state directory, created readable by its owner only (0700): it holds a
/// refresh token and what was delivered where. An existing directory is tightened too,
/// where the filesystem allows it.
fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    let open_error = |e: std::io::Error| StateError::Open {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(StateError::Open {
            dir: dir.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(0o700);
        builder.create(dir).map_err(open_error)?;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(
                "cannot make the state directory {} private (0700): {e}",
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(open_error)?;
    Ok(())
}

/// Every file sled made in the state directory, 0600 where the filesystem allows it
/// (sled creates them with the process's umask; the directory's 0700 already keeps
/// others out).
fn restrict_files(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
            if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!("cannot make {} private (0600): {e}", path.display());
            }
        }
    }
}

/// A new file, 0600 from the start.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(unix)]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|_| (0, 0))
}

/// Mailbox names cannot contain NUL (config validates them), so the separator makes
/// one mailbox's keys never a prefix of another's.
pub fn message_key(mailbox: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(mailbox.len() + 1 + key.len());
    out.extend_from_slice(mailbox.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}
