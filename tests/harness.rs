//! Checks the test fixtures themselves against real servers and clients, so that a
//! failing pophook test points at pophook and not at a broken Dovecot or receiver.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::receiver::{Receiver, Reply};

/// A minimal blocking POP3 client that panics with the Dovecot log on surprises.
struct Pop<'a, S: Read + Write> {
    server: &'a Dovecot,
    conn: BufReader<S>,
}

impl<'a, S: Read + Write> Pop<'a, S> {
    fn greet(server: &'a Dovecot, stream: S) -> Self {
        let mut pop = Pop {
            server,
            conn: BufReader::new(stream),
        };
        let greeting = pop.line();
        pop.expect_ok(&greeting, "greeting");
        pop
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("read from Dovecot");
        assert!(
            line.ends_with("\r\n"),
            "line without CRLF: {line:?}\n{}",
            self.server.log()
        );
        line
    }

    fn send(&mut self, command: &str) -> String {
        write!(self.conn.get_mut(), "{command}\r\n").unwrap();
        self.conn.get_mut().flush().unwrap();
        self.line()
    }

    fn ok(&mut self, command: &str) -> String {
        let reply = self.send(command);
        self.expect_ok(&reply, command);
        reply
    }

    /// A multi-line answer, dot-unstuffed, each line still ending in CRLF.
    fn multi(&mut self, command: &str) -> Vec<String> {
        self.ok(command);
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            if line == ".\r\n" {
                return lines;
            }
            lines.push(line.strip_prefix('.').unwrap_or(&line).to_owned());
        }
    }

    fn login(&mut self, user: &str, password: &str) {
        self.ok(&format!("USER {user}"));
        self.ok(&format!("PASS {password}"));
    }

    fn expect_ok(&self, reply: &str, what: &str) {
        assert!(
            reply.starts_with("+OK"),
            "{what}: {reply:?}\n--- Dovecot log ---\n{}",
            self.server.log()
        );
    }
}

fn plain(server: &Dovecot) -> Pop<'_, TcpStream> {
    let tcp = TcpStream::connect((server.host(), server.plain_port())).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    Pop::greet(server, tcp)
}

fn tls_connector(server: &Dovecot) -> native_tls::TlsConnector {
    let ca = std::fs::read(server.ca_file()).unwrap();
    native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

#[test]
fn dovecot_serves_delivered_mail_over_plain_pop3() {
    let server = Dovecot::start();
    server.add_user("alice", "s3cret pass");
    let raw = b"From: a@example.com\nSubject: hi\n\nline one\n.starts with a dot\n";
    let crlf = b"Subject: crlf\r\n\r\nstored with CRLF\r\n";
    server.deliver("alice", raw);
    server.deliver("alice", crlf);
    assert_eq!(server.messages("alice"), [raw.to_vec(), crlf.to_vec()]);

    let mut pop = plain(&server);
    let capa = pop.multi("CAPA");
    assert!(capa.contains(&"STLS\r\n".to_owned()), "{capa:?}");
    assert!(capa.contains(&"UIDL\r\n".to_owned()), "{capa:?}");
    pop.login("alice", "s3cret pass");
    // Dovecot counts sizes as served, with CRLF: 5 LF lines are 5 more bytes.
    let size = raw.len() + 5 + crlf.len();
    assert_eq!(pop.ok("STAT"), format!("+OK 2 {size}\r\n"));
    let uidl = pop.multi("UIDL");
    assert_eq!(uidl.len(), 2);
    assert!(
        uidl[0].starts_with("1 ") && uidl[1].starts_with("2 "),
        "{uidl:?}"
    );
    assert_eq!(
        pop.multi("RETR 1").concat(),
        "From: a@example.com\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\n"
    );
    assert_eq!(pop.multi("RETR 2").concat().as_bytes(), crlf);
    pop.ok("DELE 1");
    // Expunged before QUIT is answered: once the client has +OK, the mail is gone.
    pop.ok("QUIT");
    assert_eq!(server.messages("alice"), [crlf.to_vec()]);
}

#[test]
fn dovecot_numbers_messages_in_delivery_order() {
    let server = Dovecot::start();
    server.add_user("bob", "pw");
    // More than 9 so that file-name order and readdir order can differ.
    let raws: Vec<Vec<u8>> = (1..=12)
        .map(|i| format!("Subject: m{i}\n\nbody {i}\n").into_bytes())
        .collect();
    for raw in &raws {
        server.deliver("bob", raw);
    }
    assert_eq!(server.messages("bob"), raws);

    let mut pop = plain(&server);
    pop.login("bob", "pw");
    for i in 1..=12 {
        assert_eq!(
            pop.multi(&format!("RETR {i}")).concat(),
            format!("Subject: m{i}\r\n\r\nbody {i}\r\n")
        );
    }
    pop.ok("QUIT");
    // RETR moved them from new/ to cur/; still all there, still in order.
    assert_eq!(server.messages("bob"), raws);
}

#[test]
fn dovecot_tls_port_and_stls_verify_against_the_test_ca() {
    let server = Dovecot::start();
    server.add_user("carol", "pw");
    server.deliver("carol", b"Subject: tls\n\nhello\n");
    let connector = tls_connector(&server);

    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect((server.host(), server.tls_port())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let tls = connector
            .connect(name, tcp)
            .unwrap_or_else(|e| panic!("TLS as {name}: {e}\n{}", server.log()));
        let mut pop = Pop::greet(&server, tls);
        pop.login("carol", "pw");
        assert!(pop.ok("STAT").starts_with("+OK 1 "));
        pop.ok("QUIT");
    }

    let mut pop = plain(&server);
    pop.ok("STLS");
    let tcp = pop.conn.into_inner();
    let tls = connector
        .connect("localhost", tcp)
        .unwrap_or_else(|e| panic!("STLS handshake: {e}\n{}", server.log()));
    let mut pop = Pop {
        server: &server,
        conn: BufReader::new(tls),
    };
    let capa = pop.multi("CAPA");
    assert!(!capa.contains(&"STLS\r\n".to_owned()), "{capa:?}");
    pop.login("carol", "pw");
    pop.ok("QUIT");

    // A client that does not know the test CA must refuse the certificate.
    let tcp = TcpStream::connect((server.host(), server.tls_port())).unwrap();
    let untrusting = native_tls::TlsConnector::new().unwrap();
    assert!(untrusting.connect("localhost", tcp).is_err());
}

#[test]
fn two_dovecots_run_in_parallel_independently() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Dovecot::start);
        let b = s.spawn(Dovecot::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut ports = vec![a.plain_port(), a.tls_port(), b.plain_port(), b.tls_port()];
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4);

    a.add_user("dave", "pw-a");
    b.add_user("dave", "pw-b");
    a.deliver("dave", b"Subject: only in a\n\n.\n");
    assert_eq!(a.message_count("dave"), 1);
    assert_eq!(b.message_count("dave"), 0);

    let mut pop = plain(&b);
    pop.ok("USER dave");
    assert!(pop.send("PASS pw-a").starts_with("-ERR"));
    pop.login("dave", "pw-b");
    assert_eq!(pop.ok("STAT"), "+OK 0 0\r\n");
}

#[test]
fn dovecot_refuses_bad_logins_without_slowing_later_ones() {
    let server = Dovecot::start();
    server.add_user("erin", "right");
    let started = Instant::now();
    for (user, password) in [("nobody-here", "x"), ("erin", "wrong"), ("erin", "wrong")] {
        let mut pop = plain(&server);
        pop.ok(&format!("USER {user}"));
        let reply = pop.send(&format!("PASS {password}"));
        // [AUTH]: a permanent "wrong credentials", not a temporary server failure.
        assert!(
            reply.starts_with("-ERR [AUTH] "),
            "{user}/{password}: {reply:?}\n{}",
            server.log()
        );
    }
    let mut pop = plain(&server);
    pop.login("erin", "right");
    // Dovecot's default penalty would make these take 0.5 + 4 + 4 + 4 s.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bad logins were delayed: {:?}\n{}",
        started.elapsed(),
        server.log()
    );
}

#[test]
fn dovecot_sees_users_added_after_others_logged_in() {
    let server = Dovecot::start();
    server.add_user("first", "one");
    plain(&server).login("first", "one");
    server.add_user("second", "two");
    plain(&server).login("second", "two");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn receiver_records_requests_and_answers_204_by_default() {
    let receiver = Receiver::start().await;
    let response = client()
        .post(receiver.url())
        .header("X-Pophook-Test", "yes")
        .json(&serde_json::json!({"subject": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/inbound");
    assert_eq!(request.header("x-pophook-test"), Some("yes"));
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(request.json(), serde_json::json!({"subject": "hi"}));
    assert_eq!(receiver.accepted().len(), 1);
}

#[tokio::test]
async fn receiver_uses_queued_replies_in_order_then_the_default() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(200));
    receiver.push_replies([Reply::Status(500), Reply::Status(429), Reply::Status(201)]);
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let response = client
            .post(receiver.url())
            .body(format!("request {i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [500, 429, 201, 200, 200]);
    assert_eq!(receiver.requests().len(), 5);
    let accepted: Vec<Vec<u8>> = receiver.accepted().into_iter().map(|r| r.body).collect();
    assert_eq!(
        accepted,
        [&b"request 2"[..], b"request 3", b"request 4"].map(<[u8]>::to_vec)
    );
}

#[tokio::test]
async fn receiver_close_is_a_network_error_for_the_client() {
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Close]);
    let client = client();
    let error = client
        .post(receiver.url())
        .body("dropped")
        .send()
        .await
        .expect_err("Close must not produce an HTTP response");
    assert!(error.status().is_none(), "{error:?}");
    assert!(!error.is_timeout(), "{error:?}");
    // Recorded once (the client did not silently retry) and not accepted.
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(receiver.requests()[0].body, b"dropped");
    assert!(receiver.accepted().is_empty());

    let response = client.post(receiver.url()).send().await.unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_delay_holds_the_answer_back() {
    let receiver = Receiver::start().await;
    receiver.push_replies([
        Reply::Delay(Duration::from_millis(300), 202),
        Reply::Delay(Duration::from_secs(5), 204),
    ]);
    let started = Instant::now();
    let response = client().post(receiver.url()).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let error = impatient.post(receiver.url()).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn receiver_waits_for_requests_still_to_come() {
    let receiver = Receiver::start().await;
    let url = receiver.url();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..2 {
            client().post(&url).send().await.unwrap();
        }
    });
    let accepted = receiver.wait_for_accepted(2, Duration::from_secs(10)).await;
    assert_eq!(accepted.len(), 2);
}

#[tokio::test]
#[should_panic(expected = "expected 1 accepted webhook requests")]
async fn receiver_wait_panics_with_what_arrived() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(503));
    client().post(receiver.url()).send().await.unwrap();
    receiver
        .wait_for_accepted(1, Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn receiver_stops_when_dropped() {
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/inbound"))
        .unwrap()
        .to_owned();
    drop(receiver);
    // Aborting takes effect when the runtime next polls the server task.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the receiver still accepts connections after being dropped");
}
