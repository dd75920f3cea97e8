//! The age of a mailbox's oldest undelivered message for the gauge.

use std::time::{Duration, Instant};

/// The oldest undelivered message's age, as seen at one moment and then carried on
/// the monotonic clock: a wall clock stepped back later cannot make it shrink, and one
/// found behind the state's own times is logged instead of shown as age 0 silently.
#[derive(Clone, Copy, Debug)]
pub(super) struct Oldest {
    age: Duration,
    observed: Instant,
}

impl Oldest {
    /// `since` and `wall_now` are the ledger's wall-clock seconds.
    pub(super) fn observed(mailbox: &str, since: i64, wall_now: i64, observed: Instant) -> Oldest {
        if since > wall_now {
            tracing::warn!(
                mailbox,
                behind_s = since - wall_now,
                "the wall clock is behind a time in the state (was it stepped back?): ages count from now, and retries keep their scheduled waits"
            );
        }
        Oldest {
            age: Duration::from_secs(u64::try_from(wall_now - since).unwrap_or(0)),
            observed,
        }
    }

    pub(super) fn age_at(&self, now: Instant) -> Duration {
        self.age + now.saturating_duration_since(self.observed)
    }
}
