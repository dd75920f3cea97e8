//! Every mailbox at once: `run` polls each on its own interval until shutdown (and
//! serves the `http.listen` endpoint meanwhile), `once` does one cycle of each, `replay`
//! posts parked messages again, `check` logs in and reports without changing anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::api::{self, Api};
use crate::config::{Config, Mailbox};
use crate::mailbox::{self, Context, CycleError, CycleReport};
use crate::monitor::{MailboxMonitor, Monitor};
use crate::parked::{self, MailboxError, ReplayReport};
use crate::pop3::codec::ResponseCode;
use crate::pop3::Session;
use crate::retry::mailbox_backoff;
use crate::shutdown::Shutdown;
use crate::state::{self, State, StateError};
use crate::status::{self, Pending};
use crate::webhook::Sender;

/// The longest a mailbox waits after repeated failed sessions (network, `[IN-USE]`).
const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// The longest a mailbox waits after repeated rejected logins: long enough not to lock
/// the account, short enough that a fixed password is noticed within the hour.
const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);
/// Never poll more often than this, even when a retry is due "immediately".
const MIN_WAKE: Duration = Duration::from_millis(200);
/// How often histogram samples are folded into buckets when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

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
}

/// The result of `once` for one mailbox.
#[derive(Debug)]
pub struct MailboxOutcome {
    pub mailbox: String,
    pub result: Result<CycleReport, String>,
}

impl MailboxOutcome {
    /// Reached, and every fetched message delivered.
    pub fn is_success(&self) -> bool {
        matches!(&self.result, Ok(report) if report.is_clean())
    }
}

/// One cycle over every mailbox, concurrently. Cron jobs and tests read the outcomes.
pub async fn once(config: &Config) -> Result<Vec<MailboxOutcome>, ServiceError> {
    let ctx = context(config, Shutdown::never())?;
    let monitor = Monitor::new(&config.mailboxes);
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
            let (result, _) = cycle(&mailbox, &ctx, &monitor).await;
            let outcome = MailboxOutcome {
                mailbox: mailbox.name.clone(),
                result: result.map_err(|e| e.to_string()),
            };
            (index, outcome)
        });
    }
    let mut outcomes: Vec<(usize, MailboxOutcome)> = tasks.join_all().await.into_iter().collect();
    outcomes.sort_by_key(|(index, _)| *index);
    ctx.state.flush().await?;
    Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
}

/// Replays parked messages with the service stopped (`state` is the opened state): gives
/// them a fresh schedule and runs one cycle of each mailbox concerned, which posts them
/// and deletes them after a 2xx.
pub async fn replay(
    config: &Config,
    state: State,
    mailbox: Option<&str>,
    ids: &[String],
) -> Result<ReplayReport, ReplayError> {
    let ctx = Context {
        sender: Sender::new().map_err(ServiceError::from)?,
        state,
        shutdown: Shutdown::never(),
        shutdown_timeout: config.shutdown_timeout,
    };
    let selected = parked::select(&ctx.state, mailbox, ids)?;
    parked::unpark(&ctx.state, &selected).await?;
    let monitor = Monitor::new(&config.mailboxes);
    let mut errors = parked::unpolled(&selected, &config.mailboxes);
    for (mailbox, monitor) in config.mailboxes.iter().zip(monitor.mailboxes()) {
        if selected.iter().any(|p| p.mailbox == mailbox.name) {
            let ctx = observed(&ctx, monitor);
            if let (Err(e), _) = cycle(mailbox, &ctx, monitor).await {
                errors.push(MailboxError {
                    mailbox: mailbox.name.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    ctx.state.flush().await?;
    Ok(ReplayReport {
        messages: parked::outcomes(&ctx.state, &selected)?,
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

/// Polls every mailbox on its own interval until `shutdown` fires; a cycle in progress
/// finishes the message in hand and QUITs before its task ends. With `http.listen`,
/// serves the health, metrics and management endpoint meanwhile.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ServiceError> {
    // The state first: a second instance is told that the state is in use, not that
    // the port is.
    let ctx = context(&config, shutdown)?;
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
    serve(config, ctx, listener).await
}

/// [`run`], with the `http.listen` endpoint on an already bound listener (tests bind
/// port 0), or none.
pub async fn run_on(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let ctx = context(&config, shutdown)?;
    serve(config, ctx, listener).await
}

async fn serve(
    config: Config,
    ctx: Context,
    listener: Option<TcpListener>,
) -> Result<(), ServiceError> {
    let monitor = Arc::new(Monitor::new(&config.mailboxes));
    for m in monitor.mailboxes() {
        match (
            ctx.state.cycle_log(&m.name),
            status::pending(&ctx.state, &m.name),
        ) {
            (Ok(log), Ok(pending)) => m.restore(&log, pending),
            (Err(e), _) | (_, Err(e)) => {
                warn!(mailbox = %m.name, "cannot read the mailbox's history from the state: {e}")
            }
        }
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

    let mut shutdown = ctx.shutdown.clone();
    let mut tasks = JoinSet::new();
    for (mailbox, m) in config.mailboxes.iter().cloned().zip(monitor.mailboxes()) {
        tasks.spawn(poll_forever(mailbox, observed(&ctx, m), m.clone()));
    }
    let upkeep = tokio::spawn(upkeep(monitor.clone(), shutdown.clone()));
    let server = listener.map(|listener| {
        let api = Api {
            state: ctx.state.clone(),
            monitor: monitor.clone(),
            mailboxes: config.mailboxes.clone(),
            shard: config.shard,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(api::serve(listener, api))
    });
    if tasks.is_empty() {
        shutdown.requested().await;
    }
    tasks.join_all().await;
    ctx.state.flush().await?;
    let _ = upkeep.await;
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("the http.listen endpoint failed: {e}"),
            Err(e) => error!("the http.listen endpoint task failed: {e}"),
        }
    }
    info!("pophook stopped");
    Ok(())
}

fn context(config: &Config, shutdown: Shutdown) -> Result<Context, ServiceError> {
    Ok(Context {
        sender: Sender::new()?,
        state: State::open(&config.state_dir)?,
        shutdown,
        shutdown_timeout: config.shutdown_timeout,
    })
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

/// One cycle and its bookkeeping: logged, timed, counted, and added to the mailbox's
/// cycle log in the state (for `pophook status`).
async fn cycle(
    mailbox: &Mailbox,
    ctx: &Context,
    monitor: &MailboxMonitor,
) -> (Result<CycleReport, CycleError>, CycleReport) {
    monitor.cycle_started();
    let started = Instant::now();
    let mut partial = CycleReport::default();
    let result = mailbox::run_cycle_into(mailbox, ctx, &mut partial)
        .await
        .map(|()| partial.clone());
    let elapsed = started.elapsed();
    log_cycle(mailbox, &result);
    let name = mailbox.name.as_str();
    // A clean cycle delivered everything listed and pruned what is no longer listed,
    // so nothing can be pending: the common path skips the scan.
    let pending = match &result {
        Ok(report) if report.is_clean() => Ok(Pending::default()),
        _ => status::pending(&ctx.state, name),
    };
    let pending = pending
        .inspect_err(|e| warn!(mailbox = name, "cannot count undelivered messages: {e}"))
        .ok();
    let deliveries = monitor.take_deliveries();
    if let Err(e) = status::record_cycle(&ctx.state, name, elapsed, &result, deliveries) {
        warn!(mailbox = name, "cannot record the cycle in the state: {e}");
    }
    monitor.cycle_finished(elapsed, &result, &partial, pending);
    (result, partial)
}

async fn poll_forever(mailbox: Mailbox, ctx: Context, monitor: Arc<MailboxMonitor>) {
    let mut shutdown = ctx.shutdown.clone();
    let mut failures = 0;
    let mut login_delay = None;
    while !shutdown.is_requested() {
        let (result, partial) = cycle(&mailbox, &ctx, &monitor).await;
        let wait = match &result {
            Ok(report) => {
                failures = 0;
                login_delay = report.login_delay.or(login_delay);
                next_poll(&mailbox, &ctx.state, login_delay)
            }
            Err(error) => {
                // A session that broke after delivering something made progress: try
                // again soon rather than waiting longer each time (a flaky network).
                failures = if partial.delivered > 0 {
                    1
                } else {
                    failures + 1
                };
                let wait = backoff_after(&mailbox, error, failures, login_delay);
                warn!(mailbox = %mailbox.name, failures, next_try_in = ?wait, "backing off after a failed session");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // A replay through the API: cycle now rather than at the next poll.
            _ = monitor.woken() => {}
            _ = shutdown.requested() => {}
        }
    }
}

/// The poll interval (at least the server's LOGIN-DELAY), or sooner when a retry
/// falls due before it.
fn next_poll(mailbox: &Mailbox, state: &State, login_delay: Option<Duration>) -> Duration {
    let interval = mailbox.poll_interval.max(login_delay.unwrap_or_default());
    let retry = match state.earliest_retry_ms(&mailbox.name) {
        Ok(Some(at)) => Duration::from_millis((at - state::now_ms()).max(0) as u64),
        _ => interval,
    };
    interval.min(retry).max(MIN_WAKE)
}

/// After a failed session: a growing wait, longer for rejected logins so the account is
/// not locked, and never shorter than the server's LOGIN-DELAY.
fn backoff_after(
    mailbox: &Mailbox,
    error: &CycleError,
    failures: u32,
    login_delay: Option<Duration>,
) -> Duration {
    let floor = mailbox.poll_interval.max(login_delay.unwrap_or_default());
    match error {
        CycleError::Pop3(e) if e.is_auth() || matches!(e.code(), Some(ResponseCode::SysPerm)) => {
            mailbox_backoff(floor, failures, MAX_AUTH_BACKOFF)
        }
        _ => mailbox_backoff(floor, failures, MAX_TRANSIENT_BACKOFF),
    }
}

fn log_cycle(mailbox: &Mailbox, result: &Result<CycleReport, CycleError>) {
    let name = mailbox.name.as_str();
    match result {
        Ok(r) if r.failed > 0 => warn!(
            mailbox = name,
            listed = r.listed,
            delivered = r.delivered,
            failed = r.failed,
            parked = r.parked,
            "cycle finished; some messages were not delivered and stay on the server"
        ),
        Ok(r) if r.fetched > 0 || r.deleted > 0 => info!(
            mailbox = name,
            listed = r.listed,
            delivered = r.delivered,
            deleted = r.deleted,
            skipped = r.skipped,
            "cycle finished"
        ),
        Ok(r) => tracing::debug!(mailbox = name, listed = r.listed, "nothing new"),
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
