//! Scenario 8: the process-wide memory budget. 50 mailboxes × 50 messages of 2 MiB in
//! one `pophook once` with `max_memory: 128MiB`, where 50 × `max_in_flight` (4) × 2 MiB
//! would ask for 400 MiB without it; and the same mailboxes holding tiny messages,
//! whose peak RSS is the fixed overhead of 50 mailboxes at once (runtime, sessions,
//! ledger, TLS connector) that the budget does not cover; and the 2 MiB messages again
//! with the default budget (256 MiB) and with one too large to bind (4 GiB, so only
//! `max_in_flight` limits), to see the peak follow the budget.

use std::time::{Duration, Instant};

use crate::corpus;
use crate::report::{self, Row};
use crate::{many, Bench, GlobalConfig, Options, PASSWORD};

pub const SCENARIO: u8 = 8;
const MAILBOXES: usize = 50;
const PER_MAILBOX: usize = 50;
const SIZE: usize = 2 * 1024 * 1024;
/// `max_memory`, also used by `report` to judge the peak.
pub const BUDGET: u64 = 128 * 1024 * 1024;
/// More than 50 mailboxes × `max_in_flight` × `SIZE` can use: no bound in effect.
const UNBOUND: u64 = 4 * 1024 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(1200);

/// What the mailboxes hold in one run.
#[derive(Clone, Copy)]
enum Mail {
    /// ~600 B each: the fixed overhead.
    Tiny,
    /// `SIZE` each, almost all of it one base64 attachment.
    Large,
}

pub fn run(bench: &Bench, options: &Options) -> Vec<Row> {
    let per_mailbox = if options.quick {
        PER_MAILBOX / 10
    } else {
        PER_MAILBOX
    };
    let users: Vec<String> = (0..MAILBOXES).map(|i| format!("bench8-{i:02}")).collect();
    for user in &users {
        bench.dovecot.add_user(user, PASSWORD);
    }
    eprintln!(
        "== scenario {SCENARIO}: {MAILBOXES} mailboxes × {per_mailbox} messages, tiny and {} MiB, max_memory {} MiB",
        SIZE / 1024 / 1024,
        BUDGET / 1024 / 1024
    );
    // One large message generated once; each copy gets its own Message-ID, of the same
    // length, written over the template's. 2,500 distinct 2 MiB messages would take the
    // bench 5 GiB of memory or minutes of generating.
    let template = corpus::huge("s8-00-00", SIZE, 8);
    let template_id = template.message_ids[0].clone();
    let template = &template.messages[0];
    let id_at = template
        .windows(template_id.len())
        .position(|w| w == template_id.as_bytes())
        .expect("the template carries its Message-ID");

    // Delivers every mailbox's messages; returns the Message-IDs and the bytes.
    let deliver = |mail: Mail| -> (Vec<String>, u64) {
        let start = Instant::now();
        let mut ids = Vec::new();
        let mut bytes = 0;
        for (i, user) in users.iter().enumerate() {
            match mail {
                Mail::Tiny => {
                    let corpus = corpus::small(&format!("s8t-{i:02}"), per_mailbox, 800 + i as u64);
                    bench.deliver(&corpus, user);
                    bytes += corpus.bytes();
                    ids.extend(corpus.message_ids);
                }
                Mail::Large => {
                    let mut message = template.clone();
                    for j in 0..per_mailbox {
                        let id = template_id.replacen("s8-00-00", &format!("s8-{i:02}-{j:02}"), 1);
                        message[id_at..id_at + id.len()].copy_from_slice(id.as_bytes());
                        bench.dovecot.deliver(user, &message);
                        bytes += message.len() as u64;
                        ids.push(id);
                    }
                }
            }
        }
        eprintln!(
            "delivered {} messages, {:.1} MiB, in {:.1} s",
            ids.len(),
            bytes as f64 / 1024.0 / 1024.0,
            start.elapsed().as_secs_f64()
        );
        (ids, bytes)
    };

    // `max_memory: None` is pophook's default.
    let measure = |run: &str, mail: Mail, max_memory: Option<u64>| -> Row {
        let (expected, bytes) = deliver(mail);
        let global = GlobalConfig {
            max_memory,
            ..GlobalConfig::default()
        };
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let result = many::once_all(bench, &users, &global, &expected, TIMEOUT);
        Row {
            scenario: SCENARIO,
            run: run.into(),
            messages: expected.len(),
            bytes,
            delivers: true,
            result,
        }
    };

    // Once each whatever `--repeat` says: the figure is peak memory, not time, and a
    // run moves 5 GiB.
    let mut rows = Vec::new();
    for (run, mail, max_memory) in [
        (report::MEMORY_TINY, Mail::Tiny, Some(BUDGET)),
        (report::MEMORY_LARGE, Mail::Large, Some(BUDGET)),
        (report::MEMORY_LARGE_DEFAULT, Mail::Large, None),
        (report::MEMORY_LARGE_UNBOUND, Mail::Large, Some(UNBOUND)),
    ] {
        let row = measure(run, mail, max_memory);
        crate::print_row(&row);
        rows.push(row);
    }
    rows
}
