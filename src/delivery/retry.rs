//! When to try a failed delivery again, and when to give up and park the message.
//! Pure arithmetic over attempt counts, so it is tested without clocks or servers.

use std::time::Duration;

use rand::Rng;

/// The Standard Webhooks recommendation: immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 14 h, 20 h, 24 h — about three days in all.
pub const STANDARD_SCHEDULE: [Duration; 10] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// Retry-After may ask for more, but never for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq)]
pub enum Backoff {
    /// `schedule[k]` is the wait before attempt k+1; its length is the number of
    /// attempts. Jittered by ±10% so that many messages do not retry in lockstep.
    Schedule(Vec<Duration>),
    /// `initial * 2^(k-1)` capped at `max`, with full jitter (a uniform wait between
    /// zero and that), for at most `max_attempts` attempts.
    Exponential {
        max_attempts: u32,
        initial: Duration,
        max: Duration,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Attempts for answers that are refusals rather than outages (3xx, most 4xx):
    /// retrying those for three days would only hide a bug.
    pub max_rejections: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::Schedule(STANDARD_SCHEDULE.to_vec()),
            max_rejections: 3,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt after `attempts` failed ones, or `None` when
    /// the message should be parked. `rejected`: the last failure was a refusal;
    /// `rejections`: refusals so far, that one included. Outage attempts before them do
    /// not count towards `max_rejections`.
    pub fn next_delay(
        &self,
        attempts: u32,
        rejections: u32,
        rejected: bool,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if rejected && rejections >= self.max_rejections {
            return None;
        }
        let delay = match &self.backoff {
            Backoff::Schedule(schedule) => {
                let nominal = *schedule.get(attempts as usize)?;
                nominal.mul_f64(rng.random_range(0.9..=1.1))
            }
            Backoff::Exponential {
                max_attempts,
                initial,
                max,
            } => {
                if attempts >= *max_attempts {
                    return None;
                }
                let exponent = attempts.saturating_sub(1).min(32);
                let nominal = initial.saturating_mul(1u32 << exponent.min(31)).min(*max);
                nominal.mul_f64(rng.random_range(0.0..=1.0))
            }
        };
        Some(match retry_after {
            Some(asked) => delay.max(asked.min(MAX_RETRY_AFTER)),
            None => delay,
        })
    }

    /// The longest wait the policy schedules between two attempts (jitter included,
    /// `Retry-After` aside).
    pub fn longest_wait(&self) -> Duration {
        match &self.backoff {
            Backoff::Schedule(schedule) => schedule
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .mul_f64(1.1),
            Backoff::Exponential { max, .. } => *max,
        }
    }

    /// How many attempts an outage gets in total.
    pub fn max_attempts(&self) -> u32 {
        match &self.backoff {
            Backoff::Schedule(schedule) => schedule.len() as u32,
            Backoff::Exponential { max_attempts, .. } => *max_attempts,
        }
    }
}

/// How long a mailbox waits before its next session after a failed one: the poll
/// interval doubled per consecutive failure, from `floor` up to `cap`. Used for logins
/// that failed (so an account is not locked by retrying every second) and for servers
/// that said `[IN-USE]`, `[LOGIN-DELAY]` or `[SYS/TEMP]`.
pub fn mailbox_backoff(floor: Duration, consecutive_failures: u32, cap: Duration) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(16);
    floor.saturating_mul(1u32 << exponent).min(cap.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn the_default_follows_the_standard_webhooks_schedule_then_parks() {
        let policy = RetryPolicy::default();
        let mut rng = rng();
        assert_eq!(policy.max_attempts(), 10);
        for (attempts, nominal) in STANDARD_SCHEDULE.iter().enumerate().skip(1) {
            let delay = policy
                .next_delay(attempts as u32, 0, false, None, &mut rng)
                .unwrap();
            assert!(delay >= nominal.mul_f64(0.9) && delay <= nominal.mul_f64(1.1));
        }
        assert_eq!(policy.next_delay(10, 0, false, None, &mut rng), None);
        let total: Duration = STANDARD_SCHEDULE.iter().sum();
        assert!(
            total > Duration::from_secs(3 * 24 * 3600)
                && total < Duration::from_secs(4 * 24 * 3600)
        );
    }

    #[test]
    fn refusals_park_after_max_rejections() {
        let policy = RetryPolicy::default();
        let mut rng = rng();
        assert!(policy.next_delay(2, 2, true, None, &mut rng).is_some());
        assert_eq!(policy.next_delay(3, 3, true, None, &mut rng), None);
        assert!(policy.next_delay(3, 0, false, None, &mut rng).is_some());
        // Seven outage retries, then a first refusal: not parked yet.
        assert!(policy.next_delay(8, 1, true, None, &mut rng).is_some());
    }

    #[test]
    fn exponential_backoff_doubles_with_full_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            backoff: Backoff::Exponential {
                max_attempts: 8,
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
            },
            max_rejections: 3,
        };
        let mut rng = rng();
        let mut saw_below_half = false;
        for _ in 0..200 {
            let d1 = policy.next_delay(1, 0, false, None, &mut rng).unwrap();
            assert!(d1 <= Duration::from_secs(10));
            let d3 = policy.next_delay(3, 0, false, None, &mut rng).unwrap();
            assert!(d3 <= Duration::from_secs(40));
            saw_below_half |= d3 < Duration::from_secs(20);
            let d7 = policy.next_delay(7, 0, false, None, &mut rng).unwrap();
            assert!(d7 <= Duration::from_secs(60), "capped");
        }
        assert!(saw_below_half, "full jitter spreads over the whole range");
        assert_eq!(policy.next_delay(8, 0, false, None, &mut rng), None);
    }

    #[test]
    fn retry_after_is_honoured_but_capped_at_an_hour() {
        let policy = RetryPolicy::default();
        let mut rng = rng();
        let asked = Duration::from_secs(600);
        let delay = policy
            .next_delay(1, 0, false, Some(asked), &mut rng)
            .unwrap();
        assert_eq!(
            delay, asked,
            "5s from the schedule, but the endpoint asked for 10 min"
        );
        let delay = policy
            .next_delay(1, 0, false, Some(Duration::from_secs(86400)), &mut rng)
            .unwrap();
        assert_eq!(delay, MAX_RETRY_AFTER);
        // A shorter Retry-After does not shorten the schedule.
        let delay = policy
            .next_delay(3, 0, false, Some(Duration::from_secs(1)), &mut rng)
            .unwrap();
        assert!(delay >= Duration::from_secs(27 * 60));
    }

    #[test]
    fn mailbox_backoff_grows_from_the_poll_interval_to_the_cap() {
        let floor = Duration::from_secs(60);
        let cap = Duration::from_secs(3600);
        assert_eq!(mailbox_backoff(floor, 1, cap), floor);
        assert_eq!(mailbox_backoff(floor, 2, cap), Duration::from_secs(120));
        assert_eq!(mailbox_backoff(floor, 4, cap), Duration::from_secs(480));
        assert_eq!(mailbox_backoff(floor, 30, cap), cap);
        // A poll interval above the cap is never shortened.
        let long = Duration::from_secs(7200);
        assert_eq!(mailbox_backoff(long, 3, cap), long);
    }
}
