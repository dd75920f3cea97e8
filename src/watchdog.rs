//! Notices work that stopped making progress (a sled flush that never returns, a
//! ledger that stops answering) and says so: an error in the log, `/healthz` 503, and,
//! if it does not recover, the end of the process so a supervisor restarts it. It also
//! keeps the work that shutdown's grace cut short, so the exit status can say so.
//!
//! It runs on its own OS thread and measures real time, so a frozen async runtime or a
//! paused test clock can neither hide a hang nor fake one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::error;

/// How long a watched operation may take before it is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How long a stall may last before the process gives up and exits.
pub const FATAL_AFTER: Duration = Duration::from_secs(120);
/// The exit code when the watchdog ends the process (EX_SOFTWARE).
pub const EXIT_CODE: i32 = 70;
/// How often the watchdog's thread looks.
const TICK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    next_id: u64,
    running: HashMap<u64, Watched>,
    /// The latest stall, until the operation finishes.
    stalled: Option<String>,
    /// Set once: the process cannot go on (a stall past the fatal bound, a state
    /// directory that vanished). The service stops with an error when it sees this.
    fatal: Option<String>,
    /// What shutdown's grace cut short (a POST that never got its answer): the process
    /// then exits non-zero, though it stopped as asked.
    abandoned: Vec<String>,
    stall_after: Duration,
    fatal_after: Duration,
}

struct Watched {
    what: &'static str,
    started: Instant,
    reported: bool,
}

/// Marks a watched operation as finished when dropped.
pub struct Guard {
    id: u64,
    watchdog: Watchdog,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut inner = self.watchdog.lock();
        if inner.running.remove(&self.id).is_some_and(|w| w.reported) {
            tracing::warn!("a stalled operation finished after all; healthy again");
        }
        if !inner.running.values().any(|w| w.reported) {
            inner.stalled = None;
        }
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::new(STALL_AFTER, FATAL_AFTER)
    }
}

impl Watchdog {
    pub fn new(stall_after: Duration, fatal_after: Duration) -> Watchdog {
        Watchdog {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 0,
                running: HashMap::new(),
                stalled: None,
                fatal: None,
                abandoned: Vec::new(),
                stall_after,
                fatal_after,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `what` until the guard is dropped.
    pub fn begin(&self, what: &'static str) -> Guard {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.running.insert(
            id,
            Watched {
                what,
                started: Instant::now(),
                reported: false,
            },
        );
        Guard {
            id,
            watchdog: self.clone(),
        }
    }

    /// `Err(reason)` while something is stalled or the process is failing: `/healthz`
    /// answers 503 with it.
    pub fn health(&self) -> Result<(), String> {
        let inner = self.lock();
        match (&inner.fatal, &inner.stalled) {
            (Some(reason), _) | (None, Some(reason)) => Err(reason.clone()),
            (None, None) => Ok(()),
        }
    }

    /// Something happened that the process cannot recover from by itself.
    pub fn set_fatal(&self, reason: String) {
        let mut inner = self.lock();
        if inner.fatal.is_none() {
            error!("{reason}");
            inner.fatal = Some(reason);
        }
    }

    pub fn fatal(&self) -> Option<String> {
        self.lock().fatal.clone()
    }

    /// Shutdown's grace ran out before `what` finished; nothing was recorded for it.
    pub fn abandoned(&self, what: String) {
        self.lock().abandoned.push(what);
    }

    /// Everything shutdown abandoned so far, in order.
    pub fn abandoned_work(&self) -> Vec<String> {
        self.lock().abandoned.clone()
    }

    /// One look at what is running: reports new stalls, and returns the reason when a
    /// stall went on past the fatal bound.
    pub fn check(&self, now: Instant) -> Option<String> {
        let mut inner = self.lock();
        let (stall_after, fatal_after) = (inner.stall_after, inner.fatal_after);
        let mut newly_stalled = None;
        let mut fatal = None;
        for watched in inner.running.values_mut() {
            let age = now.saturating_duration_since(watched.started);
            if age >= stall_after && !watched.reported {
                watched.reported = true;
                let reason = format!(
                    "{} has made no progress for {}s; if this lasts {}s pophook exits so that its supervisor restarts it",
                    watched.what,
                    age.as_secs(),
                    fatal_after.as_secs()
                );
                error!("{reason}");
                newly_stalled = Some(reason);
            }
            if age >= fatal_after {
                fatal = Some(format!(
                    "{} has made no progress for {}s; exiting so that the supervisor restarts pophook (nothing unacknowledged was deleted)",
                    watched.what,
                    age.as_secs()
                ));
            }
        }
        if let Some(reason) = newly_stalled {
            inner.stalled = Some(reason);
        }
        if let Some(reason) = &fatal {
            inner.fatal.get_or_insert_with(|| reason.clone());
        }
        fatal.or_else(|| inner.fatal.clone())
    }

    /// Watches on a thread of its own, once a second, until the process ends;
    /// `on_fatal` is called (once) with the reason when the process must end.
    pub fn spawn(&self, on_fatal: impl FnOnce(&str) + Send + 'static) {
        let watchdog = self.clone();
        let spawned = std::thread::Builder::new()
            .name("pophook-watchdog".into())
            .spawn(move || watchdog.watch(|| std::thread::sleep(TICK), Instant::now, on_fatal));
        if let Err(e) = spawned {
            error!("cannot start the watchdog thread: {e}; hangs will not be detected");
        }
    }

    /// The watching loop: `tick` waits for the next look, `now` reads the clock; returns
    /// once `on_fatal` was called. Both are given so that a test can run the loop on a
    /// clock of its own instead of waiting two minutes.
    fn watch(
        &self,
        mut tick: impl FnMut(),
        now: impl Fn() -> Instant,
        on_fatal: impl FnOnce(&str),
    ) {
        loop {
            tick();
            if let Some(reason) = self.check(now()) {
                error!("{reason}");
                on_fatal(&reason);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_stall_is_reported_then_fatal_and_a_finished_operation_clears_it() {
        let dog = Watchdog::new(Duration::from_secs(30), Duration::from_secs(120));
        let start = Instant::now();
        let guard = dog.begin("state flush");
        assert_eq!(dog.check(start + Duration::from_secs(29)), None);
        assert!(dog.health().is_ok());
        assert_eq!(dog.check(start + Duration::from_secs(31)), None);
        let unhealthy = dog.health().unwrap_err();
        assert!(unhealthy.contains("state flush"), "{unhealthy}");
        drop(guard);
        assert!(dog.health().is_ok(), "recovered once the flush returned");

        let _stuck = dog.begin("state flush");
        let fatal = dog
            .check(Instant::now() + Duration::from_secs(121))
            .unwrap();
        assert!(fatal.contains("exiting"), "{fatal}");
        assert!(dog.health().is_err());
    }

    #[test]
    fn a_fatal_reason_stays() {
        let dog = Watchdog::default();
        dog.set_fatal("state directory vanished".into());
        assert_eq!(dog.fatal().as_deref(), Some("state directory vanished"));
        assert_eq!(
            dog.check(Instant::now()).as_deref(),
            Some("state directory vanished")
        );
    }

    #[test]
    fn a_flush_stuck_past_the_fatal_bound_ends_the_process_once() {
        let dog = Watchdog::new(Duration::from_secs(30), Duration::from_secs(120));
        let start = Instant::now();
        let _stuck = dog.begin("the state flush");
        // A clock of the test's own: each tick is one second later.
        let clock = Cell::new(start);
        let unhealthy_from = Cell::new(None);
        let mut exits = Vec::new();
        dog.watch(
            || {
                clock.set(clock.get() + TICK);
                if dog.health().is_err() && unhealthy_from.get().is_none() {
                    unhealthy_from.set(Some(clock.get() - start));
                }
            },
            || clock.get(),
            |reason| exits.push((clock.get() - start, reason.to_string())),
        );
        let [(at, reason)] = &exits[..] else {
            panic!("one exit expected: {exits:?}");
        };
        assert!(
            reason.contains("the state flush") && reason.contains("exiting"),
            "{reason}"
        );
        // `begin` read the real clock a moment after `start`: one tick late at most.
        assert!((120..=121).contains(&at.as_secs()), "exit after {at:?}");
        let unhealthy = unhealthy_from.get().expect("/healthz turned 503 first");
        assert!(
            (31..=32).contains(&unhealthy.as_secs()),
            "503 from {unhealthy:?}"
        );
    }

    #[test]
    fn abandoned_work_is_kept_in_order() {
        let dog = Watchdog::default();
        assert!(dog.abandoned_work().is_empty());
        dog.abandoned("the POST of msg_a".into());
        dog.abandoned("the POST of msg_b".into());
        assert_eq!(
            dog.abandoned_work(),
            ["the POST of msg_a", "the POST of msg_b"]
        );
        assert!(dog.health().is_ok(), "stopping as asked is no stall");
    }
}
