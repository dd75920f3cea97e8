//! When a mailbox tries next, as a table over cycle outcomes: no server, no sleeping.

use super::*;
use crate::ledger::StateError;

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
fn logins_during_a_day_long_outage_are_bounded_by_the_breaker() {
    // A mailbox with a poll interval of 1 s and retries always due: count the cycles a
    // day-long outage causes.
    let mailbox = mailbox("    poll_interval: 1s\n");
    let t0 = Instant::now();
    let mut timing = Timing::default();
    let failing = CycleReport {
        failed: 1,
        endpoint_failing: true,
        ..CycleReport::default()
    };
    let mut now = t0;
    let mut logins = 0;
    while now < t0 + secs(24 * 3600) {
        logins += 1;
        now = timing.after_cycle(&mailbox, now, now, &Ok(()), &failing, Some(now));
    }
    assert!(logins <= 24 * 12 + 10, "{logins} logins in a day");
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
