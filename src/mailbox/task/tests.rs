//! When a mailbox tries next: as a table over cycle outcomes, and as the real loop
//! counting logins over simulated hours on paused time. No server, no sleeping.

use std::sync::Mutex;

use super::*;
use crate::ledger::{now_ms, DisabledEndpoint, Ledger, Record, StateError};
use crate::mailbox::budget::Budget;
use crate::shutdown::{self, Trigger};
use crate::watchdog::Watchdog;

fn mailbox(yaml_extra: &str) -> Mailbox {
    let yaml = format!(
        "webhook:\n  url: http://127.0.0.1:9/\nmailboxes:\n  - name: box\n    host: 127.0.0.1\n    port: 1\n    tls: none\n    allow_insecure: true\n    username: u\n    password: p\n    poll_interval: 60s\n{yaml_extra}"
    );
    crate::config::from_yaml(&yaml).unwrap().mailboxes.remove(0)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_clean_cycle_waits_for_the_poll_interval_or_an_earlier_retry() {
    let mailbox = mailbox("");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let ok = CycleReport::default();
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0, &Ok(()), &ok, None),
        t0 + secs(60)
    );
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0, &Ok(()), &ok, Some(t0 + secs(7))),
        t0 + secs(7)
    );
    // A retry due "now" never makes a busy loop.
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0, &Ok(()), &ok, Some(t0 - secs(7))),
        t0 + MIN_WAKE
    );
}

#[test]
fn login_delay_is_a_floor_for_every_next_session() {
    let mailbox = mailbox("");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let report = CycleReport {
        login_delay: Some(secs(900)),
        more: true,
        ..CycleReport::default()
    };
    // Even with more to do right away, or a retry due in 5 s.
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0 + secs(1), &Ok(()), &report, None),
        t0 + secs(900)
    );
    let quiet = CycleReport::default();
    assert_eq!(
        timing.after_cycle(
            &mailbox,
            t0 + secs(900),
            t0 + secs(901),
            &Ok(()),
            &quiet,
            Some(t0)
        ),
        t0 + secs(1800),
        "remembered from the earlier session"
    );
    let failed = Err(CycleError::State(StateError::Flush("disk full".into())));
    assert!(
        timing.after_cycle(
            &mailbox,
            t0 + secs(1800),
            t0 + secs(1800),
            &failed,
            &quiet,
            None
        ) >= t0 + secs(2700)
    );
}

#[test]
fn a_410_waits_the_poll_interval_even_with_retries_due() {
    let mailbox = mailbox("");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let gone = CycleReport {
        endpoint_disabled: true,
        ..CycleReport::default()
    };
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0, &Ok(()), &gone, Some(t0)),
        t0 + secs(60)
    );
}

#[test]
fn the_breaker_grows_during_an_outage_probes_with_one_message_and_resets_on_success() {
    let mailbox = mailbox("    poll_interval: 1s\n");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let failing = CycleReport {
        failed: 4,
        endpoint_failing: true,
        ..CycleReport::default()
    };
    // Retries are due at once (many of them), but the breaker holds the mailbox off
    // for a growing delay: 1 s, 2 s, 4 s, ... up to 5 minutes.
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let next = timing.after_cycle(&mailbox, now, now, &Ok(()), &failing, Some(now));
        assert!(timing.breaker.probing());
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    // A retry due later than the breaker's delay is waited for.
    let next = timing.after_cycle(
        &mailbox,
        now,
        now,
        &Ok(()),
        &failing,
        Some(now + secs(3600)),
    );
    assert_eq!(next - now, secs(3600));
    // A probe that delivered closes the breaker.
    let recovered = CycleReport {
        delivered: 1,
        ..CycleReport::default()
    };
    timing.after_cycle(&mailbox, now, now, &Ok(()), &recovered, None);
    assert!(!timing.breaker.probing());
    // A flaky endpoint (delivered, then failed) restarts from the shortest wait.
    for _ in 0..5 {
        timing.after_cycle(&mailbox, now, now, &Ok(()), &failing, Some(now));
    }
    let flaky = CycleReport {
        delivered: 3,
        ..failing.clone()
    };
    let next = timing.after_cycle(&mailbox, now, now, &Ok(()), &flaky, Some(now));
    assert_eq!(next - now, secs(1));
}

#[test]
fn the_breaker_never_waits_longer_than_the_webhooks_own_longest_retry() {
    let mailbox = mailbox("    poll_interval: 1s\n    webhook:\n      retry: {max_attempts: 100, initial_backoff: 20ms, max_backoff: 3s}\n");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let failing = CycleReport {
        failed: 1,
        endpoint_failing: true,
        ..CycleReport::default()
    };
    let waits: Vec<u64> = (0..5)
        .map(|_| (timing.after_cycle(&mailbox, t0, t0, &Ok(()), &failing, Some(t0)) - t0).as_secs())
        .collect();
    assert_eq!(waits, [1, 2, 3, 3, 3]);
}

#[test]
fn failed_sessions_back_off_but_progress_resets_the_count() {
    let mailbox = mailbox("    poll_interval: 10s\n");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let error = Err(CycleError::State(StateError::Flush("x".into())));
    let none = CycleReport::default();
    let waits: Vec<u64> = (0..4)
        .map(|_| (timing.after_cycle(&mailbox, t0, t0, &error, &none, None) - t0).as_secs())
        .collect();
    assert_eq!(waits, [10, 20, 40, 80]);
    let progress = CycleReport {
        fetch_failed: 1,
        ..CycleReport::default()
    };
    assert_eq!(
        timing.after_cycle(&mailbox, t0, t0, &error, &progress, None) - t0,
        secs(10),
        "a message that broke the session now waits on its own schedule"
    );
}

#[test]
fn a_missing_sasl_mechanism_backs_off_like_an_outage_not_like_a_wrong_password() {
    let mailbox = mailbox("    poll_interval: 10s\n");
    let e = crate::pop3::Pop3Error::MechanismNotOffered {
        mechanism: "PLAIN",
        offered: "its CAPA lists no SASL mechanism".into(),
        alternatives: "`auth: user` (USER/PASS)",
    };
    assert!(e.is_configuration() && !e.is_auth());
    let text = e.to_string();
    assert!(
        text.contains("auth: plain") && text.contains("auth: user"),
        "{text}"
    );
    assert!(!text.contains("check username and password"), "{text}");
    let missing = CycleError::Pop3(e);
    let rejected = CycleError::Pop3(crate::pop3::Pop3Error::Auth(crate::pop3::codec::ErrReply {
        code: None,
        text: "bad password".into(),
    }));
    let after_many = |error: &CycleError| backoff_after(&mailbox, error, 30);
    assert_eq!(after_many(&missing), MAX_TRANSIENT_BACKOFF);
    assert_eq!(after_many(&rejected), MAX_AUTH_BACKOFF);
}

// The real loop on paused time: a fake cycle stands in for the POP3 session and the
// tests count its logins over simulated hours. Nothing sleeps for real.

/// How long each fake session takes.
const SESSION: Duration = Duration::from_secs(3);

/// A mailbox's task with a real ledger; the triggers are held so that neither shutdown
/// nor retirement fires.
struct Rig {
    mailbox: Mailbox,
    ctx: Context,
    _state: tempfile::TempDir,
    _triggers: [Trigger; 2],
    retire: Shutdown,
}

fn rig(yaml_extra: &str, sink: Arc<dyn CycleSink>) -> Rig {
    let mailbox = mailbox(yaml_extra);
    let state = tempfile::tempdir().unwrap();
    let (stop, shutdown) = shutdown::channel();
    let (retired, retire) = shutdown::channel();
    let ctx = Context {
        sender: crate::delivery::Sender::new(None, [&mailbox.webhook]).unwrap(),
        sink,
        ledger: Ledger::open(state.path(), Watchdog::default()).unwrap(),
        shutdown,
        shutdown_timeout: secs(5),
        budget: Budget::new(1 << 30),
    };
    Rig {
        mailbox,
        ctx,
        _state: state,
        _triggers: [stop, retired],
        retire,
    }
}

/// A failed POST's record: due at `next_attempt_ms` by the wall clock, `wait_ms` after
/// the attempt by its schedule.
fn retrying(next_attempt_ms: i64, wait_ms: u64) -> Record {
    Record::Retrying {
        attempts: 1,
        rejections: 0,
        drops: 0,
        next_attempt_ms,
        delay_ms: Some(wait_ms),
        last_error: "webhook answered HTTP 503".into(),
        oversized: false,
        since: crate::ledger::now(),
    }
}

/// More retries due at once than `max_in_flight` (they stay due: the outage fails them).
fn retries_due_now(rig: &Rig) -> usize {
    let due = rig.mailbox.webhook.max_in_flight * 3;
    for n in 0..due {
        let record = retrying(now_ms() - 1000, 1000);
        rig.ctx
            .ledger
            .put_record("box", &format!("uid-{n}"), record);
    }
    due
}

/// One login as the fake session saw it: when (since the loop started), and whether
/// the breaker asked for a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Login {
    at: Duration,
    probe: bool,
}

/// Runs the real loop for `span` of paused time, with `fake(login number, probe)`
/// deciding what each session reports; returns the logins.
async fn logins_over(
    rig: &Rig,
    span: Duration,
    mut fake: impl FnMut(usize, bool) -> CycleOutcome,
) -> Vec<Login> {
    let t0 = Instant::now();
    let mut logins = Vec::new();
    let cycle = |probe| {
        logins.push(Login {
            at: t0.elapsed(),
            probe,
        });
        let outcome = fake(logins.len() - 1, probe);
        async move {
            tokio::time::sleep(SESSION).await;
            outcome
        }
    };
    let wake = Arc::new(Notify::new());
    let run = poll_with(
        &rig.mailbox,
        &rig.ctx,
        wake,
        rig.retire.clone(),
        None,
        cycle,
    );
    let ended = tokio::time::timeout(span, run).await;
    assert!(ended.is_err(), "the loop only ends on shutdown: {ended:?}");
    logins
}

/// The time between consecutive logins.
fn gaps(logins: &[Login]) -> Vec<Duration> {
    logins.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// The endpoint failed every POST the session tried (`max_in_flight`, or the probe).
fn outage(rig: &Rig, probe: bool, due: usize) -> CycleOutcome {
    let tried = if probe {
        1
    } else {
        rig.mailbox.webhook.max_in_flight
    };
    let report = CycleReport {
        failed: tried,
        waiting: due - tried,
        endpoint_failing: true,
        ..CycleReport::default()
    };
    (Ok(()), report)
}

/// The logins a day-long outage may cause: the breaker's ramp from BREAKER_INITIAL to
/// BREAKER_MAX, then one per BREAKER_MAX.
fn breaker_bound(span: Duration) -> usize {
    let mut ramp = 0;
    let mut wait = BREAKER_INITIAL;
    while wait < BREAKER_MAX {
        ramp += 1;
        wait *= 2;
    }
    ramp + (span.as_secs() / BREAKER_MAX.as_secs()) as usize + 1
}

#[tokio::test(start_paused = true)]
async fn an_outage_with_more_retries_due_than_max_in_flight_logs_in_once_per_breaker_interval() {
    let rig = rig("    poll_interval: 1s\n", Arc::new(Unobserved));
    assert!(rig.mailbox.webhook.retry.longest_wait() >= BREAKER_MAX);
    let due = retries_due_now(&rig);
    assert!(due > rig.mailbox.webhook.max_in_flight);
    let day = secs(24 * 3600);
    let logins = logins_over(&rig, day, |_, probe| outage(&rig, probe, due)).await;
    let bound = breaker_bound(day);
    assert!(
        !logins.is_empty() && logins.len() <= bound,
        "{} logins in a day (at most {bound})",
        logins.len()
    );
    assert!(
        logins.len() * 2 > bound,
        "the outage is still probed about once per {BREAKER_MAX:?}: {} logins",
        logins.len()
    );
    let gaps = gaps(&logins);
    assert!(
        gaps.iter().all(|gap| *gap >= BREAKER_INITIAL + SESSION),
        "never faster than the breaker allows: {gaps:?}"
    );
    assert!(gaps[20..].iter().all(|gap| *gap >= BREAKER_MAX));
    assert!(logins[1..].iter().all(|login| login.probe));
}

#[tokio::test(start_paused = true)]
async fn an_outage_never_undercuts_the_servers_login_delay() {
    let rig = rig("    poll_interval: 1s\n", Arc::new(Unobserved));
    let due = retries_due_now(&rig);
    let login_delay = secs(600);
    assert!(login_delay > BREAKER_MAX, "else the breaker alone would do");
    let day = secs(24 * 3600);
    let logins = logins_over(&rig, day - secs(1), |_, probe| {
        let (result, report) = outage(&rig, probe, due);
        let report = CycleReport {
            login_delay: Some(login_delay),
            ..report
        };
        (result, report)
    })
    .await;
    let gaps = gaps(&logins);
    assert!(
        gaps.iter().all(|gap| *gap >= login_delay),
        "a session sooner than LOGIN-DELAY after the last: {gaps:?}"
    );
    assert_eq!(
        logins.len() as u64,
        day.as_secs() / login_delay.as_secs(),
        "and no later than that: {gaps:?}"
    );
}

/// Counts the cycles the loop starts, and when.
#[derive(Default)]
struct Starts(Mutex<Vec<Instant>>);

impl CycleSink for Starts {
    fn started(&self) {
        self.0.lock().unwrap().push(Instant::now());
    }
    fn delivered(&self, _: Duration, _: Result<(), &DeliveryError>) {}
    fn finished(&self, _: Duration, _: &Result<(), CycleError>, _: &CycleReport) {}
}

#[tokio::test(start_paused = true)]
async fn after_a_410_with_retries_due_the_mailbox_cycles_no_faster_than_its_poll_interval() {
    // The real task and the real cycle: after a 410 the cycle returns before it
    // connects, so the cycles are counted, not the POP3 sessions.
    let starts = Arc::new(Starts::default());
    let rig = rig("", starts.clone());
    retries_due_now(&rig);
    let gone = DisabledEndpoint {
        fingerprint: rig.mailbox.webhook.fingerprint(),
        url: "http://127.0.0.1:9/".into(),
        at: crate::ledger::now(),
    };
    rig.ctx.ledger.disable_endpoint("box", gone);
    let poll = rig.mailbox.poll_interval;
    let task = poll_forever(
        rig.mailbox.clone(),
        rig.ctx.clone(),
        Arc::new(Notify::new()),
        rig.retire.clone(),
        None,
    );
    assert!(tokio::time::timeout(poll * 10 - secs(1), task)
        .await
        .is_err());
    let starts = starts.0.lock().unwrap().clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(starts.len(), 10, "{gaps:?}");
    assert!(gaps.iter().all(|gap| *gap >= poll), "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_the_first_cycle_probes_and_the_next_runs_at_full_speed() {
    let rig = rig("", Arc::new(Unobserved));
    let due = retries_due_now(&rig);
    let failing = 4;
    let logins = logins_over(&rig, secs(3600), |n, probe| {
        if n < failing {
            return outage(&rig, probe, due);
        }
        // The endpoint answers again: the session delivers what was due.
        for key in 0..due {
            rig.ctx.ledger.remove("box", &format!("uid-{key}"));
        }
        let delivered = CycleReport {
            delivered: if n == failing { due } else { 0 },
            ..CycleReport::default()
        };
        (Ok(()), delivered)
    })
    .await;
    let probes: Vec<bool> = logins.iter().map(|l| l.probe).collect();
    assert_eq!(
        probes[..failing + 3],
        [false, true, true, true, true, false, false],
        "{logins:?}"
    );
    let gaps = gaps(&logins);
    assert_eq!(
        gaps[..failing],
        [1, 2, 4, 8].map(|n| BREAKER_INITIAL * n + SESSION),
        "the breaker's waits during the outage"
    );
    assert!(
        gaps[failing..]
            .iter()
            .all(|g| *g == rig.mailbox.poll_interval + SESSION),
        "then the poll interval: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_due_retry_is_waited_for_on_the_monotonic_clock_capped_at_its_schedule() {
    let rig = rig("    poll_interval: 2h\n", Arc::new(Unobserved));
    let wait = secs(10);
    let logins = logins_over(&rig, secs(3 * 3600), |n, _| {
        let due_in = match n {
            // Due in 10 s: paused time passes, the wall clock hardly moves.
            0 => Some(wait),
            // Due in an hour by the wall clock (stepped back an hour since it was
            // written), though its schedule's wait is 10 s.
            1 => Some(secs(3600)),
            _ => None,
        };
        match due_in {
            Some(due_in) => {
                let at = now_ms() + due_in.as_millis() as i64;
                let record = retrying(at, wait.as_millis() as u64);
                rig.ctx.ledger.put_record("box", "uid-1", record);
            }
            None => rig.ctx.ledger.remove("box", "uid-1"),
        }
        let report = CycleReport {
            failed: 1,
            ..CycleReport::default()
        };
        (Ok(()), report)
    })
    .await;
    // To the second: the wall clock moves a millisecond or so while a record is written.
    let at: Vec<u64> = logins
        .iter()
        .map(|l| l.at.as_secs_f64().round() as u64)
        .collect();
    assert_eq!(
        at,
        [0, 10, 20, 20 + SESSION.as_secs() + 7200],
        "each retry after its 10 s, then the poll interval"
    );
}

/// Runs `once`'s loop with `fake(session number)` deciding what each session reports;
/// returns how many sessions ran and what `drain` returned.
async fn drain_sessions(
    rig: &Rig,
    mut fake: impl FnMut(usize) -> CycleOutcome,
) -> (usize, CycleOutcome) {
    let mut sessions = 0;
    let cycle = |_probe| {
        sessions += 1;
        let outcome = fake(sessions - 1);
        async move { outcome }
    };
    let outcome = drain_with(&rig.mailbox, &rig.ctx, cycle).await;
    (sessions, outcome)
}

/// A session that QUIT at a commit point having fetched `fetched`, with more left.
fn committed_with_more(fetched: usize) -> CycleOutcome {
    let report = CycleReport {
        fetched,
        delivered: fetched,
        more: true,
        ..CycleReport::default()
    };
    (Ok(()), report)
}

#[tokio::test]
async fn once_goes_on_while_sessions_move_mail_and_leave_more_and_adds_them_up() {
    let rig = rig("", Arc::new(Unobserved));
    let (sessions, (result, total)) = drain_sessions(&rig, |n| {
        if n < 4 {
            committed_with_more(50)
        } else {
            let (result, mut last) = committed_with_more(7);
            last.more = false;
            (result, last)
        }
    })
    .await;
    assert_eq!(sessions, 5);
    assert!(result.is_ok());
    assert_eq!((total.fetched, total.delivered), (207, 207));
    assert!(!total.more);
}

#[tokio::test]
async fn once_stops_after_a_session_that_moved_nothing_even_with_more_left() {
    let rig = rig("", Arc::new(Unobserved));
    let (sessions, (result, total)) = drain_sessions(&rig, |_| committed_with_more(0)).await;
    assert_eq!(
        sessions, 1,
        "a session that moved nothing would only repeat itself"
    );
    assert!(result.is_ok());
    assert!(
        total.more,
        "what is left is reported, so `once` does not claim success"
    );
}

#[tokio::test]
async fn once_never_logs_in_again_against_the_servers_login_delay() {
    let rig = rig("", Arc::new(Unobserved));
    let (sessions, (_, total)) = drain_sessions(&rig, |_| {
        let (result, mut report) = committed_with_more(50);
        report.login_delay = Some(secs(300));
        (result, report)
    })
    .await;
    assert_eq!(sessions, 1);
    assert_eq!(total.login_delay, Some(secs(300)));
}

#[tokio::test]
async fn once_stops_at_a_failed_session_and_returns_its_error() {
    let rig = rig("", Arc::new(Unobserved));
    let (sessions, (result, total)) = drain_sessions(&rig, |n| match n {
        0 => committed_with_more(50),
        _ => (
            Err(CycleError::State(StateError::Flush("disk full".into()))),
            CycleReport::default(),
        ),
    })
    .await;
    assert_eq!(sessions, 2);
    assert!(matches!(result, Err(CycleError::State(_))), "{result:?}");
    assert_eq!(
        total.fetched, 50,
        "the first session's work is still reported"
    );
}
