//! Every mailbox at once: `run` polls each on its own interval until shutdown (and
//! serves the `http.listen` endpoint meanwhile), `once` does one cycle of each, `replay`
//! posts parked messages again, `check` logs in and reports without changing anything.
//! The service opens the ledger, starts one task per mailbox and turns what each cycle
//! did into logs, metrics and the cycle log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::api::{self, Api};
use crate::config::{Config, ConfigError, Mailbox};
use crate::ledger::{Ledger, StateError};
use crate::mailbox::budget::Budget;
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
        keep_tokens(&mailbox, &ctx.ledger, &monitor);
        tasks.spawn(async move {
            let sink = Bookkeeper::new(&mailbox, &ctx.ledger, monitor);
            let mut report = CycleReport::default();
            let mut result;
            loop {
                let mut session = CycleReport::default();
                result = cycle(&mailbox, &ctx, &sink, false, &mut session).await;
                // A session that QUIT at `commit_interval` (or `commit_every`) and moved
                // something goes on in a new one; one that moved nothing would only
                // repeat itself, so `once` always ends.
                let progress = session.fetched + session.deleted > 0;
                report.absorb(session);
                if result.is_err() || !report.more {
                    break;
                }
                if report.login_delay.is_some() || !progress {
                    warn!(mailbox = %mailbox.name, "`once` stops with messages left: {}", if progress { "the server's LOGIN-DELAY forbids another login now" } else { "the last session moved nothing" });
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
        budget: Budget::new(config.max_memory),
    };
    let selected = parked::select(&ctx.ledger, mailbox, ids)?;
    parked::unpark(&ctx.ledger, &selected).await?;
    let mut errors = parked::unpolled(&selected, &config.mailboxes);
    for (mailbox, monitor) in config.mailboxes.iter().zip(monitor.mailboxes()) {
        if selected.iter().any(|p| p.mailbox == mailbox.name) {
            let ctx = observed(&ctx, &monitor);
            keep_tokens(mailbox, &ctx.ledger, &monitor);
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
    serve(config, ctx, monitor, listener, reloader).await
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
    serve(config, ctx, monitor, listener, reloader).await
}

/// Asks a running service to read its configuration again (SIGHUP, `POST /api/reload`).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<Result<ReloadSummary, String>>>);

impl ReloadHandle {
    /// What the reload did, or why the new configuration was refused (the old one
    /// keeps running).
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| "the service is stopping".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the service is stopping".into()))
    }
}

/// The service's side of [`ReloadHandle`]: the requests, and how to read the
/// configuration again.
pub struct Reloader {
    requests: mpsc::Receiver<oneshot::Sender<Result<ReloadSummary, String>>>,
    load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// A reload channel whose service reads its configuration with `load`.
pub fn reloader(
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) -> (ReloadHandle, Reloader) {
    let (tx, rx) = mpsc::channel(4);
    (
        ReloadHandle(tx),
        Reloader {
            requests: rx,
            load: Box::new(load),
        },
    )
}

/// What a reload changed, by mailbox name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Settings that only a restart applies (state_dir, http, shutdown_timeout).
    pub need_restart: Vec<String>,
}

/// The mailbox tasks of a running service, by name, so a reload can stop, start and
/// restart them one by one. A mailbox has at most one task at a time: a changed one's
/// new task starts only once the old one finished its cycle, and not before the
/// server's LOGIN-DELAY allows another login.
struct Fleet {
    /// The configuration each mailbox runs (or is about to run) with.
    slots: HashMap<String, Slot>,
    /// The generation of the task running for a mailbox, if one is.
    live: HashMap<String, u64>,
    /// Tasks finishing their cycle for a changed mailbox; still stopped by shutdown.
    retiring: HashMap<String, Control>,
    /// When a successor may log in, as the ended task's LOGIN-DELAY says.
    handoff: HashMap<String, Instant>,
    tasks: JoinSet<(String, u64, Result<Option<Instant>, CycleError>)>,
    next_generation: u64,
    /// The context tasks are started with (its shutdown is replaced per task).
    ctx: Context,
    monitor: Arc<Monitor>,
}

struct Slot {
    mailbox: Mailbox,
    fingerprint: [u8; 32],
    /// The task's controls; `None` while a changed mailbox waits for its old task.
    task: Option<Control>,
}

/// How one task is told to end.
struct Control {
    /// After the message in hand (shutdown, a removed mailbox).
    stop: crate::shutdown::Trigger,
    /// After the cycle in hand (a changed mailbox).
    retire: crate::shutdown::Trigger,
}

impl Fleet {
    fn new(ctx: Context, monitor: Arc<Monitor>) -> Fleet {
        Fleet {
            slots: HashMap::new(),
            live: HashMap::new(),
            retiring: HashMap::new(),
            handoff: HashMap::new(),
            tasks: JoinSet::new(),
            next_generation: 0,
            ctx,
            monitor,
        }
    }

    /// Adds a mailbox; its task starts now, or when a task of the same name still
    /// finishing has ended.
    fn add(&mut self, mailbox: Mailbox) {
        let name = mailbox.name.clone();
        self.slots.insert(
            name.clone(),
            Slot {
                fingerprint: mailbox.fingerprint(),
                mailbox,
                task: None,
            },
        );
        if !self.live.contains_key(&name) {
            self.start(&name);
        }
    }

    fn start(&mut self, name: &str) {
        let (Some(slot), Some(monitor)) = (self.slots.get_mut(name), self.monitor.mailbox(name))
        else {
            return;
        };
        let (stop, stop_signal) = crate::shutdown::channel();
        let (retire, retire_signal) = crate::shutdown::channel();
        slot.task = Some(Control { stop, retire });
        let mailbox = slot.mailbox.clone();
        let ctx = observed(
            &Context {
                shutdown: stop_signal,
                ..self.ctx.clone()
            },
            &monitor,
        );
        keep_tokens(&mailbox, &ctx.ledger, &monitor);
        let sink: Arc<dyn CycleSink> =
            Arc::new(Bookkeeper::new(&mailbox, &ctx.ledger, monitor.clone()));
        let wake = monitor.wake_handle();
        let not_before = self.handoff.remove(name);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.live.insert(name.to_string(), generation);
        let name = name.to_string();
        self.tasks.spawn(async move {
            let result =
                task::poll_forever(mailbox, ctx, sink, wake, retire_signal, not_before).await;
            (name, generation, result)
        });
    }

    /// Stops a mailbox's task after the message in hand, a retiring one included.
    fn stop(&mut self, name: &str) {
        if let Some(task) = self.slots.get_mut(name).and_then(|s| s.task.take()) {
            task.stop.trigger();
        }
        if let Some(task) = self.retiring.get(name) {
            task.stop.trigger();
        }
    }

    /// Lets a mailbox's task finish its cycle, then end; a successor waits for it.
    fn retire(&mut self, name: &str) {
        if let Some(task) = self.slots.get_mut(name).and_then(|s| s.task.take()) {
            task.retire.trigger();
            self.retiring.insert(name.to_string(), task);
        }
    }

    /// A task ended: a waiting configuration of that mailbox starts now (or once
    /// LOGIN-DELAY allows).
    fn ended(&mut self, name: &str, generation: u64, login_floor: Option<Instant>) {
        if self.live.get(name) != Some(&generation) {
            return;
        }
        self.live.remove(name);
        self.retiring.remove(name);
        if let Some(at) = login_floor {
            self.handoff.insert(name.to_string(), at);
        }
        if self.slots.get(name).is_some_and(|s| s.task.is_none()) {
            self.start(name);
        }
    }

    /// Moves to `mailboxes`: removed ones stop after the message in hand, added ones
    /// start, changed ones restart after their current cycle.
    fn apply(&mut self, mailboxes: &[Mailbox]) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let wanted: HashMap<&str, &Mailbox> =
            mailboxes.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut names: Vec<String> = self.slots.keys().cloned().collect();
        names.sort();
        for name in names {
            if !wanted.contains_key(name.as_str()) {
                self.stop(&name);
                self.slots.remove(&name);
                summary.removed.push(name);
            }
        }
        let unchanged = |m: &Mailbox| {
            self.slots
                .get(&m.name)
                .is_some_and(|s| s.fingerprint == m.fingerprint())
        };
        let changed: Vec<&Mailbox> = mailboxes
            .iter()
            .filter(|m| self.slots.contains_key(&m.name) && !unchanged(m))
            .collect();
        let added: Vec<&Mailbox> = mailboxes
            .iter()
            .filter(|m| !self.slots.contains_key(&m.name))
            .collect();
        let keep: Vec<String> = mailboxes
            .iter()
            .filter(|m| unchanged(m))
            .map(|m| m.name.clone())
            .collect();
        let made = self
            .monitor
            .replace(mailboxes, &|name| keep.iter().any(|k| k == name));
        for m in made {
            m.restore(
                &self.ctx.ledger.cycle_log(&m.name),
                self.ctx.ledger.pending(&m.name),
            );
        }
        for mailbox in changed {
            self.retire(&mailbox.name);
            summary.changed.push(mailbox.name.clone());
            self.add(mailbox.clone());
        }
        for mailbox in added {
            summary.added.push(mailbox.name.clone());
            self.add(mailbox.clone());
        }
        summary
    }

    fn stop_all(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
        for task in self.retiring.values() {
            task.stop.trigger();
        }
    }
}

async fn serve(
    config: Config,
    ctx: Context,
    monitor: Arc<Monitor>,
    listener: Option<TcpListener>,
    reloader: Option<(ReloadHandle, Reloader)>,
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
    log_shard(&config);
    let unauthenticated = config.http.as_ref().is_none_or(|h| h.token.is_none());
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback() && unauthenticated) {
        warn!(
            listen = %addr,
            "http.listen is not a loopback address and `allow_unauthenticated_api` is set: anyone who can reach it can read status and replay or drop parked messages; restrict access (firewall, NetworkPolicy) or set `http.token`"
        );
    }

    let (stop_all, stop_signal) = crate::shutdown::channel();
    let mut outer = ctx.shutdown.clone();
    let watchdog = ctx.ledger.watchdog().clone();
    let mut fleet = Fleet::new(ctx.clone(), monitor.clone());
    for mailbox in config.mailboxes.iter().cloned() {
        fleet.add(mailbox);
    }
    let (handle, mut reloader) = match reloader {
        Some((handle, reloader)) => (Some(handle), Some(reloader)),
        None => (None, None),
    };
    let upkeep = tokio::spawn(upkeep(monitor.clone(), stop_signal.clone()));
    let mailboxes = Arc::new(std::sync::RwLock::new(config.mailboxes.clone()));
    let server = listener.map(|listener| {
        let api = Api {
            ledger: ctx.ledger.clone(),
            monitor: monitor.clone(),
            mailboxes: mailboxes.clone(),
            shard: config.shard,
            shutdown: stop_signal.clone(),
            // Tests serve on a listener of their own without `http`: loopback, open.
            http: config.http.clone().unwrap_or_else(|| {
                crate::config::HttpConfig::open(
                    listener
                        .local_addr()
                        .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
                )
            }),
            reload: handle,
        };
        tokio::spawn(api::serve(listener, api))
    });

    let mut current = config;
    let mut fatal: Option<String> = None;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = outer.requested() => break,
            joined = fleet.tasks.join_next(), if !fleet.tasks.is_empty() => {
                match joined {
                    Some(Ok((_, _, Err(e)))) => {
                        fatal = Some(e.to_string());
                        break;
                    }
                    Some(Ok((name, generation, Ok(floor)))) => {
                        fleet.ended(&name, generation, floor)
                    }
                    _ => {}
                }
            }
            request = next_reload(&mut reloader) => {
                match request {
                    Some((reply, load)) => {
                        let outcome = reload(&mut current, load, &mut fleet, &mailboxes);
                        let _ = reply.send(outcome);
                    }
                    // Every handle is gone: nobody can ask for a reload any more.
                    None => reloader = None,
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
    fleet.stop_all();
    while let Some(joined) = fleet.tasks.join_next().await {
        if let Ok((_, _, Err(e))) = joined {
            fatal.get_or_insert(e.to_string());
        }
    }
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

type LoadFn = dyn Fn() -> Result<Config, ConfigError> + Send + Sync;

/// The next reload request and the loader; pending forever without a reloader.
async fn next_reload(
    reloader: &mut Option<Reloader>,
) -> Option<(oneshot::Sender<Result<ReloadSummary, String>>, &LoadFn)> {
    match reloader {
        Some(r) => {
            let reply = r.requests.recv().await?;
            Some((reply, &*r.load))
        }
        None => std::future::pending().await,
    }
}

/// Reads the configuration again and moves the fleet to it; an invalid one is refused
/// and the running one kept.
fn reload(
    current: &mut Config,
    load: &LoadFn,
    fleet: &mut Fleet,
    mailboxes: &std::sync::RwLock<Vec<Mailbox>>,
) -> Result<ReloadSummary, String> {
    let new = match load() {
        Ok(config) => config,
        Err(e) => {
            error!("reload refused, the running configuration stays: {e}");
            return Err(e.to_string());
        }
    };
    let mut need_restart = Vec::new();
    if new.state_dir != current.state_dir {
        need_restart.push("state_dir".to_string());
    }
    if new.http != current.http {
        need_restart.push("http".to_string());
    }
    if new.shutdown_timeout != current.shutdown_timeout {
        need_restart.push("shutdown_timeout".to_string());
    }
    let mut summary = fleet.apply(&new.mailboxes);
    summary.need_restart = need_restart;
    *mailboxes.write().unwrap_or_else(|e| e.into_inner()) = new.mailboxes.clone();
    info!(
        added = ?summary.added,
        removed = ?summary.removed,
        changed = ?summary.changed,
        "configuration reloaded"
    );
    if !summary.need_restart.is_empty() {
        warn!(settings = ?summary.need_restart, "these settings changed but apply only after a restart");
    }
    // What the service keeps running with; settings needing a restart stay as they are.
    current.mailboxes = new.mailboxes;
    current.other_shards = new.other_shards;
    Ok(summary)
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
    // A refresh token an OAuth2 endpoint rotated during an earlier run is in the state:
    // present that one (and keep the next), or the provider may revoke them all. While
    // a service holds the state it cannot be opened, and the configured token is used.
    let oauth2 = config.mailboxes.iter().any(|m| m.server.oauth2.is_some());
    let ledger = (oauth2 && config.state_dir.exists())
        .then(|| Ledger::open(&config.state_dir, Watchdog::default()).ok())
        .flatten();
    if let Some(ledger) = &ledger {
        for mailbox in &config.mailboxes {
            if let Some(tokens) = &mailbox.server.oauth2 {
                tokens.keep_in(crate::oauth2::Keeper {
                    ledger: ledger.clone(),
                    expiry: None,
                });
            }
        }
    }
    let reports = check_all(config).await;
    if let Some(ledger) = ledger {
        let _ = ledger.close().await;
    }
    reports
}

async fn check_all(config: &Config) -> Vec<CheckReport> {
    let mut tasks = JoinSet::new();
    for (index, mailbox) in config.mailboxes.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let result = check_one(&mailbox).await.map_err(|e| e.to_string());
            let report = CheckReport {
                address: format!(
                    "{}:{} (tls: {})",
                    mailbox.server.host,
                    mailbox.server.port,
                    mailbox.server.tls.name()
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
