//! The mailbox's task: the one place that decides when this mailbox tries next. After
//! each cycle it weighs the poll interval, the earliest due retry, the server's
//! LOGIN-DELAY, session failures and the outage breaker, and sleeps on the monotonic
//! clock until then (or until woken for a replay, or shutdown). For `once` it decides
//! whether another session follows at once ([`drain`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use super::Mailbox;
use super::{run_cycle, Context, CycleError, CycleReport};
use crate::delivery::retry::mailbox_backoff;
use crate::delivery::DeliveryError;
use crate::pop3::codec::ResponseCode;
use crate::shutdown::Shutdown;

/// The longest wait after repeated failed sessions (server down, network): long enough
/// not to hammer a server, short enough that recovery is noticed.
pub const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// The longest wait after repeated rejected logins: long enough not to lock the
/// account, short enough that a fixed password is noticed within the hour.
pub const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);
/// Never cycle more often than this, even when a retry is due "immediately".
pub const MIN_WAKE: Duration = Duration::from_millis(200);
/// The breaker's first wait after the endpoint failed; it doubles per failed probe.
pub const BREAKER_INITIAL: Duration = Duration::from_secs(1);
/// The breaker's longest wait: during a long outage a mailbox logs in about this often.
/// Shorter when the webhook's own retry policy never waits that long: its owner asked
/// for quick retries.
pub const BREAKER_MAX: Duration = Duration::from_secs(5 * 60);

/// Told about each cycle and each POST as it ends: the service turns these into logs,
/// metrics and status. A POST abandoned at shutdown is not reported.
pub trait CycleSink: Send + Sync {
    fn started(&self);
    fn delivered(&self, elapsed: Duration, outcome: Result<(), &DeliveryError>);
    fn finished(&self, elapsed: Duration, result: &Result<(), CycleError>, report: &CycleReport);
}

/// A sink for contexts nobody observes.
pub struct Unobserved;

impl CycleSink for Unobserved {
    fn started(&self) {}
    fn delivered(&self, _: Duration, _: Result<(), &DeliveryError>) {}
    fn finished(&self, _: Duration, _: &Result<(), CycleError>, _: &CycleReport) {}
}

/// After the endpoint failed: wait, then probe with one message before restoring
/// `max_in_flight`. One per mailbox, owned by its task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// The endpoint failed (again): stay away for a growing delay, at most `max`.
    pub fn tripped(&mut self, now: Instant, max: Duration) {
        self.failures = self.failures.saturating_add(1);
        let delay = BREAKER_INITIAL
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(max);
        self.open_until = Some(now + delay);
    }

    pub fn reset(&mut self) {
        *self = Breaker::default();
    }

    /// The next cycle sends one message first.
    pub fn probing(&self) -> bool {
        self.failures > 0
    }

    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }
}

/// What the task remembers between cycles.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    pub breaker: Breaker,
    /// Failed sessions in a row.
    pub failures: u32,
    pub login_delay: Option<Duration>,
    /// When the last session logged in (approximately: when its cycle started).
    pub last_login: Option<Instant>,
}

impl Timing {
    /// The earliest a new session may start: LOGIN-DELAY after the last one.
    pub fn login_floor(&self) -> Option<Instant> {
        Some(self.last_login? + self.login_delay?)
    }

    /// Decides when the next cycle starts, after one that began at `started` and
    /// ended at `now`. `earliest_due`: the mailbox's earliest retry.
    pub fn after_cycle(
        &mut self,
        mailbox: &Mailbox,
        started: Instant,
        now: Instant,
        result: &Result<(), CycleError>,
        report: &CycleReport,
        earliest_due: Option<Instant>,
    ) -> Instant {
        self.last_login = Some(started);
        self.login_delay = report.login_delay.or(self.login_delay);
        let poll = now + mailbox.poll_interval;
        let next = match result {
            Err(error) => {
                // A session that made progress (delivered, or recorded a failure against
                // the message that broke it) is retried soon: that message now waits on
                // its own schedule.
                self.failures = if report.delivered > 0 || report.fetch_failed > 0 {
                    1
                } else {
                    self.failures + 1
                };
                now + backoff_after(mailbox, error, self.failures)
            }
            Ok(()) if report.endpoint_disabled => {
                self.failures = 0;
                poll
            }
            Ok(()) if report.endpoint_failing => {
                self.failures = 0;
                if report.delivered > 0 {
                    // It worked for a while (a flaky endpoint, not an outage): start
                    // the breaker from its shortest wait.
                    self.breaker.reset();
                }
                let max = mailbox
                    .webhook
                    .retry
                    .longest_wait()
                    .clamp(BREAKER_INITIAL, BREAKER_MAX);
                self.breaker.tripped(now, max);
                let open = self.breaker.open_until().unwrap_or(now);
                open.max(earliest_due.unwrap_or(poll))
            }
            Ok(()) => {
                self.failures = 0;
                if report.delivered > 0 || report.failed == 0 {
                    self.breaker.reset();
                }
                if report.more {
                    now
                } else {
                    poll.min(earliest_due.unwrap_or(poll))
                }
            }
        };
        let next = next.max(now + MIN_WAKE);
        match self.login_floor() {
            Some(floor) => next.max(floor),
            None => next,
        }
    }
}

/// After a failed session: a growing wait, longer for rejected logins so the account is
/// not locked, and never shorter than the poll interval.
fn backoff_after(mailbox: &Mailbox, error: &CycleError, failures: u32) -> Duration {
    let floor = mailbox.poll_interval;
    match error {
        CycleError::Pop3(e) if e.is_auth() || matches!(e.code(), Some(ResponseCode::SysPerm)) => {
            mailbox_backoff(floor, failures, MAX_AUTH_BACKOFF)
        }
        _ => mailbox_backoff(floor, failures, MAX_TRANSIENT_BACKOFF),
    }
}

/// How a cycle ended, and what it did (also when it failed).
pub type CycleOutcome = (Result<(), CycleError>, CycleReport);

/// Polls one mailbox until shutdown (`ctx.shutdown`: a cycle in progress finishes the
/// message in hand and QUITs first) or until `retire` (the cycle in progress finishes
/// whole: a reload hands the mailbox to a task with its new configuration). The first
/// login waits for `not_before`, and the task returns when the next one may happen
/// (the server's LOGIN-DELAY), so a successor honours it too.
pub async fn poll_forever(
    mailbox: Mailbox,
    ctx: Context,
    wake: Arc<Notify>,
    retire: Shutdown,
    not_before: Option<Instant>,
) -> Result<Option<Instant>, CycleError> {
    let (m, c) = (&mailbox, &ctx);
    let session = move |probe: bool| async move {
        let mut report = CycleReport::default();
        let result = run_cycle(m, c, probe, &mut report).await;
        (result, report)
    };
    poll_with(m, c, wake, retire, not_before, session).await
}

/// The loop of [`poll_forever`] with the cycle passed in (`cycle(probe)` runs one), so
/// tests drive the real timing with a fake cycle on paused time.
async fn poll_with<C, F>(
    mailbox: &Mailbox,
    ctx: &Context,
    wake: Arc<Notify>,
    mut retire: Shutdown,
    not_before: Option<Instant>,
    mut cycle: C,
) -> Result<Option<Instant>, CycleError>
where
    C: FnMut(bool) -> F,
    F: Future<Output = CycleOutcome>,
{
    let mut shutdown = ctx.shutdown.clone();
    let mut timing = Timing::default();
    if let Some(at) = not_before {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.requested() => {}
            _ = retire.requested() => {}
        }
    }
    while !shutdown.is_requested() && !retire.is_requested() {
        let started = Instant::now();
        ctx.sink.started();
        let (result, report) = cycle(timing.breaker.probing()).await;
        let now = Instant::now();
        ctx.sink.finished(now - started, &result, &report);
        if let Err(CycleError::State(e)) = &result {
            if e.is_fatal() {
                return result.map(|()| None);
            }
        }
        let earliest_due = ctx
            .ledger
            .with_book(&mailbox.name, |book| book.earliest_due());
        let next = timing.after_cycle(mailbox, started, now, &result, &report, earliest_due);
        if result.is_err() {
            warn!(mailbox = %mailbox.name, failures = timing.failures, next_try_in = ?(next - now), "backing off after a failed session");
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            // A replay through the API: cycle now, but never sooner than LOGIN-DELAY.
            _ = wake.notified() => {
                if let Some(floor) = timing.login_floor() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(floor) => {}
                        _ = shutdown.requested() => {}
                        _ = retire.requested() => {}
                    }
                }
            }
            _ = shutdown.requested() => {}
            _ = retire.requested() => {}
        }
    }
    Ok(timing.login_floor().filter(|at| *at > Instant::now()))
}

/// `once`'s sessions for one mailbox: another follows at once while the last QUIT at
/// `commit_interval` (or `commit_every`) with messages left and moved something. One
/// that moved nothing would only repeat itself, and the server's LOGIN-DELAY forbids
/// an immediate login, so `once` always ends; what is left waits for the next run.
/// Returns the first error, or the sessions' reports added up.
pub async fn drain(mailbox: &Mailbox, ctx: &Context) -> CycleOutcome {
    let session = |_| async move {
        let mut report = CycleReport::default();
        let result = run_cycle(mailbox, ctx, false, &mut report).await;
        (result, report)
    };
    drain_with(mailbox, ctx, session).await
}

/// The loop of [`drain`] with the cycle passed in, as for [`poll_with`].
async fn drain_with<C, F>(mailbox: &Mailbox, ctx: &Context, mut cycle: C) -> CycleOutcome
where
    C: FnMut(bool) -> F,
    F: Future<Output = CycleOutcome>,
{
    let mut total = CycleReport::default();
    loop {
        let started = Instant::now();
        ctx.sink.started();
        let (result, report) = cycle(false).await;
        ctx.sink.finished(started.elapsed(), &result, &report);
        let progress = report.fetched + report.deleted > 0;
        total.absorb(report);
        if result.is_err() || !total.more {
            return (result, total);
        }
        if total.login_delay.is_some() || !progress {
            let why = if progress {
                "the server's LOGIN-DELAY forbids another login now"
            } else {
                "the last session moved nothing"
            };
            warn!(mailbox = %mailbox.name, "`once` stops with messages left: {why}");
            return (result, total);
        }
    }
}

#[cfg(test)]
mod tests;
