//! The delivery guarantees with pipelining and concurrent POSTs: lock-step for servers
//! without PIPELINING, a window of commands for servers with it, `max_in_flight` POSTs
//! at once (1 keeps mailbox order), and DELE still only after each message's 2xx.

mod common;

use std::time::Duration;

use common::receiver::{Receiver, Reply};
use common::scripted::{Script, Scripted};
use common::setup::{config, message};
use pophook::service;

fn mailbox(port: u16) -> String {
    format!(
        "  - name: box\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    username: user\n    password: secret\n    timeout: 5s\n"
    )
}

fn hook(receiver: &Receiver, max_in_flight: usize) -> String {
    format!(
        "  url: {}\n  max_in_flight: {max_in_flight}",
        receiver.url()
    )
}

fn subjects(receiver: &Receiver) -> Vec<String> {
    receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["subject"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pipelining_every_command_waits_for_its_reply() {
    let server = Scripted::start(Script {
        messages: (1..=10).map(message).collect(),
        pipelining: false,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, 4), &mailbox(server.port()));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(receiver.accepted().len(), 10);
    assert!(server.remaining().is_empty());
    assert_eq!(server.pipelined_commands(), 0, "{:?}", server.commands());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_pipelining_commands_are_sent_ahead_and_everything_arrives() {
    let server = Scripted::start(Script {
        messages: (1..=30).map(message).collect(),
        pipelining: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(&hook(&receiver, 4), &mailbox(server.port()));
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    let mut got = subjects(&receiver);
    got.sort();
    let mut want: Vec<String> = (1..=30).map(|n| format!("test {n}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(server.remaining().is_empty());
    assert!(
        server.pipelined_commands() > 0,
        "the client never pipelined"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_in_flight_posts_at_once_and_one_keeps_mailbox_order() {
    for (max, expect_concurrent) in [(4, 4), (1, 1)] {
        let server = Scripted::start(Script {
            messages: (1..=8).map(message).collect(),
            pipelining: true,
            ..Script::default()
        })
        .await;
        let receiver = Receiver::start().await;
        receiver.set_default(Reply::Delay(Duration::from_millis(300), 204));
        let cfg = config(&hook(&receiver, max), &mailbox(server.port()));
        let outcomes = service::once(&cfg.config).await.unwrap();
        assert!(outcomes[0].is_success(), "{outcomes:?}");
        assert_eq!(
            receiver.max_concurrent(),
            expect_concurrent,
            "max_in_flight {max}"
        );
        if max == 1 {
            let want: Vec<String> = (1..=8).map(|n| format!("test {n}")).collect();
            assert_eq!(subjects(&receiver), want, "strict mailbox order");
        }
        assert!(server.remaining().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_posts_in_flight_only_acknowledged_messages_are_deleted() {
    let server = Scripted::start(Script {
        messages: (1..=8).map(message).collect(),
        pipelining: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.push_replies([Reply::Delay(Duration::from_millis(100), 503)]);
    receiver.set_default(Reply::Delay(Duration::from_millis(100), 204));
    let cfg = config(&hook(&receiver, 4), &mailbox(server.port()));
    service::once(&cfg.config).await.unwrap();

    let failed = receiver.requests()[0].json()["data"]["uidl"]
        .as_str()
        .unwrap()
        .to_string();
    let accepted: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["uidl"].as_str().unwrap().to_string())
        .collect();
    let mut deleted = server.deleted_uids();
    deleted.sort();
    let mut expected = accepted.clone();
    expected.sort();
    assert_eq!(
        deleted, expected,
        "exactly the acknowledged messages are deleted"
    );
    assert!(!deleted.contains(&failed));
    assert_eq!(server.remaining().len(), 8 - accepted.len());
    // The endpoint looked down, so the cycle stopped starting new POSTs.
    assert!(accepted.len() < 7, "kept posting after a 503: {accepted:?}");
}
