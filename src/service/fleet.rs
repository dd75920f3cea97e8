//! The running service's mailbox tasks, and the loop that serves until shutdown:
//! it starts a task per mailbox, restarts the ones a reload changed, and ends the
//! service when a task reports a fatal error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Config;
use super::{log_shard, observed, upkeep, ServiceError};
use super::{LoadFn, Reloader};
use crate::mailbox::task;
use crate::mailbox::Mailbox;
use crate::mailbox::{Context, CycleError};
use crate::ops::api::{self, Api};
use crate::ops::monitor::Monitor;
use crate::ops::reload::{ReloadHandle, ReloadSummary};
use crate::ops::shard::Shard;

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
        let wake = monitor.wake_handle();
        let ctx = observed(
            &Context {
                shutdown: stop_signal,
                ..self.ctx.clone()
            },
            &mailbox,
            monitor,
        );
        let not_before = self.handoff.remove(name);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.live.insert(name.to_string(), generation);
        let name = name.to_string();
        self.tasks.spawn(async move {
            let result = task::poll_forever(mailbox, ctx, wake, retire_signal, not_before).await;
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

pub(super) async fn serve(
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
    let shard = Arc::new(std::sync::RwLock::new(config.shard));
    let server = listener.map(|listener| {
        let api = Api {
            ledger: ctx.ledger.clone(),
            monitor: monitor.clone(),
            mailboxes: mailboxes.clone(),
            shard: shard.clone(),
            shutdown: stop_signal.clone(),
            // Tests serve on a listener of their own without `http`: loopback, open.
            http: config.http.clone().unwrap_or_else(|| {
                crate::ops::http::HttpConfig::open(
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
                        let outcome = reload(&mut current, load, &mut fleet, &mailboxes, &shard);
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
    shard: &std::sync::RwLock<Option<Shard>>,
) -> Result<ReloadSummary, String> {
    let new = match load() {
        Ok(config) => config,
        Err(e) => {
            error!("reload refused, the running configuration stays: {e}");
            return Err(e.to_string());
        }
    };
    let mut summary = fleet.apply(&new.mailboxes);
    summary.need_restart = need_restart(current, &new);
    *mailboxes.write().unwrap_or_else(|e| e.into_inner()) = new.mailboxes.clone();
    *shard.write().unwrap_or_else(|e| e.into_inner()) = new.shard;
    info!(
        added = ?summary.added,
        removed = ?summary.removed,
        changed = ?summary.changed,
        "configuration reloaded"
    );
    if !summary.need_restart.is_empty() {
        warn!(
            settings = %summary.need_restart.join(", "),
            "restart pophook to apply these changed settings; the reload applied everything else"
        );
    }
    // What the service keeps running with; settings needing a restart stay as they are.
    current.mailboxes = new.mailboxes;
    current.other_shards = new.other_shards;
    current.shard = new.shard;
    Ok(summary)
}

/// The keys of `new` that differ from what the service runs with and that only a
/// restart applies, by name (never by value: `http.token` is a secret), sorted. They are
/// read once at start: the listener and its limits, the opened state, the grace and
/// memory budget every task shares.
fn need_restart(current: &Config, new: &Config) -> Vec<String> {
    // Taken apart field by field, so a new setting cannot compile without a decision
    // here: applied by a reload, or named as needing a restart.
    let Config {
        state_dir,
        shutdown_timeout,
        max_memory,
        http,
        // Applied: the mailboxes (shard and storage settings reach them through the
        // configuration) and the names other shards poll.
        mailboxes: _,
        shard: _,
        other_shards: _,
        storage: _,
    } = new;
    let mut keys: Vec<String> = [
        ("state_dir", *state_dir != current.state_dir),
        (
            "shutdown_timeout",
            *shutdown_timeout != current.shutdown_timeout,
        ),
        ("max_memory", *max_memory != current.max_memory),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .chain(crate::ops::reload::http_changes(
        current.http.as_ref(),
        http.as_ref(),
    ))
    .collect();
    keys.sort();
    keys
}
