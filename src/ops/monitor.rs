//! What the running service knows about itself, in memory: Prometheus instruments per
//! mailbox, when each mailbox last completed a cycle (readiness), and a wake-up that
//! makes a mailbox cycle now instead of at its next poll (replay through the API).
//!
//! Instruments live in this service's own recorder, not in the `metrics` crate's global
//! one, so two services in one process (the tests) never count into each other.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::delivery::{ConnectionObserver, DeliveryError};
use crate::ledger::{self, CycleLog, Pending};
use crate::mailbox::Mailbox;
use crate::mailbox::{CycleError, CycleReport};
use crate::ops::status::Deliveries;

mod describe;
mod oldest;
mod retired;
use describe::describe;
use oldest::Oldest;
use retired::Retired;

/// A mailbox is not ready once its last completed cycle is older than this many poll
/// intervals: one missed poll is normal (a slow cycle, a backoff), three are not.
const READY_INTERVALS: u32 = 3;

const METADATA: Metadata<'static> =
    Metadata::new("pophook", metrics::Level::INFO, Some(module_path!()));

/// Cycles take from milliseconds (nothing new) to many minutes (a backlog).
const CYCLE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
/// Webhook answers, up to the longest sensible `webhook.timeout`.
const WEBHOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

mod name {
    pub const FETCHED: &str = "pophook_messages_fetched_total";
    pub const FETCHED_BYTES: &str = "pophook_fetched_bytes_total";
    pub const DELIVERED: &str = "pophook_messages_delivered_total";
    pub const PARKED_TOTAL: &str = "pophook_messages_parked_total";
    pub const DELIVERY_FAILURES: &str = "pophook_delivery_failures_total";
    pub const CYCLES: &str = "pophook_cycles_total";
    pub const LAST_SUCCESS: &str = "pophook_last_successful_cycle_timestamp_seconds";
    pub const CYCLE_DURATION: &str = "pophook_cycle_duration_seconds";
    pub const WEBHOOK_DURATION: &str = "pophook_webhook_request_duration_seconds";
    pub const RETRYING: &str = "pophook_messages_retrying";
    pub const PARKED: &str = "pophook_messages_parked";
    pub const OLDEST_AGE: &str = "pophook_oldest_undelivered_message_age_seconds";
    pub const ENDPOINT_DISABLED: &str = "pophook_endpoint_disabled";
    pub const LEFT_ALONE: &str = "pophook_messages_left_alone";
    pub const BUILD_INFO: &str = "pophook_build_info";
    pub const OAUTH2_EXPIRY: &str = "pophook_oauth2_token_expiry_timestamp_seconds";
    pub const CONNECTIONS_OPENED: &str = "pophook_webhook_connections_opened_total";
}

/// Every mailbox's monitor, and the recorder their instruments live in.
pub struct Monitor {
    handle: PrometheusHandle,
    recorder: Arc<PrometheusRecorder>,
    /// Replaced on a configuration reload.
    mailboxes: RwLock<Vec<Arc<MailboxMonitor>>>,
    /// Mailboxes a reload removed, whose series the exposition leaves out.
    retired: Mutex<Retired>,
    connections: Arc<Connections>,
}

impl Monitor {
    pub fn new(mailboxes: &[Mailbox]) -> Monitor {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(name::CYCLE_DURATION.into()), CYCLE_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(name::WEBHOOK_DURATION.into()),
                    WEBHOOK_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        describe(&recorder);
        let recorder = Arc::new(recorder);
        let version = Label::new("version", env!("CARGO_PKG_VERSION"));
        recorder
            .register_gauge(&Key::from_parts(name::BUILD_INFO, vec![version]), &METADATA)
            .set(1.0);
        let monitor = Monitor {
            handle: recorder.handle(),
            mailboxes: RwLock::new(
                mailboxes
                    .iter()
                    .map(|m| Arc::new(MailboxMonitor::new(m, recorder.clone())))
                    .collect(),
            ),
            retired: Mutex::default(),
            connections: Arc::new(Connections {
                recorder: recorder.clone(),
            }),
            recorder,
        };
        // Every configured endpoint shows from the start, at 0 until it is used.
        for m in mailboxes {
            let endpoint = crate::delivery::client::endpoint(m.webhook.url.url());
            monitor.connections.counter(&endpoint).increment(0);
        }
        monitor
    }

    /// Counts the webhook connections the sender opens, per endpoint.
    pub fn connections(&self) -> Arc<dyn ConnectionObserver> {
        self.connections.clone()
    }

    pub fn mailbox(&self, name: &str) -> Option<Arc<MailboxMonitor>> {
        self.mailboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|m| m.name == name)
            .cloned()
    }

    pub fn mailboxes(&self) -> Vec<Arc<MailboxMonitor>> {
        self.mailboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a reload: the monitors of `mailboxes`, keeping those of `unchanged` names
    /// (their history and readiness go on) and making new ones for the rest. The
    /// instruments are the recorder's, by name, so counters continue either way, also
    /// for a mailbox removed and added back. The series of removed ones leave the
    /// exposition. Returns the new monitors.
    pub fn replace(
        &self,
        mailboxes: &[Mailbox],
        unchanged: &dyn Fn(&str) -> bool,
    ) -> Vec<Arc<MailboxMonitor>> {
        let mut current = self.mailboxes.write().unwrap_or_else(|e| e.into_inner());
        let mut made = Vec::new();
        let next = mailboxes
            .iter()
            .map(|m| {
                match current
                    .iter()
                    .find(|old| old.name == m.name && unchanged(&m.name))
                {
                    Some(old) => old.clone(),
                    None => {
                        let new = Arc::new(MailboxMonitor::new(m, self.recorder.clone()));
                        made.push(new.clone());
                        new
                    }
                }
            })
            .collect();
        let names: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reloaded(current.iter().map(|m| m.name.as_str()), &names);
        *current = next;
        made
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let now = Instant::now();
        for m in self.mailboxes() {
            // An age grows between cycles; compute it when asked.
            let oldest = m.live().oldest_undelivered;
            m.instruments
                .oldest_age
                .set(oldest.map_or(0.0, |o| o.age_at(now).as_secs_f64().floor()));
        }
        let exposition = self.handle.render();
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(exposition)
    }

    /// Folds recorded histogram samples into their buckets, so memory stays bounded
    /// when nobody scrapes. Call every few seconds.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Ready when every mailbox completed a cycle within three poll intervals (or is in
    /// the middle of a cycle that started within them) and no endpoint is disabled.
    pub fn readiness(&self) -> Readiness {
        let now = Instant::now();
        let faults: Vec<Fault> = self
            .mailboxes()
            .iter()
            .filter_map(|m| {
                m.fault(now).map(|reason| Fault {
                    mailbox: m.name.clone(),
                    reason,
                })
            })
            .collect();
        Readiness {
            ready: faults.is_empty(),
            faults,
        }
    }
}

/// What `/readyz` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub faults: Vec<Fault>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub mailbox: String,
    pub reason: String,
}

/// How many cycles of one mailbox started and finished in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cycles {
    pub started: u64,
    pub finished: u64,
}

/// One mailbox: its instruments, its recent history and its wake-up.
pub struct MailboxMonitor {
    pub name: String,
    poll_interval: Duration,
    wake: Arc<Notify>,
    cycles: watch::Sender<Cycles>,
    live: Mutex<Live>,
    instruments: Instruments,
    recorder: Arc<PrometheusRecorder>,
}

#[derive(Default)]
struct Live {
    cycle_started: Option<Instant>,
    last_success: Option<Instant>,
    last_error: Option<String>,
    login_delay: Option<Duration>,
    endpoint_disabled: bool,
    oldest_undelivered: Option<Oldest>,
    /// POSTs since the last cycle was recorded.
    deliveries: Deliveries,
}

struct Instruments {
    fetched: Counter,
    fetched_bytes: Counter,
    delivered: Counter,
    parked_total: Counter,
    cycles_ok: Counter,
    cycles_failed: Counter,
    last_success: Gauge,
    cycle_duration: Histogram,
    webhook_duration: Histogram,
    retrying: Gauge,
    parked: Gauge,
    oldest_age: Gauge,
    endpoint_disabled: Gauge,
    left_alone: Gauge,
}

impl MailboxMonitor {
    fn new(mailbox: &Mailbox, recorder: Arc<PrometheusRecorder>) -> MailboxMonitor {
        let name = mailbox.name.as_str();
        let counter = |metric: &'static str| register_counter(&recorder, metric, name, &[]);
        let gauge = |metric: &'static str| {
            recorder.register_gauge(&Key::from_parts(metric, labels(name, &[])), &METADATA)
        };
        let histogram = |metric: &'static str| {
            recorder.register_histogram(&Key::from_parts(metric, labels(name, &[])), &METADATA)
        };
        let instruments = Instruments {
            fetched: counter(name::FETCHED),
            fetched_bytes: counter(name::FETCHED_BYTES),
            delivered: counter(name::DELIVERED),
            parked_total: counter(name::PARKED_TOTAL),
            cycles_ok: register_counter(&recorder, name::CYCLES, name, &[("result", "ok")]),
            cycles_failed: register_counter(&recorder, name::CYCLES, name, &[("result", "error")]),
            last_success: gauge(name::LAST_SUCCESS),
            cycle_duration: histogram(name::CYCLE_DURATION),
            webhook_duration: histogram(name::WEBHOOK_DURATION),
            retrying: gauge(name::RETRYING),
            parked: gauge(name::PARKED),
            oldest_age: gauge(name::OLDEST_AGE),
            endpoint_disabled: gauge(name::ENDPOINT_DISABLED),
            left_alone: gauge(name::LEFT_ALONE),
        };
        // What a new monitor knows (its `Live`): a mailbox changed or added back starts
        // with its endpoint enabled and nothing left alone, whatever an earlier
        // configuration of that name last reported.
        instruments.endpoint_disabled.set(0.0);
        instruments.left_alone.set(0.0);
        MailboxMonitor {
            name: name.to_string(),
            poll_interval: mailbox.poll_interval,
            wake: Arc::new(Notify::new()),
            cycles: watch::Sender::new(Cycles::default()),
            live: Mutex::new(Live::default()),
            instruments,
            recorder,
        }
    }

    /// The gauge a token source sets to its access token's expiry (unix seconds);
    /// registered only for `auth: xoauth2` mailboxes, so others export no series.
    pub fn oauth2_expiry_gauge(&self) -> Gauge {
        self.recorder.register_gauge(
            &Key::from_parts(name::OAUTH2_EXPIRY, labels(&self.name, &[])),
            &METADATA,
        )
    }

    /// Makes the mailbox's task start a cycle now: at once if it is waiting for its
    /// next poll, right after the current cycle if it is in one.
    pub fn wake_now(&self) {
        self.wake.notify_one();
    }

    /// What the mailbox's task waits on between cycles.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn cycles(&self) -> watch::Receiver<Cycles> {
        self.cycles.subscribe()
    }

    /// Seeds what a previous process recorded, so the last-success gauge does not read
    /// "never" until the first cycle of this one succeeds.
    pub fn restore(&self, log: &CycleLog, pending: Pending) {
        if let Some(at) = log.last_success_at {
            self.instruments.last_success.set(at as f64);
        }
        self.set_pending(pending);
    }

    pub fn cycle_started(&self) {
        self.live().cycle_started = Some(Instant::now());
        self.cycles.send_modify(|c| c.started += 1);
    }

    /// Records a finished cycle: its report (or error), how long it took and what is
    /// still undelivered afterwards (`None` when that could not be counted).
    /// `report` is what the cycle did, also when it failed part way.
    pub fn cycle_finished(
        &self,
        elapsed: Duration,
        result: &Result<(), CycleError>,
        report: &CycleReport,
        pending: Option<Pending>,
    ) {
        let i = &self.instruments;
        i.cycle_duration.record(elapsed.as_secs_f64());
        // What the cycle fetched counts whatever its outcome, and before the outcome, so a
        // scrape that sees the cycle counted also sees what it fetched.
        i.fetched.increment(report.fetched as u64);
        i.fetched_bytes.increment(report.bytes_fetched);
        i.parked_total.increment(report.parked as u64);
        {
            let mut live = self.live();
            live.cycle_started = None;
            match result {
                Ok(()) => {
                    i.cycles_ok.increment(1);
                    i.last_success.set(ledger::now() as f64);
                    i.endpoint_disabled
                        .set(if report.endpoint_disabled { 1.0 } else { 0.0 });
                    i.left_alone.set(report.skipped as f64);
                    live.last_success = Some(Instant::now());
                    live.last_error = None;
                    live.endpoint_disabled = report.endpoint_disabled;
                    live.login_delay = report.login_delay.or(live.login_delay);
                }
                Err(error) => {
                    i.cycles_failed.increment(1);
                    live.last_error = Some(error.to_string());
                }
            }
        }
        if let Some(pending) = pending {
            self.set_pending(pending);
        }
        // Last: whoever waits for this cycle (a replay) then sees its records.
        self.cycles.send_modify(|c| c.finished += 1);
    }

    /// Updates the undelivered-message gauges (after a cycle, a replay or a drop).
    pub fn set_pending(&self, pending: Pending) {
        self.instruments.retrying.set(pending.retrying as f64);
        self.instruments.parked.set(pending.parked as f64);
        let oldest = pending
            .oldest_since
            .map(|since| Oldest::observed(&self.name, since, ledger::now(), Instant::now()));
        self.live().oldest_undelivered = oldest;
    }

    /// The error of the last cycle, if it failed.
    pub fn last_cycle_error(&self) -> Option<String> {
        self.live().last_error.clone()
    }

    /// The POSTs since the last call, for the cycle log.
    pub fn take_deliveries(&self) -> Deliveries {
        std::mem::take(&mut self.live().deliveries)
    }

    fn fault(&self, now: Instant) -> Option<String> {
        let live = self.live();
        if live.endpoint_disabled {
            return Some(
                "the webhook answered 410 Gone: nothing is posted until the webhook configuration changes"
                    .into(),
            );
        }
        let interval = self.poll_interval.max(live.login_delay.unwrap_or_default());
        let allowed = interval * READY_INTERVALS;
        let recent = |at: Option<Instant>| at.is_some_and(|at| now.duration_since(at) <= allowed);
        // A long cycle (a backlog) is progress, not a fault; but the first cycle must
        // have completed, or nothing shows that this mailbox works at all.
        if recent(live.last_success) || (live.last_success.is_some() && recent(live.cycle_started))
        {
            return None;
        }
        let error = live
            .last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        Some(match live.last_success {
            None => format!("no cycle completed yet{error}"),
            Some(at) => format!(
                "last completed cycle {}s ago, more than {READY_INTERVALS} poll intervals ({}s){error}",
                now.duration_since(at).as_secs(),
                allowed.as_secs()
            ),
        })
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MailboxMonitor {
    /// A POST ended: timed, and counted as it happens, so a long cycle shows progress.
    pub fn delivered(&self, elapsed: Duration, outcome: Result<(), &DeliveryError>) {
        self.instruments
            .webhook_duration
            .record(elapsed.as_secs_f64());
        match outcome {
            // Counted as it happens, so a long cycle (a backlog) shows progress.
            Ok(()) => {
                self.instruments.delivered.increment(1);
                self.live().deliveries.accepted += 1;
            }
            Err(error) => {
                register_counter(
                    &self.recorder,
                    name::DELIVERY_FAILURES,
                    &self.name,
                    &[("reason", error.reason())],
                )
                .increment(1);
                self.live().deliveries.last_error = Some(error.to_string());
            }
        }
    }
}

/// Webhook connections, labelled by endpoint rather than mailbox: mailboxes posting to
/// one endpoint share its connections, so a connection belongs to no single mailbox.
struct Connections {
    recorder: Arc<PrometheusRecorder>,
}

impl Connections {
    fn counter(&self, endpoint: &str) -> Counter {
        let key = Key::from_parts(
            name::CONNECTIONS_OPENED,
            vec![Label::new("endpoint", endpoint.to_string())],
        );
        self.recorder.register_counter(&key, &METADATA)
    }
}

impl ConnectionObserver for Connections {
    fn connection_opened(&self, endpoint: &str) {
        self.counter(endpoint).increment(1);
    }
}

fn labels(mailbox: &str, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
    let mut labels = vec![Label::new("mailbox", mailbox.to_string())];
    labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
    labels
}

fn register_counter(
    recorder: &PrometheusRecorder,
    metric: &'static str,
    mailbox: &str,
    extra: &[(&'static str, &'static str)],
) -> Counter {
    recorder.register_counter(&Key::from_parts(metric, labels(mailbox, extra)), &METADATA)
}

#[cfg(test)]
mod tests;
