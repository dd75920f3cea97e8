//! One cycle of one mailbox: a single POP3 session that executes the planner's
//! decisions. Connect, list, DELE the leftovers, fetch what is new or due, post it,
//! record each outcome in the ledger, flush, DELE, and QUIT at the end of the cycle or
//! when `commit_interval` is exceeded. A failure that belongs to one message is
//! recorded against that message; only a broken connection ends the session early.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::budget::Budget;
use super::deliver::{deliver, Posted};
use super::plan::{self, Ending, Failure, Identified, Now};
use super::Mailbox;
use super::{CycleError, CycleReport};
use crate::delivery::Sender;
use crate::ledger::{DisabledEndpoint, Entry, Ledger, Record, Transition};
use crate::pop3::pipeline::{self, Deleted, FetchError, Pipeline};
use crate::pop3::{Pop3Error, Session};
use crate::shutdown::Shutdown;

/// What every cycle shares: where to post, where to remember, when to stop.
#[derive(Clone)]
pub struct Context {
    pub sender: Sender,
    /// Told about each POST (the service counts them per mailbox).
    pub sink: std::sync::Arc<dyn super::task::CycleSink>,
    pub ledger: Ledger,
    pub shutdown: Shutdown,
    /// After shutdown is requested, how long the message in hand may take.
    pub shutdown_timeout: Duration,
    /// Message bytes in flight across every mailbox.
    pub budget: Budget,
}

/// What the budget reserves for a headers-only download (`TOP n 0`).
const HEADERS_RESERVATION: u64 = 64 * 1024;

/// Acknowledged messages are flushed in batches of this many (and at the end of a
/// session): one fsync per batch instead of one per message. DELE waits for the flush
/// that covers it.
const FLUSH_BATCH: usize = 32;

/// Why a session stopped taking new messages.
enum Stop {
    Shutdown,
    /// The endpoint looks down: fetching more now would only fail them too.
    EndpointFailing,
    EndpointGone,
    /// `commit_interval` (or `commit_every`) reached: QUIT, and continue next cycle.
    CommitPoint,
    /// The connection is unusable; in-flight POSTs are still awaited and recorded.
    Broken(CycleError),
}

/// Runs one cycle: one session. `probe`: the endpoint failed recently, so only one
/// message is in flight until one POST succeeds. What the cycle did is in `report`
/// even when it fails.
pub async fn run_cycle(
    mailbox: &Mailbox,
    ctx: &Context,
    probe: bool,
    report: &mut CycleReport,
) -> Result<(), CycleError> {
    if ctx
        .ledger
        .disabled_endpoint(&mailbox.name, || mailbox.webhook.fingerprint())
        .is_some()
    {
        report.endpoint_disabled = true;
        return Ok(());
    }
    let mut cycle = Cycle {
        mailbox,
        ctx,
        report,
        probe,
        started: Instant::now(),
        deletions_sent: 0,
    };
    cycle.run().await
}

struct Cycle<'a> {
    mailbox: &'a Mailbox,
    ctx: &'a Context,
    report: &'a mut CycleReport,
    probe: bool,
    started: Instant,
    deletions_sent: usize,
}

impl Cycle<'_> {
    fn name(&self) -> &str {
        &self.mailbox.name
    }

    fn ledger(&self) -> &Ledger {
        &self.ctx.ledger
    }

    async fn run(&mut self) -> Result<(), CycleError> {
        let name = self.mailbox.name.clone();
        let mut session = Session::connect(&self.mailbox.server).await?;
        self.report.login_delay = session.capabilities().login_delay();
        let capabilities = session.capabilities();
        // Without CAPA nothing is known; TOP is tried and its refusal is a failure
        // against the message.
        let top = capabilities.lines().is_empty() || capabilities.has("TOP");
        let listing = session.uidl().await?;
        let sizes = session.list().await?;
        for reason in &listing.skipped {
            warn!(mailbox = %name, "left on the server, not fetched: {reason}");
        }
        self.report.skipped = listing.skipped.len();

        let settings = plan::Settings {
            delete: self.mailbox.delete,
            max_message_size: self.mailbox.server.max_message_size as u64,
            top,
        };
        let now = Now::current();
        let plan = self.ledger().with_book(&name, |book| {
            plan::plan(&listing.entries, &sizes, book, now, &settings)
        });
        drop(listing);
        self.report.listed = plan.listed;
        self.report.waiting += plan.waiting;
        self.report.parked_listed += plan.parked_listed;
        self.report.shared_uidl = plan.shared_uidl;
        self.report.renumbered = plan.renumbered;
        if plan.renumbered {
            warn!(mailbox = %name, "most remembered UIDLs are gone and most listed ones are new: the server may have renumbered its UIDLs (migration?); the new ones are delivered as new messages");
        }
        if plan.shared_uidl > 0 {
            info!(mailbox = %name, messages = plan.shared_uidl, "several messages share a UIDL (a server that derives UIDLs from headers?); they are told apart by their content");
        }
        let forgotten = plan.transitions.iter().filter(|t| t.to.is_none()).count();
        if forgotten > 0 {
            debug!(mailbox = %name, forgotten, "forgot messages missing from the server for a day or more");
        }
        // Planned on a copy of the book; a record an operator changed since then keeps
        // the change, and the next cycle plans from it.
        self.apply(plan.transitions);
        for (key, size) in &plan.unfetchable {
            let failure = Failure {
                reason: format!(
                    "larger than max_message_size ({} bytes, {size} listed) and the server has no TOP to fetch its headers; raise `max_message_size`",
                    self.mailbox.server.max_message_size
                ),
                rejected: false,
                retry_after: None,
                oversized: true,
                dropped: false,
            };
            self.record_failure(key, &failure);
            self.report.fetch_failed += 1;
        }

        let mut pipe = Pipeline::new(session);
        // Leftovers first: delivered and flushed in an earlier session whose QUIT never
        // came. Their records are durable already.
        for (number, key) in plan.deletes {
            pipe.dele(number, key).await?;
        }
        let mut fetches: HashMap<u32, plan::Fetch> = HashMap::new();
        for fetch in plan.fetches {
            pipe.queue(pipeline::Fetch {
                number: fetch.number,
                uidl: fetch.uidl.clone(),
                headers_only: fetch.headers_only,
                expected_size: fetch.size.min(settings.max_message_size) as usize,
            });
            fetches.insert(fetch.number, fetch);
        }

        let stop = self.deliver_all(&mut pipe, &mut fetches).await;
        // Failures and their schedules must survive a restart too.
        let flushed = self.ledger().flush().await;
        if matches!(stop, Some(Stop::EndpointFailing | Stop::EndpointGone)) {
            self.report.waiting += pipe.remaining();
        }
        if matches!(stop, Some(Stop::CommitPoint)) && pipe.remaining() > 0 {
            self.report.more = true;
        }
        if let Some(Stop::Broken(error)) = stop {
            let deleted = self.count_deleted(&mut pipe);
            self.commit(&deleted, Ending::Broken);
            return Err(error);
        }
        flushed?;
        pipe.drain().await?;
        let deleted = self.count_deleted(&mut pipe);
        // QUIT commits this session's DELEs.
        let quit = pipe.into_session().quit().await;
        let ending = match &quit {
            Ok(()) => Ending::QuitAccepted,
            Err(Pop3Error::Server { .. }) => Ending::QuitRefused,
            Err(_) => Ending::Broken,
        };
        self.commit(&deleted, ending);
        Ok(quit?)
    }

    /// Records what the session's end did to its DELEs, as the planner decides.
    fn commit(&self, deleted: &[Deleted], ending: Ending) {
        let transitions = self
            .ledger()
            .with_book(self.name(), |book| plan::committed(deleted, ending, book));
        self.apply(transitions);
    }

    /// Applies the planner's transitions; one whose record changed since it was read
    /// (an operator's replay or drop) is skipped rather than undoing the change.
    fn apply(&self, transitions: Vec<Transition>) {
        let stale = self.ledger().apply(self.name(), transitions);
        if !stale.is_empty() {
            debug!(mailbox = %self.name(), records = stale.len(), "records changed while the session decided about them (an operator's replay or drop?); they keep the change");
        }
    }

    /// Downloads and posts until the queue is empty or something stops the session;
    /// records every outcome and DELEs what was delivered once its record is durable.
    async fn deliver_all(
        &mut self,
        pipe: &mut Pipeline,
        fetches: &mut HashMap<u32, plan::Fetch>,
    ) -> Option<Stop> {
        let name = self.mailbox.name.clone();
        let mailbox = Arc::new(self.mailbox.clone());
        let mut in_flight = if self.probe {
            1
        } else {
            self.mailbox.webhook.max_in_flight
        };
        let limit = self.mailbox.server.max_message_size;
        let mut posts: JoinSet<Posted> = JoinSet::new();
        let mut unflushed = 0;
        let mut to_delete: Vec<(u32, String)> = Vec::new();
        let mut stop: Option<Stop> = None;
        loop {
            while stop.is_none() && posts.len() < in_flight && pipe.remaining() > 0 {
                if self.ctx.shutdown.is_requested() {
                    info!(
                        mailbox = %name,
                        "shutdown requested; finishing the messages in hand"
                    );
                    stop = Some(Stop::Shutdown);
                    break;
                }
                if self.commit_due(to_delete.len() + posts.len()) {
                    stop = Some(Stop::CommitPoint);
                    break;
                }
                // Room in the process-wide budget (for the message and its body)
                // before the download starts; given back once its POST is answered.
                let reservation = match pipe.next_fetch() {
                    Some(next) if next.headers_only => {
                        self.ctx.budget.reserve(HEADERS_RESERVATION).await
                    }
                    Some(next) => {
                        let size = next.expected_size as u64;
                        self.ctx.budget.reserve_message(size).await
                    }
                    None => break,
                };
                let (fetched, raw) = match pipe.next_message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(FetchError { fetch, error }) => {
                        let planned = fetch.as_ref().and_then(|f| fetches.remove(&f.number));
                        if let Some(broken) = self.fetch_failed(planned, error) {
                            stop = Some(broken);
                        }
                        continue;
                    }
                };
                let Some(fetch) = fetches.remove(&fetched.number) else {
                    continue;
                };
                self.report.fetched += 1;
                self.report.bytes_fetched += raw.len() as u64;
                let key = match &fetch.key {
                    Some(key) => key.clone(),
                    None => {
                        let digest = hex(&Sha256::digest(&raw));
                        let now = Now::current();
                        let delete = self.mailbox.delete;
                        let (key, action) = self.ledger().with_book(&name, |book| {
                            plan::identify(&fetch.uidl, &digest, book, now, delete)
                        });
                        match action {
                            Identified::Post => key,
                            Identified::Delete => {
                                to_delete.push((fetch.number, key));
                                continue;
                            }
                            Identified::Leave => continue,
                        }
                    }
                };
                if fetch.headers_only {
                    warn!(mailbox = %name, uidl = %fetch.uidl, limit, "message is larger than `max_message_size`: posting its headers only (truncated); it stays on the server");
                }
                posts.spawn(deliver(
                    self.ctx.clone(),
                    mailbox.clone(),
                    (fetch, key),
                    raw,
                    reservation,
                ));
            }

            let Some(joined) = posts.join_next().await else {
                // Nothing in flight; deliveries still waiting for a flush are handled
                // below before the loop ends.
                if unflushed > 0 || !to_delete.is_empty() {
                    if let Err(e) = self.flush_and_delete(pipe, &mut to_delete).await {
                        stop = Some(Stop::Broken(e));
                    }
                }
                break;
            };
            match joined {
                Ok(posted) => {
                    let delivered = matches!(posted.outcome, Some(Ok(())));
                    if let Some(reason) = self.record_outcome(posted, &mut to_delete) {
                        stop.get_or_insert(reason);
                    }
                    if delivered {
                        unflushed += 1;
                        if self.probe {
                            // The endpoint answers again: back to full speed.
                            self.probe = false;
                            in_flight = self.mailbox.webhook.max_in_flight;
                        }
                    }
                }
                Err(e) => {
                    // Nothing was recorded for it, so it stays on the server and is retried.
                    error!(mailbox = %name, "a delivery task failed: {e}");
                    self.report.failed += 1;
                }
            }
            if self.probe && self.report.failed > 0 {
                stop.get_or_insert(Stop::EndpointFailing);
            }

            // The order that makes deletion safe: recorded, flushed, then DELE. One
            // flush per batch: DELEs take effect at QUIT anyway.
            let nothing_left = posts.is_empty() && (stop.is_some() || pipe.remaining() == 0);
            if unflushed >= FLUSH_BATCH
                || (nothing_left && (unflushed > 0 || !to_delete.is_empty()))
            {
                unflushed = 0;
                if matches!(stop, Some(Stop::Broken(_))) {
                    continue;
                }
                if let Err(e) = self.flush_and_delete(pipe, &mut to_delete).await {
                    stop = Some(Stop::Broken(e));
                }
            }
        }
        stop
    }

    /// `commit_interval` passed, or `commit_every` DELEs are pending: time to QUIT.
    fn commit_due(&self, pending_deletions: usize) -> bool {
        self.started.elapsed() >= self.mailbox.commit_interval
            || self
                .mailbox
                .commit_every
                .is_some_and(|cap| self.deletions_sent + pending_deletions >= cap)
    }

    async fn flush_and_delete(
        &mut self,
        pipe: &mut Pipeline,
        to_delete: &mut Vec<(u32, String)>,
    ) -> Result<(), CycleError> {
        self.ledger().flush().await?;
        if !self.mailbox.delete {
            to_delete.clear();
            return Ok(());
        }
        for (number, key) in to_delete.drain(..) {
            pipe.dele(number, key).await?;
            self.deletions_sent += 1;
        }
        Ok(())
    }

    /// A download failed. A refusal (`-ERR` to RETR/TOP) leaves the session usable; a
    /// message that outgrew the limit, a dropped connection or a timeout end it. Each
    /// is an attempt against the message, so it cannot hold up the others.
    fn fetch_failed(&mut self, fetch: Option<plan::Fetch>, error: Pop3Error) -> Option<Stop> {
        let name = self.mailbox.name.clone();
        let Some(fetch) = fetch else {
            // The reply to a DELE: the session is out of step.
            return Some(Stop::Broken(error.into()));
        };
        // A shared UIDL has no key before its content is known: its failures count
        // against the UIDL and its position, which is the best identity there is.
        let key = fetch
            .key
            .clone()
            .unwrap_or_else(|| plan::position_key(&fetch.uidl, fetch.number));
        let verb = if fetch.headers_only { "TOP" } else { "RETR" };
        self.report.fetch_failed += 1;
        match &error {
            Pop3Error::Server { reply, .. } => {
                warn!(mailbox = %name, uidl = %fetch.uidl, "the server refused {verb} ({reply}); counted as a failed attempt for this message, the others continue");
                let failure = Failure {
                    reason: format!("the server refused {verb}: {reply}"),
                    rejected: false,
                    retry_after: None,
                    oversized: false,
                    dropped: false,
                };
                self.record_failure(&key, &failure);
                None
            }
            Pop3Error::TooLarge { limit, .. } if !fetch.headers_only => {
                warn!(mailbox = %name, uidl = %fetch.uidl, limit, "message grew past `max_message_size` while downloading; its headers will be posted as a truncated event");
                let previous = self.ledger().entry(&name, &key);
                let record = plan::grew_too_large(
                    previous.as_ref().map(|e| &e.record),
                    *limit as u64,
                    Now::current(),
                );
                self.apply(vec![Transition {
                    key,
                    from: previous,
                    to: Some(Entry::new(record)),
                }]);
                Some(Stop::Broken(error.into()))
            }
            _ => {
                warn!(mailbox = %name, uidl = %fetch.uidl, "downloading the message failed ({error}); remembered against this message, so one that always breaks the connection is retried on its schedule and parked instead of holding up the others");
                let failure = Failure {
                    reason: format!("downloading failed: {error}"),
                    rejected: false,
                    retry_after: None,
                    oversized: false,
                    dropped: true,
                };
                self.record_failure(&key, &failure);
                Some(Stop::Broken(error.into()))
            }
        }
    }

    /// Writes the next record after a failed attempt; counts and logs a parking.
    fn record_failure(&mut self, key: &str, failure: &Failure) {
        let name = self.mailbox.name.clone();
        let previous = self.ledger().entry(&name, key);
        let record = plan::failed(
            previous.as_ref().map(|e| &e.record),
            failure,
            Now::current(),
            &self.mailbox.webhook.retry,
            &mut rand::rng(),
        );
        let id = crate::ledger::event_id(&name, key);
        match &record {
            Record::Retrying {
                attempts, delay_ms, ..
            } => {
                warn!(mailbox = %name, key, id, attempts, retry_in_ms = delay_ms.unwrap_or(0), "not delivered ({}); it stays on the server and is tried again", failure.reason);
            }
            Record::Parked { attempts, .. } => {
                error!(mailbox = %name, key, id, attempts, "not delivered ({}); retries exhausted, message PARKED on the server: see `pophook parked list`", failure.reason);
                self.report.parked += 1;
                self.report.parked_listed += 1;
            }
            _ => {}
        }
        self.apply(vec![Transition {
            key: key.to_string(),
            from: previous,
            to: Some(Entry::new(record)),
        }]);
    }

    /// Writes the outcome of one POST: delivered, a retry, parked, or the endpoint
    /// disabled. Flushed later, in batches.
    fn record_outcome(
        &mut self,
        posted: Posted,
        to_delete: &mut Vec<(u32, String)>,
    ) -> Option<Stop> {
        let name = self.mailbox.name.clone();
        match posted.outcome {
            Some(Ok(())) => {
                let record =
                    plan::delivered(posted.fetch.headers_only, posted.fetch.size, Now::current());
                // Not compared: the webhook took it, whatever the record says by now, and
                // it must never be posted again.
                self.ledger().put(&name, &posted.key, Entry::new(record));
                self.report.delivered += 1;
                debug!(mailbox = %name, key = %posted.key, id = %posted.id, "delivered");
                if !posted.fetch.headers_only {
                    to_delete.push((posted.fetch.number, posted.key));
                }
                None
            }
            Some(Err(failure)) if failure.is_gone() => {
                self.report.failed += 1;
                if !self.report.endpoint_disabled {
                    self.report.endpoint_disabled = true;
                    let url = self.mailbox.webhook.display_url();
                    error!(mailbox = %name, url = %url, "the webhook answered 410 Gone: no more events are posted for this mailbox and its mail stays on the server until the webhook configuration changes");
                    self.ledger().disable_endpoint(
                        &name,
                        DisabledEndpoint {
                            fingerprint: self.mailbox.webhook.fingerprint(),
                            url,
                            at: crate::ledger::now(),
                        },
                    );
                }
                Some(Stop::EndpointGone)
            }
            Some(Err(failure)) => {
                self.report.failed += 1;
                let stop = failure.is_endpoint_unavailable().then(|| {
                    self.report.endpoint_failing = true;
                    Stop::EndpointFailing
                });
                let reason = Failure {
                    reason: failure.to_string(),
                    rejected: failure.is_rejection(),
                    retry_after: failure.retry_after(),
                    oversized: posted.fetch.headers_only,
                    dropped: false,
                };
                self.record_failure(&posted.key, &reason);
                stop
            }
            None => {
                warn!(mailbox = %name, key = %posted.key, id = %posted.id, "shutdown grace ran out during the POST; the message stays on the server and is posted again (same webhook-id) after restart");
                Some(Stop::Shutdown)
            }
        }
    }

    /// Counts the DELEs the server answered, and returns them.
    fn count_deleted(&mut self, pipe: &mut Pipeline) -> Vec<Deleted> {
        let deleted = pipe.take_deleted();
        let mut refused = deleted
            .iter()
            .filter_map(|d| Some((&d.uidl, d.result.as_ref().err()?)));
        let refused_count = refused.clone().count();
        self.report.deleted += deleted.len() - refused_count;
        self.report.dele_refused += refused_count;
        if let Some((key, reply)) = refused.next() {
            // One line per cycle, however many: a read-only maildrop refuses them all.
            warn!(mailbox = %self.name(), refused = refused_count, example = %key, "the server refused DELE ({reply}); those messages were delivered and stay on the server; DELE is tried again next cycle");
        }
        deleted
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
