//! Many mailboxes starting at once against a real Dovecot: the start that used to
//! freeze pophook (several tasks flushing sled at once). Every start must deliver
//! everything and shut down in bounded time.

mod common;

use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::receiver::Receiver;
use common::setup::{config, message, plain_mailbox};

const MAILBOXES: usize = 50;
const PER_START: usize = 20;
const STARTS: usize = 10;

/// One Dovecot with `MAILBOXES` users, a receiver, and a configuration polling them all.
struct Fleet {
    dovecot: Dovecot,
    names: Vec<String>,
    receiver: Receiver,
    cfg: common::setup::TestConfig,
}

impl Fleet {
    async fn start() -> Fleet {
        let dovecot = Dovecot::start();
        let names: Vec<String> = (0..MAILBOXES).map(|n| format!("box{n}")).collect();
        for name in &names {
            dovecot.add_user(name, "pw");
        }
        let receiver = Receiver::start().await;
        let mailboxes: String = names
            .iter()
            .map(|name| plain_mailbox(name, dovecot.plain_port(), name, "pw", ""))
            .collect();
        let cfg = config(&format!("  url: {}", receiver.url()), &mailboxes);
        Fleet {
            dovecot,
            names,
            receiver,
            cfg,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_mailboxes_started_ten_times_never_stall() {
    let Fleet {
        dovecot,
        names,
        receiver,
        cfg,
    } = Fleet::start().await;

    let mut sequence = 0;
    for start in 1..=STARTS {
        for name in &names {
            for _ in 0..PER_START {
                sequence += 1;
                dovecot.deliver(name, &message(sequence));
            }
        }
        let (trigger, shutdown) = pophook::shutdown::channel();
        let run = tokio::spawn(pophook::service::run(cfg.config.clone(), shutdown));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left: usize = names.iter().map(|n| dovecot.message_count(n)).sum();
            if left == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "start {start}: stalled with {left} messages left and {} accepted",
                receiver.accepted().len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("start {start}: shutdown hung"))
            .unwrap()
            .unwrap();
    }
    let accepted = receiver.accepted();
    let ids: std::collections::HashSet<&str> = accepted
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        MAILBOXES * PER_START * STARTS,
        "every message arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_over_fifty_mailboxes_always_ends() {
    let Fleet {
        dovecot,
        names,
        receiver,
        cfg,
    } = Fleet::start().await;
    let mut sequence = 0;
    for run in 1..=5 {
        for name in &names {
            for _ in 0..5 {
                sequence += 1;
                dovecot.deliver(name, &message(sequence));
            }
        }
        let outcomes =
            tokio::time::timeout(Duration::from_secs(60), pophook::service::once(&cfg.config))
                .await
                .unwrap_or_else(|_| panic!("`once` run {run} hung"))
                .unwrap();
        assert!(
            outcomes.iter().all(|o| o.is_success()),
            "run {run}: {outcomes:?}"
        );
    }
    assert_eq!(receiver.accepted().len(), MAILBOXES * 5 * 5);
}
