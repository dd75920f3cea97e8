//! `pophook status`: for each mailbox, how its last cycle ended, what it delivered and
//! what is still waiting. The cycle log lives in the state, so a stopped service's state
//! directory and the running service's API give the same answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ledger::{self, CycleResult, Ledger};
use crate::mailbox::Mailbox;
use crate::mailbox::{CycleError, CycleReport};

/// How a cycle that reached the server ended.
pub fn classify(report: &CycleReport) -> CycleResult {
    if report.endpoint_disabled {
        CycleResult::EndpointDisabled
    } else if report.is_clean() {
        CycleResult::Ok
    } else {
        CycleResult::Undelivered
    }
}

/// The POSTs of one cycle, as the webhook sender saw them. Counted there rather than
/// taken from the [`CycleReport`], which a cycle that fails after delivering (an error
/// to QUIT, say) does not return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    /// POSTs answered 2xx.
    pub accepted: u64,
    /// The last failed POST's error.
    pub last_error: Option<String>,
}

/// Adds one cycle to the mailbox's log in the state: `result` is the cycle's report or
/// its error, `deliveries` its POSTs.
pub fn record_cycle(
    ledger: &Ledger,
    mailbox: &str,
    duration: Duration,
    result: &Result<(), CycleError>,
    report: &CycleReport,
    deliveries: Deliveries,
) {
    let mut log = ledger.cycle_log(mailbox);
    let now = ledger::now();
    log.last_cycle_at = Some(now);
    log.last_cycle_ms = duration.as_millis().try_into().unwrap_or(u64::MAX);
    log.delivered_total += deliveries.accepted;
    let error = match result {
        Ok(()) => {
            log.last_success_at = Some(now);
            log.last_result = Some(classify(report));
            log.skipped = report.skipped as u64;
            deliveries.last_error
        }
        Err(error) => {
            log.last_result = Some(CycleResult::Failed);
            Some(error.to_string())
        }
    };
    if let Some(error) = error {
        log.last_error = Some(error);
        log.last_error_at = Some(now);
    }
    ledger.put_cycle_log(mailbox, log);
}

/// One mailbox as `pophook status` shows it. Times are unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatus {
    pub mailbox: String,
    pub last_cycle_at: Option<i64>,
    pub last_cycle_ms: Option<u64>,
    pub last_result: Option<CycleResult>,
    pub last_success_at: Option<i64>,
    pub delivered_total: u64,
    pub pending_retries: u64,
    pub parked: u64,
    /// When the oldest undelivered (retrying or parked) message first failed.
    pub oldest_undelivered_since: Option<i64>,
    /// Listed messages the last cycle left alone (unusable UIDL).
    #[serde(default)]
    pub left_alone: u64,
    pub endpoint_disabled: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// What `pophook status --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// Read through the running service's API (true) or from a stopped one's state.
    pub running: bool,
    /// `index/count` when sharded.
    pub shard: Option<String>,
    pub mailboxes: Vec<MailboxStatus>,
}

/// The status of each configured mailbox, in configuration order.
pub fn collect(ledger: &Ledger, mailboxes: &[Mailbox]) -> Vec<MailboxStatus> {
    mailboxes
        .iter()
        .map(|mailbox| {
            let name = mailbox.name.as_str();
            let log = ledger.cycle_log(name);
            let pending = ledger.pending(name);
            let disabled = ledger
                .disabled_endpoint(name, || mailbox.webhook.fingerprint())
                .is_some();
            MailboxStatus {
                mailbox: name.to_string(),
                last_cycle_at: log.last_cycle_at,
                last_cycle_ms: log.last_cycle_at.map(|_| log.last_cycle_ms),
                last_result: log.last_result,
                last_success_at: log.last_success_at,
                delivered_total: log.delivered_total,
                pending_retries: pending.retrying,
                parked: pending.parked,
                oldest_undelivered_since: pending.oldest_since,
                left_alone: log.skipped,
                endpoint_disabled: disabled,
                last_error: log.last_error,
                last_error_at: log.last_error_at,
            }
        })
        .collect()
}

/// Every mailbox as never cycled, for a state directory that does not exist yet.
pub fn collect_empty(mailboxes: &[Mailbox]) -> Vec<MailboxStatus> {
    mailboxes
        .iter()
        .map(|m| MailboxStatus::never(&m.name))
        .collect()
}

impl MailboxStatus {
    /// A mailbox with no recorded cycle and nothing pending.
    pub fn never(mailbox: &str) -> MailboxStatus {
        MailboxStatus {
            mailbox: mailbox.to_string(),
            last_cycle_at: None,
            last_cycle_ms: None,
            last_result: None,
            last_success_at: None,
            delivered_total: 0,
            pending_retries: 0,
            parked: 0,
            oldest_undelivered_since: None,
            left_alone: 0,
            endpoint_disabled: false,
            last_error: None,
            last_error_at: None,
        }
    }
}

/// The readable table, one row per mailbox; `now` in unix seconds.
pub fn table(mailboxes: &[MailboxStatus], now: i64) -> String {
    use std::fmt::Write as _;
    const ERROR_WIDTH: usize = 100;
    let name_width = mailboxes
        .iter()
        .map(|m| m.mailbox.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<10}  {:<17}  {:>9}  {:>8}  {:>6}  {:>10}  {:<10}  LAST ERROR",
        "MAILBOX",
        "LAST CYCLE",
        "RESULT",
        "DELIVERED",
        "RETRYING",
        "PARKED",
        "LEFT ALONE",
        "OLDEST"
    );
    for m in mailboxes {
        let result = match (m.endpoint_disabled, m.last_result) {
            (true, _) => "endpoint_disabled",
            (false, Some(result)) => result.as_str(),
            (false, None) => "-",
        };
        let error = match (&m.last_error, m.last_error_at) {
            (Some(error), at) => {
                let mut error = error.replace(['\r', '\n'], " ");
                if error.chars().count() > ERROR_WIDTH {
                    error = error.chars().take(ERROR_WIDTH - 1).collect::<String>() + "…";
                }
                match at {
                    Some(at) => format!("{}: {error}", ago(now, at)),
                    None => error,
                }
            }
            (None, _) => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<10}  {:<17}  {:>9}  {:>8}  {:>6}  {:>10}  {:<10}  {error}",
            m.mailbox,
            m.last_cycle_at
                .map_or_else(|| "never".into(), |at| ago(now, at)),
            result,
            m.delivered_total,
            m.pending_retries,
            m.parked,
            m.left_alone,
            m.oldest_undelivered_since
                .map_or_else(|| "-".into(), |at| ago(now, at)),
        );
    }
    out
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(now: i64, at: i64) -> String {
    let secs = (now - at).max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ledger::{Record, StateError};
    use crate::watchdog::Watchdog;

    #[tokio::test]
    async fn the_log_accumulates_deliveries_and_keeps_the_latest_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        let clean = CycleReport {
            listed: 2,
            fetched: 2,
            delivered: 2,
            ..CycleReport::default()
        };
        let two = || Deliveries {
            accepted: 2,
            last_error: None,
        };
        let ms = Duration::from_millis(250);
        record_cycle(&ledger, "a", ms, &Ok(()), &clean, two());
        // Delivered, then the session failed: the deliveries still count.
        let quit_failed = Err(CycleError::State(StateError::Corrupt("x".into())));
        record_cycle(&ledger, "a", ms, &quit_failed, &clean, two());
        let failed = CycleReport {
            fetched: 1,
            delivered: 1,
            failed: 1,
            skipped: 2,
            ..CycleReport::default()
        };
        let one_failed = Deliveries {
            accepted: 1,
            last_error: Some("HTTP 500".into()),
        };
        record_cycle(&ledger, "a", ms, &Ok(()), &failed, one_failed);
        let log = ledger.cycle_log("a");
        assert_eq!(log.delivered_total, 5);
        assert_eq!(log.last_result, Some(CycleResult::Undelivered));
        assert_eq!(log.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(log.last_cycle_ms, 250);
        assert_eq!(log.skipped, 2, "left-alone messages are counted");
        record_cycle(&ledger, "a", ms, &Ok(()), &clean, two());
        ledger.close().await.unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        let log = ledger.cycle_log("a");
        assert_eq!(log.last_result, Some(CycleResult::Ok), "survives a reopen");
        assert_eq!(
            log.last_error.as_deref(),
            Some("HTTP 500"),
            "kept, with its time"
        );
    }

    #[test]
    fn pending_counts_retrying_and_parked_and_finds_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), Watchdog::default()).unwrap();
        let retrying = |since| Record::Retrying {
            attempts: 1,
            rejections: 0,
            drops: 0,
            next_attempt_ms: 0,
            delay_ms: None,
            last_error: String::new(),
            oversized: false,
            since,
        };
        ledger.put_record("a", "1", retrying(200));
        ledger.put_record("a", "2", retrying(0));
        ledger.put_record(
            "a",
            "3",
            Record::Parked {
                attempts: 3,
                last_error: String::new(),
                at: 300,
                oversized: false,
                since: 100,
            },
        );
        ledger.put_record("a", "4", Record::Delivered { at: 1, size: None });
        ledger.put_record("b", "1", retrying(50));
        let a = ledger.pending("a");
        assert_eq!((a.retrying, a.parked, a.oldest_since), (2, 1, Some(100)));
        assert_eq!(ledger.pending("c"), crate::ledger::Pending::default());
    }

    #[test]
    fn the_table_shows_ages_and_never() {
        let row = MailboxStatus {
            mailbox: "support".into(),
            last_cycle_at: Some(990),
            last_cycle_ms: Some(12),
            last_result: Some(CycleResult::Undelivered),
            last_success_at: Some(990),
            delivered_total: 42,
            pending_retries: 1,
            parked: 2,
            oldest_undelivered_since: Some(1000 - 7200),
            left_alone: 3,
            endpoint_disabled: false,
            last_error: Some("webhook answered HTTP 500".into()),
            last_error_at: Some(880),
        };
        let never = MailboxStatus::never("new");
        let text = table(&[row, never], 1000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("MAILBOX"), "{text}");
        assert!(lines[0].contains("LEFT ALONE"), "{text}");
        assert!(lines[1].contains("         3  "), "{text}");
        assert!(
            lines[1].contains("10s ago") && lines[1].contains("undelivered"),
            "{text}"
        );
        assert!(
            lines[1].contains("2h ago") && lines[1].contains("2m ago: webhook answered HTTP 500"),
            "{text}"
        );
        assert!(lines[2].contains("never"), "{text}");
    }
}
