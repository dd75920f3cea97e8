//! The ledger: the one owner of what pophook remembers. Every record lives in memory
//! (loaded once at start) and is written through to sled by a single writer thread,
//! which is also the only thing that flushes: several flushes at once can deadlock
//! sled 0.34. Mailbox tasks, the API and the CLI all read and write through a
//! [`Ledger`] handle; nothing else opens the database.
//!
//! - [`records`]: the record types, plain data.
//! - [`store`]: sled and the marker file beside it (damage and replacement checks).
//! - this module: the handle, the in-memory books with their retry index, and the
//!   writer thread (group commit; reopens the database after a failed flush, so a
//!   full disk heals once space returns).

pub mod records;
mod store;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use records::{
    duplicate_key, event_id, now, now_ms, Absence, CycleLog, CycleResult, DisabledEndpoint, Entry,
    Record, Transition, DROPS_FORGIVEN,
};
use store::{message_key, Store, Tree};
use writer::{writer, Closed, Op};

use crate::watchdog::Watchdog;

/// How long a retry time read from a record written before `delay_ms` existed may
/// still be in the future: the longest step of the default schedule.
const LEGACY_RETRY_CAP: Duration = Duration::from_secs(10 * 3600);
/// How often the writer thread checks, when idle, that the state directory is still
/// the one it opened.
const DIRECTORY_CHECK: Duration = Duration::from_secs(5);

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
    #[error("the state database in {dir} holds {found} message records, but {marker} says it held at least {expected}: it was damaged, truncated or replaced. Starting on it would post again every message whose record was lost. Restore the directory from a backup; or, to start over deliberately, stop pophook and delete {marker} (messages still on the server are then delivered again, with the same webhook-id)", marker = marker.display())]
    Damaged {
        dir: PathBuf,
        expected: u64,
        found: u64,
        marker: PathBuf,
    },
    #[error("the state directory {dir} was removed or replaced while pophook was running; stopping rather than writing to a database nobody will find. Restore the directory (or move it aside deliberately) and start pophook again")]
    Vanished { dir: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save the state ({0}); nothing is deleted from the server until it can be saved (is the disk full?)")]
    Flush(String),
    #[error("the state writer has stopped; pophook is shutting down")]
    Closed,
}

impl StateError {
    /// The process cannot go on with this state (it vanished); other errors fail one
    /// cycle and are tried again.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StateError::Vanished { .. } | StateError::Closed)
    }
}

/// One message's record in memory, with its retry time on the monotonic clock.
#[derive(Clone, Debug)]
pub struct Slot {
    pub entry: Entry,
    /// When a retrying message is due (monotonic, so a stepped wall clock moves nothing).
    pub due: Option<Instant>,
}

/// One mailbox's records, with retries indexed by due time.
#[derive(Default)]
pub struct Book {
    entries: HashMap<String, Slot>,
    due: BTreeSet<(Instant, String)>,
}

impl Book {
    /// A book sized for `records`; a count too large to reserve (a damaged marker,
    /// which loading then refuses) leaves it to grow as records come.
    fn with_capacity(records: u64) -> Book {
        let mut book = Book::default();
        let _ = usize::try_from(records).map(|n| book.entries.try_reserve(n));
        book
    }

    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Slot)> {
        self.entries.iter()
    }

    /// The earliest retry due time, without a scan.
    pub fn earliest_due(&self) -> Option<Instant> {
        self.due.iter().next().map(|(at, _)| *at)
    }

    /// Retrying and parked messages, and the oldest of them.
    pub fn pending(&self) -> Pending {
        let mut pending = Pending::default();
        for slot in self.entries.values() {
            match &slot.entry.record {
                Record::Retrying { .. } => pending.retrying += 1,
                Record::Parked { .. } => pending.parked += 1,
                _ => continue,
            }
            // Records written before `since` existed carry 0: unknown, not 1970.
            if let Some(since) = slot.entry.record.undelivered_since().filter(|s| *s > 0) {
                pending.oldest_since = Some(pending.oldest_since.map_or(since, |o| o.min(since)));
            }
        }
        pending
    }

    fn insert(&mut self, key: String, entry: Entry) {
        let due = retry_due(&entry.record);
        self.insert_due(key, entry, due);
    }

    /// Inserts with a given due time: for the planner's table tests, which need exact
    /// times on the monotonic clock.
    #[doc(hidden)]
    pub fn insert_due(&mut self, key: String, entry: Entry, due: Option<Instant>) {
        self.unindex(&key);
        if let Some(at) = due {
            self.due.insert((at, key.clone()));
        }
        self.entries.insert(key, Slot { entry, due });
    }

    fn remove(&mut self, key: &str) -> bool {
        self.unindex(key);
        self.entries.remove(key).is_some()
    }

    fn unindex(&mut self, key: &str) {
        if let Some(at) = self.entries.get(key).and_then(|s| s.due) {
            self.due.remove(&(at, key.to_string()));
        }
    }
}

/// One mailbox's messages that are not delivered yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub retrying: u64,
    pub parked: u64,
    /// When the oldest of them first failed (unix seconds).
    pub oldest_since: Option<i64>,
}

/// The monotonic due time of a retrying record: its wall-clock time, but never later
/// than the wait it was scheduled with (a clock stepped back cannot postpone it).
fn retry_due(record: &Record) -> Option<Instant> {
    let Record::Retrying {
        next_attempt_ms,
        delay_ms,
        ..
    } = record
    else {
        return None;
    };
    let cap = delay_ms.map_or(LEGACY_RETRY_CAP, Duration::from_millis);
    let wait = Duration::from_millis((next_attempt_ms - now_ms()).max(0) as u64).min(cap);
    Some(Instant::now() + wait)
}

/// The handle every part of pophook uses to read and change what it remembers.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    books: RwLock<HashMap<String, Arc<Mutex<Book>>>>,
    endpoints: Mutex<HashMap<String, DisabledEndpoint>>,
    cycles: Mutex<HashMap<String, CycleLog>>,
    /// Sealed OAuth2 refresh tokens by mailbox: opaque bytes here.
    tokens: Mutex<HashMap<String, Vec<u8>>>,
    tx: mpsc::Sender<Op>,
    watchdog: Watchdog,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding the lock leaves it usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    /// Opens the state in `dir` (created if missing), loads every record and starts the
    /// writer thread. Refuses a locked, unreadable or damaged database.
    pub fn open(dir: &Path, watchdog: Watchdog) -> Result<Ledger, StateError> {
        let mut store = Store::open(dir)?;
        let mut books: HashMap<String, Book> = HashMap::new();
        let mut last: Option<String> = None;
        let loaded = store.load(|mailbox, key, entry, to_come| {
            if let Some(book) = books.get_mut(mailbox) {
                book.insert(key, entry);
                return;
            }
            // A mailbox's first record: the one before is complete, so its map is cut
            // to its size, and this one's is sized for every record still to come (all
            // of them with one mailbox). Grown by doubling instead, a map of 100,000
            // records lived beside its half-size predecessor while it was rehashed.
            if let Some(done) = last.as_deref().and_then(|m| books.get_mut(m)) {
                done.entries.shrink_to_fit();
            }
            let mut book = Book::with_capacity(to_come);
            book.insert(key, entry);
            books.insert(mailbox.to_string(), book);
            last = Some(mailbox.to_string());
        })?;
        if let Some(done) = last.as_deref().and_then(|m| books.get_mut(m)) {
            done.entries.shrink_to_fit();
        }
        let books = books
            .into_iter()
            .map(|(mailbox, book)| (mailbox, Arc::new(Mutex::new(book))))
            .collect();
        let (tx, rx) = mpsc::channel();
        let thread_watchdog = watchdog.clone();
        std::thread::Builder::new()
            .name("pophook-ledger".into())
            .spawn(move || writer(store, rx, thread_watchdog))
            .map_err(|e| StateError::Io {
                what: "starting the state writer thread".into(),
                source: e,
            })?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                books: RwLock::new(books),
                endpoints: Mutex::new(loaded.endpoints),
                cycles: Mutex::new(loaded.cycles),
                tokens: Mutex::new(loaded.tokens),
                tx,
                watchdog,
            }),
        })
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.inner.watchdog
    }

    /// One mailbox's records (an empty book for a mailbox never seen).
    pub fn book(&self, mailbox: &str) -> Arc<Mutex<Book>> {
        if let Some(book) = self
            .inner
            .books
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(mailbox)
        {
            return book.clone();
        }
        self.inner
            .books
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(mailbox.to_string())
            .or_default()
            .clone()
    }

    /// Runs `f` on one mailbox's records, locked.
    pub fn with_book<T>(&self, mailbox: &str, f: impl FnOnce(&Book) -> T) -> T {
        let book = self.book(mailbox);
        let guard = lock(&book);
        f(&guard)
    }

    /// The mailboxes that have records, sorted.
    pub fn mailboxes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .books
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub fn get(&self, mailbox: &str, key: &str) -> Option<Record> {
        self.with_book(mailbox, |b| b.get(key).map(|s| s.entry.record.clone()))
    }

    /// Every record of one mailbox, or of all mailboxes with `None`, as
    /// (mailbox, key, record).
    pub fn records(&self, mailbox: Option<&str>) -> Vec<(String, String, Record)> {
        let names = match mailbox {
            Some(m) => vec![m.to_string()],
            None => self.mailboxes(),
        };
        let mut out = Vec::new();
        for name in names {
            self.with_book(&name, |book| {
                for (key, slot) in book.iter() {
                    out.push((name.clone(), key.clone(), slot.entry.record.clone()));
                }
            });
        }
        out
    }

    /// Stores an entry (durable at the next [`Ledger::flush`]).
    pub fn put(&self, mailbox: &str, key: &str, entry: Entry) {
        let book = self.book(mailbox);
        self.write(&mut lock(&book), mailbox, key, Some(entry));
    }

    /// The entry of one message, absence included: what a [`Transition`] starts from.
    pub fn entry(&self, mailbox: &str, key: &str) -> Option<Entry> {
        self.with_book(mailbox, |b| b.get(key).map(|s| s.entry.clone()))
    }

    /// Applies the planner's transitions, each only if its record is still the entry it
    /// was decided on; compared and written under the book's lock, so nothing lands in
    /// between. Returns those skipped because the record changed after the decision
    /// (an operator's drop or replay while a cycle planned): the next decision starts
    /// from what the record is now, instead of undoing the change.
    pub fn apply(
        &self,
        mailbox: &str,
        transitions: impl IntoIterator<Item = Transition>,
    ) -> Vec<Transition> {
        let book = self.book(mailbox);
        let mut book = lock(&book);
        let mut stale = Vec::new();
        for transition in transitions {
            if book.get(&transition.key).map(|s| &s.entry) != transition.from.as_ref() {
                stale.push(transition);
                continue;
            }
            self.write(&mut book, mailbox, &transition.key, transition.to);
        }
        stale
    }

    /// Stores (`Some`) or forgets (`None`) one entry in a locked book and sends the
    /// write while the book is still locked, so the writer sees writes to one key in
    /// the order the book did.
    fn write(&self, book: &mut Book, mailbox: &str, key: &str, entry: Option<Entry>) {
        let value = match entry {
            Some(entry) => {
                let value = serde_json::to_vec(&entry).expect("an entry always serialises");
                book.insert(key.to_string(), entry);
                Some(value)
            }
            None if book.remove(key) => None,
            None => return,
        };
        self.send(Op::Write {
            tree: Tree::Messages,
            key: message_key(mailbox, key),
            value,
        });
    }

    /// Stores a record, with no absence.
    pub fn put_record(&self, mailbox: &str, key: &str, record: Record) {
        self.put(mailbox, key, Entry::new(record));
    }

    /// Forgets one message.
    pub fn remove(&self, mailbox: &str, key: &str) {
        let book = self.book(mailbox);
        self.write(&mut lock(&book), mailbox, key, None);
    }

    /// Makes every write so far durable; DELE must wait for this. Concurrent callers
    /// share one flush.
    pub async fn flush(&self) -> Result<(), StateError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failed)) if failed.vanished => Err(StateError::Vanished {
                dir: self.inner.dir.clone(),
            }),
            Ok(Err(failed)) => Err(StateError::Flush(failed.reason)),
            Err(_) => Err(StateError::Closed),
        }
    }

    /// Flushes and stops the writer thread; the database is closed (and its lock
    /// released) when this returns. Other handles can no longer write.
    pub async fn close(&self) -> Result<(), StateError> {
        let flushed = self.flush().await;
        let (tx, rx) = oneshot::channel();
        self.send(Op::Close(Closed::Async(tx)));
        let _ = rx.await;
        flushed
    }

    fn send(&self, op: Op) {
        // A closed channel means the writer stopped: flush reports it.
        let _ = self.inner.tx.send(op);
    }

    /// Whether the mailbox's endpoint is disabled; a record made for another webhook
    /// configuration (`fingerprint`) no longer counts and is removed.
    /// `fingerprint` is asked for only when the mailbox has such a record: it is slow
    /// on purpose (see `WebhookConfig::fingerprint`).
    pub fn disabled_endpoint(
        &self,
        mailbox: &str,
        fingerprint: impl FnOnce() -> String,
    ) -> Option<DisabledEndpoint> {
        let mut endpoints = lock(&self.inner.endpoints);
        let endpoint = endpoints.get(mailbox)?.clone();
        if endpoint.fingerprint == fingerprint() {
            return Some(endpoint);
        }
        endpoints.remove(mailbox);
        self.send(Op::Write {
            tree: Tree::Endpoints,
            key: mailbox.as_bytes().to_vec(),
            value: None,
        });
        None
    }

    /// The mailbox's endpoint answered 410 for this webhook configuration.
    pub fn disable_endpoint(&self, mailbox: &str, endpoint: DisabledEndpoint) {
        let value = serde_json::to_vec(&endpoint).expect("serialises");
        let mut endpoints = lock(&self.inner.endpoints);
        endpoints.insert(mailbox.to_string(), endpoint);
        self.send(Op::Write {
            tree: Tree::Endpoints,
            key: mailbox.as_bytes().to_vec(),
            value: Some(value),
        });
    }

    /// The mailbox's stored OAuth2 refresh token, sealed by the OAuth2 token source.
    pub fn refresh_token(&self, mailbox: &str) -> Option<Vec<u8>> {
        lock(&self.inner.tokens).get(mailbox).cloned()
    }

    /// Stores a sealed refresh token; it is durable once [`Ledger::flush`] returns.
    pub fn put_refresh_token(&self, mailbox: &str, sealed: Vec<u8>) {
        let mut tokens = lock(&self.inner.tokens);
        tokens.insert(mailbox.to_string(), sealed.clone());
        self.send(Op::Write {
            tree: Tree::Tokens,
            key: mailbox.as_bytes().to_vec(),
            value: Some(sealed),
        });
    }

    /// The mailbox's cycle log; empty if no cycle was recorded yet.
    pub fn cycle_log(&self, mailbox: &str) -> CycleLog {
        lock(&self.inner.cycles)
            .get(mailbox)
            .cloned()
            .unwrap_or_default()
    }

    /// Stores the mailbox's cycle log (durable at the next flush; losing it loses only
    /// status information).
    pub fn put_cycle_log(&self, mailbox: &str, log: CycleLog) {
        let value = serde_json::to_vec(&log).expect("a cycle log always serialises");
        let mut cycles = lock(&self.inner.cycles);
        cycles.insert(mailbox.to_string(), log);
        self.send(Op::Write {
            tree: Tree::Cycles,
            key: mailbox.as_bytes().to_vec(),
            value: Some(value),
        });
    }

    /// The mailbox's retrying and parked messages.
    pub fn pending(&self, mailbox: &str) -> Pending {
        self.with_book(mailbox, Book::pending)
    }
}

impl Drop for Inner {
    /// The last handle is gone: close the database (flushing what is left) and wait for
    /// that, so the same directory can be opened again right away (by the next CLI
    /// command, or the next test). Bounded: a stuck writer does not hang the caller.
    fn drop(&mut self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Op::Close(Closed::Sync(tx))).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests;
