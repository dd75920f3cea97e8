//! One mailbox's delivery cycle: connect, list by UIDL, fetch what is new, post it, and
//! delete it only after the webhook's 2xx was recorded durably. This is the only
//! module that sends DELE or QUIT.

use std::collections::HashSet;

use tracing::{debug, info, warn};

use crate::config::Mailbox;
use crate::event::{self, EventMeta};
use crate::pop3::{Pop3Error, Session};
use crate::shutdown::Shutdown;
use crate::state::{State, StateError};
use crate::webhook::Sender;

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Messages the server listed with a usable UIDL.
    pub listed: usize,
    /// Messages downloaded this cycle.
    pub fetched: usize,
    /// Messages the webhook accepted this cycle.
    pub delivered: usize,
    /// Messages whose POST failed; they stay on the server and are tried next cycle.
    pub failed: usize,
    /// Messages marked for deletion (delivered now or in an earlier cycle).
    pub deleted: usize,
    /// Messages left alone: unusable or duplicate UIDL, or over `max_message_size`.
    pub skipped: usize,
}

impl CycleReport {
    /// Everything listed was either delivered (now or before) or deliberately left alone.
    pub fn is_clean(&self) -> bool {
        self.failed == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs one cycle. On any error the POP3 session is dropped without QUIT, so nothing
/// marked for deletion in it is deleted; what was delivered is remembered in the state
/// and deleted by a later cycle.
pub async fn run_cycle(
    mailbox: &Mailbox,
    sender: &Sender,
    state: &State,
    shutdown: &Shutdown,
) -> Result<CycleReport, CycleError> {
    let name = mailbox.name.as_str();
    let mut report = CycleReport::default();
    let mut session = Session::connect(&mailbox.server).await?;

    let listing = session.uidl().await?;
    for reason in &listing.skipped {
        warn!(mailbox = name, "left on the server, not fetched: {reason}");
    }
    report.skipped += listing.skipped.len();
    report.listed = listing.entries.len();
    let sizes = session.list().await?;

    let present: HashSet<&str> = listing
        .entries
        .iter()
        .map(|(_, uid)| uid.as_str())
        .collect();
    let pruned = state.prune(name, &present)?;
    if pruned > 0 {
        debug!(
            mailbox = name,
            pruned, "forgot messages no longer on the server"
        );
    }

    for (number, uidl) in &listing.entries {
        if shutdown.is_requested() {
            info!(mailbox = name, "shutdown requested; ending the cycle early");
            break;
        }
        let number = *number;
        if state.is_delivered(name, uidl)? {
            // Delivered in an earlier session whose QUIT never happened (crash, drop).
            if mailbox.delete && dele(&mut session, name, number, uidl).await? {
                report.deleted += 1;
            }
            continue;
        }
        let listed_size = sizes.get(&number).copied().unwrap_or(0);
        if listed_size > mailbox.server.max_message_size as u64 {
            warn!(
                mailbox = name,
                uidl,
                size = listed_size,
                limit = mailbox.server.max_message_size,
                "message is larger than `max_message_size`; left on the server, not fetched"
            );
            report.skipped += 1;
            continue;
        }

        let raw = session.retr(number).await?;
        report.fetched += 1;
        let event = event::build_event(
            &EventMeta {
                mailbox: name,
                uidl,
                received_at: time::OffsetDateTime::now_utc(),
                include_raw: mailbox.webhook.include_raw,
                truncated: false,
            },
            &raw,
        );
        if let Some(error) = &event.data.parse_error {
            warn!(
                mailbox = name,
                uidl, "message could not be parsed; delivering it raw: {error}"
            );
        }
        let id = event.id().to_string();
        let body = serde_json::to_vec(&event).expect("an event always serialises");
        drop(raw);

        match sender.post(&mailbox.webhook, &id, body).await {
            Ok(()) => {
                // The order that makes deletion safe: record, make it durable, then DELE.
                state.mark_delivered(name, uidl)?;
                state.flush().await?;
                report.delivered += 1;
                debug!(mailbox = name, uidl, id, "delivered");
                if mailbox.delete && dele(&mut session, name, number, uidl).await? {
                    report.deleted += 1;
                }
            }
            Err(error) => {
                report.failed += 1;
                warn!(
                    mailbox = name,
                    uidl, id, "not delivered, will retry next cycle: {error}"
                );
                if error.is_endpoint_unavailable() {
                    // Fetching more now would only download messages to fail them too.
                    break;
                }
            }
        }
    }

    // QUIT commits the DELEs of this session.
    session.quit().await?;
    Ok(report)
}

/// DELE; a `-ERR` is logged and the message stays (it is delivered and remembered, so
/// a later cycle tries again). A broken connection is an error.
async fn dele(
    session: &mut Session,
    mailbox: &str,
    number: u32,
    uidl: &str,
) -> Result<bool, Pop3Error> {
    match session.dele(number).await {
        Ok(()) => Ok(true),
        Err(Pop3Error::Server { reply, .. }) => {
            warn!(
                mailbox,
                uidl, "server refused DELE ({reply}); will try again next cycle"
            );
            Ok(false)
        }
        Err(other) => Err(other),
    }
}
