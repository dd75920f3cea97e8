//! One process-wide budget for message bytes in flight: a download waits for room
//! before it starts and gives the room back when its POST is answered, so N mailboxes
//! × `max_in_flight` × `max_message_size` can no longer add up without a ceiling. A
//! message larger than the whole budget still goes through, alone.
//!
//! A message counts twice: while its body is built, the downloaded bytes and the body
//! rendered from them (about as large: the attachments' base64 is copied) are both
//! alive. Counting only the download let the bodies add half again on top, so
//! `max_memory` read as a bound it was not (BENCHMARKS.md, scenario 8).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget is counted in KiB so that a `u32` of permits covers any sensible size.
const UNIT: u64 = 1024;

#[derive(Clone, Debug)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    units: u32,
}

/// Room for one message; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX >> 3);
        let units = units.min(Semaphore::MAX_PERMITS as u32);
        Budget {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `bytes` fit (the whole budget for a message larger than it).
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let wanted = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.units);
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(wanted)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation { _permit: permit }
    }

    /// Room for a message of `size` bytes and the body rendered from it; waits until
    /// both fit (the whole budget when they are larger than it).
    pub async fn reserve_message(&self, size: u64) -> Reservation {
        self.reserve(size.saturating_mul(2)).await
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn downloads_wait_for_room_and_an_oversized_one_goes_alone() {
        let budget = Budget::new(100 * 1024);
        let a = budget.reserve(60 * 1024).await;
        assert_eq!(budget.available(), 40 * 1024);
        // 60 KiB more does not fit until `a` is done.
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(60 * 1024));
        assert!(waiting.await.is_err(), "must wait for room");
        drop(a);
        let b = budget.reserve(60 * 1024).await;
        drop(b);
        // Larger than the whole budget: takes all of it, then proceeds.
        let huge = budget.reserve(10 * 1024 * 1024).await;
        assert_eq!(budget.available(), 0);
        drop(huge);
        assert_eq!(budget.available(), 100 * 1024);
        // Tiny messages still take one unit each, so the count of them is bounded too.
        let _small = budget.reserve(1).await;
        assert_eq!(budget.available(), 99 * 1024);
    }

    #[tokio::test]
    async fn a_message_counts_with_the_body_rendered_from_it() {
        let budget = Budget::new(100 * 1024);
        let a = budget.reserve_message(30 * 1024).await;
        assert_eq!(budget.available(), 40 * 1024);
        // 30 KiB more would fit as bytes alone, not with its body.
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.reserve_message(30 * 1024));
        assert!(
            waiting.await.is_err(),
            "must wait for room for the body too"
        );
        drop(a);
    }
}
