//! The promise under fire, against a real Dovecot: pophook killed with SIGKILL at
//! random moments, a receiver that fails at random, and a network that cuts
//! connections at random points. At the end every message arrived at least once, the
//! mailbox is empty, and every copy of a message carries the same webhook-id.
//! Each run is seeded (printed on failure) and bounded in count and time.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::dovecot::Dovecot;
use common::proxy::CuttingProxy;
use common::receiver::{Receiver, Recorded, Reply};
use common::setup::{config, message, plain_mailbox, TestConfig};
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// The `Message-ID` of a delivered event (our test messages are `<mN@example.com>`).
fn message_id(r: &Recorded) -> String {
    r.json()["data"]["message_id"].as_str().unwrap().to_string()
}

/// Every message arrived, each message's copies share one webhook-id, and different
/// messages have different ids. Returns the number of duplicate deliveries.
fn assert_all_arrived_once_or_with_same_id(
    accepted: &[Recorded],
    total: usize,
    seed: u64,
) -> usize {
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for r in accepted {
        ids.entry(message_id(r))
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_string());
    }
    assert_eq!(
        ids.len(),
        total,
        "seed {seed}: messages missing at the receiver"
    );
    for (mid, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "seed {seed}: {mid} arrived with different webhook-ids {set:?}"
        );
    }
    let distinct: HashSet<&String> = ids.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        total,
        "seed {seed}: two messages shared a webhook-id"
    );
    accepted.len() - total
}

/// Message-IDs still in the mailbox.
fn remaining_ids(dovecot: &Dovecot, user: &str) -> HashSet<String> {
    dovecot
        .messages(user)
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(m);
            let start = text.find("Message-ID: <")? + "Message-ID: <".len();
            let end = text[start..].find('>')?;
            Some(text[start..start + end].to_string())
        })
        .collect()
}

async fn drain_with_once(cfg: &TestConfig, dovecot: &Dovecot, user: &str, seed: u64) {
    for _ in 0..20 {
        if dovecot.message_count(user) == 0 {
            return;
        }
        let _ = pophook::service::once(&cfg.config).await;
    }
    panic!(
        "seed {seed}: mailbox not empty after 20 extra cycles ({} left)",
        dovecot.message_count(user)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_at_random_moments_loses_nothing() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let receiver = Receiver::start().await;
    let cfg = config(
        &format!(
            "  url: {}\n  timeout: 5s\n  retry: {{schedule: [0s, 0s, 0s, 0s, 0s, 0s, 0s, 0s]}}",
            receiver.url()
        ),
        &plain_mailbox(
            "support",
            dovecot.plain_port(),
            "support",
            "pw",
            "    commit_every: 25\n",
        ),
    );
    let total = 300;
    let kills = 30;
    for round in 0..kills {
        // Mail keeps arriving in batches so that kills land mid-delivery.
        if round % 10 == 0 {
            for n in round * 10 + 1..=round * 10 + 100 {
                dovecot.deliver("support", &message(n));
            }
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
            .args(["run", "--config"])
            .arg(cfg.path())
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    drain_with_once(&cfg, &dovecot, "support", seed).await;

    let duplicates = assert_all_arrived_once_or_with_same_id(&receiver.accepted(), total, seed);
    // A duplicate needs a kill between a 2xx and the state flush that records it: at
    // most one flush batch plus the POSTs in flight per kill.
    let per_kill = 32 + 4;
    assert!(
        duplicates <= kills * per_kill,
        "seed {seed}: {duplicates} duplicates for {kills} kills"
    );
    assert_eq!(dovecot.message_count("support"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_at_random_gets_everything_and_nothing_is_deleted_before_its_2xx() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let total = 60;
    for n in 1..=total {
        dovecot.deliver("support", &message(n));
    }
    let receiver = Receiver::start().await;
    // Each failure ends a cycle (the endpoint looks down), so the budget of failures is
    // kept modest to bound the test's time; timeouts cost a second each.
    let replies: Vec<Reply> = (0..60)
        .map(|_| match rng.random_range(0..10) {
            0 | 1 => Reply::Status(500),
            2 => Reply::Status(503),
            3 => Reply::RetryAfter(429, 1),
            4 => Reply::Delay(Duration::from_secs(2), 204), // longer than the 1s timeout
            5 | 6 => Reply::Close,
            _ => Reply::Status(204),
        })
        .collect();
    receiver.push_replies(replies);
    let cfg = config(
        &format!(
            "  url: {}\n  timeout: 1s\n  retry: {{max_attempts: 1000, initial_backoff: 20ms, max_backoff: 200ms}}",
            receiver.url()
        ),
        &plain_mailbox("support", dovecot.plain_port(), "support", "pw", ""),
    );
    let (trigger, shutdown) = pophook::shutdown::channel();
    let run = tokio::spawn(pophook::service::run(cfg.config.clone(), shutdown));

    // Watch the invariant while it runs: whatever left the mailbox was accepted first.
    let all: HashSet<String> = (1..=total).map(|n| format!("m{n}@example.com")).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let accepted: HashSet<String> = receiver.accepted().iter().map(message_id).collect();
        let remaining = remaining_ids(&dovecot, "support");
        for gone in all.difference(&remaining) {
            assert!(
                accepted.contains(gone),
                "seed {seed}: {gone} left the mailbox before a 2xx"
            );
        }
        if remaining.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} messages still on the server",
            remaining.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.trigger();
    run.await.unwrap().unwrap();
    assert_all_arrived_once_or_with_same_id(&receiver.accepted(), total, seed);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_at_random_points_lose_nothing() {
    let seed = seed();
    let dovecot = Dovecot::start();
    dovecot.add_user("support", "pw");
    let total = 80;
    for n in 1..=total {
        dovecot.deliver("support", &message(n));
    }
    let proxy = CuttingProxy::start(dovecot.plain_port(), seed, 25, 12_000).await;
    let receiver = Receiver::start().await;
    // A download cut twice waits for its retry: short waits, so the 60 cycles (which
    // take about 2s) always outlast them.
    let cfg = config(
        &format!(
            "  url: {}\n  retry: {{max_attempts: 1000, initial_backoff: 20ms, max_backoff: 200ms}}",
            receiver.url()
        ),
        &plain_mailbox(
            "support",
            proxy.port(),
            "support",
            "pw",
            "    timeout: 2s\n    commit_every: 10\n",
        ),
    );
    for _ in 0..60 {
        if dovecot.message_count("support") == 0 {
            break;
        }
        let _ = pophook::service::once(&cfg.config).await;
    }
    assert!(
        proxy.cuts() > 0,
        "seed {seed}: the proxy never cut a connection"
    );
    assert_eq!(
        dovecot.message_count("support"),
        0,
        "seed {seed}: mail left after 60 cycles"
    );
    assert_all_arrived_once_or_with_same_id(&receiver.accepted(), total, seed);
}
