//! One message from downloaded bytes to an answered POST: rendered on the blocking
//! pool (one parse per core), posted within the shutdown grace, reported to the sink.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::budget::Reservation;
use super::plan;
use super::session::Context;
use super::Mailbox;
use crate::delivery::formats::{self, Payload};
use crate::delivery::{DeliveryError, WebhookConfig};
use crate::event::{self, EventMeta};

/// What a POST task hands back.
pub(super) struct Posted {
    pub(super) fetch: plan::Fetch,
    pub(super) key: String,
    pub(super) id: String,
    /// `None`: abandoned because shutdown's grace ran out.
    pub(super) outcome: Option<Result<(), DeliveryError>>,
}

/// Builds the payload and POSTs it; runs as its own task so that parsing and the HTTP
/// round trips of several messages overlap with each other and with the next download.
/// Parsing and serialising a message over [`RENDER_IN_PLACE`] run on the blocking pool:
/// a large or hostile message must not hold up the reactor that serves every socket and
/// `/healthz`.
/// Messages up to this size are rendered on the task's own thread: well under a
/// millisecond of CPU, whatever they contain.
const RENDER_IN_PLACE: usize = 32 * 1024;

pub(super) async fn deliver(
    ctx: Context,
    target: Arc<Mailbox>,
    (fetch, key): (plan::Fetch, String),
    raw: Bytes,
    reservation: Reservation,
) -> Posted {
    let in_place = raw.len() <= RENDER_IN_PLACE;
    // `raw` moves into the render, so the message is let go of as soon as nothing made
    // from it needs it, not held until the POST is answered.
    let render = {
        let (target, key) = (target.clone(), key.clone());
        let truncated = fetch.headers_only;
        move || {
            let options = &target.event;
            let stash = options.storage.as_deref().map(|storage| event::Stash {
                storage,
                larger_than: options.store_larger_than,
                raw: options.raw_store,
            });
            formats::render_stashed(
                target.webhook.format,
                &EventMeta {
                    mailbox: &target.name,
                    uidl: &key,
                    received_at: time::OffsetDateTime::now_utc(),
                    include_raw: options.include_raw,
                    truncated,
                    attachments: options.attachments,
                    max_inline_attachment_size: options.max_inline_attachment_size,
                },
                &raw,
                stash.as_ref(),
            )
        }
    };
    let rendered = if in_place {
        // A small message takes less time to render than the two thread hand-offs of
        // the blocking pool (which were a fifth of pophook's CPU on a mailbox of
        // small messages).
        Ok(render())
    } else {
        // At most one parse per core at a time: more would only take turns with the
        // reactor's threads and make every socket (and /healthz) wait.
        let _slot = render_slots()
            .acquire()
            .await
            .expect("the render semaphore is never closed");
        tokio::task::spawn_blocking(render).await
    };
    let mailbox = target.name.as_str();
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(e) => {
            // Only when the runtime is shutting down (the builder contains panics):
            // nothing is recorded, so the message is fetched again later.
            warn!(mailbox, key, "building the event did not finish: {e}");
            let id = crate::ledger::event_id(mailbox, &key);
            return Posted {
                fetch,
                key,
                id,
                outcome: None,
            };
        }
    };
    if let Some(error) = &rendered.parse_error {
        warn!(mailbox, uidl = %fetch.uidl, "message could not be parsed; delivering it raw: {error}");
    }
    let id = rendered.id;
    let body = rendered.payload;
    // Every object the event links to is in the store before the event goes out, or
    // the event does not go out: a failed upload is a failed delivery.
    // One grace for both, so the message in hand never outlasts `shutdown_timeout`.
    let outcome = within_grace(&ctx, async {
        upload(&target.event, rendered.uploads).await?;
        post(&ctx, &target.webhook, &id, body).await
    })
    .await;
    if outcome.is_none() {
        // Stopped as asked, but not cleanly: the process's exit status says so.
        let what = format!("the POST of {id} (mailbox {mailbox}, UIDL {})", fetch.uidl);
        ctx.ledger.watchdog().abandoned(what);
    }
    drop(reservation);
    Posted {
        fetch,
        key,
        id,
        outcome,
    }
}

/// Runs `work` (the uploads and the POST of one message), but gives up once shutdown
/// was requested and two thirds of `shutdown_timeout` passed (the rest is for QUIT),
/// so SIGTERM ends the process in bounded time. `None`: abandoned, nothing recorded.
async fn within_grace<T>(ctx: &Context, work: impl std::future::Future<Output = T>) -> Option<T> {
    let mut shutdown = ctx.shutdown.clone();
    let grace = ctx.shutdown_timeout.mul_f64(2.0 / 3.0);
    tokio::select! {
        result = work => Some(result),
        _ = async { shutdown.requested().await; tokio::time::sleep(grace).await } => None,
    }
}

/// POSTs, and tells the sink how long it took and how it ended.
async fn post(
    ctx: &Context,
    webhook: &WebhookConfig,
    id: &str,
    body: Payload,
) -> Result<(), DeliveryError> {
    let started = tokio::time::Instant::now();
    let result = ctx.sender.post(webhook, id, body).await;
    ctx.sink
        .delivered(started.elapsed(), result.as_ref().map(|_| ()));
    result
}

/// Puts the event's objects in the store, one after the other, each buffer released as
/// soon as it is sent.
async fn upload(
    options: &event::Options,
    uploads: Vec<crate::storage::Upload>,
) -> Result<(), DeliveryError> {
    let Some(storage) = options.storage.as_deref().filter(|_| !uploads.is_empty()) else {
        return Ok(());
    };
    storage
        .confirm_bucket()
        .await
        .map_err(DeliveryError::Storage)?;
    for upload in uploads {
        storage.put(&upload).await.map_err(DeliveryError::Storage)?;
    }
    Ok(())
}

/// Parses in progress across the process, one per core.
fn render_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}
