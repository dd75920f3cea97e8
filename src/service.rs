//! Every mailbox at once: `run` polls each on its own interval until shutdown, `once`
//! does one cycle of each, `check` logs in and reports without changing anything.

use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{Config, Mailbox};
use crate::mailbox::{self, Context, CycleError, CycleReport};
use crate::parked::{self, ParkedMessage};
use crate::pop3::codec::ResponseCode;
use crate::pop3::Session;
use crate::retry::mailbox_backoff;
use crate::shutdown::Shutdown;
use crate::state::{self, State, StateError};
use crate::webhook::Sender;

/// The longest a mailbox waits after repeated failed sessions (network, `[IN-USE]`).
const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// The longest a mailbox waits after repeated rejected logins: long enough not to lock
/// the account, short enough that a fixed password is noticed within the hour.
const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);
/// Never poll more often than this, even when a retry is due "immediately".
const MIN_WAKE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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
    let mut tasks = JoinSet::new();
    for (index, mailbox) in config.mailboxes.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let result = mailbox::run_cycle(&mailbox, &ctx).await;
            log_cycle(&mailbox, &result);
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

/// Replays parked messages: gives them a fresh schedule and runs one cycle of each
/// mailbox concerned, which posts them and deletes them after a 2xx.
pub async fn replay(
    config: &Config,
    mailbox: Option<&str>,
    ids: &[String],
) -> Result<(Vec<ParkedMessage>, Vec<MailboxOutcome>), ReplayError> {
    let ctx = context(config, Shutdown::never())?;
    let selected = parked::select(&ctx.state, mailbox, ids)?;
    parked::unpark(&ctx.state, &selected).await?;
    let mut outcomes = Vec::new();
    for mailbox in &config.mailboxes {
        if selected.iter().any(|p| p.mailbox == mailbox.name) {
            let result = mailbox::run_cycle(mailbox, &ctx).await;
            log_cycle(mailbox, &result);
            outcomes.push(MailboxOutcome {
                mailbox: mailbox.name.clone(),
                result: result.map_err(|e| e.to_string()),
            });
        }
    }
    ctx.state.flush().await?;
    Ok((selected, outcomes))
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
/// finishes the message in hand and QUITs before its task ends.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ServiceError> {
    let ctx = context(&config, shutdown)?;
    info!(
        mailboxes = config.mailboxes.len(),
        state_dir = %config.state_dir.display(),
        "pophook started"
    );
    let mut tasks = JoinSet::new();
    for mailbox in config.mailboxes {
        tasks.spawn(poll_forever(mailbox, ctx.clone()));
    }
    tasks.join_all().await;
    ctx.state.flush().await?;
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

async fn poll_forever(mailbox: Mailbox, ctx: Context) {
    let mut shutdown = ctx.shutdown.clone();
    let mut failures = 0;
    let mut login_delay = None;
    while !shutdown.is_requested() {
        let result = mailbox::run_cycle(&mailbox, &ctx).await;
        log_cycle(&mailbox, &result);
        let wait = match &result {
            Ok(report) => {
                failures = 0;
                login_delay = report.login_delay.or(login_delay);
                next_poll(&mailbox, &ctx.state, login_delay)
            }
            Err(error) => {
                failures += 1;
                let wait = backoff_after(&mailbox, error, failures, login_delay);
                warn!(mailbox = %mailbox.name, failures, next_try_in = ?wait, "backing off after a failed session");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
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
