//! The HTTP side of a POST: one connection pool per endpoint, a body whose upload is
//! bounded by progress rather than by a deadline, and answers read to their end so the
//! connection goes back to the pool.
//!
//! hyper puts an HTTP/1 connection back in its pool from a task of its own, a moment
//! after the answer's body ended; a POST starting in that moment would find the pool
//! empty and open a second connection. So a new connection asked for within
//! [`REUSE_GRACE`] of an answer waits that long first, and is not opened at all if the
//! POST that asked for it got a pooled connection meanwhile.
//!
//! Time is split in phases. Before the body starts moving (pool, connect, TLS, headers)
//! and after it was sent (waiting for the answer) count together against `timeout`;
//! connecting alone against `connect_timeout`, the answer alone against
//! `response_timeout`. While the body uploads there is no deadline, only a stall bound:
//! the receiver must take some of it every `timeout`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::WebhookConfig;

/// At most this much of an answer's body is read; a longer one is dropped with its
/// connection, which costs a reconnect rather than unbounded reading.
pub const MAX_ANSWER_BODY: usize = 64 * 1024;

/// How long after an answer a new connection to the same pool waits for the answered
/// one to come back. Costs nothing when it comes back: the POST takes it at once and the
/// waiting connect is dropped.
const REUSE_GRACE: Duration = Duration::from_millis(20);

/// The body is handed to hyper in pieces this large, so how far the upload got is
/// known to within one piece (and a slow uplink moves at least one per `timeout`).
const PIECE: usize = 16 * 1024;

/// Told about every connection a pool opens (TCP, plus TLS for `https`).
pub trait ConnectionObserver: Send + Sync {
    /// `endpoint` is `scheme://host:port`, without path, query or credentials.
    fn connection_opened(&self, endpoint: &str);
}

/// What makes two webhooks share a pool: reqwest keeps TLS trust and the connect
/// timeout per client, and a private CA of one endpoint must not be trusted for
/// another. Mailboxes posting to the same endpoint with the same settings share one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    endpoint: String,
    ca_pem: Option<Vec<u8>>,
    connect_timeout: Duration,
}

/// One `reqwest::Client` (and so one connection pool) per [`PoolKey`]: the configured
/// ones made at start, any other when the first POST to it is sent.
#[derive(Clone, Default)]
pub struct Pools {
    clients: Arc<Mutex<HashMap<PoolKey, Pool>>>,
    observer: Option<Arc<dyn ConnectionObserver>>,
}

/// A client and what its connector knows about it.
#[derive(Clone)]
pub struct Pool {
    pub client: reqwest::Client,
    state: Arc<PoolState>,
}

struct PoolState {
    endpoint: Arc<str>,
    observer: Option<Arc<dyn ConnectionObserver>>,
    /// When an answer was last read to its end, leaving its connection reusable.
    last_reusable: Mutex<Option<Instant>>,
}

impl Pools {
    pub fn new(observer: Option<Arc<dyn ConnectionObserver>>) -> Pools {
        Pools {
            clients: Arc::default(),
            observer,
        }
    }

    /// The pool for `cfg`'s endpoint. Fails only when TLS cannot be set up.
    pub fn pool(&self, cfg: &WebhookConfig) -> Result<Pool, reqwest::Error> {
        let key = PoolKey {
            endpoint: endpoint(cfg.url.url()),
            ca_pem: cfg.ca_pem.clone(),
            connect_timeout: cfg.connect_timeout.min(cfg.timeout),
        };
        // Plain data: a panic elsewhere cannot leave the map inconsistent.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = clients.get(&key) {
            return Ok(pool.clone());
        }
        let state = Arc::new(PoolState {
            endpoint: Arc::from(key.endpoint.as_str()),
            observer: self.observer.clone(),
            last_reusable: Mutex::new(None),
        });
        let pool = Pool {
            client: build(&key, state.clone())?,
            state,
        };
        clients.insert(key, pool.clone());
        Ok(pool)
    }
}

/// `scheme://host:port`: what a pool and the connection counter are labelled with.
pub fn endpoint(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

fn build(key: &PoolKey, state: Arc<PoolState>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = crate::http::client_builder().connect_timeout(key.connect_timeout);
    if key.endpoint.starts_with("http://") {
        // A plain-http pool never verifies a certificate (redirects are not followed),
        // so the system's CA bundle need not be parsed: that was most of pophook's
        // start-up time and a few MiB of resident libcrypto.
        builder = builder.tls_built_in_root_certs(false);
    }
    if let Some(pem) = &key.ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    builder.connector_layer(Connecting(state)).build()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    /// The POST being sent, seen by the connector it may ask for a connection.
    static POST: Arc<Tracker>;
}

/// A connector layer: holds back a connection asked for just after an answer (see the
/// module's documentation), and counts the connections it opens.
#[derive(Clone)]
struct Connecting(Arc<PoolState>);

impl<S> tower_layer::Layer<S> for Connecting {
    type Service = Connector<S>;

    fn layer(&self, inner: S) -> Connector<S> {
        Connector {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Connector<S> {
    inner: S,
    state: Arc<PoolState>,
}

impl<S, R> tower_service::Service<R> for Connector<S>
where
    S: tower_service::Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The readied service goes with the call, as tower requires.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        // hyper asks for the connection while polling the POST, so this is its tracker.
        let post = POST.try_with(Arc::clone).ok();
        Box::pin(async move {
            let last = *state
                .last_reusable
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let (Some(post), Some(last)) = (post, last) {
                let wait = REUSE_GRACE.saturating_sub(last.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    if post.progress().has_connection() {
                        // hyper keeps a connect it no longer needs running for the
                        // pool; this one is not worth a socket. The error is dropped.
                        return Err("a pooled connection came back".into());
                    }
                }
            }
            if let Some(observer) = &state.observer {
                // Counted as attempted: a connection that fails still cost a handshake.
                observer.connection_opened(&state.endpoint);
            }
            inner.call(request).await
        })
    }
}

/// The three bounds of one POST, from the webhook's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Everything but the upload; also the longest the upload may stall.
    pub total: Duration,
    pub connect: Duration,
    pub response: Duration,
}

impl Timeouts {
    pub fn of(cfg: &WebhookConfig) -> Timeouts {
        Timeouts {
            total: cfg.timeout,
            connect: cfg.connect_timeout.min(cfg.timeout),
            response: cfg.response_timeout.min(cfg.timeout),
        }
    }
}

/// Which bound a POST ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedOut {
    /// No connection within `connect_timeout`.
    Connect(Duration),
    /// The body did not start moving within `timeout` (a pool, connect, TLS or the
    /// headers took all of it).
    Request(Duration),
    /// The receiver took no bytes of the body for this long.
    Upload(Duration),
    /// No answer this long after the whole body was sent.
    Answer(Duration),
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimedOut::Connect(d) => write!(f, "could not connect to the webhook within {d:?}"),
            TimedOut::Request(d) => write!(f, "webhook did not take the request within {d:?}"),
            TimedOut::Upload(d) => write!(f, "webhook took no bytes of the body for {d:?}"),
            TimedOut::Answer(d) => {
                write!(
                    f,
                    "webhook did not answer within {d:?} after the body was sent"
                )
            }
        }
    }
}

/// How far the body got, as told by hyper taking its pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    started: Instant,
    /// When hyper took the first piece: everything before was connecting and headers.
    upload_started: Option<Instant>,
    /// When hyper last took a piece.
    last_piece: Option<Instant>,
    /// When hyper took the last piece: the body is with the connection.
    sent: Option<Instant>,
    /// The POST ended (answered or failed).
    ended: bool,
}

impl Progress {
    /// Whether the POST no longer waits for a connection.
    fn has_connection(&self) -> bool {
        self.upload_started.is_some() || self.ended
    }

    /// When the POST fails unless something happens first, and as what. Pure, so the
    /// phases are table-tested without a network.
    fn deadline(&self, t: &Timeouts) -> (Instant, TimedOut) {
        match (self.upload_started, self.last_piece, self.sent) {
            (_, _, Some(sent)) => {
                let before = self.upload_started.unwrap_or(sent) - self.started;
                let left = t.total.saturating_sub(before).min(t.response);
                (sent + left, TimedOut::Answer(left))
            }
            (Some(_), Some(last), None) => (last + t.total, TimedOut::Upload(t.total)),
            _ => (self.started + t.total, TimedOut::Request(t.total)),
        }
    }
}

/// Shared by the body (which records) and the POST's watch (which reads).
struct Tracker {
    progress: Mutex<Progress>,
    /// Fired when the body is sent: the deadline may then come sooner than the one
    /// being waited for.
    sent: Notify,
}

impl Tracker {
    fn progress(&self) -> Progress {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What a POST sends: bytes held whole, or a standard event made piece by piece as
/// it is sent (its length known in advance, so it still goes with Content-Length).
#[derive(Clone, Debug)]
pub enum Body {
    Whole(Bytes),
    Spooled(Arc<crate::event::Spooled>),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Whole(bytes) => bytes.len(),
            Body::Spooled(spooled) => spooled.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request body, handed out piece by piece with each piece's time recorded.
struct TrackedBody {
    body: Body,
    /// Where a spooled body has got to, and the bytes not yet handed out.
    cursor: crate::event::Cursor,
    remaining: usize,
    tracker: Arc<Tracker>,
}

impl TrackedBody {
    fn next_piece(&mut self) -> Option<Bytes> {
        match &mut self.body {
            Body::Whole(rest) => {
                if rest.is_empty() {
                    return None;
                }
                let n = rest.len().min(PIECE);
                Some(rest.split_to(n))
            }
            Body::Spooled(spooled) => spooled.next_piece(&mut self.cursor),
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(piece) = self.next_piece() else {
            return Poll::Ready(None);
        };
        self.remaining = self.remaining.saturating_sub(piece.len());
        let now = Instant::now();
        let done = self.remaining == 0;
        self.tracker.update(|p| {
            p.upload_started.get_or_insert(now);
            p.last_piece = Some(now);
            if done {
                p.sent = Some(now);
            }
        });
        if done {
            self.tracker.sent.notify_one();
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        // Exact, so hyper sends Content-Length rather than chunked encoding.
        SizeHint::with_exact(self.remaining as u64)
    }
}

/// Why [`exchange`] failed.
#[derive(Debug)]
pub enum Failure {
    TimedOut(TimedOut),
    Http(reqwest::Error),
}

/// The answer's status and headers; its body was read (up to [`MAX_ANSWER_BODY`]) and
/// discarded.
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
}

/// Sends `request` (made by `pool`'s client) with `body` under `t`, then reads the
/// answer's body so the connection can be reused.
pub async fn exchange(
    pool: &Pool,
    request: reqwest::RequestBuilder,
    body: Body,
    t: Timeouts,
) -> Result<Answer, Failure> {
    let tracker = Arc::new(Tracker {
        progress: Mutex::new(Progress {
            started: Instant::now(),
            upload_started: None,
            last_piece: None,
            // An empty body has nothing to upload: the answer is due at once.
            sent: body.is_empty().then(Instant::now),
            ended: false,
        }),
        sent: Notify::new(),
    });
    let result = POST
        .scope(
            tracker.clone(),
            exchange_tracked(pool, &tracker, request, body, t),
        )
        .await;
    tracker.update(|p| p.ended = true);
    result
}

async fn exchange_tracked(
    pool: &Pool,
    tracker: &Arc<Tracker>,
    request: reqwest::RequestBuilder,
    body: Body,
    t: Timeouts,
) -> Result<Answer, Failure> {
    let body = reqwest::Body::wrap(TrackedBody {
        remaining: body.len(),
        body,
        cursor: Default::default(),
        tracker: tracker.clone(),
    });
    let send = request.body(body).send();
    tokio::pin!(send);
    let response = loop {
        let (at, bound) = tracker.progress().deadline(&t);
        tokio::select! {
            result = &mut send => break result.map_err(|e| {
                if e.is_timeout() && e.is_connect() {
                    Failure::TimedOut(TimedOut::Connect(t.connect))
                } else {
                    Failure::Http(e)
                }
            })?,
            () = tracker.sent.notified() => {}
            () = tokio::time::sleep_until(at) => {
                // Progress made while asleep moved the deadline on.
                if tracker.progress().deadline(&t).0 <= Instant::now() {
                    return Err(Failure::TimedOut(bound));
                }
            }
        }
    };
    let answer = Answer {
        status: response.status(),
        headers: response.headers().clone(),
    };
    // The status is the receiver's decision; its body only matters for reusing the
    // connection, so reading it is bounded by the same deadline and may fail.
    let (at, _) = tracker.progress().deadline(&t);
    if let Ok(true) = tokio::time::timeout_at(at, discard(response)).await {
        *pool
            .state
            .last_reusable
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    Ok(answer)
}

/// Reads and drops an answer's body up to [`MAX_ANSWER_BODY`]: a body read to its end
/// lets hyper put the connection back in the pool. True when it was.
async fn discard(mut response: reqwest::Response) -> bool {
    let mut read = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_ANSWER_BODY {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests;
