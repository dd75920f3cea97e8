//! A webhook receiver that costs as little as possible: reads each request, notes the
//! event's `message_id`, waits if told to (scenario 2's slow endpoint) and answers 204.
//!
//! Unlike the tests' recording receiver it keeps no bodies, so it neither grows with
//! the corpus nor takes CPU from pophook on a small machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    delay_ms: AtomicU64,
    in_flight: AtomicU64,
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
}

impl Receiver {
    /// Listens on a new port on 127.0.0.1, served by `runtime`.
    pub fn start(runtime: &Runtime) -> Receiver {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the benchmark's webhook receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        runtime.spawn(serve(listener, shared.clone()));
        Receiver { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/inbound", self.addr)
    }

    /// Forgets what arrived and answers every later request after `delay`.
    pub fn reset(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.take();
    }

    pub fn take(&self) -> Received {
        std::mem::take(&mut *self.shared.counts.lock().unwrap())
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, shared.clone()));
            // A client hanging up mid-request is pophook's business, not the bench's.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let body = request.into_body().collect().await?.to_bytes();
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    {
        let mut counts = shared.counts.lock().unwrap();
        counts.requests += 1;
        counts.body_bytes += body.len() as u64;
        counts.message_ids.push(message_id(&body));
        counts.max_concurrent = counts.max_concurrent.max(now);
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Empty::new())
        .unwrap())
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
