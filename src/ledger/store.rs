//! The sled database behind the ledger, and the marker file beside it that lets a
//! damaged or replaced database be told apart from a new one. Only the ledger's writer
//! thread touches it after loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{now, CycleLog, DisabledEndpoint, Entry};
use super::StateError;

/// The marker: how many message records the database held when it was last written.
/// Written beside the database and never larger than what the database holds, so fewer
/// records at start means records were lost. Exact after a clean close; between
/// closes it is rewritten only when it lags by [`slack`], which bounds what a crash
/// can lose unnoticed (rewriting it at every flush cost ~3.5% of a 10,000-message run).
const MARKER: &str = "pophook-ledger.json";

/// How far the marker may lag behind the database between clean closes: an eighth of
/// the count, at least 64 records. After a flush the lag is below `slack(marker)`;
/// after removals lowered it, `slack(database)` at most: what a crash can hide.
pub fn slack(records: u64) -> u64 {
    (records / 8).max(64)
}

/// sled's page cache; the ledger keeps its own copy of every record in memory, so
/// sled's cache only has to hold what is being written. sled counts pages by their
/// size on disk and evicts late (it queues 64 accesses in each of 256 shards first),
/// so what it holds is several times this: 4 MiB held 2 to 6 MiB more than this in
/// scenario 5 (BENCHMARKS.md).
const CACHE_BYTES: u64 = 512 * 1024;

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
    /// Message records in the database, written or not yet flushed.
    count: u64,
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
            count: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every record, handing each message record to `each` (mailbox, key, entry,
    /// and how many records from this one on the marker promises, at least 1) so that
    /// no second copy of a large state is built and the caller can size its maps once;
    /// refuses a database that holds fewer records than the marker says it held. One
    /// mailbox's records come together: keys are sorted, and each starts with its
    /// mailbox.
    pub fn load(
        &mut self,
        mut each: impl FnMut(&str, String, Entry, u64),
    ) -> Result<Loaded, StateError> {
        let path = self.dir.join(MARKER);
        let marker = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<Marker>(&bytes).map_err(|e| {
                StateError::Corrupt(format!("{} is unreadable: {e}", path.display()))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StateError::Open {
                    dir: self.dir.clone(),
                    reason: format!("cannot read {}: {e}", path.display()),
                })
            }
        };
        let expected = marker.as_ref().map_or(0, |m| m.records);
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
                &String::from_utf8_lossy(&k[..split]),
                String::from_utf8_lossy(&k[split + 1..]).into_owned(),
                entry,
                expected.saturating_sub(loaded.count).max(1),
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
        self.count = loaded.count;
        match marker {
            Some(marker) if loaded.count < marker.records => {
                return Err(StateError::Damaged {
                    dir: self.dir.clone(),
                    expected: marker.records,
                    found: loaded.count,
                    marker: path,
                });
            }
            Some(marker) => self.marker = marker,
            None => {
                // A new state, or one written before the marker existed: trust it as is.
                self.marker = Marker {
                    created_at: now(),
                    records: loaded.count,
                    flushed_at: now(),
                };
                self.write_marker(true)?;
            }
        }
        Ok(loaded)
    }

    /// Applies one write. Removing a message record first lowers the marker, durably,
    /// if it would otherwise claim more than the database holds: sled writes its log
    /// buffer out whenever it fills, so a removal can be on disk before any flush, and
    /// a crash then must not leave a marker that refuses a healthy database. Lowered by
    /// [`slack`] at a time, so a thousand removals cost a few marker writes, not a
    /// thousand.
    pub fn apply(
        &mut self,
        tree: Tree,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StateError> {
        if tree == Tree::Messages && value.is_none() && self.count > 0 {
            let after = self.count - 1;
            if self.marker.records > after {
                self.marker.records = after.saturating_sub(slack(after));
                self.write_marker(true)?;
            }
        }
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
        match (tree, old.is_some(), value.is_some()) {
            (Tree::Messages, false, true) => self.count += 1,
            (Tree::Messages, true, false) => self.count -= 1,
            _ => {}
        }
        Ok(())
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

    /// Makes every write durable, then raises the marker if it lags by [`slack`] or
    /// more (or is 0), so a crash cannot lose that many records unnoticed. Its rename is
    /// not synced: a raise lost to a power cut leaves the marker lower, which is safe.
    pub fn flush(&mut self) -> Result<(), StateError> {
        self.db.flush()?;
        let lag = self.count.saturating_sub(self.marker.records);
        if lag > 0 && (self.marker.records == 0 || lag >= slack(self.marker.records)) {
            self.marker.records = self.count;
            self.marker.flushed_at = now();
            self.write_marker(false)?;
        }
        Ok(())
    }

    /// A clean close: flushes and records the exact count, durably, so that after a
    /// clean stop any missing record is refused at the next start. Not in a directory
    /// that vanished (the marker would land in whatever replaced it).
    pub fn close(&mut self) -> Result<(), StateError> {
        self.check_directory()?;
        self.db.flush()?;
        self.marker.records = self.count;
        self.marker.flushed_at = now();
        self.write_marker(true)
    }

    fn write_marker(&self, durable: bool) -> Result<(), StateError> {
        let path = self.dir.join(MARKER);
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.marker).expect("the marker serialises");
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&tmp)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            // Always on disk before the rename: on filesystems that may commit a rename
            // before the renamed file's data, a power cut could otherwise leave an empty
            // marker, and a healthy state would be refused as unreadable. Raises are
            // rare (one per eighth of the records), so this costs little.
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if durable {
                // The rename itself survives a power cut only once the directory is.
                sync_dir(&self.dir)?;
            }
            Ok(())
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

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
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
