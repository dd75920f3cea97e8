//! Every mailbox at once: `run` polls each on its own interval until shutdown (and
//! serves the `http.listen` endpoint meanwhile), `once` does one cycle of each, `replay`
//! posts parked messages again, `check` logs in and reports without changing anything.
//! The service opens the ledger, starts one task per mailbox and turns what each cycle
//! did into logs, metrics and the cycle log.

mod bookkeeping;
mod check;
mod fleet;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::delivery::Sender;
use crate::ledger::{Ledger, StateError};
use crate::mailbox::budget::Budget;
use crate::mailbox::task::Unobserved;
use crate::mailbox::Mailbox;
use crate::mailbox::{self, Context, CycleError, CycleReport};
use crate::ops::monitor::{MailboxMonitor, Monitor};
use crate::ops::parked::{self, MailboxError, ReplayReport};
use crate::ops::reload::{self, ReloadHandle, ReloadRequests};
use crate::shutdown::Shutdown;
use crate::watchdog::Watchdog;
use bookkeeping::Bookkeeper;
pub use check::{check, CheckDetails, CheckReport};
pub use settings::Config;

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
    #[error("{0}")]
    Fatal(String),
}

/// The service's side of a [`ReloadHandle`]: the requests, and how to read the
/// configuration again.
pub struct Reloader {
    requests: ReloadRequests,
    load: Box<LoadFn>,
}

type LoadFn = dyn Fn() -> Result<Config, String> + Send + Sync;

/// A reload channel whose service reads its configuration with `load`.
pub fn reloader<E: std::fmt::Display>(
    load: impl Fn() -> Result<Config, E> + Send + Sync + 'static,
) -> (ReloadHandle, Reloader) {
    let (handle, requests) = reload::channel();
    let load = Box::new(move || load().map_err(|e| e.to_string()));
    (handle, Reloader { requests, load })
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

/// One cycle over every mailbox, concurrently; a mailbox whose session QUIT at
/// `commit_interval` goes on in new sessions until done. Cron jobs and tests read the
/// outcomes.
pub async fn once(config: &Config) -> Result<Vec<MailboxOutcome>, ServiceError> {
    once_watched(config, Watchdog::default()).await
}

/// [`once`], with the caller's watchdog (the binary's, which ends a `once` whose state
/// stalls instead of leaving a cron job frozen).
pub async fn once_watched(
    config: &Config,
    watchdog: Watchdog,
) -> Result<Vec<MailboxOutcome>, ServiceError> {
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
        let ctx = observed(&ctx, &mailbox, monitor);
        tasks.spawn(async move {
            let (result, report) = mailbox::task::drain(&mailbox, &ctx).await;
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
        sink: Arc::new(Unobserved),
        ledger,
        shutdown: Shutdown::never(),
        shutdown_timeout: config.shutdown_timeout,
        budget: Budget::new(config.max_memory),
    };
    let selected = parked::select(&ctx.ledger, mailbox, ids)?;
    parked::unpark(&ctx.ledger, &selected).await?;
    let mut errors = parked::unpolled(&selected, &config.mailboxes);
    for (mailbox, monitor) in config.mailboxes.iter().zip(monitor.mailboxes()) {
        if selected.iter().any(|p| p.mailbox == mailbox.name) {
            let ctx = observed(&ctx, mailbox, monitor.clone());
            let mut report = CycleReport::default();
            if let Err(e) = cycle(mailbox, &ctx, false, &mut report).await {
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
    run_watched(config, shutdown, Watchdog::default(), None).await
}

/// [`run`], with the caller's watchdog (the binary's, which ends the process), and
/// reloading its configuration on the requests of `reloader` (see [`reloader`]).
pub async fn run_watched(
    config: Config,
    shutdown: Shutdown,
    watchdog: Watchdog,
    reloader: Option<(ReloadHandle, Reloader)>,
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
    fleet::serve(config, ctx, monitor, listener, reloader).await
}

/// [`run`], with the `http.listen` endpoint on an already bound listener (tests bind
/// port 0), or none.
pub async fn run_on(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    run_reloadable(config, listener, shutdown, None).await
}

/// [`run_on`], reloading on the requests of `reloader`.
pub async fn run_reloadable(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: Shutdown,
    reloader: Option<(ReloadHandle, Reloader)>,
) -> Result<(), ServiceError> {
    let monitor = Arc::new(Monitor::new(&config.mailboxes));
    let ctx = context(&config, shutdown, &Watchdog::default(), &monitor)?;
    fleet::serve(config, ctx, monitor, listener, reloader).await
}

fn log_shard(config: &Config) {
    let names: Vec<&str> = config.mailboxes.iter().map(|m| m.name.as_str()).collect();
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
}

fn context(
    config: &Config,
    shutdown: Shutdown,
    watchdog: &Watchdog,
    monitor: &Monitor,
) -> Result<Context, ServiceError> {
    Ok(Context {
        sender: webhook_sender(config, monitor)?,
        sink: Arc::new(Unobserved),
        ledger: Ledger::open(&config.state_dir, watchdog.clone())?,
        shutdown,
        shutdown_timeout: config.shutdown_timeout,
        budget: Budget::new(config.max_memory),
    })
}

/// An `auth: xoauth2` mailbox's token source keeps rotated refresh tokens in the
/// ledger and reports its access token's expiry to the monitor.
fn keep_tokens(mailbox: &Mailbox, ledger: &Ledger, monitor: &MailboxMonitor) {
    if let Some(tokens) = &mailbox.server.oauth2 {
        tokens.keep_in(crate::oauth2::Keeper {
            ledger: ledger.clone(),
            expiry: Some(monitor.oauth2_expiry_gauge()),
        });
    }
}

/// The sender for every mailbox's webhook, counting its connections in `monitor`.
fn webhook_sender(config: &Config, monitor: &Monitor) -> Result<Sender, reqwest::Error> {
    let webhooks = config.mailboxes.iter().map(|m| &m.webhook);
    Sender::new(Some(monitor.connections()), webhooks)
}

/// The context for one mailbox: its cycles and POSTs are logged, counted by its
/// monitor and recorded in the cycle log; its OAuth2 tokens are kept in the ledger.
fn observed(ctx: &Context, mailbox: &Mailbox, monitor: Arc<MailboxMonitor>) -> Context {
    keep_tokens(mailbox, &ctx.ledger, &monitor);
    Context {
        sink: Arc::new(Bookkeeper::new(mailbox, &ctx.ledger, monitor)),
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
    probe: bool,
    report: &mut CycleReport,
) -> Result<(), CycleError> {
    ctx.sink.started();
    let started = Instant::now();
    let result = mailbox::run_cycle(mailbox, ctx, probe, report).await;
    ctx.sink.finished(started.elapsed(), &result, report);
    result
}
