//! A hostile or broken POP3 server, hostile mail, a stalled TLS handshake and a
//! redirecting webhook, against the whole delivery cycle. Each limit must end the session
//! with an error naming it, nothing posted and nothing deleted; each broken message must
//! still arrive, and be deleted only after the webhook took it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, message};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pophook::mailbox::CycleReport;
use pophook::service;
use tokio::net::TcpListener;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn mailbox(port: u16, extra: &str) -> String {
    format!(
        "  - name: hostile\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    username: user\n    password: secret\n    timeout: 5s\n{extra}"
    )
}

fn webhook(url: &str) -> String {
    format!("  url: {url}\n  timeout: 5s")
}

/// One `pophook once` cycle of the scripted server's mailbox into `url`.
async fn cycle(server: &Scripted, url: &str, extra: &str) -> Result<CycleReport, String> {
    let cfg = config(&webhook(url), &mailbox(server.port(), extra));
    let mut outcomes = service::once(&cfg.config).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0).result
}

/// The cycle failed, and the error says why.
async fn failing_cycle(server: &Scripted, receiver: &Receiver, extra: &str) -> String {
    match cycle(server, &receiver.url(), extra).await {
        Ok(report) => panic!("the cycle should fail, but it reported {report:?}"),
        Err(error) => error,
    }
}

/// Nothing was posted, and the server still holds all `held` messages: no DELE was
/// sent, and no QUIT that could have committed one.
fn assert_nothing_lost(server: &Scripted, receiver: &Receiver, held: usize) {
    assert!(
        receiver.requests().is_empty(),
        "posted: {:?}",
        receiver.requests()
    );
    let commands = server.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.starts_with("DELE") || c == "QUIT"),
        "DELE or QUIT sent after a hostile reply: {commands:?}"
    );
    assert_eq!(server.remaining().len(), held);
}

fn one_message_with(raw_replies: Vec<(String, Vec<u8>)>) -> Script {
    Script {
        messages: vec![message(1)],
        raw_replies,
        ..Script::default()
    }
}

/// `lines` numbered text lines of 78 bytes plus CRLF, about `lines * 80` bytes.
fn text_lines(lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|n| format!("{n:06} {}\r\n", "x".repeat(71)).into_bytes())
        .collect()
}

// ---- limits ----

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_greeting_line_is_refused_at_the_line_limit() {
    let mut greeting = b"+OK ".to_vec();
    greeting.resize(2 * MIB, b'a');
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        greeting: Some(greeting),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;

    let error = failing_cycle(&server, &receiver, "").await;
    assert!(error.contains("without a line end"), "{error}");
    assert!(
        server.commands().is_empty(),
        "nothing may be sent after a broken greeting"
    );
    assert_nothing_lost(&server, &receiver, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_line_in_a_message_stops_at_max_message_size() {
    let mut retr = b"+OK 100 octets\r\nSubject: long\r\n\r\n".to_vec();
    retr.resize(retr.len() + 2 * MIB, b'a');
    let server = Scripted::start(one_message_with(vec![("RETR".into(), retr)])).await;
    let receiver = Receiver::start().await;

    let error = failing_cycle(&server, &receiver, "    max_message_size: 1048576\n").await;
    assert!(error.contains("RETR exceeded 1048576 bytes"), "{error}");
    assert_nothing_lost(&server, &receiver, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_with_a_line_over_512_kib_is_delivered() {
    // Far beyond RFC 5322's 998 octets, as unwrapped HTML or base64 can be, yet well
    // within `max_message_size`: the limit on server lines must not block the mailbox.
    let mut long = b"Subject: one long line\r\n\r\n".to_vec();
    long.resize(long.len() + 600 * KIB, b'a');
    long.extend_from_slice(b"\r\n");
    let server = Scripted::with_messages(vec![long.clone(), message(2)]).await;
    let receiver = Receiver::start().await;

    let report = cycle(&server, &receiver.url(), "").await.unwrap();
    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(by_uid(&receiver)[0]["size"], long.len());
    assert!(server.remaining().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_message_stops_at_max_message_size() {
    // 4 MiB of lines and never the terminating ".": far more than the 64 KiB allowed.
    let mut retr = b"+OK\r\n".to_vec();
    retr.extend(text_lines(4 * MIB / 80));
    let server = Scripted::start(one_message_with(vec![("RETR".into(), retr)])).await;
    let receiver = Receiver::start().await;

    let error = failing_cycle(&server, &receiver, "    max_message_size: 65536\n").await;
    assert!(error.contains("RETR exceeded 65536 bytes"), "{error}");
    assert!(error.contains("max_message_size"), "{error}");
    assert_nothing_lost(&server, &receiver, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_larger_than_list_said_stops_at_max_message_size() {
    let mut retr = b"+OK 100 octets\r\nSubject: liar\r\n\r\n".to_vec();
    retr.extend(text_lines(200 * KIB / 80));
    retr.extend_from_slice(b".\r\n");
    let server = Scripted::start(one_message_with(vec![
        ("LIST".into(), b"+OK\r\n1 100\r\n.\r\n".to_vec()),
        ("RETR".into(), retr),
    ]))
    .await;
    let receiver = Receiver::start().await;

    let error = failing_cycle(&server, &receiver, "    max_message_size: 65536\n").await;
    assert!(error.contains("RETR exceeded 65536 bytes"), "{error}");
    assert!(error.contains("max_message_size"), "{error}");
    assert!(server.commands().contains(&"RETR 1".to_string()));
    assert_nothing_lost(&server, &receiver, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uidl_listing_over_16_mib_is_refused_before_anything_is_fetched() {
    let mut uidl = b"+OK\r\n".to_vec();
    let mut n = 0;
    while uidl.len() <= 17 * MIB {
        n += 1;
        uidl.extend_from_slice(format!("{n} uid-{n:0>40}\r\n").as_bytes());
    }
    uidl.extend_from_slice(b".\r\n");
    let server = Scripted::start(one_message_with(vec![("UIDL".into(), uidl)])).await;
    let receiver = Receiver::start().await;

    let error = failing_cycle(&server, &receiver, "").await;
    assert!(
        error.contains(&format!("UIDL exceeded {} bytes", 16 * MIB)),
        "{error}"
    );
    assert!(
        !error.contains("max_message_size"),
        "no setting helps here: {error}"
    );
    assert!(!server.commands().iter().any(|c| c.starts_with("RETR")));
    assert_nothing_lost(&server, &receiver, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_cannot_write_escape_sequences_to_the_terminal() {
    // `pophook check` prints the capability lines.
    let capa = b"+OK\r\nUIDL\r\nX-\x1b]0;owned\x07\x1b[2J\rFAKE: ok\r\n.\r\n".to_vec();
    let server = Scripted::start(one_message_with(vec![("CAPA".into(), capa)])).await;
    let receiver = Receiver::start().await;
    let cfg = config(&webhook(&receiver.url()), &mailbox(server.port(), ""));

    let reports = service::check(&cfg.config).await;
    let details = reports[0].result.as_ref().unwrap();
    assert_eq!(details.capabilities.len(), 2, "{:?}", details.capabilities);
    for line in &details.capabilities {
        assert!(!line.contains(char::is_control), "{line:?}");
    }
}

// ---- hostile mail ----

/// The `data` of every accepted event, in server order (uid-1, uid-2, …) rather than
/// arrival order: events are posted concurrently.
fn by_uid(receiver: &Receiver) -> Vec<serde_json::Value> {
    let mut events: Vec<serde_json::Value> = receiver
        .accepted()
        .iter()
        .map(|request| request.json()["data"].clone())
        .collect();
    let number = |data: &serde_json::Value| {
        let uid = data["uidl"].as_str().unwrap_or_default();
        uid.trim_start_matches("uid-")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    };
    events.sort_by_key(number);
    events
}

/// Messages mail parsers trip over. Each ends in CRLF, so what the client retrieves is
/// exactly these bytes.
fn malformed_messages() -> Vec<(&'static str, Vec<u8>)> {
    let broken_boundaries = b"Subject: broken boundaries\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
        --wrong\r\nContent-Type: text/plain\r\n\r\nnot a part\r\n\
        --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
        --inner\r\nContent-Type: text/plain\r\n\r\nnever closed\r\n\
        --outer\r\nContent-Type: text/html\r\n\r\n<p>unterminated\r\n"
        .to_vec();

    let mut nested = b"Subject: 200 levels\r\nMIME-Version: 1.0\r\n".to_vec();
    for level in 0..200 {
        nested.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n")
                .as_bytes(),
        );
    }
    nested.extend_from_slice(b"Content-Type: text/plain\r\n\r\ndeepest\r\n");
    for level in (0..200).rev() {
        nested.extend_from_slice(format!("--b{level}--\r\n").as_bytes());
    }

    let mut many = b"Subject: 5000 parts\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n"
        .to_vec();
    for part in 0..5000 {
        many.extend_from_slice(
            format!("--p\r\nContent-Type: application/octet-stream; name=\"f{part}.bin\"\r\n\r\npart {part}\r\n")
                .as_bytes(),
        );
    }
    many.extend_from_slice(b"--p--\r\n");

    let charsets = b"Subject: =?x-no-such-charset?Q?caf=E9?= =?utf-8?B?!!!?=\r\n\
        Content-Type: text/plain; charset=\"\x01\xff; nonsense\"\r\n\
        Content-Transfer-Encoding: x-unknown\r\n\r\nbody \xe9\xff\r\n"
        .to_vec();

    let nuls =
        b"Subject: nul\x00inside\r\nFrom: a\x00b@example.com\r\n\r\nbody\x00\x00bytes\r\n".to_vec();

    let eight_bit = b"Subject: caf\xe9 \xff\xfe raw 8-bit\r\nFrom: J\xf6rg <j@example.com>\r\n\
        X-Binary: \x80\x81\x82\r\n\r\nbody\r\n"
        .to_vec();

    let no_headers = b"\r\njust a body, no header at all\r\n".to_vec();

    let lone_dot = b"Subject: lone dot\r\n\r\nbefore\r\n.\r\nafter\r\n..\r\nend\r\n".to_vec();

    vec![
        ("broken boundaries", broken_boundaries),
        ("200-level nesting", nested),
        ("5000 parts", many),
        ("invalid charsets", charsets),
        ("NUL bytes", nuls),
        ("8-bit headers", eight_bit),
        ("no headers", no_headers),
        ("empty", Vec::new()),
        ("lone dot line", lone_dot),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_mail_is_delivered_then_deleted() {
    let cases = malformed_messages();
    let server = Scripted::with_messages(cases.iter().map(|(_, raw)| raw.clone()).collect()).await;
    let receiver = Receiver::start().await;

    let report = cycle(&server, &receiver.url(), "").await.unwrap();
    assert_eq!(report.delivered, cases.len(), "{report:?}");

    let accepted = by_uid(&receiver);
    assert_eq!(accepted.len(), cases.len());
    for (data, (name, raw)) in accepted.iter().zip(&cases) {
        assert_eq!(data["size"], raw.len(), "{name}: size");
        if !data["parse_error"].is_null() {
            let sent = data["raw"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: parse_error without raw: {data}"));
            assert_eq!(&BASE64.decode(sent).unwrap(), raw, "{name}: raw");
        }
    }
    // A "." line inside the message is data, not the end of it.
    let lone_dot = &accepted[cases.len() - 1];
    assert_eq!(lone_dot["text"], "before\r\n.\r\nafter\r\n..\r\nend\r\n");

    assert!(
        server.remaining().is_empty(),
        "every delivered message is deleted"
    );
    assert_eq!(server.deleted_uids().len(), cases.len());
}

/// Found by `fuzz/` (target `event`): mail-parser 0.11.9 trips a `debug_assert!` on it
/// ("Invalid part ID, could not find multipart", src/parsers/message.rs:485), so in a
/// build with debug assertions, such as `cargo test`'s, the parser panics.
const TRIPS_A_PARSER_ASSERTION: &[u8] = b"Content-Type:multipart; boundary=fwd-boundary\n\n\
    --fwd-boundaryContent-Type:message/rfc822\n\n\
    Content-Type:message/rfc822\n\n\n\
    --fwd-boundary--\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_panics_the_mime_parser_is_delivered_raw_then_deleted() {
    let server = Scripted::with_messages(vec![TRIPS_A_PARSER_ASSERTION.to_vec(), message(2)]).await;
    let receiver = Receiver::start().await;

    let report = cycle(&server, &receiver.url(), "").await.unwrap();
    assert_eq!(report.delivered, 2, "{report:?}");

    let accepted = by_uid(&receiver);
    let data = &accepted[0];
    if cfg!(debug_assertions) {
        let error = data["parse_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("panicked"),
            "expected the parser-panic path (if mail-parser no longer panics here, take a \
             new input from the fuzzer's crashes): {data}"
        );
        let raw = BASE64.decode(data["raw"].as_str().unwrap()).unwrap();
        assert_eq!(raw, TRIPS_A_PARSER_ASSERTION);
    }
    // The panic cost that message its structure, not the mailbox its next message.
    assert_eq!(accepted[1]["subject"], "test 2");
    assert!(server.remaining().is_empty());
}

// ---- TLS and webhook ----

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_times_out() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver.url()),
        &format!(
            "  - name: stall\n    host: 127.0.0.1\n    port: {port}\n    tls: implicit\n    username: user\n    password: secret\n    timeout: 1s\n"
        ),
    );

    let outcomes = tokio::time::timeout(Duration::from_secs(20), service::once(&cfg.config))
        .await
        .expect("a stalled handshake must end at the configured timeout")
        .unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("TLS handshake"), "{error}");
    assert!(error.contains("sent nothing for 1s"), "{error}");
    assert!(receiver.requests().is_empty());
    silent.abort();
}

/// An HTTP server that answers every request with `status` and a `Location` header,
/// and counts the requests.
async fn redirector(status: u16, location: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/inbound", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (location, counter) = (location.clone(), counter.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (location, counter) = (location.clone(), counter.clone());
                        async move {
                            let _ = request.into_body().collect().await;
                            counter.fetch_add(1, Ordering::SeqCst);
                            hyper::Response::builder()
                                .status(status)
                                .header("location", location)
                                .body(Full::new(Bytes::new()))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_redirect_is_not_followed_and_nothing_is_deleted() {
    // 302 would turn the POST into a GET; 307 and 308 would repeat the POST elsewhere.
    for status in [302, 307, 308] {
        let server = Scripted::with_messages(vec![message(1)]).await;
        let target = Receiver::start().await;
        let (url, redirected) = redirector(status, target.url()).await;

        let report = cycle(&server, &url, "").await.unwrap();
        assert_eq!(redirected.load(Ordering::SeqCst), 1, "{status}");
        assert!(
            target.requests().is_empty(),
            "HTTP {status} was followed to {}",
            target.url()
        );
        assert_eq!((report.delivered, report.failed), (0, 1), "{status}");
        assert!(!server.commands().iter().any(|c| c.starts_with("DELE")));
        assert_eq!(server.remaining().len(), 1, "{status}");
    }

    // The test receiver's plain 302, without a Location: a failure all the same.
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(302));
    let report = cycle(&server, &receiver.url(), "").await.unwrap();
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(server.remaining().len(), 1);
}
