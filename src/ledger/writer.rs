//! The writer thread: the only code that writes to sled and flushes it. Writes are
//! applied as they come; flushes are group-committed, one at a time (several at once
//! can deadlock sled 0.34); after a failed flush the database is reopened and what
//! was not flushed written again, so a full disk heals once space returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::store::{Store, Tree};
use super::{StateError, DIRECTORY_CHECK};
use crate::watchdog::Watchdog;

pub(super) enum Op {
    Write {
        tree: Tree,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Flush(oneshot::Sender<Result<(), FlushFailed>>),
    Close(Closed),
}

/// Why a flush failed, as the writer thread reports it to every waiter.
#[derive(Clone, Debug)]
pub(super) struct FlushFailed {
    /// The state directory vanished: the process must stop.
    pub(super) vanished: bool,
    pub(super) reason: String,
}

impl From<&StateError> for FlushFailed {
    fn from(e: &StateError) -> FlushFailed {
        FlushFailed {
            vanished: matches!(e, StateError::Vanished { .. }),
            reason: e.to_string(),
        }
    }
}

/// How the writer says the database is closed: to an async caller, or to the last
/// handle's `Drop`, which waits (briefly) so the directory can be reopened at once.
pub(super) enum Closed {
    Async(oneshot::Sender<()>),
    Sync(mpsc::Sender<()>),
}

impl Closed {
    pub(super) fn done(self) {
        match self {
            Closed::Async(tx) => {
                let _ = tx.send(());
            }
            Closed::Sync(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

/// The writer thread: applies writes in order and flushes on request, one flush at a
/// time for every waiter that asked meanwhile (group commit). After a failed write or
/// flush it reopens the database and writes again everything not yet flushed, so the
/// state recovers by itself once the cause (a full disk) is gone.
pub(super) fn writer(store: Store, rx: mpsc::Receiver<Op>, watchdog: Watchdog) {
    let mut w = Writer {
        dir: store.dir().to_path_buf(),
        store: Some(store),
        dirty: HashMap::new(),
        broken: None,
        watchdog,
    };
    loop {
        let first = match rx.recv_timeout(DIRECTORY_CHECK) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => {
                w.check_directory();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Writes are watched too: sled can block inside an insert as well as a flush.
        let _busy = w.watchdog.begin("the state writer");
        let mut waiters = Vec::new();
        let mut closing = None;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Write { tree, key, value } => w.write(tree, key, value),
                Op::Flush(tx) => waiters.push(tx),
                Op::Close(tx) => {
                    closing = Some(tx);
                    break;
                }
            }
            next = rx.try_recv().ok();
        }
        if !waiters.is_empty() {
            let result = w.flush().map_err(|e| FlushFailed::from(&e));
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
        if let Some(tx) = closing {
            w.close();
            tx.done();
            return;
        }
    }
}

/// sled releases its lock on the database file only when the last of its internal
/// references is gone, which can be a moment after the handle is dropped. Closing
/// waits for that (briefly), so the directory can be opened again at once.
pub(super) fn wait_for_unlock(dir: &Path) {
    let db = dir.join("db");
    for _ in 0..100 {
        match std::fs::File::open(&db) {
            Ok(file) => match file.try_lock() {
                Ok(()) => return,
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(std::fs::TryLockError::Error(_)) => return,
            },
            Err(_) => return,
        }
    }
}

struct Writer {
    dir: PathBuf,
    store: Option<Store>,
    /// Writes since the last successful flush, to write again after a reopen.
    dirty: HashMap<(Tree, Vec<u8>), Option<Vec<u8>>>,
    broken: Option<String>,
    watchdog: Watchdog,
}

impl Writer {
    fn write(&mut self, tree: Tree, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.broken.is_none() {
            if let Some(store) = &mut self.store {
                if let Err(e) = store.apply(tree, &key, value.as_deref()) {
                    self.broken = Some(e.to_string());
                }
            }
        }
        self.dirty.insert((tree, key), value);
    }

    fn check_directory(&mut self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.check_directory() {
                self.watchdog.set_fatal(e.to_string());
            }
        }
    }

    fn flush(&mut self) -> Result<(), StateError> {
        let _watched = self.watchdog.begin("the state flush");
        if let Some(store) = &self.store {
            if let Err(e) = store.check_directory() {
                self.watchdog.set_fatal(e.to_string());
                return Err(e);
            }
        }
        if self.broken.is_some() || self.store.is_none() {
            self.reopen()?;
        } else if self.dirty.is_empty() {
            // Nothing written since the last flush: no fsync for an idle cycle.
            return Ok(());
        }
        let store = self.store.as_mut().expect("reopened");
        match store.flush() {
            Ok(()) => {
                self.dirty.clear();
                Ok(())
            }
            Err(e) => {
                warn!("flushing the state failed: {e}; it is reopened and written again at the next flush");
                self.broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The clean close, whichever way it was asked for (the service's shutdown, the end
    /// of `once`, the last handle dropped): what is left is flushed and the marker
    /// records the exact count. Skipped, with a warning, when the state cannot be saved:
    /// the marker then keeps its lower count, which is safe.
    fn close(&mut self) {
        let flushed = if self.dirty.is_empty() && self.broken.is_none() {
            Ok(())
        } else {
            self.flush()
        };
        let closed = flushed.and_then(|()| match &mut self.store {
            Some(store) => store.close(),
            None => Ok(()),
        });
        if let Err(e) = closed {
            warn!("the state was not closed cleanly: {e}; the next start checks it with the count of an earlier flush");
        }
        drop(self.store.take());
        wait_for_unlock(&self.dir);
    }

    /// Closes the database and opens it again, then writes everything not flushed.
    fn reopen(&mut self) -> Result<(), StateError> {
        drop(self.store.take());
        let mut store = Store::open(&self.dir).map_err(|e| match e {
            // Mostly the cause of the first failure again (a full disk): say only that.
            StateError::Open { reason, .. } => StateError::Flush(reason),
            other => other,
        })?;
        // Reads the marker back, and checks the database against it once more.
        store.load(|_, _, _, _| {})?;
        for ((tree, key), value) in &self.dirty {
            store.apply(*tree, key, value.as_deref())?;
        }
        self.store = Some(store);
        self.broken = None;
        info!("the state database was reopened after an error");
        Ok(())
    }
}
