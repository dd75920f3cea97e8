//! A real HTTP webhook receiver for tests: records every request it gets and answers
//! each from a queue of scripted replies, including hanging up without any answer.
//!
//! Built on hyper's connection API rather than axum: `Reply::Close` needs the service
//! to fail so hyper drops the TCP connection without writing a response, and axum
//! handlers cannot fail. It counts the TCP connections it accepted, so tests see
//! whether the client reused them, and can serve TLS with HTTP/2 offered by ALPN.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/inbound`.
    pub path: String,
    /// In arrival order; names are lowercase (HTTP names are case-insensitive).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The HTTP version it came in.
    pub version: hyper::Version,
    /// How long reading its body took.
    pub body_read_in: Duration,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Answer at once with this status and an empty body.
    Status(u16),
    /// Read the request, then close the connection without any response, so the
    /// client sees a network error (as when a proxy or the receiver crashes).
    Close,
    /// Wait, then answer with the status. A 2xx counts as accepted once the wait is
    /// over, even if the client gave up waiting meanwhile.
    Delay(Duration, u16),
    /// Answer with the status and `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Answer with the status and this JSON body, as many real receivers do.
    Json(u16, &'static str),
    /// Like `Json`, but the headers go first and the body 20 ms later, as from a
    /// receiver that flushes its headers: a client that does not read the body then
    /// always loses the connection, not only when it is quicker than the body.
    JsonLater(u16, &'static str),
}

pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    /// TCP connections accepted, whatever came of them.
    connections: AtomicUsize,
    state: Mutex<State>,
    /// How many requests were answered 2xx; lets `wait_for_accepted` sleep.
    accepted: watch::Sender<usize>,
}

struct State {
    requests: Vec<Recorded>,
    accepted: Vec<Recorded>,
    queued: VecDeque<Reply>,
    default: Reply,
    /// Requests being answered right now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
    /// The `Authorization` value every request must carry, else 401 (as Action
    /// Mailbox's relay ingress answers).
    basic_auth: Option<String>,
    /// Read request bodies at about this many bytes per second.
    read_rate: Option<usize>,
}

impl Receiver {
    /// Listens on a new port on 127.0.0.1, on the current tokio runtime (either
    /// flavor). Answers `Status(204)` until told otherwise.
    pub async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// Like [`Receiver::start`], but HTTPS with `identity` (see `certs.rs`), offering
    /// `h2` and `http/1.1` by ALPN when `http2` is set, else `http/1.1` only.
    pub async fn start_tls(identity: native_tls::Identity, http2: bool) -> Receiver {
        let mut builder = native_tls::TlsAcceptor::builder(identity);
        if http2 {
            builder.accept_alpn(&["h2", "http/1.1"]);
        } else {
            builder.accept_alpn(&["http/1.1"]);
        }
        let acceptor = builder.build().expect("test receiver TLS acceptor");
        Receiver::start_with(Some(tokio_native_tls::TlsAcceptor::from(acceptor))).await
    }

    async fn start_with(tls: Option<tokio_native_tls::TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test webhook receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            state: Mutex::new(State {
                requests: Vec::new(),
                accepted: Vec::new(),
                queued: VecDeque::new(),
                default: Reply::Status(204),
                in_flight: 0,
                max_in_flight: 0,
                basic_auth: None,
                read_rate: None,
            }),
            accepted: watch::Sender::new(0),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(serve(listener, tls, shared.clone()));
        Receiver {
            addr,
            scheme,
            shared,
            server,
        }
    }

    /// The webhook URL to configure: `http://127.0.0.1:PORT/inbound` (`https` for
    /// [`Receiver::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}://{}/inbound", self.scheme, self.addr)
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// From now on request bodies are read at about `bytes_per_second`, steadily, as
    /// over a slow link.
    pub fn read_slowly(&self, bytes_per_second: usize) {
        self.state().read_rate = Some(bytes_per_second);
    }

    /// The listening address, for URLs with another path or with credentials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on a request without these basic-auth credentials is answered 401
    /// (and not counted as accepted), whatever the scripted replies say.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.state().basic_auth = Some(format!("Basic {encoded}"));
    }

    /// Every request received so far, in order, however it was answered.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state().max_in_flight
    }

    /// The requests answered with a 2xx, in order.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.state().accepted.clone()
    }

    /// The reply used once the queue from `push_replies` is empty.
    pub fn set_default(&self, reply: Reply) {
        self.state().default = reply;
    }

    /// Replies for the next requests, one each, in order, before the default.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state().queued.extend(replies);
    }

    /// Waits until at least `n` requests were accepted and returns all accepted so
    /// far (possibly more than `n`). Panics with what did arrive on timeout.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut count = self.shared.accepted.subscribe();
        if tokio::time::timeout(timeout, count.wait_for(|&c| c >= n))
            .await
            .is_err()
        {
            let state = self.state();
            panic!(
                "expected {n} accepted webhook requests within {timeout:?}, got {}; \
                 all {} requests:\n{}",
                state.accepted.len(),
                state.requests.len(),
                state
                    .requests
                    .iter()
                    .map(|r| format!("  {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        self.accepted()
    }

    /// Stops listening and drops every open connection.
    pub fn stop(self) {}

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts the connections.
        self.server.abort();
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 300;
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(SHOWN)]);
        let more = if self.body.len() > SHOWN { "…" } else { "" };
        write!(f, "{} {} {body}{more}", self.method, self.path)
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_native_tls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say; don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => serve_connection(stream, false, shared).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let h2 = stream.get_ref().negotiated_alpn().ok().flatten()
                                == Some(b"h2".to_vec());
                            serve_connection(stream, h2, shared).await;
                        }
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<S>(stream: S, h2: bool, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| answer(shared.clone(), request));
    // An error here is a client hanging up or our own `Reply::Close`.
    let _ = if h2 {
        http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await
    } else {
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
    };
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct HangUp;

impl fmt::Display for HangUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scripted hang-up")
    }
}

impl std::error::Error for HangUp {}

type AnswerStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send>,
>;
type AnswerBody = StreamBody<AnswerStream>;

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<AnswerBody>, HangUp> {
    let (parts, mut body) = request.into_parts();
    let read_rate = shared.state.lock().unwrap().read_rate;
    let reading = Instant::now();
    let body = match read_rate {
        // A client that vanishes mid-body has nobody left to answer.
        None => body
            .collect()
            .await
            .map_err(|_| HangUp)?
            .to_bytes()
            .to_vec(),
        Some(rate) => {
            let mut all = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| HangUp)?;
                if let Some(data) = frame.data_ref() {
                    all.extend_from_slice(data);
                    // Not reading meanwhile is what makes the link slow.
                    tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate as f64))
                        .await;
                }
            }
            all
        }
    };
    let body_read_in = reading.elapsed();
    let recorded = Recorded {
        version: parts.version,
        body_read_in,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body,
    };
    let reply = {
        let mut state = shared.state.lock().unwrap();
        state.requests.push(recorded.clone());
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        let authorised = match &state.basic_auth {
            Some(expected) => recorded.header("authorization") == Some(expected.as_str()),
            None => true,
        };
        let default = state.default;
        if authorised {
            state.queued.pop_front().unwrap_or(default)
        } else {
            Reply::Status(401)
        }
    };
    // Counted down when this answer is done, whichever way it ends.
    struct Leaving<'a>(&'a Shared);
    impl Drop for Leaving<'_> {
        fn drop(&mut self) {
            self.0.state.lock().unwrap().in_flight -= 1;
        }
    }
    let _leaving = Leaving(&shared);
    let mut retry_after = None;
    let mut json = None;
    let status = match reply {
        Reply::Close => return Err(HangUp),
        Reply::Status(status) => status,
        Reply::Delay(wait, status) => {
            tokio::time::sleep(wait).await;
            status
        }
        Reply::RetryAfter(status, seconds) => {
            retry_after = Some(seconds);
            status
        }
        Reply::Json(status, body) => {
            json = Some((body, Duration::ZERO));
            status
        }
        Reply::JsonLater(status, body) => {
            json = Some((body, Duration::from_millis(20)));
            status
        }
    };
    let status = StatusCode::from_u16(status)
        .unwrap_or_else(|_| panic!("Reply status {status} is not an HTTP status"));
    if status.is_success() {
        let mut state = shared.state.lock().unwrap();
        state.accepted.push(recorded);
        shared.accepted.send_replace(state.accepted.len());
    }
    let mut response = Response::builder().status(status);
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    let (body, wait) = match json {
        Some((body, wait)) => {
            response = response
                .header("content-type", "application/json")
                .header("content-length", body.len().to_string());
            (Some(Bytes::from_static(body.as_bytes())), wait)
        }
        None => (None, Duration::ZERO),
    };
    let later = async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        body.map(|body| Ok(Frame::data(body)))
    };
    let frames = futures_util::stream::once(later).filter_map(std::future::ready);
    let frames: AnswerStream = Box::pin(frames);
    Ok(response.body(StreamBody::new(frames)).unwrap())
}
