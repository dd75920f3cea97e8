//! The core bridge end to end against a real Dovecot and a real HTTP receiver: what
//! arrives at the webhook, and what is left in the mailbox.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::dovecot::Dovecot;
use common::process::free_port;
use common::receiver::{Receiver, Reply};
use common::setup::{config, message, plain_mailbox, RETRY_AT_ONCE};
use pophook::service;

fn webhook(receiver: &Receiver) -> String {
    format!("  url: {}\n  timeout: 5s", receiver.url())
}

fn subjects(receiver: &Receiver) -> Vec<String> {
    let mut subjects: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["subject"].as_str().unwrap().to_string())
        .collect();
    subjects.sort();
    subjects
}

#[tokio::test(flavor = "multi_thread")]
async fn new_messages_are_posted_then_deleted() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw-support");
    for n in 1..=3 {
        dovecot.deliver("support", &message(n));
    }
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw-support", ""),
    );

    let outcomes = service::once(&cfg.config).await.unwrap();

    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(subjects(&receiver), ["test 1", "test 2", "test 3"]);
    assert_eq!(
        dovecot.message_count("support"),
        0,
        "delivered mail must be deleted"
    );
    let request = &receiver.accepted()[0];
    let event = request.json();
    assert_eq!(event["type"], "email.received");
    assert_eq!(event["data"]["mailbox"], "support");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-id"), event["data"]["id"].as_str());
    assert!(request
        .header("user-agent")
        .unwrap()
        .starts_with("pophook/"));
    assert!(request
        .header("webhook-timestamp")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // Nothing new: a second cycle posts nothing.
    service::once(&cfg.config).await.unwrap();
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_webhook_deletes_nothing_and_the_next_cycle_delivers_with_the_same_id() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    for n in 1..=2 {
        dovecot.deliver("support", &message(n));
    }
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let cfg = config(
        &format!("{}\n{RETRY_AT_ONCE}", webhook(&receiver)),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(!outcomes[0].is_success());
    assert_eq!(
        dovecot.message_count("support"),
        2,
        "nothing may be deleted after a 500"
    );
    let failed_ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(!failed_ids.is_empty());

    receiver.set_default(Reply::Status(200));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(subjects(&receiver), ["test 1", "test 2"]);
    assert_eq!(dovecot.message_count("support"), 0);
    let delivered_ids: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    for id in failed_ids {
        assert!(
            delivered_ids.contains(&id),
            "retry of {id} must reuse its webhook-id"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_deletes_nothing() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    // A port nothing listens on: bind, read the port, close.
    let port = free_port();
    let cfg = config(
        &format!("  url: http://127.0.0.1:{port}/inbound\n  timeout: 2s"),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(!outcomes[0].is_success());
    assert_eq!(dovecot.message_count("support"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_false_leaves_mail_and_delivers_it_once() {
    let dovecot = Dovecot::start();
    dovecot.add_user("archive", "pw");
    for n in 1..=2 {
        dovecot.deliver("archive", &message(n));
    }
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &plain_mailbox(
            "archive",
            dovecot.plain_port(),
            "archive",
            "pw",
            "    delete: false\n",
        ),
    );

    service::once(&cfg.config).await.unwrap();
    service::once(&cfg.config).await.unwrap();
    assert_eq!(
        subjects(&receiver),
        ["test 1", "test 2"],
        "each message exactly once"
    );
    assert_eq!(
        dovecot.message_count("archive"),
        2,
        "delete: false keeps mail"
    );

    // A new message is picked up, the old ones still are not re-sent.
    dovecot.deliver("archive", &message(3));
    service::once(&cfg.config).await.unwrap();
    assert_eq!(subjects(&receiver), ["test 1", "test 2", "test 3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_and_starttls_verify_the_server_against_a_private_ca() {
    let dovecot = Dovecot::start();
    dovecot.add_user("a", "pw-a");
    dovecot.add_user("b", "pw-b");
    dovecot.deliver("a", &message(1));
    dovecot.deliver("b", &message(2));
    let receiver = Receiver::start().await;
    let ca = dovecot.ca_file().display().to_string();
    let mailboxes = format!(
        "  - name: implicit\n    host: localhost\n    port: {}\n    tls: implicit\n    tls_ca_file: {ca}\n    username: a\n    password: pw-a\n\
         \x20 - name: starttls\n    host: localhost\n    port: {}\n    tls: starttls\n    tls_ca_file: {ca}\n    username: b\n    password: pw-b\n    auth: plain\n",
        dovecot.tls_port(),
        dovecot.plain_port()
    );
    let cfg = config(&webhook(&receiver), &mailboxes);

    // `check` names each mode in the configuration's own words, and both connect.
    let check = tokio::task::block_in_place(|| cfg.pophook(&["check"]));
    let printed = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{printed}");
    for (name, mode) in [("implicit", "implicit"), ("starttls", "starttls")] {
        assert!(
            printed
                .lines()
                .any(|l| l.contains(name) && l.contains(&format!("(tls: {mode})"))),
            "{printed}"
        );
    }

    let outcomes = service::once(&cfg.config).await.unwrap();

    assert!(outcomes.iter().all(|o| o.is_success()), "{outcomes:?}");
    let mut mailboxes: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["mailbox"].as_str().unwrap().to_string())
        .collect();
    mailboxes.sort();
    assert_eq!(mailboxes, ["implicit", "starttls"]);
    assert_eq!(dovecot.message_count("a") + dovecot.message_count("b"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_unknown_ca_is_rejected_before_login() {
    let dovecot = Dovecot::start();
    dovecot.add_user("a", "pw-a");
    dovecot.deliver("a", &message(1));
    let receiver = Receiver::start().await;
    let mailbox = format!(
        "  - name: implicit\n    host: localhost\n    port: {}\n    username: a\n    password: pw-a\n",
        dovecot.tls_port()
    );
    let cfg = config(&webhook(&receiver), &mailbox);
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("TLS handshake"), "{error}");
    assert!(receiver.requests().is_empty());
    assert_eq!(dovecot.message_count("a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_mailboxes_each_deliver_their_own_mail() {
    let dovecot = Dovecot::start();
    let mut mailboxes = String::new();
    for user in ["sales", "support", "billing"] {
        dovecot.add_user(user, "pw");
        dovecot.deliver(user, &message(1));
        dovecot.deliver(user, &message(2));
        mailboxes.push_str(&plain_mailbox(user, dovecot.plain_port(), user, "pw", ""));
    }
    let receiver = Receiver::start().await;
    let cfg = config(&webhook(&receiver), &mailboxes);

    let outcomes = service::once(&cfg.config).await.unwrap();

    assert!(outcomes.iter().all(|o| o.is_success()), "{outcomes:?}");
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 6);
    for user in ["sales", "support", "billing"] {
        let count = accepted
            .iter()
            .filter(|r| r.json()["data"]["mailbox"] == user)
            .count();
        assert_eq!(count, 2, "{user}");
        assert_eq!(dovecot.message_count(user), 0, "{user}");
    }
    // Ids differ across mailboxes even where Dovecot's UIDLs coincide.
    let mut ids: Vec<&str> = accepted
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_is_byte_exact_including_lines_that_start_with_a_dot() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    // Stored with LF, as in a Maildir; Dovecot serves CRLF.
    let stored = b"From: a@example.com\nSubject: dots\n\n.leading dot\n..two dots\n.\n...\nend\n";
    dovecot.deliver("support", stored);
    let receiver = Receiver::start().await;
    let cfg = config(
        &format!("{}\n  include_raw: true", webhook(&receiver)),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    service::once(&cfg.config).await.unwrap();

    let event = receiver.accepted()[0].json();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(event["data"]["raw"].as_str().unwrap())
        .unwrap();
    let expected = String::from_utf8_lossy(stored).replace('\n', "\r\n");
    assert_eq!(String::from_utf8_lossy(&raw), expected);
    assert_eq!(event["data"]["size"], expected.len());
    assert_eq!(
        event["data"]["text"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n"),
        ".leading dot\n..two dots\n.\n...\nend\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_verify_with_the_standard_webhooks_library() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cfg = config(
        &format!("{}\n  secret: {secret}", webhook(&receiver)),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );

    service::once(&cfg.config).await.unwrap();

    let request = &receiver.accepted()[0];
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    verifier
        .verify(&request.body, &headers)
        .expect("signature must verify with the reference implementation");
    // And a tampered body must not.
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert!(verifier.verify(&tampered, &headers).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_reported_and_nothing_is_touched() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "right");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &plain_mailbox(
            "support",
            dovecot.plain_port(),
            "support",
            "wrong-pass-1234",
            "",
        ),
    );
    let outcomes = service::once(&cfg.config).await.unwrap();
    let error = outcomes[0].result.as_ref().unwrap_err();
    assert!(error.contains("login rejected"), "{error}");
    assert!(!error.contains("wrong-pass-1234"));
    assert_eq!(dovecot.message_count("support"), 1);
    assert!(receiver.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_run_loop_polls_until_shutdown() {
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    dovecot.deliver("support", &message(1));
    let receiver = Receiver::start().await;
    let cfg = config(
        &webhook(&receiver),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let (trigger, shutdown) = pophook::shutdown::channel();
    let service = tokio::spawn(service::run(cfg.config.clone(), shutdown));

    receiver.wait_for_accepted(1, Duration::from_secs(20)).await;
    // Mail that arrives later is picked up by a later poll (poll_interval is 1s).
    dovecot.deliver("support", &message(2));
    receiver.wait_for_accepted(2, Duration::from_secs(20)).await;

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("run must end soon after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(dovecot.message_count("support"), 0);
}
