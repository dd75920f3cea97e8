//! One mailbox: its task (when to try next: poll interval, retries, LOGIN-DELAY, the
//! outage breaker), the planner (pure decisions over a listing and the records) and the
//! session that executes a plan against the server. This is the only module that
//! sends DELE or QUIT.
//!
//! - [`plan`]: listing + records + now → what to fetch, delete, age or forget; and
//!   outcome → next record. Table-tested, no I/O.
//! - [`session`]: one POP3 session per cycle, executing a plan; failures that belong
//!   to a message are recorded against it and the others keep flowing.
//! - [`task`]: the loop that owns "when do I try next", with one breaker for outages.
//! - [`budget`]: the process-wide bound on message bytes in flight.

pub mod budget;
mod deliver;
pub mod plan;
pub mod session;
mod settings;
pub mod task;

use std::time::Duration;

pub use session::{run_cycle, Context};
pub use settings::Mailbox;

use crate::ledger::StateError;
use crate::pop3::Pop3Error;

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Messages the server listed with a usable UIDL.
    pub listed: usize,
    /// Messages downloaded (whole, or headers only when oversized).
    pub fetched: usize,
    pub bytes_fetched: u64,
    /// Events the webhook accepted.
    pub delivered: usize,
    /// POSTs that failed; those messages stay on the server for a retry or are parked.
    pub failed: usize,
    /// Messages that could not be fetched (the server refused RETR, the connection
    /// dropped while reading it, too large without TOP): an attempt against each.
    pub fetch_failed: usize,
    /// Messages parked this cycle (retries exhausted).
    pub parked: usize,
    /// Listed messages that are parked (now or earlier) and wait for an operator.
    pub parked_listed: usize,
    /// Listed messages whose next retry is not due yet, or that were not tried
    /// because the endpoint was failing.
    pub waiting: usize,
    /// DELEs the server accepted (committed by the QUIT that followed).
    pub deleted: usize,
    /// DELEs the server refused: the message was delivered and stays on the server.
    pub dele_refused: usize,
    /// Listed messages left alone: the UIDL line was unusable.
    pub skipped: usize,
    /// Listed messages that share their UIDL with another (fetched and told apart by
    /// their content).
    pub shared_uidl: usize,
    /// The endpoint answered 410 (now or earlier, for this configuration).
    pub endpoint_disabled: bool,
    /// A POST failed in a way that says the endpoint is down (network, timeout, 5xx,
    /// 429): the breaker decides when to try again.
    pub endpoint_failing: bool,
    /// Most listed UIDLs are unknown while most remembered ones vanished.
    pub renumbered: bool,
    /// The server's LOGIN-DELAY, if it announced one.
    pub login_delay: Option<Duration>,
    /// The session QUIT at `commit_interval` (or `commit_every`) with messages left to
    /// fetch: the next cycle follows at once.
    pub more: bool,
}

impl CycleReport {
    /// Adds what a following session of the same cycle did (`once` continues a large
    /// backlog in new sessions): counts add up, the mailbox's standing is the latest.
    pub fn absorb(&mut self, next: CycleReport) {
        self.fetched += next.fetched;
        self.bytes_fetched += next.bytes_fetched;
        self.delivered += next.delivered;
        self.failed += next.failed;
        self.fetch_failed += next.fetch_failed;
        self.parked += next.parked;
        self.deleted += next.deleted;
        self.dele_refused += next.dele_refused;
        self.endpoint_failing |= next.endpoint_failing;
        self.renumbered |= next.renumbered;
        self.listed = next.listed;
        self.parked_listed = next.parked_listed;
        self.waiting = next.waiting;
        self.skipped = next.skipped;
        self.shared_uidl = next.shared_uidl;
        self.endpoint_disabled = next.endpoint_disabled;
        self.login_delay = next.login_delay.or(self.login_delay);
        self.more = next.more;
    }

    /// Everything listed was delivered (now or before) or deliberately dropped, and
    /// nothing is waiting for a retry, an operator, or a later session.
    pub fn is_clean(&self) -> bool {
        self.failed == 0
            && self.fetch_failed == 0
            && self.waiting == 0
            && self.parked_listed == 0
            && self.skipped == 0
            && !self.endpoint_disabled
            && !self.more
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    State(#[from] StateError),
}
