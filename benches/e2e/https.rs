//! Scenario 7: small messages POSTed to an HTTPS receiver whose private CA pophook
//! trusts through `webhook.tls_ca_file`. The question is connection reuse: a
//! receiver answering 200 with a small JSON body must get no more connections (each a
//! TLS handshake) than one answering 204, at most `max_in_flight` for one mailbox. The
//! receiver counts the TCP connections it accepts; a `pophook run` adds pophook's own
//! count, `pophook_webhook_connections_opened_total`, scraped from its /metrics.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::certs::TestCerts;
use crate::corpus::{self, Corpus};
use crate::receiver::{Answer, Received, Receiver};
use crate::report::{self, Connections, Detail, Row, RunResult};
use crate::{
    check_arrivals, child, over_in_flight, Bench, GlobalConfig, MailboxConfig, Options, PASSWORD,
};

pub const SCENARIO: u8 = 7;
const USER: &str = "bench7";
const MESSAGES: usize = 1000;
/// pophook's default, written out because the target is stated against it.
pub const MAX_IN_FLIGHT: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const METRIC: &str = "pophook_webhook_connections_opened_total";

/// One receiver configuration and how it answers.
struct Case<'a> {
    run: &'static str,
    receiver: &'a Receiver,
    answer: Answer,
}

pub fn run(bench: &Bench, runtime: &Runtime, options: &Options) -> Vec<Row> {
    let count = if options.quick {
        MESSAGES / 20
    } else {
        MESSAGES
    };
    let corpus = corpus::small("s7", count, 7);
    eprintln!(
        "== scenario {SCENARIO}: {} messages, {:.1} MiB, to an https receiver",
        corpus.len(),
        corpus.bytes() as f64 / 1024.0 / 1024.0
    );
    let row = |run: &str, result: RunResult| Row {
        scenario: SCENARIO,
        run: run.into(),
        messages: corpus.len(),
        bytes: corpus.bytes(),
        delivers: true,
        result,
    };
    let certs_dir = bench.work.path().join("https-certs");
    if let Err(e) = std::fs::create_dir(&certs_dir) {
        return vec![row(
            report::HTTPS_JSON,
            RunResult::Failed(format!("create {}: {e}", certs_dir.display())),
        )];
    }
    let certs = TestCerts::generate(&certs_dir);
    let http1 = Receiver::start_tls(runtime, certs.identity(), false);
    let h2 = Receiver::start_tls(runtime, certs.identity(), true);
    bench.dovecot.add_user(USER, PASSWORD);

    let cases = [
        Case {
            run: report::HTTPS_JSON,
            receiver: &http1,
            answer: Answer::Accepted,
        },
        Case {
            run: report::HTTPS_EMPTY,
            receiver: &http1,
            answer: Answer::NoContent,
        },
        Case {
            run: report::HTTPS_H2_JSON,
            receiver: &h2,
            answer: Answer::Accepted,
        },
    ];
    let mut rows = Vec::new();
    for case in &cases {
        let tries = (0..options.repeat)
            .map(|_| row(case.run, once(bench, &corpus, &certs.ca_cert, case)))
            .collect();
        let row = report::median(tries);
        crate::print_row(&row);
        rows.push(row);
    }
    let scraped = row(
        report::HTTPS_RUN_METRICS,
        scraped(bench, &corpus, &certs.ca_cert, &http1),
    );
    crate::print_row(&scraped);
    rows.push(scraped);
    rows
}

fn global(receiver: &Receiver, ca: &Path) -> GlobalConfig {
    GlobalConfig {
        max_in_flight: Some(MAX_IN_FLIGHT),
        url: Some(receiver.url()),
        tls_ca_file: Some(ca.to_path_buf()),
        ..GlobalConfig::default()
    }
}

/// One `pophook once` posting the whole corpus to `case.receiver`.
fn once(bench: &Bench, corpus: &Corpus, ca: &Path, case: &Case<'_>) -> RunResult {
    bench.deliver(corpus, USER);
    case.receiver.reset_answering(Duration::ZERO, case.answer);
    let mailbox = MailboxConfig::new("bench", USER);
    let result = match bench.once(&global(case.receiver, ca), &[mailbox], TIMEOUT) {
        Ok(child) => {
            let received = case.receiver.take();
            child.measured(
                check(bench, corpus, &received),
                Some(connections(&received, None)),
            )
        }
        Err(e) => RunResult::Failed(e),
    };
    if !result.is_ok() {
        bench.empty(USER);
    }
    result
}

/// A `pophook run` with `http.listen`, stopped once every message arrived and the
/// mailbox is empty, after its /metrics was read. Its wall time is to that moment.
fn scraped(bench: &Bench, corpus: &Corpus, ca: &Path, receiver: &Receiver) -> RunResult {
    bench.deliver(corpus, USER);
    receiver.reset_answering(Duration::ZERO, Answer::Accepted);
    let listen = match free_port() {
        Ok(listen) => listen,
        Err(e) => return RunResult::Failed(format!("find a port for http.listen: {e}")),
    };
    let mailbox = MailboxConfig {
        // One cycle in the time the bench waits.
        poll_interval: Some(Duration::from_secs(3600)),
        ..MailboxConfig::new("bench", USER)
    };
    let global = GlobalConfig {
        http_listen: Some(listen),
        ..global(receiver, ca)
    };
    let result = match bench
        .configure(&global, &[mailbox])
        .and_then(|(dir, config)| {
            child::run_until(
                &bench.pophook,
                &config,
                dir.path(),
                TIMEOUT,
                STOP_TIMEOUT,
                || {
                    let done = receiver.requests() >= corpus.len()
                        && bench.dovecot.message_count(USER) == 0;
                    done.then(|| scrape(listen))
                },
            )
        }) {
        Ok(until) => {
            let received = receiver.take();
            let (counted, problem) = match until.found {
                Ok(n) => (Some(n), check(bench, corpus, &received)),
                Err(e) => (None, Some(format!("scrape /metrics: {e}"))),
            };
            // Timed to the moment every message was in, not to the exit after SIGTERM.
            let run = child::ChildRun {
                wall: until.until_done,
                ..until.run
            };
            run.measured(problem, Some(connections(&received, counted)))
        }
        Err(e) => RunResult::Failed(e),
    };
    if !result.is_ok() {
        bench.empty(USER);
    }
    result
}

/// What the receiver counted, and pophook's own count when it was scraped.
fn connections(received: &Received, counted_by_pophook: Option<u64>) -> Detail {
    Detail::Connections(Connections {
        accepted: received.connections,
        used: received.used_connections,
        requests: received.requests as u64,
        http2_requests: received.http2_requests as u64,
        counted_by_pophook,
    })
}

/// Every message arrived once, the mailbox is empty, no more requests at once than
/// `max_in_flight`.
fn check(bench: &Bench, corpus: &Corpus, received: &Received) -> Option<String> {
    check_arrivals(&corpus.message_ids, &received.message_ids)
        .or_else(|| bench.check_empty(USER))
        .or_else(|| over_in_flight(received, MAX_IN_FLIGHT))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The sum of `pophook_webhook_connections_opened_total` over its endpoints, from
/// pophook's /metrics (Prometheus text).
fn scrape(listen: SocketAddr) -> Result<u64, String> {
    let mut stream = TcpStream::connect(listen).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(METRIC))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if values.is_empty() {
        return Err(format!("no {METRIC} in the answer"));
    }
    Ok(values.iter().sum::<f64>() as u64)
}
