//! The `http.listen` endpoint of a running service: liveness, readiness, Prometheus
//! metrics, and the management API that `pophook status` and `pophook parked` use while
//! the service holds the state (sled lets one process open it). `/api/*` needs the
//! `http.token` (when one is set) and a `Host` that is not a stranger's name; the
//! endpoint serves a bounded number of connections with read timeouts, and shutdown
//! never waits for a client.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

use crate::ledger::{Ledger, StateError};
use crate::mailbox::Mailbox;
use crate::ops::http::HttpConfig;
use crate::ops::monitor::{Monitor, Readiness};
use crate::ops::parked::{self, MailboxError, ParkedMessage, ReplayReport, SelectError};
use crate::ops::shard::Shard;
use crate::ops::status::{self, StatusReport};
use crate::secret::Secret;
use crate::shutdown::Shutdown;

/// How long a replay request waits for the mailboxes' cycles before answering with
/// what is still queued. The messages are delivered either way.
pub const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// How long a client may take to send a request's headers, and to wait idle between
/// requests; hyper closes the connection then.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint reads and acts on: the running service's own state and monitor.
pub struct Api {
    pub ledger: Ledger,
    pub monitor: Arc<Monitor>,
    /// The mailboxes this instance polls (replaced by a reload).
    pub mailboxes: Arc<std::sync::RwLock<Vec<Mailbox>>>,
    /// This instance's shard (replaced by a reload, as the mailboxes are).
    pub shard: Arc<std::sync::RwLock<Option<Shard>>>,
    pub shutdown: Shutdown,
    /// Who may use it, and how many connections it serves.
    pub http: HttpConfig,
    /// `POST /api/reload`; `None` where the service cannot reload (tests).
    pub reload: Option<crate::ops::reload::ReloadHandle>,
}

impl Api {
    fn mailboxes(&self) -> Vec<Mailbox> {
        self.mailboxes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Serves until the service's shutdown fires, then drops every connection at once: a
/// client that sends half a request (or waits for a replay) never holds up a SIGTERM.
///
/// A hand-written accept loop rather than `axum::serve`, for two things it cannot do:
/// at most `http.max_connections` accepted connections (a semaphore permit per
/// connection; the rest wait in the kernel's queue and cost pophook no descriptor, so
/// idle clients cannot starve POP3 and webhook connections), and a shutdown that does
/// not wait for connections to finish. The protocol work stays hyper's: its
/// `header_read_timeout` closes clients that send headers slowly or sit idle, and
/// tower-http's `RequestBodyTimeoutLayer` bounds the body.
pub async fn serve(listener: TcpListener, api: Api) -> std::io::Result<()> {
    let mut shutdown = api.shutdown.clone();
    let limit = Arc::new(Semaphore::new(api.http.max_connections));
    let app = router(Arc::new(api));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.requested() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin, and keep serving.
                    warn!("http.listen: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.requested() => break,
        };
        while connections.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A client that goes away or times out is no error of the service's.
            let _ = connection.await;
        });
    }
    connections.abort_all();
    Ok(())
}

pub fn router(api: Arc<Api>) -> Router {
    let access = Arc::new(Access::new(&api.http));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .route("/api/parked", get(parked_list))
        .route("/api/parked/replay", post(parked_replay))
        .route("/api/parked/drop", post(parked_drop))
        .route("/api/reload", post(reload))
        .with_state(api)
        .layer(middleware::from_fn_with_state(access, guard))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_READ_TIMEOUT,
        ))
}

/// Who may use the endpoint, from `http`.
struct Access {
    token: Option<Secret>,
    protect_metrics: bool,
    /// Host names allowed besides `localhost` and IP addresses.
    hosts: Vec<String>,
}

impl Access {
    fn new(http: &HttpConfig) -> Access {
        Access {
            token: http.token.clone(),
            protect_metrics: http.protect_metrics,
            hosts: http.allowed_hosts.clone(),
        }
    }

    /// `Authorization: Bearer <token>` with the configured token, or no token set.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .unwrap_or("");
        constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
    }

    /// The `Host` is an IP address, `localhost` or a configured name. A web page that
    /// rebinds its own domain name to 127.0.0.1 sends that domain name and is refused.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let name = host_name(host).to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || self.hosts.contains(&name)
    }
}

/// The name in a `Host` value, without the port: `[::1]:9090` → `::1`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    // A bare IPv6 address (not valid in Host, but harmless) has several colons.
    if host.matches(':').count() > 1 {
        return host;
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// Every request passes here: `/api/*` (and `/metrics` with `protect_metrics`) needs
/// an allowed `Host` and the token.
async fn guard(Extract(access): Extract<Arc<Access>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path == "/api" || path.starts_with("/api/");
    let needs_token = api || (path == "/metrics" && access.protect_metrics);
    // Browsers send `Origin` (and `Sec-Fetch-Site`) with every cross-site POST, and a
    // form post needs no preflight: without a token, a web page could otherwise make a
    // loopback API reload. The API is for programs, which send neither.
    if api && from_a_browser(request.headers()) {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            message: "requests from web pages (with `Origin` or `Sec-Fetch-Site`) are not served: call the API from a program".into(),
        }
        .into_response();
    }
    if api && !access.host_allowed(request.headers()) {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            message: "this Host is not served: use localhost or the IP address, or add the name to `http.allowed_hosts`".into(),
        }
        .into_response();
    }
    if needs_token && !access.authorized(request.headers()) {
        let mut response = ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "send the `http.token` as `Authorization: Bearer <token>` (pophook status and parked send it from the configuration)".into(),
        }
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}

/// A request a browser made on a web page's behalf.
fn from_a_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

/// Compares without stopping at the first difference, so timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
            shard: api
                .shard
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .map(|s| s.to_string()),
            mailboxes: status::collect(&api.ledger, &api.mailboxes()),
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
    let mut errors = parked::unpolled(&selected, &api.mailboxes());
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

/// `POST /api/reload`: reads the configuration again, as SIGHUP does; 400 with the
/// reason when the new one is invalid (the running one stays).
async fn reload(
    Extract(api): Extract<Arc<Api>>,
) -> Result<Json<crate::ops::reload::ReloadSummary>, ApiError> {
    let Some(handle) = &api.reload else {
        return Err(ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            message: "this service was started without a configuration file to reload".into(),
        });
    };
    handle
        .reload()
        .await
        .map(Json)
        .map_err(ApiError::bad_request)
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

#[cfg(test)]
mod tests;
