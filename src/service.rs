//! Every mailbox at once: `run` polls each on its own interval until shutdown, `once`
//! does one cycle of each, `check` logs in and reports without changing anything.

use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{Config, Mailbox};
use crate::mailbox::{self, CycleReport};
use crate::pop3::Session;
use crate::shutdown::Shutdown;
use crate::state::{State, StateError};
use crate::webhook::Sender;

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
    let state = State::open(&config.state_dir)?;
    let sender = Sender::new()?;
    let shutdown = Shutdown::never();
    let mut tasks = JoinSet::new();
    for (index, mailbox) in config.mailboxes.iter().cloned().enumerate() {
        let (state, sender, shutdown) = (state.clone(), sender.clone(), shutdown.clone());
        tasks.spawn(async move {
            let result = mailbox::run_cycle(&mailbox, &sender, &state, &shutdown).await;
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
    state.flush().await?;
    Ok(outcomes.into_iter().map(|(_, outcome)| outcome).collect())
}

/// Polls every mailbox on its own interval until `shutdown` fires; a cycle in progress
/// finishes the message in hand and QUITs before its task ends.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), ServiceError> {
    let state = State::open(&config.state_dir)?;
    let sender = Sender::new()?;
    info!(
        mailboxes = config.mailboxes.len(),
        state_dir = %config.state_dir.display(),
        "pophook started"
    );
    let mut tasks = JoinSet::new();
    for mailbox in config.mailboxes {
        let (state, sender, shutdown) = (state.clone(), sender.clone(), shutdown.clone());
        tasks.spawn(poll_forever(mailbox, sender, state, shutdown));
    }
    tasks.join_all().await;
    state.flush().await?;
    info!("pophook stopped");
    Ok(())
}

async fn poll_forever(mailbox: Mailbox, sender: Sender, state: State, mut shutdown: Shutdown) {
    while !shutdown.is_requested() {
        let result = mailbox::run_cycle(&mailbox, &sender, &state, &shutdown).await;
        log_cycle(&mailbox, &result);
        tokio::select! {
            _ = tokio::time::sleep(mailbox.poll_interval) => {}
            _ = shutdown.requested() => {}
        }
    }
}

fn log_cycle(mailbox: &Mailbox, result: &Result<CycleReport, mailbox::CycleError>) {
    let name = mailbox.name.as_str();
    match result {
        Ok(r) if r.failed > 0 => warn!(
            mailbox = name,
            listed = r.listed,
            delivered = r.delivered,
            failed = r.failed,
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

/// How long `run` may take to wind down after a signal before it gives up waiting.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
