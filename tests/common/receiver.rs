//! A real HTTP webhook receiver for tests: records every request it gets and answers
//! each from a queue of scripted replies, including hanging up without any answer.
//!
//! Built on hyper's connection API rather than axum: `Reply::Close` needs the service
//! to fail so hyper drops the TCP connection without writing a response, and axum
//! handlers cannot fail.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
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
}

impl Receiver {
    /// Listens on a new port on 127.0.0.1, on the current tokio runtime (either
    /// flavor). Answers `Status(204)` until told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test webhook receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                accepted: Vec::new(),
                queued: VecDeque::new(),
                default: Reply::Status(204),
                in_flight: 0,
                max_in_flight: 0,
                basic_auth: None,
            }),
            accepted: watch::Sender::new(0),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Receiver {
            addr,
            shared,
            server,
        }
    }

    /// The webhook URL to configure: `http://127.0.0.1:PORT/inbound`.
    pub fn url(&self) -> String {
        format!("http://{}/inbound", self.addr)
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

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say; don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(shared.clone(), request));
                    // An error here is a client hanging up or our own `Reply::Close`.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
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

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HangUp> {
    let (parts, body) = request.into_parts();
    // A client that vanishes mid-body has nobody left to answer.
    let body = body.collect().await.map_err(|_| HangUp)?.to_bytes();
    let recorded = Recorded {
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
        body: body.to_vec(),
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
    Ok(response.body(Full::new(Bytes::new())).unwrap())
}
