//! The `http.listen` endpoint of a running service: liveness, readiness, Prometheus
//! metrics, and the management API that `pophook status` and `pophook parked` use while
//! the service holds the state (sled lets one process open it). It has no
//! authentication: keep it on loopback or a trusted network.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State as Extract};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::Mailbox;
use crate::ledger::{Ledger, StateError};
use crate::monitor::{Monitor, Readiness};
use crate::parked::{self, MailboxError, ParkedMessage, ReplayReport, SelectError};
use crate::shard::Shard;
use crate::shutdown::Shutdown;
use crate::status::{self, StatusReport};

/// How long a replay request waits for the mailboxes' cycles before answering with
/// what is still queued. The messages are delivered either way.
pub const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// What the endpoint reads and acts on: the running service's own state and monitor.
pub struct Api {
    pub ledger: Ledger,
    pub monitor: Arc<Monitor>,
    /// The mailboxes this instance polls.
    pub mailboxes: Vec<Mailbox>,
    pub shard: Option<Shard>,
    pub shutdown: Shutdown,
}

/// Serves until the service's shutdown fires.
pub async fn serve(listener: TcpListener, api: Api) -> std::io::Result<()> {
    let mut shutdown = api.shutdown.clone();
    axum::serve(listener, router(Arc::new(api)))
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .route("/api/parked", get(parked_list))
        .route("/api/parked/replay", post(parked_replay))
        .route("/api/parked/drop", post(parked_drop))
        .with_state(api)
}

/// 200 while nothing is stalled; 503 naming the stall (a state flush that does not
/// return) so a supervisor restarts a frozen process.
async fn healthz(Extract(api): Extract<Arc<Api>>) -> (StatusCode, String) {
    match api.ledger.watchdog().health() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn readyz(Extract(api): Extract<Arc<Api>>) -> (StatusCode, Json<Readiness>) {
    let readiness = api.monitor.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness))
}

async fn metrics(Extract(api): Extract<Arc<Api>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.monitor.render(),
    )
}

async fn api_status(Extract(api): Extract<Arc<Api>>) -> Result<Json<StatusReport>, ApiError> {
    let report = blocking(api, |api| {
        Ok(StatusReport {
            running: true,
            shard: api.shard.map(|s| s.to_string()),
            mailboxes: status::collect(&api.ledger, &api.mailboxes),
        })
    })
    .await?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct ParkedQuery {
    mailbox: Option<String>,
}

async fn parked_list(
    Extract(api): Extract<Arc<Api>>,
    Query(query): Query<ParkedQuery>,
) -> Result<Json<Vec<ParkedMessage>>, ApiError> {
    let list = blocking(api, move |api| {
        Ok(parked::list(&api.ledger, query.mailbox.as_deref()))
    })
    .await?;
    Ok(Json(list))
}

/// `POST /api/parked/replay`: all parked messages (of `mailbox`, if given), or `ids`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReplayRequest {
    #[serde(default)]
    pub mailbox: Option<String>,
    #[serde(default)]
    pub ids: Vec<String>,
}

/// Unparks the messages, wakes their mailboxes and waits (up to [`REPLAY_WAIT`]) for a
/// cycle of each that started after the unpark, then reports where each message stands.
async fn parked_replay(
    Extract(api): Extract<Arc<Api>>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<ReplayReport>, ApiError> {
    let selected = parked::select(&api.ledger, request.mailbox.as_deref(), &request.ids)?;
    parked::unpark(&api.ledger, &selected).await?;
    let mut errors = parked::unpolled(&selected, &api.mailboxes);
    let concerned: BTreeSet<&str> = selected.iter().map(|p| p.mailbox.as_str()).collect();
    let mut waits = Vec::new();
    for name in concerned {
        let Some(monitor) = api.monitor.mailbox(name) else {
            continue;
        };
        let mut cycles = monitor.cycles();
        // Cycles run one after another: the next one to start began after the unpark
        // and sees the messages due, whether or not one is running now.
        let target = cycles.borrow().started + 1;
        monitor.wake_now();
        waits.push(async move {
            let _ = cycles.wait_for(|c| c.finished >= target).await;
        });
    }
    let mut shutdown = api.shutdown.clone();
    tokio::select! {
        _ = wait_all(waits) => {}
        _ = tokio::time::sleep(REPLAY_WAIT) => {}
        _ = shutdown.requested() => {}
    }
    let messages = parked::outcomes(&api.ledger, &selected);
    for name in messages
        .iter()
        .map(|m| m.mailbox.as_str())
        .collect::<BTreeSet<_>>()
    {
        if let Some(monitor) = api.monitor.mailbox(name) {
            if let Some(error) = monitor.last_cycle_error() {
                errors.push(MailboxError {
                    mailbox: name.to_string(),
                    error,
                });
            }
        }
    }
    refresh_pending(&api, &selected);
    Ok(Json(ReplayReport { messages, errors }))
}

/// `POST /api/parked/drop`: the ids are required, so an empty request drops nothing.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DropRequest {
    pub ids: Vec<String>,
}

async fn parked_drop(
    Extract(api): Extract<Arc<Api>>,
    Json(request): Json<DropRequest>,
) -> Result<Json<Vec<ParkedMessage>>, ApiError> {
    if request.ids.is_empty() {
        return Err(ApiError::bad_request(
            "name the ids to drop (see GET /api/parked)",
        ));
    }
    let selected = parked::select(&api.ledger, None, &request.ids)?;
    parked::drop(&api.ledger, &selected).await?;
    refresh_pending(&api, &selected);
    Ok(Json(selected))
}

/// After a replay or a drop, the parked and retrying gauges of the mailboxes concerned.
fn refresh_pending(api: &Api, messages: &[ParkedMessage]) {
    let names: BTreeSet<&str> = messages.iter().map(|m| m.mailbox.as_str()).collect();
    for name in names {
        if let Some(monitor) = api.monitor.mailbox(name) {
            monitor.set_pending(api.ledger.pending(name));
        }
    }
}

/// Every future done; one after another is fine, as they only wait.
async fn wait_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    for future in futures {
        future.await;
    }
}

/// Runs a state scan off the async threads: a large mailbox has many records.
async fn blocking<T: Send + 'static>(
    api: Arc<Api>,
    work: impl FnOnce(&Api) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || work(&api))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

impl From<SelectError> for ApiError {
    fn from(e: SelectError) -> ApiError {
        match e {
            SelectError::NotParked(_) => ApiError {
                status: StatusCode::NOT_FOUND,
                message: e.to_string(),
            },
            SelectError::State(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}
