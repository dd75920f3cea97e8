//! Self-tests of the scripted POP3 server: a raw client checks what the wire carries,
//! what the mailbox keeps, and that every fault knob does what the tests rely on.

mod common;

use std::time::Duration;

use common::certs::TestCerts;
use common::scripted::{Script, Scripted, Stls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Real time, because the server is a real socket; long enough never to flake.
const WAIT: Duration = Duration::from_secs(10);

const TWO: &[u8] = b"Subject: two\r\n\r\nhello\r\n";

/// Lines starting with dots, a lone ".", and a line that must stay as it is.
const TRICKY: &[u8] = b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nend\r\n";

struct Client<S> {
    io: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    async fn connect(server: &Scripted) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        Client {
            io: tcp,
            buf: Vec::new(),
        }
    }

    async fn starttls(self, certs: &TestCerts) -> Client<async_native_tls::TlsStream<TcpStream>> {
        assert!(
            self.buf.is_empty(),
            "bytes after the STLS reply: {:?}",
            self.buf
        );
        Client {
            io: tls_connect(self.io, certs).await,
            buf: Vec::new(),
        }
    }
}

async fn tls_connect(tcp: TcpStream, certs: &TestCerts) -> async_native_tls::TlsStream<TcpStream> {
    let ca = native_tls::Certificate::from_pem(&std::fs::read(&certs.ca_cert).unwrap()).unwrap();
    async_native_tls::TlsConnector::new()
        .add_root_certificate(ca)
        .connect("localhost", tcp)
        .await
        .expect("TLS handshake with the scripted server")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next line without CRLF; panics at end of stream.
    async fn line(&mut self) -> String {
        self.try_line().await.expect("server closed the connection")
    }

    async fn try_line(&mut self) -> Option<String> {
        loop {
            if let Some(nl) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..nl + 2).take(nl).collect();
                return Some(String::from_utf8(line).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(WAIT, self.io.read(&mut chunk))
                .await
                .expect("server reply")
                .unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await
    }

    /// The body of a multi-line reply, unstuffed, with CRLF after each line.
    async fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            if line == "." {
                return body;
            }
            body.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
            body.extend_from_slice(b"\r\n");
        }
    }

    /// Everything until the server closes the connection.
    async fn rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        timeout(WAIT, self.io.read_to_end(&mut rest))
            .await
            .expect("server close")
            .unwrap();
        rest
    }

    async fn greeting(&mut self) {
        assert!(self.line().await.starts_with("+OK"), "greeting");
    }

    async fn login(&mut self) {
        assert_eq!(self.cmd("USER user").await, "+OK send PASS");
        assert_eq!(self.cmd("PASS secret").await, "+OK logged in");
    }
}

fn two_messages() -> Script {
    Script {
        messages: vec![TRICKY.to_vec(), TWO.to_vec()],
        ..Script::default()
    }
}

#[tokio::test]
async fn retr_is_dot_stuffed_on_the_wire_and_unstuffs_to_the_message() {
    let server = Scripted::start(two_messages()).await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;

    assert_eq!(c.cmd("UIDL").await, "+OK unique-id listing follows");
    assert_eq!(c.body().await, b"1 uid-1\r\n2 uid-2\r\n");
    assert_eq!(c.cmd("UIDL 2").await, "+OK 2 uid-2");

    c.send(b"RETR 1\r\n").await;
    assert_eq!(c.line().await, format!("+OK {} octets", TRICKY.len()));
    let mut wire = Vec::new();
    loop {
        let line = c.line().await;
        wire.push(line.clone());
        if line == "." {
            break;
        }
    }
    assert_eq!(
        wire,
        ["Subject: dots", "", "..leading", "...two", "..", "end", "."]
    );

    assert!(c.cmd("RETR 1").await.starts_with("+OK"));
    assert_eq!(c.body().await, TRICKY);

    assert_eq!(c.cmd("TOP 1 1").await, "+OK top of message follows");
    assert_eq!(c.body().await, b"Subject: dots\r\n\r\n.leading\r\n");
    assert_eq!(c.cmd("RETR 3").await, "-ERR no such message");
}

#[tokio::test]
async fn dele_then_quit_removes_the_message() {
    let server = Scripted::start(two_messages()).await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted");

    // Marked messages are hidden at once, as RFC 1939 says.
    assert_eq!(c.cmd("STAT").await, format!("+OK 1 {}", TWO.len()));
    assert!(c.cmd("LIST").await.starts_with("+OK"));
    assert_eq!(c.body().await, format!("2 {}\r\n", TWO.len()).as_bytes());
    assert!(c.cmd("UIDL").await.starts_with("+OK"));
    assert_eq!(c.body().await, b"2 uid-2\r\n");
    assert_eq!(c.cmd("RETR 1").await, "-ERR no such message");
    assert_eq!(c.cmd("DELE 1").await, "-ERR no such message");
    assert_eq!(
        server.remaining().len(),
        2,
        "nothing is removed before QUIT"
    );

    assert_eq!(c.cmd("QUIT").await, "+OK bye");
    assert!(c.rest().await.is_empty());
    assert_eq!(server.remaining(), [TWO.to_vec()]);
    assert_eq!(server.deleted_uids(), ["uid-1"]);

    let mut again = Client::connect(&server).await;
    again.greeting().await;
    again.login().await;
    assert_eq!(again.cmd("UIDL").await, "+OK unique-id listing follows");
    assert_eq!(
        again.body().await,
        b"1 uid-2\r\n",
        "renumbered after the deletion"
    );
    assert_eq!(server.sessions(), 2);
}

#[tokio::test]
async fn dele_without_quit_or_after_rset_keeps_the_message() {
    let server = Scripted::start(two_messages()).await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    drop(c);

    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    assert_eq!(
        c.cmd("STAT").await,
        format!("+OK 2 {}", TRICKY.len() + TWO.len())
    );
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(c.cmd("RSET").await, "+OK");
    assert_eq!(c.cmd("QUIT").await, "+OK bye");
    c.rest().await;

    assert_eq!(server.remaining().len(), 2);
    assert!(server.deleted_uids().is_empty());
}

#[tokio::test]
async fn quit_error_commits_nothing() {
    let server = Scripted::start(Script {
        quit_error: true,
        ..two_messages()
    })
    .await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("-ERR"));
    c.rest().await;
    assert_eq!(server.remaining().len(), 2);
}

#[tokio::test]
async fn concurrent_sessions_share_one_mailbox() {
    let server = Scripted::start(two_messages()).await;
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    a.greeting().await;
    a.login().await;
    b.greeting().await;
    b.login().await;
    assert!(a.cmd("DELE 1").await.starts_with("+OK"));
    assert!(b.cmd("DELE 1").await.starts_with("+OK"));
    assert!(b.cmd("DELE 2").await.starts_with("+OK"));
    assert_eq!(a.cmd("QUIT").await, "+OK bye");
    assert_eq!(b.cmd("QUIT").await, "+OK bye");
    a.rest().await;
    b.rest().await;
    assert!(server.remaining().is_empty());
    assert_eq!(
        server.deleted_uids(),
        ["uid-1", "uid-2"],
        "each UID removed once"
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = Scripted::start(Script {
        pipelining: true,
        ..two_messages()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    c.send(b"CAPA\r\nUSER user\r\nPASS secret\r\nSTAT\r\nUIDL 2\r\nLIST 1\r\nNOOP\r\nQUIT\r\n")
        .await;

    assert!(c.line().await.starts_with("+OK"));
    let capa = String::from_utf8(c.body().await).unwrap();
    assert!(capa.lines().any(|l| l == "PIPELINING"), "{capa}");
    let replies: Vec<String> = String::from_utf8(c.rest().await)
        .unwrap()
        .split_terminator("\r\n")
        .map(str::to_string)
        .collect();
    assert_eq!(
        replies,
        [
            "+OK send PASS".to_string(),
            "+OK logged in".to_string(),
            format!("+OK 2 {}", TRICKY.len() + TWO.len()),
            "+OK 2 uid-2".to_string(),
            format!("+OK 1 {}", TRICKY.len()),
            "+OK".to_string(),
            "+OK bye".to_string(),
        ]
    );
    assert_eq!(
        server.commands(),
        [
            "CAPA",
            "USER user",
            "PASS secret",
            "STAT",
            "UIDL 2",
            "LIST 1",
            "NOOP",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn drop_during_retr_closes_mid_message() {
    let big = b"Subject: big\r\n\r\n"
        .iter()
        .chain(&[b'x'; 1000])
        .chain(b"\r\n")
        .copied()
        .collect::<Vec<u8>>();
    let server = Scripted::start(Script {
        messages: vec![big.clone()],
        drop_during_retr: Some(1),
        ..Script::default()
    })
    .await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    c.send(b"RETR 1\r\n").await;
    assert_eq!(c.line().await, format!("+OK {} octets", big.len()));
    let partial = c.rest().await;
    assert_eq!(
        partial,
        big[..big.len() / 2],
        "half the message, then end of stream"
    );
    assert_eq!(server.remaining(), [big]);
}

#[tokio::test]
async fn stls_upgrades_the_same_session_and_logs_commands_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = Scripted::start(Script {
        stls: Stls::Offered,
        tls: Some(certs.identity()),
        ..two_messages()
    })
    .await;

    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let before = String::from_utf8(c.body().await).unwrap();
    assert!(before.lines().any(|l| l == "STLS"), "{before}");
    assert!(c.cmd("STLS").await.starts_with("+OK"));

    let mut c = c.starttls(&certs).await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let after = String::from_utf8(c.body().await).unwrap();
    assert!(!after.lines().any(|l| l == "STLS"), "{after}");
    assert!(after.lines().any(|l| l == "SASL PLAIN"), "{after}");
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    c.login().await;
    assert!(c.cmd("RETR 1").await.starts_with("+OK"));
    assert_eq!(c.body().await, TRICKY);
    assert_eq!(c.cmd("QUIT").await, "+OK bye");

    assert_eq!(
        server.commands(),
        [
            "CAPA",
            "STLS",
            "CAPA",
            "STLS",
            "USER user",
            "PASS secret",
            "RETR 1",
            "QUIT"
        ]
    );
    assert_eq!(server.sessions(), 1);
}

#[tokio::test]
async fn stls_inject_sends_a_reply_in_clear_after_the_ok() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = Scripted::start(Script {
        stls: Stls::Inject,
        tls: Some(certs.identity()),
        ..Script::default()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    c.send(b"STLS\r\n").await;
    assert!(c.line().await.starts_with("+OK"));
    // Both lines were written together, so the injected one is already here or on its way.
    assert_eq!(c.line().await, "+OK injected");
}

#[tokio::test]
async fn stls_refused_and_not_offered() {
    let server = Scripted::start(Script {
        stls: Stls::Refused,
        ..Script::default()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(String::from_utf8(c.body().await)
        .unwrap()
        .lines()
        .any(|l| l == "STLS"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));

    let server = Scripted::start(Script {
        capa: false,
        uidl: false,
        ..Script::default()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.cmd("CAPA").await.starts_with("-ERR"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    c.login().await;
    assert_eq!(c.cmd("UIDL").await, "-ERR unknown command");
}

#[tokio::test]
async fn implicit_tls_greets_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = Scripted::start(Script {
        implicit_tls: true,
        stls: Stls::Offered,
        tls: Some(certs.identity()),
        ..two_messages()
    })
    .await;
    let tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let mut c = Client {
        io: tls_connect(tcp, &certs).await,
        buf: Vec::new(),
    };
    c.greeting().await;
    c.login().await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(!String::from_utf8(c.body().await).unwrap().contains("STLS"));
    assert_eq!(server.commands(), ["USER user", "PASS secret", "CAPA"]);
}

#[tokio::test]
async fn auth_plain_in_both_forms() {
    let server = Scripted::start(two_messages()).await;
    // base64("\0user\0secret") and base64("\0user\0wrong")
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert_eq!(
        c.cmd("AUTH PLAIN AHVzZXIAd3Jvbmc=").await,
        "-ERR [AUTH] invalid credentials"
    );
    assert_eq!(c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0").await, "+OK logged in");
    assert!(c.cmd("STAT").await.starts_with("+OK 2 "));

    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(c.cmd("AHVzZXIAc2VjcmV0").await, "+OK logged in");

    let server = Scripted::start(Script {
        sasl_plain: false,
        ..Script::default()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c
        .cmd("AUTH PLAIN AHVzZXIAc2VjcmV0")
        .await
        .starts_with("-ERR"));
}

#[tokio::test]
async fn wrong_password_and_login_error() {
    let server = Scripted::start(two_messages()).await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.cmd("USER user").await.starts_with("+OK"));
    assert_eq!(c.cmd("PASS nope").await, "-ERR [AUTH] invalid credentials");
    assert!(
        c.cmd("STAT").await.starts_with("-ERR"),
        "still not logged in"
    );

    let server = Scripted::start(Script {
        login_error: Some("-ERR [IN-USE] mailbox locked".to_string()),
        ..two_messages()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.cmd("USER user").await.starts_with("+OK"));
    assert_eq!(c.cmd("PASS secret").await, "-ERR [IN-USE] mailbox locked");
    assert_eq!(
        c.cmd("AUTH PLAIN AHVzZXIAc2VjcmV0").await,
        "-ERR [IN-USE] mailbox locked"
    );
    assert!(c.cmd("STAT").await.starts_with("-ERR"));
}

#[tokio::test]
async fn stall_on_keeps_the_socket_open_and_silent() {
    let server = Scripted::start(Script {
        stall_on: Some("RETR".to_string()),
        ..two_messages()
    })
    .await;
    let mut c = Client::connect(&server).await;
    c.greeting().await;
    c.login().await;
    c.send(b"RETR 1\r\nNOOP\r\n").await;
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_millis(300), c.io.read(&mut byte)).await;
    assert!(
        read.is_err(),
        "expected silence with the socket open, got {read:?}"
    );
    assert_eq!(server.commands()[2..], ["RETR 1", "NOOP"]);
}

#[tokio::test]
async fn greeting_and_raw_replies_are_sent_verbatim() {
    let server = Scripted::start(Script {
        greeting: Some(b"+OK <1.2@host> hi\r\n".to_vec()),
        raw_replies: vec![("uidl".to_string(), b"+OK\r\n1 a b c\r\n".to_vec())],
        ..two_messages()
    })
    .await;
    let mut c = Client::connect(&server).await;
    assert_eq!(c.line().await, "+OK <1.2@host> hi");
    assert!(c.cmd("USER user").await.starts_with("+OK"));
    assert!(c.cmd("PASS secret").await.starts_with("+OK"));
    assert_eq!(c.cmd("UIDL").await, "+OK");
    assert_eq!(c.line().await, "1 a b c");
    assert!(
        c.cmd("NOOP").await.starts_with("+OK"),
        "the session goes on"
    );
}
