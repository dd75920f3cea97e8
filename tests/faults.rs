//! Faults Dovecot will not produce on demand, against the scripted POP3 server: STLS
//! missing, refused or injected, plaintext refusal, [IN-USE], dropped connections, a
//! server without UIDL. Each checks what was sent, posted and left on the server.

mod common;

use std::time::Duration;

use common::certs::TestCerts;
use common::receiver::Receiver;
use common::scripted::{Script, Scripted, Stls};
use common::setup::{config, message};
use pophook::pop3::codec::ResponseCode;
use pophook::pop3::{AuthMethod, Pop3Error, ServerConfig, Session, TlsMode};
use pophook::secret::Secret;
use pophook::service;

fn messages(n: usize) -> Vec<Vec<u8>> {
    (1..=n).map(message).collect()
}

fn mailbox(port: u16, extra: &str) -> String {
    format!(
        "  - name: scripted\n    host: localhost\n    port: {port}\n    username: user\n    password: secret\n    timeout: 2s\n{extra}"
    )
}

fn webhook(receiver: &Receiver) -> String {
    format!("  url: {}\n  timeout: 5s", receiver.url())
}

/// No USER, PASS or AUTH line (nor the password itself) reached the server.
fn assert_no_credentials_sent(server: &Scripted) {
    for line in server.commands() {
        let upper = line.to_ascii_uppercase();
        assert!(
            !upper.starts_with("USER") && !upper.starts_with("PASS") && !upper.starts_with("AUTH"),
            "credential command sent: {line}"
        );
        assert!(!line.contains("secret"), "password sent: {line}");
    }
}

async fn starttls_failure(stls: Stls) -> (String, Scripted, Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = Scripted::start(Script {
        messages: messages(1),
        stls,
        tls: Some(certs.identity()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let extra = format!(
        "    tls: starttls\n    tls_ca_file: {}\n",
        certs.ca_cert.display()
    );
    let cfg = config(&webhook(&receiver), &mailbox(server.port(), &extra));
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err().clone();
    (error, server, receiver)
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_without_stls_in_capa_aborts_before_credentials() {
    let (error, server, receiver) = starttls_failure(Stls::NotOffered).await;
    assert!(error.contains("does not offer STLS"), "{error}");
    assert_no_credentials_sent(&server);
    assert!(receiver.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_refused_aborts_before_credentials() {
    let (error, server, _receiver) = starttls_failure(Stls::Refused).await;
    assert!(error.contains("refused STLS"), "{error}");
    assert_no_credentials_sent(&server);
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_injected_before_the_tls_handshake_abort_the_session() {
    let (error, server, _receiver) = starttls_failure(Stls::Inject).await;
    assert!(error.contains("before the TLS handshake"), "{error}");
    assert_no_credentials_sent(&server);
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_upgrades_then_asks_capa_again_then_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path());
    let server = Scripted::start(Script {
        messages: messages(2),
        stls: Stls::Offered,
        tls: Some(certs.identity()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let extra = format!(
        "    tls: starttls\n    tls_ca_file: {}\n",
        certs.ca_cert.display()
    );
    let cfg = config(&webhook(&receiver), &mailbox(server.port(), &extra));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    let commands = server.commands();
    let stls = commands.iter().position(|c| c == "STLS").unwrap();
    assert_eq!(commands[..stls], ["CAPA"]);
    assert_eq!(
        commands[stls + 1],
        "CAPA",
        "CAPA must be asked again over TLS"
    );
    assert!(commands[stls + 2].starts_with("USER"));
    assert_eq!(receiver.accepted().len(), 2);
    assert!(server.remaining().is_empty());
}

fn server_config(port: u16, tls: TlsMode, allow_insecure: bool) -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".into(),
        port,
        tls,
        allow_insecure,
        ca_pem: None,
        accept_invalid_certs: false,
        username: "user".into(),
        password: Secret::new("secret"),
        auth: AuthMethod::User,
        oauth2: None,
        timeout: Duration::from_secs(2),
        max_line: pophook::pop3::codec::DEFAULT_MAX_LINE,
        max_message_size: 1024 * 1024,
        tls_connector: Default::default(),
    }
}

#[tokio::test]
async fn credentials_are_never_sent_in_the_clear_without_allow_insecure() {
    let server = Scripted::start(Script::default()).await;
    let result = Session::connect(&server_config(server.port(), TlsMode::None, false)).await;
    assert!(matches!(result, Err(Pop3Error::InsecureRefused)));
    assert_no_credentials_sent(&server);

    // The configuration refuses it up front too, naming the key.
    let error = pophook::config::from_yaml(
        "webhook: {url: 'http://127.0.0.1:1/'}\nmailboxes:\n  - {name: a, host: h, tls: none, username: u, password: p}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("mailboxes[0].tls"), "{error}");
    assert!(error.contains("allow_insecure"), "{error}");
}

#[tokio::test]
async fn in_use_is_a_typed_transient_error() {
    let server = Scripted::start(Script {
        login_error: Some("-ERR [IN-USE] mailbox locked by another session".into()),
        ..Script::default()
    })
    .await;
    let error = match Session::connect(&server_config(server.port(), TlsMode::None, true)).await {
        Err(e) => e,
        Ok(_) => panic!("login should fail"),
    };
    assert_eq!(error.code(), Some(&ResponseCode::InUse));
    assert!(error.is_transient());
    assert!(!error.is_auth());
}

#[tokio::test]
async fn a_rejected_password_is_an_auth_error() {
    let server = Scripted::start(Script::default()).await;
    let mut cfg = server_config(server.port(), TlsMode::None, true);
    cfg.password = Secret::new("not-the-password");
    let error = match Session::connect(&cfg).await {
        Err(e) => e,
        Ok(_) => panic!("login should fail"),
    };
    assert!(error.is_auth(), "{error}");
    assert!(!error.to_string().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_logs_in_in_two_steps() {
    let server = Scripted::with_messages(messages(1)).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &mailbox(
            server.port(),
            "    tls: none\n    allow_insecure: true\n    auth: plain\n",
        ),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    let commands = server.commands();
    assert!(commands.contains(&"AUTH PLAIN".to_string()), "{commands:?}");
    assert!(!commands.iter().any(|c| c.starts_with("USER")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_retr_posts_nothing_for_it_and_deletes_nothing() {
    let server = Scripted::start(Script {
        messages: messages(3),
        drop_during_retr: Some(2),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &mailbox(server.port(), "    tls: none\n    allow_insecure: true\n"),
    );

    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].result.is_err());
    // Message 1 was delivered; message 2 broke off and was not posted.
    let subjects: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects, ["test 1"]);
    assert!(
        !server.commands().contains(&"QUIT".to_string()),
        "no QUIT after an error"
    );
    assert_eq!(server.remaining().len(), 3, "nothing deleted without QUIT");

    // Later cycles remember message 1: it is deleted again, not posted again. Message 2
    // breaks the connection every time: twice forgiven (fetched last, so message 3 is
    // not held up behind it), then an attempt on its schedule, and the session that
    // leaves it waiting QUITs and commits the deletions.
    for _ in 0..3 {
        let _ = service::once(&cfg.config).await.unwrap();
    }
    let subjects: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects, ["test 1", "test 3"]);
    assert_eq!(server.deleted_uids(), ["uid-1", "uid-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_uidl_gets_a_clear_error_and_nothing_is_fetched() {
    let server = Scripted::start(Script {
        messages: messages(2),
        uidl: false,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &mailbox(server.port(), "    tls: none\n    allow_insecure: true\n"),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("does not support UIDL"), "{error}");
    let commands = server.commands();
    assert!(!commands
        .iter()
        .any(|c| c.starts_with("RETR") || c.starts_with("DELE")));
    assert!(receiver.requests().is_empty());
    assert_eq!(server.remaining().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_times_out_and_nothing_is_deleted() {
    let server = Scripted::start(Script {
        messages: messages(2),
        stall_on: Some("RETR".into()),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &mailbox(server.port(), "    tls: none\n    allow_insecure: true\n"),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("sent nothing"), "{error}");
    assert!(receiver.requests().is_empty());
    assert_eq!(server.remaining().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_uids_are_told_apart_by_content_and_invalid_ones_never_fetched() {
    let server = Scripted::start(Script {
        messages: messages(4),
        uids: Some(vec![
            "same".into(),
            "good".into(),
            "same".into(),
            "x".repeat(71),
        ]),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &mailbox(server.port(), "    tls: none\n    allow_insecure: true\n"),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    let report = outcomes[0].result.as_ref().unwrap();
    assert_eq!((report.delivered, report.shared_uidl), (3, 2));
    assert_eq!(report.skipped, 1, "the overlong UID");
    let mut deleted = server.deleted_uids();
    deleted.sort();
    assert_eq!(deleted, ["good", "same", "same"]);
    let commands = server.commands();
    assert!(
        !commands.iter().any(|c| c == "RETR 4" || c == "DELE 4"),
        "{commands:?}"
    );
}
