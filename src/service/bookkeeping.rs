//! What the service makes of each cycle and each POST: a log line, metrics and the
//! cycle log in the state.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::delivery::DeliveryError;
use crate::ledger::Ledger;
use crate::mailbox::task::CycleSink;
use crate::mailbox::Mailbox;
use crate::mailbox::{CycleError, CycleReport};
use crate::ops::monitor::MailboxMonitor;
use crate::ops::status;

/// Turns each finished cycle into a log line, metrics and the cycle log in the state.
pub(super) struct Bookkeeper {
    mailbox: String,
    ledger: Ledger,
    monitor: Arc<MailboxMonitor>,
}

impl Bookkeeper {
    pub(super) fn new(
        mailbox: &Mailbox,
        ledger: &Ledger,
        monitor: Arc<MailboxMonitor>,
    ) -> Bookkeeper {
        Bookkeeper {
            mailbox: mailbox.name.clone(),
            ledger: ledger.clone(),
            monitor,
        }
    }
}

impl CycleSink for Bookkeeper {
    fn started(&self) {
        self.monitor.cycle_started();
    }

    fn delivered(&self, elapsed: Duration, outcome: Result<(), &DeliveryError>) {
        self.monitor.delivered(elapsed, outcome);
    }

    fn finished(&self, elapsed: Duration, result: &Result<(), CycleError>, report: &CycleReport) {
        let name = self.mailbox.as_str();
        log_cycle(name, result, report);
        let pending = self.ledger.pending(name);
        let deliveries = self.monitor.take_deliveries();
        status::record_cycle(&self.ledger, name, elapsed, result, report, deliveries);
        self.monitor
            .cycle_finished(elapsed, result, report, Some(pending));
    }
}

fn log_cycle(name: &str, result: &Result<(), CycleError>, r: &CycleReport) {
    match result {
        Ok(()) if r.endpoint_disabled => error!(
            mailbox = name,
            "the webhook answered 410 Gone earlier: nothing is posted and all mail stays on the server until the webhook configuration changes"
        ),
        Ok(()) if r.failed > 0 || r.fetch_failed > 0 => warn!(
            mailbox = name,
            listed = r.listed,
            delivered = r.delivered,
            failed = r.failed,
            fetch_failed = r.fetch_failed,
            parked = r.parked,
            "cycle finished; some messages were not delivered and stay on the server"
        ),
        Ok(()) if r.fetched > 0 || r.deleted > 0 => info!(
            mailbox = name,
            listed = r.listed,
            delivered = r.delivered,
            deleted = r.deleted,
            skipped = r.skipped,
            "cycle finished"
        ),
        Ok(()) => tracing::debug!(mailbox = name, listed = r.listed, "nothing new"),
        Err(e) => error!(mailbox = name, "cycle failed: {e}"),
    }
}
