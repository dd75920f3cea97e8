//! A webhook receiver that costs as little as possible: reads each request, notes the
//! event's `message_id`, waits if told to (scenario 2's slow endpoint) and answers 204,
//! or 200 with a small JSON body (scenario 7). Plain HTTP, or HTTPS (scenario 7) with
//! HTTP/1.1 only or h2 offered by ALPN; it counts the TCP connections it accepts.
//!
//! Unlike the tests' recording receiver it keeps no bodies (only the last one, when it
//! is small), so it neither grows with the corpus nor takes CPU from pophook on a small
//! machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_native_tls::TlsAcceptor;

pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
}

/// What the receiver answers to every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 204, no body.
    NoContent,
    /// 200 with [`ACCEPTED_BODY`], as many real receivers answer.
    Accepted,
}

const ACCEPTED_BODY: &str = r#"{"status":"accepted"}"#;

#[derive(Default)]
struct Shared {
    delay_ms: AtomicU64,
    /// Answers 200 with a JSON body when set, else 204.
    accepted_body: AtomicBool,
    in_flight: AtomicU64,
    /// TCP connections accepted since the last [`Receiver::take`].
    connections: AtomicU64,
    /// Of them, those that carried a request.
    used_connections: AtomicU64,
    counts: Mutex<Received>,
}

/// What arrived since the last [`Receiver::take`].
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub requests: usize,
    pub body_bytes: u64,
    /// The event's `data.message_id` of each request, in arrival order; empty string
    /// when the body had none.
    pub message_ids: Vec<String>,
    /// The most requests that were being answered at the same time.
    pub max_concurrent: u64,
    /// TCP connections accepted (for HTTPS, before the handshake).
    pub connections: u64,
    /// Of `connections`, those that carried at least one request: with h2 offered by
    /// ALPN, a client may open several at once and then drop all but one unused.
    pub used_connections: u64,
    /// Requests that came over HTTP/2.
    pub http2_requests: usize,
    /// The last request's body when it was at most [`KEPT_BODY`] bytes (scenario 9
    /// reads its event); `None` after a larger one, so the receiver never holds a
    /// large body.
    pub last_body: Option<Bytes>,
}

/// The largest body [`Received::last_body`] keeps.
pub const KEPT_BODY: usize = 1024 * 1024;

impl Receiver {
    /// Listens on a new port on 127.0.0.1, served by `runtime`.
    pub fn start(runtime: &Runtime) -> Receiver {
        Receiver::start_with(runtime, None)
    }

    /// Like [`Receiver::start`], but HTTPS with `identity` (see `certs.rs`), offering
    /// `h2` and `http/1.1` by ALPN when `http2` is set, else `http/1.1` only.
    pub fn start_tls(runtime: &Runtime, identity: native_tls::Identity, http2: bool) -> Receiver {
        let mut builder = native_tls::TlsAcceptor::builder(identity);
        if http2 {
            builder.accept_alpn(&["h2", "http/1.1"]);
        } else {
            builder.accept_alpn(&["http/1.1"]);
        }
        let acceptor = builder.build().expect("the bench receiver's TLS acceptor");
        Receiver::start_with(runtime, Some(TlsAcceptor::from(acceptor)))
    }

    fn start_with(runtime: &Runtime, tls: Option<TlsAcceptor>) -> Receiver {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the benchmark's webhook receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime.spawn(serve(listener, tls, shared.clone()));
        Receiver {
            addr,
            scheme,
            shared,
        }
    }

    /// `https://127.0.0.1:PORT/inbound` for a TLS receiver: its certificate names the IP.
    pub fn url(&self) -> String {
        format!("{}://{}/inbound", self.scheme, self.addr)
    }

    /// Forgets what arrived and answers every later request after `delay`, with 204.
    pub fn reset(&self, delay: Duration) {
        self.reset_answering(delay, Answer::NoContent);
    }

    /// Forgets what arrived and answers every later request after `delay` with `answer`.
    pub fn reset_answering(&self, delay: Duration, answer: Answer) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.shared
            .accepted_body
            .store(answer == Answer::Accepted, Ordering::SeqCst);
        self.take();
    }

    /// Requests answered since the last [`Receiver::take`], without forgetting them.
    pub fn requests(&self) -> usize {
        self.shared.counts.lock().unwrap().requests
    }

    pub fn take(&self) -> Received {
        let mut received = std::mem::take(&mut *self.shared.counts.lock().unwrap());
        received.connections = self.shared.connections.swap(0, Ordering::SeqCst);
        received.used_connections = self.shared.used_connections.swap(0, Ordering::SeqCst);
        received
    }
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(tcp, false, shared).await,
                Some(tls) => {
                    // A failed handshake is pophook's to report (the run then fails).
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let h2 =
                        stream.get_ref().negotiated_alpn().ok().flatten() == Some(b"h2".to_vec());
                    serve_connection(stream, h2, shared).await;
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, h2: bool, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let used = AtomicBool::new(false);
    let service = service_fn(move |request| {
        if !used.swap(true, Ordering::SeqCst) {
            shared.used_connections.fetch_add(1, Ordering::SeqCst);
        }
        handle(request, shared.clone())
    });
    // A client hanging up mid-request is pophook's business, not the bench's.
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

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let http2 = request.version() == Version::HTTP_2;
    let body = request.into_body().collect().await?.to_bytes();
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    {
        let mut counts = shared.counts.lock().unwrap();
        counts.requests += 1;
        counts.http2_requests += usize::from(http2);
        counts.body_bytes += body.len() as u64;
        counts.last_body = (body.len() <= KEPT_BODY).then(|| body.clone());
        counts.message_ids.push(message_id(&body));
        counts.max_concurrent = counts.max_concurrent.max(now);
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let response = if shared.accepted_body.load(Ordering::SeqCst) {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(ACCEPTED_BODY.as_bytes())))
    } else {
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
    };
    Ok(response.unwrap())
}

/// `data.message_id` without parsing the whole event: serde_json writes it compactly
/// and early, after the id, mailbox, uidl, size and received_at.
fn message_id(body: &[u8]) -> String {
    const KEY: &[u8] = b"\"message_id\":\"";
    let head = &body[..body.len().min(4096)];
    let Some(at) = head.windows(KEY.len()).position(|w| w == KEY) else {
        return String::new();
    };
    let rest = &head[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}
