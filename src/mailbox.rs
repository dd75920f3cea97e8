//! One mailbox's delivery cycle: connect, list by UIDL, fetch what is new or due for a
//! retry, post it, and delete it only after the webhook's 2xx was recorded durably.
//! This is the only module that sends DELE or QUIT.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::Mailbox;
use crate::event::EventMeta;
use crate::formats::{self, Payload};
use crate::pop3::pipeline::{Fetch, FetchError, Pipeline};
use crate::pop3::{Pop3Error, Session};
use crate::shutdown::Shutdown;
use crate::state::{self, DisabledEndpoint, Record, State, StateError};
use crate::webhook::{DeliveryError, Sender, WebhookConfig};

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
    run_cycle_into(mailbox, ctx, &mut report).await?;
    Ok(report)
}

/// [`run_cycle`], filling a report the caller owns: when the cycle fails, what it did
/// before the failure (fetched, delivered, parked) is still there for metrics and
/// backoff.
pub async fn run_cycle_into(
    mailbox: &Mailbox,
    ctx: &Context,
    report: &mut CycleReport,
) -> Result<(), CycleError> {
    let fingerprint = mailbox.webhook.fingerprint();
    if let Some(gone) = ctx.state.disabled_endpoint(&mailbox.name, &fingerprint)? {
        error!(
            mailbox = %mailbox.name,
            url = %gone.url,
            "the webhook answered 410 Gone; nothing is posted and all mail stays on the server until the webhook configuration changes"
        );
        report.endpoint_disabled = true;
        return Ok(());
    }
    let mut records = Records::load(&ctx.state, &mailbox.name)?;
    let mut first = true;
    loop {
        let end = run_session(mailbox, ctx, &fingerprint, first, &mut records, report).await?;
        first = false;
        if end == SessionEnd::Finished || ctx.shutdown.is_requested() {
            return Ok(());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Finished,
    /// QUIT after `commit_every` deletions; another session continues.
    CommitPoint,
}

/// The mailbox's records, read in one scan per cycle and kept in step with every
/// write, so a poll that finds nothing new stays cheap with 100,000 remembered UIDLs
/// and the sessions after a commit point don't read the whole state again.
struct Records<'a> {
    state: &'a State,
    mailbox: &'a str,
    map: HashMap<String, Record>,
}

impl<'a> Records<'a> {
    fn load(state: &'a State, mailbox: &'a str) -> Result<Self, StateError> {
        let map = state
            .records(Some(mailbox))?
            .into_iter()
            .map(|(_, uidl, record)| (uidl, record))
            .collect();
        Ok(Records {
            state,
            mailbox,
            map,
        })
    }

    /// Writes through to the state (durable at the next flush).
    fn put(&mut self, uidl: &str, record: Record) -> Result<(), StateError> {
        self.state.put(self.mailbox, uidl, &record)?;
        self.map.insert(uidl.to_string(), record);
        Ok(())
    }

    fn remove(&mut self, uidl: &str) -> Result<(), StateError> {
        self.state.remove(self.mailbox, uidl)?;
        self.map.remove(uidl);
        Ok(())
    }
}

/// Acknowledged messages are flushed to the state in batches of this many (and at the
/// end of a session): one fsync per batch instead of one per message. DELE waits for
/// the flush that covers it.
const FLUSH_BATCH: usize = 32;

/// Why a session stopped taking new messages.
enum Stop {
    Shutdown,
    /// The endpoint looks down: fetching more now would only fail them too.
    EndpointFailing,
    EndpointGone,
    CommitPoint,
    /// The session broke; in-flight POSTs are still awaited and recorded first.
    Failed(CycleError),
}

/// What a POST task hands back.
struct Posted {
    fetch: Fetch,
    id: String,
    /// `None`: abandoned because shutdown's grace ran out.
    outcome: Option<Result<(), DeliveryError>>,
}

async fn run_session(
    mailbox: &Mailbox,
    ctx: &Context,
    fingerprint: &str,
    first: bool,
    records: &mut Records<'_>,
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
        report.renumbered = detect_renumbering(mailbox, &records.map, &present);
        let gone: Vec<String> = records
            .map
            .keys()
            .filter(|u| !present.contains(u.as_str()))
            .cloned()
            .collect();
        let pruned = gone.len();
        for uidl in gone {
            records.remove(&uidl)?;
        }
        if pruned > 0 {
            debug!(
                mailbox = name,
                pruned, "forgot messages no longer on the server"
            );
        }
    }

    // Plan the session: deletions left over from earlier sessions go first, then the
    // messages that are new or due for a retry, in mailbox order.
    let mut pipe = Pipeline::new(session);
    let mut deletions = 0;
    let mut retries: HashMap<String, (u32, i64)> = HashMap::new();
    let now_ms = state::now_ms();
    let limit = mailbox.server.max_message_size;
    for (number, uidl) in &listing.entries {
        let (attempts, known_oversized, since) = match records.map.get(uidl) {
            Some(Record::Delivered { .. }) => {
                // Delivered in an earlier session whose QUIT never happened (crash, drop).
                if mailbox.delete && deletions < mailbox.commit_every {
                    pipe.dele(*number, uidl.clone()).await?;
                    deletions += 1;
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
            }) if *next_attempt_ms > now_ms => {
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
        let listed_size = sizes.get(number).copied().unwrap_or(0);
        retries.insert(uidl.clone(), (attempts, since));
        pipe.queue(Fetch {
            number: *number,
            uidl: uidl.clone(),
            headers_only: known_oversized || listed_size > limit as u64,
            expected_size: listed_size.min(limit as u64) as usize,
        });
    }

    let webhook = Arc::new(mailbox.webhook.clone());
    let mut posts: JoinSet<Posted> = JoinSet::new();
    // Recorded as delivered but not yet flushed; and, when deleting, not yet DELEd.
    let mut unflushed = 0;
    let mut to_delete: Vec<(u32, String)> = Vec::new();
    let mut stop: Option<Stop> = None;
    loop {
        // Start downloads and POSTs while there is room.
        while stop.is_none() && posts.len() < mailbox.webhook.max_in_flight && pipe.remaining() > 0
        {
            if ctx.shutdown.is_requested() {
                info!(
                    mailbox = name,
                    "shutdown requested; finishing the messages in hand"
                );
                stop = Some(Stop::Shutdown);
                break;
            }
            if deletions + to_delete.len() + posts.len() >= mailbox.commit_every {
                stop = Some(Stop::CommitPoint);
                break;
            }
            let (fetch, raw) = match pipe.next_message().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(FetchError { fetch, error }) => {
                    if let (Some(fetch), Pop3Error::TooLarge { .. }) = (&fetch, &error) {
                        remember_oversized(mailbox, records, fetch, &retries).await?;
                    }
                    stop = Some(Stop::Failed(error.into()));
                    break;
                }
            };
            report.fetched += 1;
            report.bytes_fetched += raw.len() as u64;
            if fetch.headers_only {
                warn!(mailbox = name, uidl = %fetch.uidl, limit, "message is larger than `max_message_size`: posting its headers only (truncated); it stays on the server");
            }
            posts.spawn(deliver(
                ctx.clone(),
                webhook.clone(),
                name.to_string(),
                fetch,
                raw,
            ));
        }

        let Some(joined) = posts.join_next().await else {
            break;
        };
        match joined {
            Ok(posted) => {
                let result =
                    record_outcome(mailbox, records, fingerprint, &retries, posted, report)?;
                if let Some(reason) = result.stop {
                    stop.get_or_insert(reason);
                }
                if let Some(deletion) = result.delete {
                    to_delete.push(deletion);
                }
                unflushed += usize::from(result.recorded_delivery);
            }
            Err(e) => {
                // Nothing was recorded for it, so it stays on the server and is retried.
                error!(mailbox = name, "a delivery task failed: {e}");
                report.failed += 1;
            }
        }

        // The order that makes deletion safe: recorded, flushed, then DELE. A flush is
        // only needed before DELEs, which take effect at QUIT anyway: so one per batch.
        let nothing_left = posts.is_empty() && (stop.is_some() || pipe.remaining() == 0);
        if unflushed >= FLUSH_BATCH || (nothing_left && unflushed > 0) {
            state.flush().await?;
            unflushed = 0;
            if !matches!(stop, Some(Stop::Failed(_))) {
                for (number, uidl) in to_delete.drain(..) {
                    if let Err(error) = pipe.dele(number, uidl).await {
                        stop = Some(Stop::Failed(error.into()));
                        break;
                    }
                    deletions += 1;
                }
            }
        }
    }

    // Failures and their schedules must survive a restart too.
    state.flush().await?;
    if matches!(stop, Some(Stop::EndpointFailing | Stop::EndpointGone)) {
        report.waiting += pipe.remaining();
    }
    if let Some(Stop::Failed(error)) = stop {
        // Dropped without QUIT: nothing marked in this session is deleted.
        count_deleted(&mut pipe, name, report);
        return Err(error);
    }
    pipe.drain().await?;
    count_deleted(&mut pipe, name, report);
    // QUIT commits this session's DELEs.
    pipe.into_session().quit().await?;
    Ok(match stop {
        Some(Stop::CommitPoint) => SessionEnd::CommitPoint,
        _ => SessionEnd::Finished,
    })
}

/// What handling one finished POST asks of the session loop.
struct Recorded {
    stop: Option<Stop>,
    /// Delete this message once the state is flushed.
    delete: Option<(u32, String)>,
    /// A delivery was written to the state (and awaits a flush).
    recorded_delivery: bool,
}

/// Writes the outcome of one POST to the state: delivered, a retry, parked, or the
/// endpoint disabled. Not flushed here; the session loop flushes in batches.
fn record_outcome(
    mailbox: &Mailbox,
    records: &mut Records<'_>,
    fingerprint: &str,
    retries: &HashMap<String, (u32, i64)>,
    posted: Posted,
    report: &mut CycleReport,
) -> Result<Recorded, StateError> {
    let name = mailbox.name.as_str();
    let uidl = posted.fetch.uidl.as_str();
    let mut recorded = Recorded {
        stop: None,
        delete: None,
        recorded_delivery: false,
    };
    match posted.outcome {
        Some(Ok(())) => {
            let done = if posted.fetch.headers_only {
                Record::Announced { at: state::now() }
            } else {
                Record::Delivered { at: state::now() }
            };
            records.put(uidl, done)?;
            recorded.recorded_delivery = true;
            report.delivered += 1;
            debug!(mailbox = name, uidl, id = %posted.id, "delivered");
            if mailbox.delete && !posted.fetch.headers_only {
                recorded.delete = Some((posted.fetch.number, posted.fetch.uidl.clone()));
            }
        }
        Some(Err(failure)) if failure.is_gone() => {
            report.failed += 1;
            recorded.stop = Some(Stop::EndpointGone);
            if !report.endpoint_disabled {
                report.endpoint_disabled = true;
                error!(mailbox = name, url = %mailbox.webhook.url, "the webhook answered 410 Gone: no more events are posted for this mailbox and its mail stays on the server until the webhook configuration changes");
                records.state.disable_endpoint(
                    name,
                    &DisabledEndpoint {
                        fingerprint: fingerprint.to_string(),
                        url: mailbox.webhook.url.to_string(),
                        at: state::now(),
                    },
                )?;
            }
        }
        Some(Err(failure)) => {
            report.failed += 1;
            if failure.is_endpoint_unavailable() {
                recorded.stop = Some(Stop::EndpointFailing);
            }
            let (attempts, since) = retries.get(uidl).copied().unwrap_or((0, state::now()));
            let failed = Failed {
                attempts: attempts + 1,
                oversized: posted.fetch.headers_only,
                since,
            };
            if record_failure(mailbox, records, uidl, &posted.id, failed, &failure)? {
                report.parked += 1;
                report.parked_listed += 1;
            }
        }
        None => {
            warn!(mailbox = name, uidl, id = %posted.id, "shutdown grace ran out during the POST; the message stays on the server and is posted again (same webhook-id) after restart");
            recorded.stop = Some(Stop::Shutdown);
        }
    }
    Ok(recorded)
}

/// Builds the event and POSTs it; runs as its own task so that parsing and the HTTP
/// round trips of several messages overlap with each other and with the next download.
async fn deliver(
    ctx: Context,
    webhook: Arc<WebhookConfig>,
    mailbox: String,
    fetch: Fetch,
    raw: Bytes,
) -> Posted {
    let rendered = formats::render(
        webhook.format,
        &EventMeta {
            mailbox: &mailbox,
            uidl: &fetch.uidl,
            received_at: time::OffsetDateTime::now_utc(),
            include_raw: webhook.include_raw,
            truncated: fetch.headers_only,
            attachments: webhook.attachments,
            max_inline_attachment_size: webhook.max_inline_attachment_size,
        },
        &raw,
    );
    drop(raw);
    if let Some(error) = &rendered.parse_error {
        warn!(mailbox, uidl = %fetch.uidl, "message could not be parsed; delivering it raw: {error}");
    }
    let id = rendered.id;
    let body = rendered.payload;
    let outcome = post_within_grace(&ctx, &webhook, &id, body).await;
    Posted { fetch, id, outcome }
}

/// LIST understated the size and the download hit `max_message_size`: remember it so
/// the next session fetches only the headers (this connection must be dropped).
async fn remember_oversized(
    mailbox: &Mailbox,
    records: &mut Records<'_>,
    fetch: &Fetch,
    retries: &HashMap<String, (u32, i64)>,
) -> Result<(), StateError> {
    let limit = mailbox.server.max_message_size;
    warn!(mailbox = %mailbox.name, uidl = %fetch.uidl, limit, "message grew past `max_message_size` while downloading; its headers will be posted as a truncated event");
    let (attempts, since) = retries
        .get(&fetch.uidl)
        .copied()
        .unwrap_or((0, state::now()));
    records.put(
        &fetch.uidl,
        Record::Retrying {
            attempts,
            next_attempt_ms: 0,
            last_error: format!("larger than max_message_size ({limit} bytes)"),
            oversized: true,
            since,
        },
    )?;
    records.state.flush().await
}

/// Counts the DELEs the server accepted; a refused one stays and is retried next cycle.
fn count_deleted(pipe: &mut Pipeline, mailbox: &str, report: &mut CycleReport) {
    for deleted in pipe.take_deleted() {
        match deleted.result {
            Ok(()) => report.deleted += 1,
            Err(reply) => {
                warn!(mailbox, uidl = %deleted.uidl, "server refused DELE ({reply}); will try again next cycle")
            }
        }
    }
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
    records: &mut Records<'_>,
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
            records.put(
                uidl,
                Record::Retrying {
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
            records.put(
                uidl,
                Record::Parked {
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

/// Posts, but gives up once shutdown was requested and most of `shutdown_timeout`
/// passed, so SIGTERM ends the process in bounded time. `None`: abandoned, nothing
/// recorded.
async fn post_within_grace(
    ctx: &Context,
    webhook: &WebhookConfig,
    id: &str,
    body: Payload,
) -> Option<Result<(), DeliveryError>> {
    let mut shutdown = ctx.shutdown.clone();
    // Two thirds for the POST, the rest for QUIT.
    let grace = ctx.shutdown_timeout.mul_f64(2.0 / 3.0);
    tokio::select! {
        result = ctx.sender.post(webhook, id, body) => Some(result),
        _ = async { shutdown.requested().await; tokio::time::sleep(grace).await } => None,
    }
}

/// A listing where most remembered UIDLs vanished and most listed ones are new looks
/// like a server that renumbered its UIDLs (a migration): every message is about to be
/// delivered again. Only records of messages expected to still be on the server count.
fn detect_renumbering(
    mailbox: &Mailbox,
    records: &HashMap<String, Record>,
    present: &HashSet<&str>,
) -> bool {
    let expected: Vec<&str> = records
        .iter()
        .filter(|(_, r)| !(mailbox.delete && matches!(r, Record::Delivered { .. })))
        .map(|(uidl, _)| uidl.as_str())
        .collect();
    if expected.len() < 10 {
        return false;
    }
    let still_listed = expected.iter().filter(|u| present.contains(*u)).count();
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
    renumbered
}
