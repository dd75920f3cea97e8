//! Scenario 6: many mailboxes on one server in one `pophook once` — the shape that
//! froze the old engine (every mailbox flushing the state at once). Wall time and
//! peak RSS, and for scale the floor draining the same mailboxes one after another.

use std::time::Duration;

use crate::corpus::{self, Corpus};
use crate::report::{self, Row, RunResult};
use crate::{
    check_arrivals, child, floor, Bench, GlobalConfig, MailboxConfig, Options, PASSWORD,
    POP3_TIMEOUT,
};

pub const SCENARIO: u8 = 6;
/// The count; the run names in `report` say 50 too.
const MAILBOXES: usize = 50;
const PER_MAILBOX: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(900);

pub fn run(bench: &Bench, options: &Options) -> Vec<Row> {
    let per_mailbox = if options.quick {
        PER_MAILBOX / 20
    } else {
        PER_MAILBOX
    };
    // Scenario 1's mix, a different seed (and Message-ID tag) per mailbox.
    let mailboxes: Vec<(String, Corpus)> = (0..MAILBOXES)
        .map(|i| {
            let corpus = corpus::mixed(&format!("s6-{i:02}"), per_mailbox, 600 + i as u64);
            (format!("bench6-{i:02}"), corpus)
        })
        .collect();
    let expected: Vec<String> = mailboxes
        .iter()
        .flat_map(|(_, c)| c.message_ids.iter().cloned())
        .collect();
    let bytes: u64 = mailboxes.iter().map(|(_, c)| c.bytes()).sum();
    eprintln!(
        "== scenario {SCENARIO}: {MAILBOXES} mailboxes × {per_mailbox} messages, {:.1} MiB",
        bytes as f64 / 1024.0 / 1024.0
    );
    for (user, _) in &mailboxes {
        bench.dovecot.add_user(user, PASSWORD);
    }
    let deliver = || {
        for (user, corpus) in &mailboxes {
            bench.deliver(corpus, user);
        }
    };
    let left = || {
        let left: usize = mailboxes
            .iter()
            .map(|(user, _)| bench.dovecot.message_count(user))
            .sum();
        (left > 0).then(|| format!("{left} messages left in the mailboxes"))
    };
    let empty_all = || {
        for (user, _) in &mailboxes {
            bench.empty(user);
        }
    };
    let row = |run: &str, result: RunResult| Row {
        scenario: SCENARIO,
        run: run.into(),
        messages: expected.len(),
        bytes,
        delivers: true,
        result,
    };

    let pophook = || {
        deliver();
        bench.receiver.reset(Duration::ZERO);
        let configs: Vec<MailboxConfig<'_>> = mailboxes
            .iter()
            .map(|(user, _)| MailboxConfig::new(user.clone(), user))
            .collect();
        let result = match bench
            .configure(&GlobalConfig::default(), &configs)
            .and_then(|(dir, config)| {
                child::run_once(&bench.pophook, &config, dir.path(), &bench.wrap, TIMEOUT)
            }) {
            Ok(child) => {
                let received = bench.receiver.take();
                RunResult::Measured {
                    wall: child.wall,
                    max_rss_kib: Some(child.max_rss_kib),
                    cpu: Some(child.cpu),
                    problem: check_arrivals(&expected, &received.message_ids).or_else(left),
                    detail: None,
                }
            }
            Err(e) => RunResult::Failed(e),
        };
        if !matches!(result, RunResult::Measured { problem: None, .. }) {
            empty_all();
        }
        row(report::MANY_POPHOOK, result)
    };

    let floor = || {
        deliver();
        let mut wall = Duration::ZERO;
        let mut problem = None;
        for (user, corpus) in &mailboxes {
            match floor::drain(
                bench.addr(false),
                user,
                PASSWORD,
                floor::Transport::Plain,
                POP3_TIMEOUT,
            ) {
                Ok(drained) => {
                    wall += drained.wall;
                    if drained.messages != corpus.len() || drained.bytes != corpus.bytes() {
                        problem.get_or_insert(format!(
                            "{user}: {} of {} messages, {} of {} bytes drained",
                            drained.messages,
                            corpus.len(),
                            drained.bytes,
                            corpus.bytes()
                        ));
                    }
                }
                Err(e) => {
                    problem.get_or_insert(format!("{user}: floor: {e}"));
                }
            }
        }
        let result = RunResult::Measured {
            wall,
            max_rss_kib: None,
            cpu: None,
            problem: problem.or_else(left),
            detail: None,
        };
        if !matches!(result, RunResult::Measured { problem: None, .. }) {
            empty_all();
        }
        row(report::MANY_FLOOR, result)
    };

    let mut rows = Vec::new();
    for run in [&pophook as &dyn Fn() -> Row, &floor] {
        let row = report::median((0..options.repeat).map(|_| run()).collect());
        crate::print_row(&row);
        rows.push(row);
    }
    rows
}
