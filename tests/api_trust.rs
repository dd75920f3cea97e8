//! The `http.listen` endpoint against hostile or careless clients: without the token
//! nothing under `/api/*` answers (nor drops or replays anything), a stranger's `Host`
//! is refused, 1,100 idle connections do not stop delivery of a pophook limited to 1,024
//! descriptors, and a half-sent request does not hold up SIGTERM. The pophook binary
//! runs as a child process; its stderr goes to a file.

mod common;

use std::time::{Duration, Instant};

use common::process::{free_port, Pophook};
use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, hook, message, scripted_mailbox, TestConfig};
use pophook::config::DEFAULT_HTTP_MAX_CONNECTIONS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "api-t0ken-0123456789abcdef";

/// `cfg` with an `http` block (`listen` on `port`, plus `extra` keys) prepended.
fn with_http(cfg: TestConfig, port: u16, extra: &str) -> TestConfig {
    let yaml = format!(
        "http: {{listen: '127.0.0.1:{port}'{extra}}}\nshutdown_timeout: 5s\n{}",
        cfg.yaml
    );
    std::fs::write(cfg.path(), &yaml).unwrap();
    let config = pophook::config::from_yaml(&yaml).unwrap();
    TestConfig {
        config,
        yaml,
        dir: cfg.dir,
    }
}

/// Sends `head` (request line and headers, each ending in CRLF) plus `Connection:
/// close` and the blank line, and `body`; returns the status and the whole answer.
async fn raw_with_body(port: u16, head: &str, body: &str) -> (Option<u16>, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return (None, String::new());
    };
    let request = format!(
        "{head}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (None, String::new());
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, answer)
}

async fn raw(port: u16, head: &str) -> (Option<u16>, String) {
    raw_with_body(port, head, "").await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Raises this process's soft descriptor limit to at least `n` (within the hard limit)
/// with util-linux's `prlimit`; fails naming the limit when it stays too low.
fn raise_own_descriptor_limit(n: u32) {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--raw",
            "--noheadings",
            "--output=SOFT,HARD",
        ])
        .output()
        .expect("run `prlimit` (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let parse = |f: Option<&str>| match f {
        Some("unlimited") | None => u64::MAX,
        Some(v) => v.parse().unwrap_or(0),
    };
    let (soft, hard) = (parse(fields.next()), parse(fields.next()));
    if soft >= u64::from(n) {
        return;
    }
    assert!(
        hard >= u64::from(n),
        "this test needs {n} descriptors; the hard limit is {hard}: raise it (ulimit -Hn)"
    );
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:")])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "prlimit could not raise the soft limit to {n}"
    );
}

/// Until the watch turns true (or its sender is gone).
async fn until(released: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = released.wait_for(|r| *r).await.map(|_| ());
}

/// SIGTERM, which must end pophook with exit 0 and without cutting anything short.
async fn stop(child: Pophook) {
    let log = child.stop().await;
    assert!(!log.contains("shutdown took longer"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_client_gets_401_everywhere_under_api_and_cannot_drop_or_replay() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(422));
    let port = free_port();
    let cfg = with_http(
        config(
            &hook(
                &receiver.url(),
                "  retry: {schedule: [0s], max_rejections: 1}",
            ),
            &scripted_mailbox("box", server.port(), "")
                .replace("poll_interval: 1s", "poll_interval: 1h"),
        ),
        port,
        &format!(", token: {TOKEN}"),
    );
    let child = Pophook::run(&cfg, port).await;

    // `parked list` sends the configured token.
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let out = tokio::task::block_in_place(|| cfg.pophook(&["parked", "list", "--json"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(first) = list.as_array().unwrap().first() {
            break first["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "nothing was parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let posts_before = receiver.requests().len();
    receiver.set_default(Reply::Status(204));

    let drop_body = format!("{{\"ids\": [\"{id}\"]}}");
    let routes: [(&str, &str, &str); 6] = [
        ("GET", "/api/status", ""),
        ("GET", "/api/parked", ""),
        ("POST", "/api/parked/replay", "{}"),
        ("POST", "/api/parked/drop", &drop_body),
        ("POST", "/api/reload", ""),
        ("GET", "/api/unknown", ""),
    ];
    for authorization in ["", "Authorization: Bearer wrong-token-0123456789\r\n"] {
        for (method, path, body) in routes {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{authorization}Content-Type: application/json\r\n"
            );
            let (status, answer) = raw_with_body(port, &head, body).await;
            assert_eq!(status, Some(401), "{method} {path}: {answer}");
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{answer}"
            );
        }
    }
    // With the token, but a name a rebinding web page would send.
    let (status, answer) = raw(
        port,
        &format!("GET /api/status HTTP/1.1\r\nHost: rebind.example:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, Some(403), "{answer}");
    // With the token and an allowed Host, but sent by a web page (a form post needs no
    // preflight): refused, and nothing is reloaded.
    for browser in [
        "Origin: http://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let (status, answer) = raw(
            port,
            &format!("POST /api/reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n{browser}"),
        )
        .await;
        assert_eq!(status, Some(403), "{browser}: {answer}");
    }
    // The open endpoints stay open; the token opens the API.
    for path in ["/healthz", "/metrics"] {
        let (status, _) = raw(port, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n")).await;
        assert_eq!(status, Some(200), "{path}");
    }
    let (status, answer) = raw(port, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n").await;
    assert!(matches!(status, Some(200 | 503)), "{answer}");
    let (status, answer) = raw(
        port,
        &format!("GET /api/status HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, Some(200), "{answer}");

    // Nothing was replayed or dropped: still parked, never posted again.
    let out = tokio::task::block_in_place(|| cfg.pophook(&["parked", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(receiver.requests().len(), posts_before);
    assert_eq!(server.remaining().len(), 1);

    // A command without the token is told what to do.
    let no_token = cfg.yaml.replace(&format!(", token: {TOKEN}"), "");
    std::fs::write(cfg.path(), &no_token).unwrap();
    let out = tokio::task::block_in_place(|| cfg.pophook(&["status"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("http.token"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(cfg.path(), &cfg.yaml).unwrap();
    let out = tokio::task::block_in_place(|| cfg.pophook(&["status"]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let log = child.log();
    assert!(!log.contains(TOKEN), "the token is logged:\n{log}");
    assert!(
        !log.contains("configuration reloaded"),
        "a refused request reloaded:\n{log}"
    );
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protect_metrics_puts_metrics_behind_the_token_and_leaves_health_open() {
    let server = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let port = free_port();
    let cfg = with_http(
        config(
            &hook(&receiver.url(), ""),
            &scripted_mailbox("box", server.port(), ""),
        ),
        port,
        &format!(", token: {TOKEN}, protect_metrics: true"),
    );
    let child = Pophook::run(&cfg, port).await;
    let (status, answer) = raw(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n").await;
    assert_eq!(status, Some(401), "{answer}");
    assert!(!answer.contains("pophook_"), "{answer}");
    let (status, answer) = raw(
        port,
        &format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, Some(200), "{answer}");
    assert!(answer.contains("pophook_"), "{answer}");
    let (status, _) = raw(port, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await;
    assert_eq!(status, Some(200));
    let (status, answer) = raw(port, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n").await;
    assert!(matches!(status, Some(200 | 503)), "{answer}");
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eleven_hundred_idle_connections_do_not_stop_delivery_under_a_1024_descriptor_limit() {
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let port = free_port();
    let cfg = with_http(
        config(
            &hook(&receiver.url(), ""),
            &scripted_mailbox("box", server.port(), ""),
        ),
        port,
        &format!(", token: {TOKEN}"),
    );
    let stderr = cfg.dir.path().join("stderr.log");
    let child = Pophook::spawn_with_nofile(1024, &["run"], &cfg.path(), &stderr);
    child.wait_healthy(port).await;
    let pid = child.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1024", "1024"],
        "pophook runs under a 1,024 descriptor limit: {open_files}"
    );
    // This test process holds the 1,100 client ends itself.
    raise_own_descriptor_limit(4096);
    receiver.wait_for_accepted(1, Duration::from_secs(20)).await;

    // 1,100 clients connect and then send nothing. Those beyond the connection cap wait
    // in the kernel's queue (or keep retrying their SYN while it is full): every one
    // stays open until the end of the test.
    let (release, released) = tokio::sync::watch::channel(false);
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..1100 {
        let mut released = released.clone();
        let connected = connected.clone();
        clients.spawn(async move {
            tokio::select! {
                stream = TcpStream::connect(("127.0.0.1", port)) => {
                    // A refused or failed connect is no idle client: the count below
                    // must reach 1,000 without it.
                    if let Ok(stream) = stream {
                        connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        until(&mut released).await;
                        drop(stream);
                    }
                }
                _ = until(&mut released) => {}
            }
        });
    }
    // Accepted by pophook (up to its cap) or waiting in the kernel's accept queue. How
    // many the kernel queues depends on `net.core.somaxconn` and the SYN backlog of the
    // machine (a CI container queued fewer than 500): the rest keep retrying their SYN,
    // which costs pophook nothing either. So wait until 1,000 are connected or the count
    // stops growing, and require that far more clients got in than pophook serves at
    // once: its cap is saturated, with a queue behind it.
    let count = || connected.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (0, Instant::now());
    while count() < 1000 && Instant::now() < deadline {
        if count() != last {
            (last, since) = (count(), Instant::now());
        } else if since.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap_or_default();
    assert!(
        count() >= 4 * DEFAULT_HTTP_MAX_CONNECTIONS,
        "only {} of 1,100 clients connected (net.core.somaxconn {}): pophook's cap of {} \
         is not saturated, so the test proves nothing",
        count(),
        somaxconn.trim(),
        DEFAULT_HTTP_MAX_CONNECTIONS
    );

    // New mail is delivered while they sit there.
    server.push_message(message(2), "uid-2");
    server.push_message(message(3), "uid-3");
    receiver.wait_for_accepted(3, Duration::from_secs(30)).await;
    child
        .until(
            "the delivered mail to be deleted",
            Duration::from_secs(20),
            || server.remaining().is_empty(),
        )
        .await;
    // pophook holds a bounded number of descriptors, whatever the clients do.
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        descriptors < 200,
        "pophook holds {descriptors} descriptors with {} idle clients connected",
        count()
    );
    let log = child.log();
    assert!(!log.contains("Too many open files"), "{log}");
    release.send(true).unwrap();
    clients.join_all().await;
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_request_does_not_delay_sigterm() {
    let server = Scripted::start(Script::default()).await;
    let receiver = Receiver::start().await;
    let port = free_port();
    // shutdown_timeout (5s) is shorter than the header timeout (10s): a shutdown that
    // waited for this client would exit 1 after 5s.
    let cfg = with_http(
        config(
            &hook(&receiver.url(), ""),
            &scripted_mailbox("box", server.port(), ""),
        ),
        port,
        "",
    );
    let child = Pophook::run(&cfg, port).await;
    let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    half.write_all(b"POST /api/parked/drop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Len")
        .await
        .unwrap();
    let mut body = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    body.write_all(b"POST /api/parked/drop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ids\"")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    stop(child).await;
    // Nothing else is in flight: the shutdown is quick, not cut at `shutdown_timeout`.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    drop((half, body));
}
