//! The HTTP side of delivery against real receivers: connections are reused when the
//! receiver answers with a body (plain and TLS, counted by the receiver and in
//! `/metrics`), HTTP/2 is negotiated with an h2 receiver, `tls_ca_file` is what makes a
//! private CA trusted, and a slow upload is not a timeout while a silent receiver is.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::certs::TestCerts;
use common::receiver::{Receiver, Reply};
use common::scripted::Scripted;
use common::setup::{config, hook, message, scripted_mailbox};
use pophook::delivery::formats::Payload;
use pophook::delivery::{DeliveryError, Sender, TimedOut, WebhookConfig};
use pophook::{service, shutdown};
use tokio::net::TcpListener;

const ACCEPTED: Reply = Reply::Json(200, r#"{"status":"accepted"}"#);
/// The same answer with its body sent after its headers: reading the body is then
/// what keeps the connection, every time.
const ACCEPTED_LATER: Reply = Reply::JsonLater(200, r#"{"status":"accepted"}"#);

async fn pop3(messages: usize) -> Scripted {
    Scripted::with_messages((1..=messages).map(message).collect()).await
}

/// Runs the service until `receiver` accepted `n` events; returns `/metrics`.
async fn deliver_and_scrape(
    yaml_hook: &str,
    server: &Scripted,
    receiver: &Receiver,
    n: usize,
) -> String {
    let cfg = config(yaml_hook, &scripted_mailbox("box", server.port(), ""));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (trigger, stop) = shutdown::channel();
    let task = tokio::spawn(service::run_on(cfg.config.clone(), Some(listener), stop));
    receiver.wait_for_accepted(n, Duration::from_secs(30)).await;
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the service stops")
        .unwrap()
        .unwrap();
    metrics
}

/// The value of `pophook_webhook_connections_opened_total` for `endpoint`.
fn connections_metric(metrics: &str, endpoint: &str) -> Option<u64> {
    let series = format!("pophook_webhook_connections_opened_total{{endpoint=\"{endpoint}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.trim().parse().unwrap())
}

/// 20 messages with `max_in_flight: 1` to `receiver`, which answers 200 with a JSON
/// body: one connection, as the receiver counts them and as `/metrics` does.
async fn twenty_posts_use_one_connection(receiver: &Receiver, scheme: &str, extra: &str) {
    let server = pop3(20).await;
    receiver.set_default(ACCEPTED_LATER);
    let extra = format!("  max_in_flight: 1\n{extra}");
    let metrics = deliver_and_scrape(&hook(&receiver.url(), &extra), &server, receiver, 20).await;
    assert_eq!(receiver.accepted().len(), 20);
    assert_eq!(receiver.connections(), 1, "one connection for 20 POSTs");
    let endpoint = format!("{scheme}://{}", receiver.addr());
    assert_eq!(
        connections_metric(&metrics, &endpoint),
        Some(1),
        "pophook_webhook_connections_opened_total for {endpoint} in:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_with_a_body_do_not_cost_a_connection_each() {
    let receiver = Receiver::start().await;
    twenty_posts_use_one_connection(&receiver, "http", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_private_ca_reuses_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let receiver = Receiver::start_tls(certs.identity(), false).await;
    let extra = format!("  tls_ca_file: {}\n", certs.ca_cert.display());
    twenty_posts_use_one_connection(&receiver, "https", &extra).await;
    let accepted = receiver.accepted();
    assert!(accepted
        .iter()
        .all(|r| r.version == hyper::Version::HTTP_11));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_only_through_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = pop3(1).await;
    let receiver = Receiver::start_tls(certs.identity(), false).await;
    let cfg = config(
        &hook(&receiver.url(), ""),
        &scripted_mailbox("box", server.port(), ""),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = format!("{outcomes:?}");
    assert!(!outcomes[0].is_success(), "{error}");
    assert!(receiver.accepted().is_empty());
    assert_eq!(server.remaining().len(), 1, "nothing is deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_receiver_gets_http2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = pop3(6).await;
    let receiver = Receiver::start_tls(certs.identity(), true).await;
    receiver.set_default(ACCEPTED);
    let extra = format!(
        "  max_in_flight: 1\n  tls_ca_file: {}\n",
        certs.ca_cert.display()
    );
    let cfg = config(
        &hook(&receiver.url(), &extra),
        &scripted_mailbox("box", server.port(), ""),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    let versions: Vec<hyper::Version> = receiver.accepted().iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![hyper::Version::HTTP_2; 6]);
    assert_eq!(receiver.connections(), 1);
    assert!(server.remaining().is_empty());
}

// ---- timeouts, on the sender alone --------------------------------------------------

/// The webhook configuration for `url` with `timeout` (the other keys default).
fn webhook(url: &str, timeout: &str) -> WebhookConfig {
    let cfg = config(
        &hook(url, "").replace("timeout: 3s", &format!("timeout: {timeout}")),
        &scripted_mailbox("box", 1, ""),
    );
    cfg.config.mailboxes[0].webhook.clone()
}

fn body(len: usize) -> Payload {
    Payload::Body {
        content_type: "application/octet-stream",
        bytes: Bytes::from(vec![b'x'; len]),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_longer_than_timeout_is_fine_while_the_receiver_reads() {
    let receiver = Receiver::start().await;
    receiver.set_default(ACCEPTED);
    // 8 MiB/s for 40 MiB: about 5s of reading, of which the socket buffers (a few MiB)
    // hide well under the 3s timeout, so the answer comes soon after the upload ends.
    receiver.read_slowly(8 << 20);
    let cfg = webhook(&receiver.url(), "3s");
    let result = Sender::new(None, [&cfg])
        .unwrap()
        .post(&cfg, "msg_slow", body(40 << 20))
        .await;
    assert!(result.is_ok(), "{result:?}");
    let got = receiver.accepted();
    assert_eq!(got[0].body.len(), 40 << 20);
    // Otherwise the test did not exercise an upload longer than `timeout`.
    assert!(
        got[0].body_read_in > cfg.timeout,
        "{:?}",
        got[0].body_read_in
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_after_the_body_times_out() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delay(Duration::from_secs(120), 200));
    let cfg = webhook(&receiver.url(), "2s");
    let result = Sender::new(None, [&cfg])
        .unwrap()
        .post(&cfg, "msg_silent", body(1000))
        .await;
    assert!(
        matches!(result, Err(DeliveryError::Timeout(TimedOut::Answer(_)))),
        "{result:?}"
    );
    assert_eq!(receiver.requests().len(), 1, "the whole body arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_stops_reading_the_body_times_out() {
    // Accepts and then reads nothing, so the upload stalls once the socket buffers
    // (a few MiB on loopback) are full.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/inbound", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(socket);
    });
    // Long enough that a busy machine still starts the upload within it.
    let cfg = webhook(&url, "5s");
    let result = Sender::new(None, [&cfg])
        .unwrap()
        .post(&cfg, "msg_stalled", body(16 << 20))
        .await;
    hold.abort();
    assert!(
        matches!(result, Err(DeliveryError::Timeout(TimedOut::Upload(_)))),
        "{result:?}"
    );
}

/// Not a test: the figures for BENCHMARKS.md (issue 10) until the e2e bench has them.
/// An https receiver (private CA) answering 200 with a small JSON body vs 204, 1,000
/// messages, `max_in_flight: 4`: connections opened and wall time of `once`.
/// `cargo test --release --test webhook_http -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_https_json_vs_204() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    for (label, reply) in [("200 + JSON", ACCEPTED), ("204", Reply::Status(204))] {
        let server = pop3(1000).await;
        let receiver = Receiver::start_tls(certs.identity(), false).await;
        receiver.set_default(reply);
        let extra = format!(
            "  max_in_flight: 4\n  tls_ca_file: {}\n",
            certs.ca_cert.display()
        );
        let cfg = config(
            &hook(&receiver.url(), &extra),
            &scripted_mailbox("box", server.port(), "    commit_interval: 1h\n"),
        );
        let started = std::time::Instant::now();
        let outcomes = service::once(&cfg.config).await.unwrap();
        let wall = started.elapsed();
        assert!(outcomes[0].is_success(), "{outcomes:?}");
        assert_eq!(receiver.accepted().len(), 1000);
        println!(
            "https {label}: 1000 messages, max_in_flight 4: {} connections, {wall:.2?}",
            receiver.connections()
        );
    }
}
