//! Every mailbox at once: `run` polls each on its own interval until shutdown (and
//! serves the `http.listen` endpoint meanwhile), `once` does one cycle of each, `replay`
//! posts parked messages again, `check` logs in and reports without changing anything.
//! The service opens the ledger, starts one task per mailbox and turns what each cycle
//! did into logs, metrics and the cycle log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::api::{self, Api};
use crate::config::{Config, Mailbox};
use crate::ledger::{Ledger, StateError};
use crate::mailbox::task::{self, CycleSink};
use crate::mailbox::{self, Context, CycleError, CycleReport};
use crate::monitor::{MailboxMonitor, Monitor};
use crate::parked::{self, MailboxError, ReplayReport};
use crate::pop3::Session;
use crate::shutdown::Shutdown;
use crate::status;
use crate::watchdog::Watchdog;
use crate::webhook::Sender;

/// How often histogram samples are folded into buckets when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// `once` continues a mailbox in new sessions (each after `commit_interval`) at most
/// this many times, so a cron run always ends.
const ONCE_MAX_SESSIONS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "cannot listen on {addr} (`http.listen`): {source}; is another process using that port?"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Fatal(String),
}

/// The result of `once` for one mailbox.
#[derive(Debug)]
pub struct MailboxOutcome {
    pub mailbox: String,
    pub result: Result<CycleReport, String>,
}

impl MailboxOutcome {
    /// Reached, and every listed message delivered (or deliberately dropped).
    pub fn is_success(&self) -> bool {
        matches!(&self.result, Ok(report) if report.is_clean())
    }
}

/// Opens the ledger, watched by `watchdog`.
pub fn open_ledger(config: &Config, watchdog: &Watchdog) -> Result<Ledger, StateError> {
    Ledger::open(&config.state_dir, watchdog.clone())
}

/// One cycle over every mailbox, concurrently; a mailbox whose session QUIT at
/// `commit_interval` goes on in new sessions until done. Cron jobs and tests read the
/// outcomes.
pub async fn once(config: &Config) -> Result<Vec<MailboxOutcome>, ServiceError> {
    let watchdog = Watchdog::default();
    let monitor = Monitor::new(&config.mailboxes);
    let ctx = context(config, Shutdown::never(), &watchdog, &monitor)?;
    let mut tasks = JoinSet::new();
    for (index, (mailbox, monitor)) in config
        .mailboxes
        .iter()
        .cloned()
        .zip(monitor.mailboxes().iter().cloned())
        .enumerate()
    {
        let ctx = observed(&ctx, &monitor);
        tasks.spawn(async move {
            let sink = Bookkeeper::new(&mailbox, &ctx.ledger, monitor);
            let mut report = CycleReport::default();
            let mut result = Ok(());
            for _ in 0..ONCE_MAX_SESSIONS {
                let mut session = CycleReport::default();
                result = cycle(&mailbox, &ctx, &sink, false, &mut session).await;
                report.absorb(session);
                // Another session at once only where LOGIN-DELAY allows it.
                if result.is_err() || !report.more || report.login_delay.is_some() {
                    break;
                }
            }
            let outcome = MailboxOutcome {
                mailbox: mailbox.name.clone(),
                result: result.map(|()| report).map_err(|e| e.to_string()),
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<(usize, MailboxOutcome)> = tasks.join_all().await.into_iter().collect();
    outcomes.sort_by_key(|(index, _)| *index);
    ctx.ledger.close().await?;
    Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
}

/// Replays parked messages with the service stopped (`ledger` is the opened state):
/// gives them a fresh schedule and runs one cycle of each mailbox concerned, which posts
/// them and deletes them after a 2xx.
pub async fn replay(
    config: &Config,
    ledger: Ledger,
    mailbox: Option<&str>,
    ids: &[String],
) -> Result<ReplayReport, ReplayError> {
    let monitor = Monitor::new(&config.mailboxes);
    let ctx = Context {
        sender: webhook_sender(config, &monitor).map_err(ServiceError::from)?,
        ledger,
        shutdown: Shutdown::never(),
        shutdown_timeout: config.shutdown_timeout,
    };
    let selected = parked::select(&ctx.ledger, mailbox, ids)?;
    parked::unpark(&ctx.ledger, &selected).await?;
    let mut errors = parked::unpolled(&selected, &config.mailboxes);
    for (mailbox, monitor) in config.mailboxes.iter().zip(monitor.mailboxes()) {
        if selected.iter().any(|p| p.mailbox == mailbox.name) {
            let ctx = observed(&ctx, monitor);
            let sink = Bookkeeper::new(mailbox, &ctx.ledger, monitor.clone());
            let mut report = CycleReport::default();
            if let Err(e) = cycle(mailbox, &ctx, &sink, false, &mut report).await {
                errors.push(MailboxError {
                    mailbox: mailbox.name.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    ctx.ledger.flush().await?;
    Ok(ReplayReport {
        messages: parked::outcomes(&ctx.ledger, &selected),
        errors,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Select(#[from] parked::SelectError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Polls every mailbox on its own schedule until `shutdown` fires; a cycle in progress
/// finishes the message in hand and QUITs before its task ends. With `http.listen`,
/// serves the health, metrics and management endpoint meanwhile. Returns an error when
/// the process must not go on (the state directory vanished, a stall the watchdog
/// gave up on).
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ServiceError> {
    run_watched(config, shutdown, Watchdog::default()).await
}

/// [`run`], with the caller's watchdog (the binary's, which ends the process).
pub async fn run_watched(
    config: Config,
    shutdown: Shutdown,
    watchdog: Watchdog,
) -> Result<(), ServiceError> {
    // The state first: a second instance is told that the state is in use, not that
    // the port is.
    let monitor = Arc::new(Monitor::new(&config.mailboxes));
    let ctx = context(&config, shutdown, &watchdog, &monitor)?;
    let listener =
        match &config.http {
            Some(http) => Some(TcpListener::bind(http.listen).await.map_err(|source| {
                ServiceError::Listen {
                    addr: http.listen,
                    source,
                }
            })?),
            None => None,
        };
    serve(config, ctx, monitor, listener).await
}

/// [`run`], with the `http.listen` endpoint on an already bound listener (tests bind
/// port 0), or none.
pub async fn run_on(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let monitor = Arc::new(Monitor::new(&config.mailboxes));
    let ctx = context(&config, shutdown, &Watchdog::default(), &monitor)?;
    serve(config, ctx, monitor, listener).await
}

async fn serve(
    config: Config,
    ctx: Context,
    monitor: Arc<Monitor>,
    listener: Option<TcpListener>,
) -> Result<(), ServiceError> {
    for m in monitor.mailboxes() {
        m.restore(&ctx.ledger.cycle_log(&m.name), ctx.ledger.pending(&m.name));
    }
    let names: Vec<&str> = config.mailboxes.iter().map(|m| m.name.as_str()).collect();
    let listen = listener.as_ref().and_then(|l| l.local_addr().ok());
    info!(
        mailboxes = ?names,
        state_dir = %config.state_dir.display(),
        http = %listen.map_or_else(|| "off".to_string(), |a| a.to_string()),
        "pophook started"
    );
    if let Some(shard) = config.shard {
        info!(
            shard = %shard,
            owned = ?names,
            other_shards = config.other_shards.len(),
            "sharded: this instance polls only the mailboxes whose name hashes to its index"
        );
        if names.is_empty() {
            warn!(shard = %shard, "no mailbox hashes to this shard: it polls nothing (more shards than mailboxes?)");
        }
    }
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback()) {
        warn!(
            listen = %addr,
            "http.listen is not a loopback address: the management API has no authentication, so anyone who can reach it can read status and replay or drop parked messages; restrict access (firewall, NetworkPolicy)"
        );
    }

    let (stop_all, stop_signal) = crate::shutdown::channel();
    let mut outer = ctx.shutdown.clone();
    let watchdog = ctx.ledger.watchdog().clone();
    // Tasks stop on the caller's shutdown, or when the process must not go on.
    let inner_ctx = Context {
        shutdown: stop_signal.clone(),
        ..ctx.clone()
    };
    let mut tasks = JoinSet::new();
    for (mailbox, m) in config.mailboxes.iter().cloned().zip(monitor.mailboxes()) {
        let ctx = observed(&inner_ctx, m);
        let sink: Arc<dyn CycleSink> = Arc::new(Bookkeeper::new(&mailbox, &ctx.ledger, m.clone()));
        let wake = m.wake_handle();
        tasks.spawn(task::poll_forever(mailbox, ctx, sink, wake));
    }
    let upkeep = tokio::spawn(upkeep(monitor.clone(), stop_signal.clone()));
    let server = listener.map(|listener| {
        let api = Api {
            ledger: ctx.ledger.clone(),
            monitor: monitor.clone(),
            mailboxes: config.mailboxes.clone(),
            shard: config.shard,
            shutdown: stop_signal.clone(),
        };
        tokio::spawn(api::serve(listener, api))
    });

    let mut fatal: Option<String> = None;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = outer.requested() => break,
            joined = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(Ok(Err(e))) = joined {
                    fatal = Some(e.to_string());
                    break;
                }
            }
            _ = check.tick() => {
                if let Some(reason) = watchdog.fatal() {
                    fatal = Some(reason);
                    break;
                }
            }
        }
    }
    stop_all.trigger();
    tasks.join_all().await;
    let closed = ctx.ledger.close().await;
    let _ = upkeep.await;
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("the http.listen endpoint failed: {e}"),
            Err(e) => error!("the http.listen endpoint task failed: {e}"),
        }
    }
    if let Some(reason) = fatal {
        error!("pophook stopped: {reason}");
        return Err(ServiceError::Fatal(reason));
    }
    closed?;
    info!("pophook stopped");
    Ok(())
}

fn context(
    config: &Config,
    shutdown: Shutdown,
    watchdog: &Watchdog,
    monitor: &Monitor,
) -> Result<Context, ServiceError> {
    Ok(Context {
        sender: webhook_sender(config, monitor)?,
        ledger: open_ledger(config, watchdog)?,
        shutdown,
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// The sender for every mailbox's webhook, counting its connections in `monitor`.
fn webhook_sender(config: &Config, monitor: &Monitor) -> Result<Sender, reqwest::Error> {
    let webhooks = config.mailboxes.iter().map(|m| &m.webhook);
    Sender::new(Some(monitor.connections()), webhooks)
}

/// The context for one mailbox: its POSTs are timed and counted by its monitor.
fn observed(ctx: &Context, monitor: &Arc<MailboxMonitor>) -> Context {
    Context {
        sender: ctx.sender.observed_by(monitor.clone()),
        ..ctx.clone()
    }
}

async fn upkeep(monitor: Arc<Monitor>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(METRICS_UPKEEP) => monitor.run_upkeep(),
            _ = shutdown.requested() => return,
        }
    }
}

/// One cycle with its bookkeeping, for `once` and `replay` (the running service's
/// tasks call the same sink).
async fn cycle(
    mailbox: &Mailbox,
    ctx: &Context,
    sink: &Bookkeeper,
    probe: bool,
    report: &mut CycleReport,
) -> Result<(), CycleError> {
    sink.started();
    let started = Instant::now();
    let result = mailbox::run_cycle(mailbox, ctx, probe, report).await;
    sink.finished(started.elapsed(), &result, report);
    result
}

/// Turns each finished cycle into a log line, metrics and the cycle log in the state.
struct Bookkeeper {
    mailbox: String,
    ledger: Ledger,
    monitor: Arc<MailboxMonitor>,
}

impl Bookkeeper {
    fn new(mailbox: &Mailbox, ledger: &Ledger, monitor: Arc<MailboxMonitor>) -> Bookkeeper {
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

/// What `check` found for one mailbox.
#[derive(Debug)]
pub struct CheckReport {
    pub mailbox: String,
    pub address: String,
    pub result: Result<CheckDetails, String>,
}

#[derive(Debug)]
pub struct CheckDetails {
    pub capabilities: Vec<String>,
    pub messages: u32,
    pub octets: u64,
}

/// Logs in to every mailbox and reads its capabilities and size. Sends no DELE; the
/// QUIT at the end commits nothing because nothing was marked.
pub async fn check(config: &Config) -> Vec<CheckReport> {
    let mut tasks = JoinSet::new();
    for (index, mailbox) in config.mailboxes.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let result = check_one(&mailbox).await.map_err(|e| e.to_string());
            let report = CheckReport {
                address: format!(
                    "{}:{} ({:?})",
                    mailbox.server.host, mailbox.server.port, mailbox.server.tls
                ),
                mailbox: mailbox.name,
                result,
            };
            (index, report)
        });
    }
    let mut reports = tasks.join_all().await;
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}

async fn check_one(mailbox: &Mailbox) -> Result<CheckDetails, crate::pop3::Pop3Error> {
    let mut session = Session::connect(&mailbox.server).await?;
    let (messages, octets) = session.stat().await?;
    let capabilities = session.capabilities().lines().to_vec();
    session.quit().await?;
    Ok(CheckDetails {
        capabilities,
        messages,
        octets,
    })
}
