//! Scenario 6: many mailboxes on one server in one `pophook once` — the shape that
//! froze the old engine (every mailbox flushing the state at once). Wall time and
//! peak RSS, and for scale the floor draining the same mailboxes one after another.

use std::time::Duration;

use crate::corpus::{self, Corpus};
use crate::report::{self, Row, RunResult};
use crate::{
    check_arrivals, floor, Bench, GlobalConfig, MailboxConfig, Options, PASSWORD, POP3_TIMEOUT,
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
    let users: Vec<&str> = mailboxes.iter().map(|(user, _)| user.as_str()).collect();
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
        let result = once_all(bench, &users, &GlobalConfig::default(), &expected, TIMEOUT);
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
            problem: problem.or_else(|| left(bench, &users)),
            detail: None,
        };
        if !result.is_ok() {
            empty(bench, &users);
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

/// One `pophook once` over a mailbox per user (named after it, pophook's defaults but
/// `global`), checked: every message in `expected` arrived once and every mailbox is
/// left empty. Empties them when not, for the next run.
pub fn once_all(
    bench: &Bench,
    users: &[&str],
    global: &GlobalConfig,
    expected: &[String],
    timeout: Duration,
) -> RunResult {
    bench.receiver.reset(Duration::ZERO);
    let configs: Vec<MailboxConfig<'_>> = users
        .iter()
        .map(|user| MailboxConfig::new(*user, user))
        .collect();
    let result = match bench.once(global, &configs, timeout) {
        Ok(child) => {
            let received = bench.receiver.take();
            child.measured(
                check_arrivals(expected, &received.message_ids).or_else(|| left(bench, users)),
                None,
            )
        }
        Err(e) => RunResult::Failed(e),
    };
    if !result.is_ok() {
        empty(bench, users);
    }
    result
}

/// How many messages the users' mailboxes still hold, when any.
fn left(bench: &Bench, users: &[&str]) -> Option<String> {
    let left: usize = users.iter().map(|u| bench.dovecot.message_count(u)).sum();
    (left > 0).then(|| format!("{left} messages left in the mailboxes"))
}

fn empty(bench: &Bench, users: &[&str]) {
    for user in users {
        bench.empty(user);
    }
}
