//! Scenario 5: what pophook costs when there is nothing new, in a mailbox whose mail
//! stays on the server (`delete: false`) so that every UIDL must be remembered. One
//! `once` posts and remembers the whole mailbox; then idle cycles: `once` under GNU
//! time (CPU and peak RSS of one cycle, start-up included), and `run` at
//! `poll_interval: 1s` with its RSS sampled, to show memory stays flat cycle after
//! cycle, then stopped with SIGTERM.

use std::time::{Duration, Instant};

use crate::report::{self, Detail, Row, RunResult, Trend};
use crate::{
    check_arrivals, child, corpus, floor, Bench, GlobalConfig, MailboxConfig, Options, PASSWORD,
    POP3_TIMEOUT,
};

pub const SCENARIO: u8 = 5;
const USER: &str = "bench5";
/// The size; `--quick` and `--remembered` change it.
const REMEMBERED: usize = 100_000;
const QUICK_REMEMBERED: usize = 5_000;
const RUN_FOR: Duration = Duration::from_secs(60);
const QUICK_RUN_FOR: Duration = Duration::from_secs(10);
/// RSS samples per `run`: enough to see a trend, few enough that reading /proc costs
/// nothing measurable.
const SAMPLES: u32 = 12;
/// The first `once` posts every message: 15–17 s for 100,000 on the 2-core machine of
/// BENCHMARKS.md, so this bounds a stall, not the work.
const FIRST_TIMEOUT: Duration = Duration::from_secs(1200);
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// pophook's default `shutdown_timeout` (30 s) plus its own one-second margin.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

pub fn run(bench: &Bench, options: &Options) -> Vec<Row> {
    let count = options.remembered.unwrap_or(if options.quick {
        QUICK_REMEMBERED
    } else {
        REMEMBERED
    });
    let run_for = options.run_for.unwrap_or(if options.quick {
        QUICK_RUN_FOR
    } else {
        RUN_FOR
    });
    let corpus = corpus::small("s5", count, SCENARIO.into());
    let row = |run: &str, delivers: bool, result: RunResult| Row {
        scenario: SCENARIO,
        run: run.to_string(),
        messages: corpus.len(),
        bytes: corpus.bytes(),
        delivers,
        result,
    };
    // Each row printed as soon as it is known, the median of `--repeat` tries.
    let measure = |run: &str, delivers: bool, once: &dyn Fn() -> RunResult| {
        let row = report::median(
            (0..options.repeat)
                .map(|_| row(run, delivers, once()))
                .collect(),
        );
        crate::print_row(&row);
        row
    };
    eprintln!(
        "== scenario {SCENARIO}: {} messages, {:.1} MiB, delete: false",
        corpus.len(),
        corpus.bytes() as f64 / 1024.0 / 1024.0
    );
    bench.dovecot.add_user(USER, PASSWORD);
    let start = Instant::now();
    bench.deliver(&corpus, USER);
    eprintln!(
        "delivered {} messages in {:.1} s",
        corpus.len(),
        start.elapsed().as_secs_f64()
    );

    // One directory throughout: the state the first run writes is what the idle runs
    // read.
    let mailbox = MailboxConfig {
        delete: false,
        poll_interval: Some(Duration::from_secs(1)),
        ..MailboxConfig::new("bench", USER)
    };
    let (dir, config) = match bench.configure(&GlobalConfig::default(), &[mailbox]) {
        Ok(configured) => configured,
        Err(e) => return vec![row(report::IDLE_FIRST, true, RunResult::Failed(e))],
    };
    let left_alone = || match bench.dovecot.message_count(USER) {
        n if n == count => None,
        n => Some(format!("{n} of {count} messages left on the server")),
    };

    bench.receiver.reset(Duration::ZERO);
    let first = match child::run_once(
        &bench.pophook,
        &config,
        dir.path(),
        &bench.wrap,
        FIRST_TIMEOUT,
    ) {
        Ok(first) => {
            let received = bench.receiver.take();
            let problem =
                check_arrivals(&corpus.message_ids, &received.message_ids).or_else(left_alone);
            RunResult::Measured {
                wall: first.wall,
                max_rss_kib: Some(first.max_rss_kib),
                cpu: Some(first.cpu),
                problem,
                detail: None,
            }
        }
        Err(e) => RunResult::Failed(e),
    };
    let first = row(report::IDLE_FIRST, true, first);
    crate::print_row(&first);
    if first.is_failure() {
        // The idle runs would post what the first one did not: not idle.
        let skipped = || RunResult::NotApplicable("not run: the first run failed".into());
        return vec![
            first,
            row(report::IDLE_ONCE, false, skipped()),
            row(report::IDLE_FLOOR, false, skipped()),
            row(report::IDLE_RUN, false, skipped()),
        ];
    }

    let nothing_posted = || match bench.receiver.take().requests {
        0 => None,
        n => Some(format!(
            "{n} requests from a cycle that should find nothing new"
        )),
    };
    let idle = measure(report::IDLE_ONCE, false, &|| {
        bench.receiver.reset(Duration::ZERO);
        match child::run_once(
            &bench.pophook,
            &config,
            dir.path(),
            &bench.wrap,
            IDLE_TIMEOUT,
        ) {
            Ok(idle) => RunResult::Measured {
                wall: idle.wall,
                max_rss_kib: Some(idle.max_rss_kib),
                cpu: Some(idle.cpu),
                problem: nothing_posted().or_else(left_alone),
                detail: None,
            },
            Err(e) => RunResult::Failed(e),
        }
    });

    // What the server alone takes to answer an idle cycle, to tell pophook's share of
    // its wall time from Dovecot's.
    let floor = measure(report::IDLE_FLOOR, false, &|| match floor::list(
        bench.addr(false),
        USER,
        PASSWORD,
        POP3_TIMEOUT,
    ) {
        Ok(listed) => RunResult::Measured {
            wall: listed.wall,
            max_rss_kib: None,
            cpu: None,
            problem: (listed.messages != count)
                .then(|| format!("UIDL listed {} of {count}", listed.messages)),
            detail: None,
        },
        Err(e) => RunResult::Failed(format!("floor: {e}")),
    });

    bench.receiver.reset(Duration::ZERO);
    let service = match child::run_service(
        &bench.pophook,
        &config,
        dir.path(),
        run_for,
        run_for / SAMPLES,
        STOP_TIMEOUT,
    ) {
        Ok(service) => {
            let log = std::fs::read_to_string(dir.path().join("pophook.log")).unwrap_or_default();
            // Both kinds of finished cycle count: one that found nothing is logged at
            // debug ("nothing new"), one that did something at info.
            let cycles = log
                .lines()
                .filter(|l| l.contains("nothing new") || l.contains("cycle finished"))
                .count() as u64;
            let problem = nothing_posted()
                .or_else(left_alone)
                .or_else(|| (cycles == 0).then(|| "no cycle finished".to_string()));
            RunResult::Measured {
                wall: service.run.wall,
                max_rss_kib: Some(service.run.max_rss_kib),
                cpu: Some(service.run.cpu),
                problem,
                detail: Some(Detail::Trend(Trend {
                    samples_kib: service.samples_kib,
                    every: run_for / SAMPLES,
                    cycles,
                    stop: service.stop,
                })),
            }
        }
        Err(e) => RunResult::Failed(e),
    };
    let service = row(report::IDLE_RUN, false, service);
    crate::print_row(&service);
    vec![first, idle, floor, service]
}
