//! One mailbox's delivery cycle: connect, list by UIDL, fetch what is new or due for a
//! retry, post it, and delete it only after the webhook's 2xx was recorded durably.
//! This is the only module that sends DELE or QUIT.

use std::collections::HashSet;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::config::Mailbox;
use crate::event::{self, EventMeta};
use crate::pop3::codec::CodecError;
use crate::pop3::{Pop3Error, Session};
use crate::shutdown::Shutdown;
use crate::state::{self, DisabledEndpoint, Record, State, StateError};
use crate::webhook::{DeliveryError, Sender};

/// What every cycle shares: where to post, where to remember, when to stop.
#[derive(Clone)]
pub struct Context {
    pub sender: Sender,
    pub state: State,
    pub shutdown: Shutdown,
    /// After shutdown is requested, how long the message in hand may take.
    pub shutdown_timeout: Duration,
}

/// What one cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Messages the server listed with a usable UIDL.
    pub listed: usize,
    /// Messages downloaded (whole, or headers only when oversized).
    pub fetched: usize,
    pub bytes_fetched: u64,
    /// Events the webhook accepted.
    pub delivered: usize,
    /// POSTs that failed; those messages stay on the server for a retry or are parked.
    pub failed: usize,
    /// Messages parked this cycle (retries exhausted).
    pub parked: usize,
    /// Listed messages that are parked (now or earlier) and wait for an operator.
    pub parked_listed: usize,
    /// Listed messages whose next retry is not due yet, or that were not tried
    /// because the endpoint was failing.
    pub waiting: usize,
    /// Messages marked for deletion (delivered now or in an earlier cycle).
    pub deleted: usize,
    /// Messages left alone: unusable or duplicate UIDL.
    pub skipped: usize,
    /// The endpoint answered 410 (now or earlier, for this configuration).
    pub endpoint_disabled: bool,
    /// Most listed UIDLs are unknown while most remembered ones vanished.
    pub renumbered: bool,
    /// The server's LOGIN-DELAY, if it announced one.
    pub login_delay: Option<Duration>,
}

impl CycleReport {
    /// Everything listed was delivered (now or before) or deliberately left alone, and
    /// nothing is waiting for a retry or an operator.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.waiting == 0 && self.parked_listed == 0 && !self.endpoint_disabled
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs one cycle: as many sessions as `commit_every` needs. On any error the current
/// POP3 session is dropped without QUIT, so nothing marked for deletion in it is
/// deleted; what was delivered is remembered and deleted by a later cycle.
pub async fn run_cycle(mailbox: &Mailbox, ctx: &Context) -> Result<CycleReport, CycleError> {
    let mut report = CycleReport::default();
    let fingerprint = mailbox.webhook.fingerprint();
    if let Some(gone) = ctx.state.disabled_endpoint(&mailbox.name, &fingerprint)? {
        error!(
            mailbox = %mailbox.name,
            url = %gone.url,
            "the webhook answered 410 Gone; nothing is posted and all mail stays on the server until the webhook configuration changes"
        );
        report.endpoint_disabled = true;
        return Ok(report);
    }
    let mut first = true;
    loop {
        let end = run_session(mailbox, ctx, &fingerprint, first, &mut report).await?;
        first = false;
        if end == SessionEnd::Finished || ctx.shutdown.is_requested() {
            return Ok(report);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Finished,
    /// QUIT after `commit_every` deletions; another session continues.
    CommitPoint,
}

async fn run_session(
    mailbox: &Mailbox,
    ctx: &Context,
    fingerprint: &str,
    first: bool,
    report: &mut CycleReport,
) -> Result<SessionEnd, CycleError> {
    let name = mailbox.name.as_str();
    let state = &ctx.state;
    let mut session = Session::connect(&mailbox.server).await?;
    report.login_delay = session.capabilities().login_delay();

    let listing = session.uidl().await?;
    let sizes = session.list().await?;
    if first {
        for reason in &listing.skipped {
            warn!(mailbox = name, "left on the server, not fetched: {reason}");
        }
        report.skipped = listing.skipped.len();
        report.listed = listing.entries.len();
        let present: HashSet<&str> = listing
            .entries
            .iter()
            .map(|(_, uid)| uid.as_str())
            .collect();
        report.renumbered = detect_renumbering(mailbox, state, &present)?;
        let pruned = state.prune(name, &present)?;
        if pruned > 0 {
            debug!(
                mailbox = name,
                pruned, "forgot messages no longer on the server"
            );
        }
    }

    let mut deletions = 0;
    // Set once the endpoint looks down: fetching more now would only fail them too.
    let mut endpoint_failing = false;
    for (number, uidl) in &listing.entries {
        if ctx.shutdown.is_requested() {
            info!(
                mailbox = name,
                "shutdown requested; ending the cycle after the message in hand"
            );
            break;
        }
        if deletions >= mailbox.commit_every {
            session.quit().await?;
            return Ok(SessionEnd::CommitPoint);
        }
        let number = *number;
        let record = state.get(name, uidl)?;
        let (attempts, known_oversized, since) = match &record {
            Some(Record::Delivered { .. }) => {
                // Delivered in an earlier session whose QUIT never happened (crash, drop).
                if mailbox.delete && dele(&mut session, name, number, uidl).await? {
                    deletions += 1;
                    report.deleted += 1;
                }
                continue;
            }
            Some(Record::Parked { .. }) => {
                report.parked_listed += 1;
                continue;
            }
            Some(Record::Announced { .. } | Record::Dropped { .. }) => continue,
            Some(Record::Retrying {
                next_attempt_ms, ..
            }) if *next_attempt_ms > state::now_ms() => {
                report.waiting += 1;
                continue;
            }
            Some(Record::Retrying {
                attempts,
                oversized,
                since,
                ..
            }) => (*attempts, *oversized, *since),
            None => (0, false, state::now()),
        };
        if endpoint_failing {
            report.waiting += 1;
            continue;
        }

        let limit = mailbox.server.max_message_size;
        let oversized = known_oversized || sizes.get(&number).is_some_and(|s| *s > limit as u64);
        let fetched = if oversized {
            session.top(number, 0).await
        } else {
            session.retr(number).await
        };
        let raw = match fetched {
            Ok(raw) => raw,
            Err(Pop3Error::Codec(CodecError::ResponseTooLarge { .. })) if !oversized => {
                // LIST understated the size. The connection is mid-response and must be
                // dropped; remember to fetch only the headers next time.
                warn!(mailbox = name, uidl, limit, "message grew past `max_message_size` while downloading; its headers will be posted as a truncated event");
                state.put(
                    name,
                    uidl,
                    &Record::Retrying {
                        attempts,
                        next_attempt_ms: 0,
                        last_error: format!("larger than max_message_size ({limit} bytes)"),
                        oversized: true,
                        since,
                    },
                )?;
                state.flush().await?;
                return Err(Pop3Error::Codec(CodecError::ResponseTooLarge { limit }).into());
            }
            Err(other) => return Err(other.into()),
        };
        report.fetched += 1;
        report.bytes_fetched += raw.len() as u64;
        if oversized {
            warn!(mailbox = name, uidl, limit, "message is larger than `max_message_size`: posting its headers only (truncated); it stays on the server");
        }
        let event = event::build_event(
            &EventMeta {
                mailbox: name,
                uidl,
                received_at: time::OffsetDateTime::now_utc(),
                include_raw: mailbox.webhook.include_raw,
                truncated: oversized,
                attachments: mailbox.webhook.attachments,
                max_inline_attachment_size: mailbox.webhook.max_inline_attachment_size,
            },
            &raw,
        );
        drop(raw);
        if let Some(error) = &event.data.parse_error {
            warn!(
                mailbox = name,
                uidl, "message could not be parsed; delivering it raw: {error}"
            );
        }
        let id = event.id().to_string();
        let body = serde_json::to_vec(&event).expect("an event always serialises");

        let Some(result) = post_within_grace(mailbox, ctx, &id, body).await else {
            warn!(mailbox = name, uidl, id, "shutdown grace ran out during the POST; the message stays on the server and is posted again (same webhook-id) after restart");
            break;
        };
        match result {
            Ok(()) => {
                // The order that makes deletion safe: record, make it durable, then DELE.
                let done = if oversized {
                    Record::Announced { at: state::now() }
                } else {
                    Record::Delivered { at: state::now() }
                };
                state.put(name, uidl, &done)?;
                state.flush().await?;
                report.delivered += 1;
                debug!(mailbox = name, uidl, id, "delivered");
                if mailbox.delete && !oversized && dele(&mut session, name, number, uidl).await? {
                    deletions += 1;
                    report.deleted += 1;
                }
            }
            Err(failure) if failure.is_gone() => {
                report.failed += 1;
                report.endpoint_disabled = true;
                error!(mailbox = name, url = %mailbox.webhook.url, "the webhook answered 410 Gone: no more events are posted for this mailbox and its mail stays on the server until the webhook configuration changes");
                state.disable_endpoint(
                    name,
                    &DisabledEndpoint {
                        fingerprint: fingerprint.to_string(),
                        url: mailbox.webhook.url.to_string(),
                        at: state::now(),
                    },
                )?;
                break;
            }
            Err(failure) => {
                report.failed += 1;
                endpoint_failing = failure.is_endpoint_unavailable();
                let failed = Failed {
                    attempts: attempts + 1,
                    oversized,
                    since,
                };
                if record_failure(mailbox, state, uidl, &id, failed, &failure)? {
                    report.parked += 1;
                    report.parked_listed += 1;
                }
            }
        }
    }

    // Failures and their schedules must survive a restart; QUIT commits this session's DELEs.
    state.flush().await?;
    session.quit().await?;
    Ok(SessionEnd::Finished)
}

/// A message whose latest attempt failed.
struct Failed {
    /// Attempts so far, this one included.
    attempts: u32,
    oversized: bool,
    /// When its first attempt failed.
    since: i64,
}

/// Schedules the next attempt, or parks the message when its retries are used up.
/// Returns whether it was parked.
fn record_failure(
    mailbox: &Mailbox,
    state: &State,
    uidl: &str,
    id: &str,
    failed: Failed,
    failure: &DeliveryError,
) -> Result<bool, StateError> {
    let name = mailbox.name.as_str();
    let Failed {
        attempts,
        oversized,
        since,
    } = failed;
    let delay = mailbox.webhook.retry.next_delay(
        attempts,
        failure.is_rejection(),
        failure.retry_after(),
        &mut rand::rng(),
    );
    let last_error = failure.to_string();
    match delay {
        Some(delay) => {
            warn!(mailbox = name, uidl, id, attempts, retry_in = ?delay, "not delivered ({last_error}); it stays on the server and is tried again");
            state.put(
                name,
                uidl,
                &Record::Retrying {
                    attempts,
                    next_attempt_ms: state::now_ms() + delay.as_millis() as i64,
                    last_error,
                    oversized,
                    since,
                },
            )?;
            Ok(false)
        }
        None => {
            error!(mailbox = name, uidl, id, attempts, "not delivered ({last_error}); retries exhausted, message PARKED on the server: see `pophook parked list`");
            state.put(
                name,
                uidl,
                &Record::Parked {
                    attempts,
                    last_error,
                    at: state::now(),
                    oversized,
                    since,
                },
            )?;
            Ok(true)
        }
    }
}

/// Posts, but gives up once shutdown was requested and `shutdown_timeout` passed, so
/// SIGTERM ends the process in bounded time. `None`: abandoned, nothing recorded.
async fn post_within_grace(
    mailbox: &Mailbox,
    ctx: &Context,
    id: &str,
    body: Vec<u8>,
) -> Option<Result<(), DeliveryError>> {
    let mut shutdown = ctx.shutdown.clone();
    // Two thirds for the POST, the rest for QUIT.
    let grace = ctx.shutdown_timeout.mul_f64(2.0 / 3.0);
    tokio::select! {
        result = ctx.sender.post(&mailbox.webhook, id, body) => Some(result),
        _ = async { shutdown.requested().await; tokio::time::sleep(grace).await } => None,
    }
}

/// A listing where most remembered UIDLs vanished and most listed ones are new looks
/// like a server that renumbered its UIDLs (a migration): every message is about to be
/// delivered again. Only records of messages expected to still be on the server count.
fn detect_renumbering(
    mailbox: &Mailbox,
    state: &State,
    present: &HashSet<&str>,
) -> Result<bool, StateError> {
    let expected: Vec<String> = state
        .records(Some(&mailbox.name))?
        .into_iter()
        .filter(|(_, _, r)| !(mailbox.delete && matches!(r, Record::Delivered { .. })))
        .map(|(_, uidl, _)| uidl)
        .collect();
    if expected.len() < 10 {
        return Ok(false);
    }
    let still_listed = expected
        .iter()
        .filter(|u| present.contains(u.as_str()))
        .count();
    let vanished = expected.len() - still_listed;
    let new = present.len() - still_listed;
    let renumbered = vanished * 2 > expected.len() && new * 2 >= expected.len();
    if renumbered {
        warn!(
            mailbox = %mailbox.name,
            remembered = expected.len(),
            vanished,
            new,
            "most remembered UIDLs are gone and most listed ones are new: the server may have renumbered its UIDLs (migration?); the new ones are delivered as new messages"
        );
    }
    Ok(renumbered)
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
