//! The figures as a markdown table, the targets judged against them, and the
//! section appended to BENCHMARKS.md with the command, machine and date.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;

/// One measured (or deliberately skipped) run.
pub struct Row {
    pub scenario: u8,
    pub run: String,
    /// Messages in the mailboxes: fetched by the run, or only listed (`delivers: false`).
    pub messages: usize,
    pub bytes: u64,
    /// False for runs that find nothing new (scenario 5's idle cycles), where msg/s and
    /// MiB/s would divide the mailbox by time spent doing something else.
    pub delivers: bool,
    pub result: RunResult,
}

pub enum RunResult {
    Measured {
        wall: Duration,
        /// Only for pophook, which runs as a child process.
        max_rss_kib: Option<u64>,
        cpu: Option<Duration>,
        /// Empty when every message arrived and the mailbox was left as expected.
        problem: Option<String>,
        /// What some scenarios measure besides time and memory.
        detail: Option<Detail>,
    },
    NotApplicable(String),
    Failed(String),
}

/// What a run measured that only its scenario has.
pub enum Detail {
    /// `pophook run` (scenario 5): how its memory moved while it ran.
    Trend(Trend),
    /// Scenario 7: how many connections carried the POSTs.
    Connections(Connections),
    /// Scenario 9: the POST and the object an `attachments: store` run produced.
    Stored(Stored),
}

/// What scenario 9's receiver and store got (both checked before this is made).
#[derive(Clone, Debug)]
pub struct Stored {
    /// The POST body, as the receiver read it.
    pub body_bytes: u64,
    /// The event's `text` and `html`, as strings (their JSON escapes aside).
    pub text_bytes: u64,
    pub html_bytes: u64,
    /// The object in the bucket (its size and SHA-256 matched the attachment).
    pub object_bytes: u64,
}

impl Stored {
    /// What the POST body may be: the allowance plus the text and HTML bodies.
    pub fn body_limit(&self) -> u64 {
        crate::storage::BODY_ALLOWANCE + self.text_bytes + self.html_bytes
    }

    fn summary(&self) -> String {
        format!(
            "POST body {} B (text {} B, html {} B); object {:.1} MiB, size and sha256 match",
            self.body_bytes,
            self.text_bytes,
            self.html_bytes,
            self.object_bytes as f64 / MIB,
        )
    }
}

/// The webhook connections of one run, as the receiver and as pophook counted them.
#[derive(Clone, Debug)]
pub struct Connections {
    /// TCP connections the receiver accepted.
    pub accepted: u64,
    /// Of them, those that carried a POST.
    pub used: u64,
    /// POSTs the receiver answered.
    pub requests: u64,
    /// Of them, over HTTP/2.
    pub http2_requests: u64,
    /// `pophook_webhook_connections_opened_total` from pophook's /metrics, when the run
    /// could scrape it (`pophook run`; `once` serves no endpoint).
    pub counted_by_pophook: Option<u64>,
}

impl Connections {
    /// Connections per 1,000 messages (POSTs).
    pub fn per_thousand(&self, messages: usize) -> f64 {
        self.accepted as f64 * 1000.0 / messages.max(1) as f64
    }

    fn summary(&self, messages: usize) -> String {
        format!(
            "{} connections{} for {} POSTs{} ({:.1} per 1,000 messages){}",
            self.accepted,
            if self.used == self.accepted {
                String::new()
            } else {
                format!(" ({} carried POSTs)", self.used)
            },
            self.requests,
            match self.http2_requests {
                0 => String::new(),
                n if n == self.requests => " (all over h2)".into(),
                n => format!(" ({n} over h2)"),
            },
            self.per_thousand(messages),
            self.counted_by_pophook
                .map_or(String::new(), |n| format!("; pophook's counter: {n}")),
        )
    }
}

/// `pophook run`'s resident memory sampled from /proc while it polled, and how it
/// stopped.
#[derive(Clone, Debug)]
pub struct Trend {
    /// VmRSS, oldest first; the first is taken after the first cycle had time to run.
    pub samples_kib: Vec<u64>,
    pub every: Duration,
    /// Cycles pophook logged (finished, with or without anything new).
    pub cycles: u64,
    /// From SIGTERM to its exit (which was 0, or the run would have failed).
    pub stop: Duration,
}

/// How much RSS may rise from the first sample to the last before it counts as growth:
/// allocator arenas settle in steps of about a MiB, a leak keeps climbing.
const GROWTH_TOLERANCE_MIB: f64 = 2.0;

impl Trend {
    fn first_mib(&self) -> f64 {
        self.samples_kib.first().copied().unwrap_or(0) as f64 / 1024.0
    }

    fn last_mib(&self) -> f64 {
        self.samples_kib.last().copied().unwrap_or(0) as f64 / 1024.0
    }

    fn peak_mib(&self) -> f64 {
        self.samples_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }

    fn grew(&self) -> bool {
        self.last_mib() - self.first_mib() > GROWTH_TOLERANCE_MIB
    }

    fn summary(&self, cpu: Option<Duration>) -> String {
        let per_cycle = match (cpu, self.cycles) {
            (Some(cpu), n) if n > 0 => {
                // Start-up and loading the state included, spread over the cycles.
                format!(
                    ", {:.1} ms CPU each (start-up included)",
                    cpu.as_secs_f64() * 1000.0 / n as f64
                )
            }
            _ => String::new(),
        };
        // Polls are timed from the end of a cycle, so the period is the poll interval
        // plus the cycle's own wall time.
        let sampled = self.every.as_secs_f64() * self.samples_kib.len() as f64;
        let period = if self.cycles > 0 {
            format!(" (one every {:.2} s)", sampled / self.cycles as f64)
        } else {
            String::new()
        };
        format!(
            "RSS every {:.1} s: first {:.1}, last {:.1}, peak {:.1} MiB ({} samples); {} cycles{period}{per_cycle}; exit 0 {:.2} s after SIGTERM",
            self.every.as_secs_f64(),
            self.first_mib(),
            self.last_mib(),
            self.peak_mib(),
            self.samples_kib.len(),
            self.cycles,
            self.stop.as_secs_f64(),
        )
    }
}

impl RunResult {
    /// Measured, with every check passed.
    pub fn is_ok(&self) -> bool {
        matches!(self, RunResult::Measured { problem: None, .. })
    }
}

impl Row {
    fn wall(&self) -> Option<Duration> {
        match &self.result {
            RunResult::Measured {
                wall,
                problem: None,
                ..
            } => Some(*wall),
            _ => None,
        }
    }

    fn cpu(&self) -> Option<Duration> {
        match &self.result {
            RunResult::Measured {
                cpu, problem: None, ..
            } => *cpu,
            _ => None,
        }
    }

    fn trend(&self) -> Option<&Trend> {
        match &self.result {
            RunResult::Measured {
                detail: Some(Detail::Trend(trend)),
                problem: None,
                ..
            } => Some(trend),
            _ => None,
        }
    }

    fn stored(&self) -> Option<&Stored> {
        match &self.result {
            RunResult::Measured {
                detail: Some(Detail::Stored(stored)),
                problem: None,
                ..
            } => Some(stored),
            _ => None,
        }
    }

    pub fn connections(&self) -> Option<&Connections> {
        match &self.result {
            RunResult::Measured {
                detail: Some(Detail::Connections(connections)),
                problem: None,
                ..
            } => Some(connections),
            _ => None,
        }
    }

    fn rss_mib(&self) -> Option<f64> {
        match &self.result {
            RunResult::Measured {
                max_rss_kib: Some(kib),
                problem: None,
                ..
            } => Some(*kib as f64 / 1024.0),
            _ => None,
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            RunResult::Failed(_)
                | RunResult::Measured {
                    problem: Some(_),
                    ..
                }
        )
    }
}

/// Of repeated runs, the one with the median wall time; the first failure if any failed.
pub fn median(mut tries: Vec<Row>) -> Row {
    if let Some(failed) = tries.iter().position(|r| r.wall().is_none()) {
        return tries.swap_remove(failed);
    }
    tries.sort_by_key(|r| r.wall());
    let middle = tries.len() / 2;
    tries.swap_remove(middle)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | run | messages | MiB | wall s | msg/s | MiB/s | pophook CPU s | peak RSS MiB | check |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let mib = row.bytes as f64 / MIB;
        let _ = write!(
            out,
            "| {} | {} | {} | {mib:.1} | ",
            row.scenario, row.run, row.messages
        );
        let _ = match &row.result {
            RunResult::Measured {
                wall,
                max_rss_kib,
                cpu,
                problem,
                detail,
            } => {
                let secs = wall.as_secs_f64();
                let (per_sec, mib_per_sec) = if row.delivers {
                    (
                        format!("{:.0}", row.messages as f64 / secs),
                        format!("{:.2}", mib / secs),
                    )
                } else {
                    ("–".into(), "–".into())
                };
                let check = match (problem, detail) {
                    (Some(p), _) => format!("FAILED: {p}"),
                    (None, Some(Detail::Trend(trend))) => {
                        format!("ok; {}", trend.summary(*cpu))
                    }
                    (None, Some(Detail::Connections(c))) => {
                        format!("ok; {}", c.summary(row.messages))
                    }
                    (None, Some(Detail::Stored(stored))) => format!("ok; {}", stored.summary()),
                    (None, None) => "ok".into(),
                };
                writeln!(
                    out,
                    "{secs:.2} | {per_sec} | {mib_per_sec} | {} | {} | {check} |",
                    cpu.map_or("–".into(), |c| format!("{:.2}", c.as_secs_f64())),
                    max_rss_kib.map_or("–".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                )
            }
            RunResult::NotApplicable(why) => writeln!(out, "n/a | | | | | {why} |"),
            RunResult::Failed(why) => {
                writeln!(out, "– | | | | | FAILED: {} |", first_line(why))
            }
        };
    }
    out
}

/// The targets, each met, missed by how much, or n/a.
pub fn targets(rows: &[Row]) -> String {
    let find =
        |scenario: u8, run: &str| rows.iter().find(|r| r.scenario == scenario && r.run == run);
    let wall = |scenario: u8, run: &str| find(scenario, run).and_then(Row::wall);
    let mut out = String::new();

    // Issue 9's targets for pophook's defaults (one session per cycle).
    let floor_target =
        |out: &mut String, label: &str, scenario: u8, limit: f64, goal: Option<f64>| {
            let target = match goal {
                Some(goal) => format!("{label}: pophook ≤ {limit}× the floor (goal {goal}×)"),
                None => format!("{label}: pophook ≤ {limit}× the floor"),
            };
            let _ = match (wall(scenario, POPHOOK_PLAIN), wall(scenario, FLOOR_PLAIN)) {
                (Some(p), Some(f)) => {
                    let ratio = p.as_secs_f64() / f.as_secs_f64();
                    writeln!(
                        out,
                        "- {target} — **{}**: {ratio:.2}× the floor ({:.2} s vs {:.2} s){}{}",
                        verdict(ratio <= limit),
                        p.as_secs_f64(),
                        f.as_secs_f64(),
                        beyond(ratio, limit),
                        if goal.is_some_and(|goal| ratio <= goal) {
                            "; goal met"
                        } else {
                            ""
                        },
                    )
                }
                _ => writeln!(out, "- {target} — n/a (not measured)"),
            };
        };
    floor_target(&mut out, "Scenario 1, plain", 1, 1.5, Some(1.2));
    if let (Some(p), Some(f)) = (wall(1, POPHOOK_TLS), wall(1, FLOOR_TLS)) {
        let _ = writeln!(
            out,
            "  (for information: over implicit TLS pophook takes {:.2}× the TLS floor)",
            p.as_secs_f64() / f.as_secs_f64()
        );
    }
    floor_target(&mut out, "Scenario 3", 3, 2.0, None);

    let _ = match (wall(2, &in_flight_run(1)), wall(2, &in_flight_run(4))) {
        (Some(one), Some(four)) => {
            let speedup = one.as_secs_f64() / four.as_secs_f64();
            writeln!(
                out,
                "- Scenario 2: `max_in_flight: 4` ≥ 3× faster than `1` — **{}**: {speedup:.2}× faster{}",
                verdict(speedup >= 3.0),
                if speedup >= 3.0 {
                    String::new()
                } else {
                    format!("; {:.0}% of the target", speedup / 3.0 * 100.0)
                }
            )
        }
        _ => writeln!(
            out,
            "- Scenario 2: `max_in_flight: 4` ≥ 3× faster than `1` — n/a (not measured)"
        ),
    };

    let peak = highest_rss(rows.iter().filter(|r| (1..=3).contains(&r.scenario)));
    let _ = match peak {
        Some((mib, row)) => writeln!(
            out,
            "- Peak RSS ≤ 64 MiB in scenarios 1–3 — **{}**: highest {mib:.1} MiB (scenario {}, {}){}",
            verdict(mib <= 64.0),
            row.scenario,
            row.run,
            over_mib(mib, 64.0),
        ),
        None => writeln!(out, "- Peak RSS ≤ 64 MiB in scenarios 1–3 — n/a (not measured)"),
    };

    let _ = match find(4, POPHOOK_PLAIN).and_then(|r| r.rss_mib().map(|m| (m, r))) {
        Some((mib, row)) => {
            let size = row.bytes as f64 / MIB;
            let ratio = mib / size;
            writeln!(
                out,
                "- Scenario 4: peak RSS ≤ 2.2× the {size:.0} MiB message (issue 10; issue 9 asked ~3×) — **{}**: {mib:.1} MiB = {ratio:.2}× its size{}",
                verdict(ratio <= 2.2),
                beyond(ratio, 2.2),
            )
        }
        None => writeln!(
            out,
            "- Scenario 4: peak RSS ≤ 2.2× the message — n/a (not measured)"
        ),
    };

    idle_targets(&mut out, rows);

    let _ = match (find(6, MANY_POPHOOK), wall(6, MANY_FLOOR)) {
        (Some(row), floor) if row.wall().is_some() => {
            let p = row.wall().unwrap_or_default().as_secs_f64();
            writeln!(
                out,
                "- Scenario 6 (no target; for information): {} messages in 50 mailboxes in {p:.2} s, peak RSS {}{}",
                row.messages,
                row.rss_mib()
                    .map_or("not measured".into(), |m| format!("{m:.1} MiB")),
                floor.map_or(String::new(), |f| format!(
                    "; {:.2}× the floor draining the mailboxes one after another ({:.2} s)",
                    p / f.as_secs_f64(),
                    f.as_secs_f64()
                )),
            )
        }
        _ => writeln!(out, "- Scenario 6: 50 mailboxes — n/a (not measured)"),
    };
    https_targets(&mut out, rows);
    memory_targets(&mut out, rows);
    storage_targets(&mut out, rows);
    out
}

/// Scenario 9 (issue 13): with the attachment in the store, the POST body stays under
/// 64 KiB plus the text and HTML bodies, and pophook's peak RSS under 2× the attachment.
fn storage_targets(out: &mut String, rows: &[Row]) {
    let row = rows
        .iter()
        .find(|r| r.scenario == crate::storage::SCENARIO && r.run == STORE_RUN);
    let _ = match row.and_then(|r| r.stored().map(|s| (r, s))) {
        Some((_, stored)) => {
            let limit = stored.body_limit();
            writeln!(
                out,
                "- Scenario 9: POST body < 64 KiB + the text and HTML bodies ({} + {} B = {limit} B) with the attachment in the store — **{}**: {} B{}",
                crate::storage::BODY_ALLOWANCE,
                stored.text_bytes + stored.html_bytes,
                verdict(stored.body_bytes < limit),
                stored.body_bytes,
                if stored.body_bytes < limit {
                    String::new()
                } else {
                    format!("; {} B over", stored.body_bytes - limit)
                },
            )
        }
        None => writeln!(
            out,
            "- Scenario 9: POST body with the attachment in the store — n/a (not measured)"
        ),
    };
    let _ = match row
        .and_then(|r| r.stored().map(|s| (r, s)))
        .and_then(|(r, s)| r.rss_mib().map(|m| (m, s)))
    {
        Some((mib, stored)) => {
            let attachment = stored.object_bytes as f64 / MIB;
            let ratio = mib / attachment;
            writeln!(
                out,
                "- Scenario 9: peak RSS < 2× the {attachment:.0} MiB attachment ({:.0} MiB) — **{}**: {mib:.1} MiB = {ratio:.2}× the attachment{}",
                2.0 * attachment,
                verdict(ratio < 2.0),
                over_mib(mib, 2.0 * attachment),
            )
        }
        None => writeln!(
            out,
            "- Scenario 9: peak RSS < 2× the attachment — n/a (not measured)"
        ),
    };
}

/// Scenario 7: connections per 1,000 messages ≤ `max_in_flight` against an HTTPS
/// receiver answering 200 with a JSON body, and its wall time against 204.
fn https_targets(out: &mut String, rows: &[Row]) {
    let find = |run: &str| rows.iter().find(|r| r.scenario == 7 && r.run == run);
    let limit = crate::https::MAX_IN_FLIGHT as f64;
    let _ = match find(HTTPS_JSON).and_then(|r| r.connections().map(|c| (r, c))) {
        Some((row, c)) => {
            let per = c.per_thousand(row.messages);
            let mut others = Vec::new();
            for run in [HTTPS_EMPTY, HTTPS_H2_JSON, HTTPS_RUN_METRICS] {
                if let Some((r, c)) = find(run).and_then(|r| r.connections().map(|c| (r, c))) {
                    others.push(format!("{run}: {}", c.summary(r.messages)));
                }
            }
            writeln!(
                out,
                "- Scenario 7: connections per 1,000 messages ≤ `max_in_flight` ({limit}) for one mailbox, https receiver answering 200 + JSON — **{}**: {per:.1} ({} connections for {} POSTs){}",
                verdict(per <= limit),
                c.accepted,
                c.requests,
                if others.is_empty() {
                    String::new()
                } else {
                    format!("; {}", others.join("; "))
                },
            )
        }
        None => writeln!(
            out,
            "- Scenario 7: connections per 1,000 messages over https — n/a (not measured)"
        ),
    };
    if let (Some(json), Some(empty)) = (
        find(HTTPS_JSON).and_then(Row::wall),
        find(HTTPS_EMPTY).and_then(Row::wall),
    ) {
        let _ = writeln!(
            out,
            "- Scenario 7 (no target; for information): wall time answering 200 + JSON vs 204: {:.2} s vs {:.2} s = {:.2}×",
            json.as_secs_f64(),
            empty.as_secs_f64(),
            json.as_secs_f64() / empty.as_secs_f64(),
        );
    }
}

/// Scenario 8: the 2 MiB run's peak RSS against `max_memory` plus the fixed overhead
/// (the tiny-message run's peak). The budget counts message bytes; each message in
/// flight also has its rendered body for part of its time, so the README promises
/// about 2–3× the budget, and the line says where the peak falls between.
fn memory_targets(out: &mut String, rows: &[Row]) {
    let find = |run: &str| rows.iter().find(|r| r.scenario == 8 && r.run == run);
    let budget = crate::memory::BUDGET as f64 / MIB;
    let overhead = find(MEMORY_TINY).and_then(Row::rss_mib);
    let _ = match (find(MEMORY_LARGE).and_then(Row::rss_mib), overhead) {
        (Some(peak), Some(overhead)) => writeln!(
            out,
            "- Scenario 8: peak RSS ≤ `max_memory` ({budget:.0} MiB) + the fixed overhead (the tiny-message run's peak, {overhead:.1} MiB) = {:.1} MiB — **{}**: {peak:.1} MiB; above the overhead {:.1} MiB = {:.2}× the budget (which counts each message twice: its bytes and its rendered body){}",
            budget + overhead,
            verdict(peak <= budget + overhead),
            peak - overhead,
            (peak - overhead) / budget,
            over_mib(peak, budget + overhead),
        ),
        _ => writeln!(
            out,
            "- Scenario 8: peak RSS ≤ `max_memory` + the fixed overhead — n/a (not measured)"
        ),
    };
    if let (Some(peak), Some(overhead)) =
        (find(MEMORY_LARGE_DEFAULT).and_then(Row::rss_mib), overhead)
    {
        let _ = writeln!(
            out,
            "- Scenario 8 (for information): with the default `max_memory` (256 MiB) the same mailboxes peak at {peak:.1} MiB, {:.1} MiB above the overhead = {:.2}× that budget{}",
            peak - overhead,
            (peak - overhead) / 256.0,
            find(MEMORY_LARGE_UNBOUND)
                .and_then(Row::rss_mib)
                .map_or(String::new(), |unbound| format!(
                    "; with 4 GiB (only `max_in_flight` limits: 50 × 4 × 2 MiB = 400 MiB of messages) at {unbound:.1} MiB"
                )),
        );
    }
}

/// Scenario 5: the issue asks for the CPU of an idle cycle, peak RSS ≤ 64 MiB with
/// 100,000 remembered UIDLs, and `run` at 1 s polls without RSS growth.
fn idle_targets(out: &mut String, rows: &[Row]) {
    let find = |run: &str| rows.iter().find(|r| r.scenario == 5 && r.run == run);
    let Some(remembered) = find(IDLE_ONCE).or(find(IDLE_RUN)).map(|r| r.messages) else {
        let _ = writeln!(out, "- Scenario 5: idle cycles — n/a (not measured)");
        return;
    };
    let peak = highest_rss(
        [IDLE_FIRST, IDLE_ONCE, IDLE_RUN]
            .into_iter()
            .filter_map(find),
    );
    let _ = match peak {
        Some((mib, Row { run, .. })) => writeln!(
            out,
            "- Scenario 5: peak RSS ≤ 64 MiB with {remembered} remembered UIDLs — **{}**: highest {mib:.1} MiB ({run}){}",
            verdict(mib <= 64.0),
            over_mib(mib, 64.0),
        ),
        None => writeln!(
            out,
            "- Scenario 5: peak RSS ≤ 64 MiB — n/a (not measured)"
        ),
    };
    if let Some(row) = find(IDLE_ONCE).filter(|r| r.wall().is_some()) {
        let _ = writeln!(
            out,
            "- Scenario 5: an idle `once` over {remembered} remembered UIDLs (no target; for information): {} CPU s, {:.2} s wall (start-up and loading the state, login, UIDL and LIST of the whole mailbox, QUIT){}",
            row.cpu().map_or("–".into(), |c| format!("{:.2}", c.as_secs_f64())),
            row.wall().unwrap_or_default().as_secs_f64(),
            find(IDLE_FLOOR)
                .and_then(Row::wall)
                .map_or(String::new(), |f| format!(
                    "; the server alone answers login, UIDL, LIST and QUIT in {:.2} s",
                    f.as_secs_f64()
                )),
        );
    }
    let _ = match find(IDLE_RUN).and_then(|r| r.trend().map(|t| (r, t))) {
        Some((row, trend)) => writeln!(
            out,
            "- Scenario 5: `run` at 1 s polls for {:.0} s without RSS growth (last sample ≤ first + {GROWTH_TOLERANCE_MIB} MiB) — **{}**: {}; every sample (MiB): {}",
            row.wall().unwrap_or_default().as_secs_f64(),
            verdict(!trend.grew()),
            trend.summary(row.cpu()),
            trend
                .samples_kib
                .iter()
                .map(|kib| format!("{:.1}", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        None => writeln!(
            out,
            "- Scenario 5: `run` without RSS growth — n/a (not measured)"
        ),
    };
}

/// The row with the highest peak RSS, and that peak in MiB.
fn highest_rss<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<(f64, &'a Row)> {
    rows.filter_map(|r| r.rss_mib().map(|mib| (mib, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// How far a ratio is beyond what the target allows, when it is.
fn beyond(ratio: f64, limit: f64) -> String {
    if ratio <= limit {
        String::new()
    } else {
        format!("; {:.2}× what the target allows", ratio / limit)
    }
}

/// How many MiB a peak RSS is over its limit, when it is.
fn over_mib(mib: f64, limit: f64) -> String {
    if mib <= limit {
        String::new()
    } else {
        format!(
            "; {:.1} MiB ({:.0}%) over",
            mib - limit,
            (mib / limit - 1.0) * 100.0
        )
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub const POPHOOK_PLAIN: &str = "pophook, plain";
pub const POPHOOK_TLS: &str = "pophook, implicit TLS";
pub const FLOOR_PLAIN: &str = "floor, plain";
pub const FLOOR_TLS: &str = "floor, implicit TLS";

pub fn in_flight_run(n: u32) -> String {
    format!("pophook, plain, max_in_flight {n}")
}

/// Scenario 2 without the key: today's lock-step delivery.
pub const IN_FLIGHT_ABSENT: &str = "pophook, plain, max_in_flight absent";

/// Scenario 5's runs, in order: the one that posts (and so remembers) every message,
/// then cycles that find nothing new.
pub const IDLE_FIRST: &str = "pophook once, first: posts all";
pub const IDLE_ONCE: &str = "pophook once, idle";
pub const IDLE_FLOOR: &str = "floor: login, UIDL, LIST, QUIT";
pub const IDLE_RUN: &str = "pophook run, poll_interval 1s, idle";

pub const HTTPS_JSON: &str = "pophook, https HTTP/1.1, answer 200 + JSON";
pub const HTTPS_EMPTY: &str = "pophook, https HTTP/1.1, answer 204";
pub const HTTPS_H2_JSON: &str = "pophook, https h2, answer 200 + JSON";
/// Its wall time is to the moment every message arrived and the mailbox was empty.
pub const HTTPS_RUN_METRICS: &str = "pophook run, https HTTP/1.1, 200 + JSON, /metrics read";

pub const MEMORY_TINY: &str = "pophook, 50 mailboxes, tiny messages, max_memory 128 MiB";
pub const MEMORY_LARGE: &str = "pophook, 50 mailboxes, 2 MiB messages, max_memory 128 MiB";
pub const MEMORY_LARGE_DEFAULT: &str =
    "pophook, 50 mailboxes, 2 MiB messages, max_memory 256 MiB (default)";
pub const MEMORY_LARGE_UNBOUND: &str =
    "pophook, 50 mailboxes, 2 MiB messages, max_memory 4 GiB (no bound)";

pub const STORE_RUN: &str = "pophook, attachments: store (s3s-fs)";

pub const MANY_POPHOOK: &str = "pophook, 50 mailboxes at once";
pub const MANY_FLOOR: &str = "floor, 50 mailboxes one after another";

/// What the figures were measured on, one line each.
pub fn machine() -> String {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let ram_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "- CPU: {cpu}; nproc {nproc}; RAM {:.1} GiB; Linux {}; load average at start {}\n- {}; Dovecot {}; pophook built with the release profile\n",
        ram_kib / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim(),
        load.join(" "),
        output("rustc", &["--version"]),
        output("/usr/sbin/dovecot", &["--version"]),
    )
}

/// The commit measured, and whether pophook's sources had uncommitted changes.
pub fn revision(repo: &Path) -> String {
    let repo = repo.display().to_string();
    let commit = output("git", &["-C", &repo, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["-C", &repo, "status", "--porcelain", "--", "src"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{commit} with uncommitted changes in src/")
    } else {
        commit
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

const HEADER: &str = "# Benchmarks\n\n\
End-to-end throughput and memory of `pophook once` (and `run`, scenario 5) against a\n\
real Dovecot on 127.0.0.1, produced by `scripts/bench.sh` (the `e2e` bench in\n\
`benches/e2e/`). Each run appends a section below; compare runs made on the same\n\
machine only.\n\n\
- **Scenario 1**: 2,000 mixed messages (60% plain ~2 KiB, 30% multipart/alternative\n  \
~8 KiB, 10% with a 64 KiB base64 attachment), plain POP3 and implicit TLS.\n\
- **Scenario 2**: 500 messages of the same mix; the webhook takes 20 ms per request;\n  \
`webhook.max_in_flight: 1` vs `4`.\n\
- **Scenario 3**: 10,000 small (~600 B) messages.\n\
- **Scenario 4**: one 50 MiB message (`max_message_size: 64 MiB`).\n\
- **Scenario 5**: 100,000 small messages with `delete: false`: one `once` posts and\n  \
remembers them all, then idle cycles that find nothing new: `once`, and `run` at\n  \
`poll_interval: 1s` for a minute with its RSS sampled, stopped by SIGTERM.\n\
- **Scenario 6**: 50 mailboxes × 200 messages of scenario 1's mix in one `once`.\n\
- **Scenario 7**: 1,000 small messages to an https receiver with a private CA\n  \
(`webhook.tls_ca_file`), `max_in_flight: 4`: answering 200 with a small JSON body vs\n  \
204; connections counted by the receiver (and by pophook's\n  \
`pophook_webhook_connections_opened_total` in a `run`).\n\
- **Scenario 8**: 50 mailboxes × 50 messages of 2 MiB in one `once` with\n  \
`max_memory: 128MiB`, with the default (256 MiB) and with 4 GiB (no bound), and the\n  \
same mailboxes with tiny messages at 128 MiB (the fixed overhead). Run once whatever `--repeat` says.\n\
- **Scenario 9**: one message with a 40 MiB binary attachment (base64 in the message,\n  \
54 MiB) with `webhook.attachments: store`, to an S3-compatible server on 127.0.0.1\n  \
(`s3s-fs`, which checks SigV4): the POST body's size, and the object in the bucket\n  \
checked against the attachment (size and SHA-256).\n\n\
Runs use pophook's defaults (one session per cycle, `commit_interval: 5m`) unless the\n\
command says otherwise (`--commit-every N` sets the deprecated `commit_every` cap).\n\
The *floor* is a bare pipelined POP3 client (in the bench) doing RETR+DELE of every\n\
message without parsing or posting, on the same mailbox re-delivered: what the server\n\
and the loopback allow (scenario 5's floor logs in, reads UIDL and LIST, and QUITs).\n\
*wall* is from spawning pophook to its exit (from connecting to QUIT's reply for the\n\
floor); *peak RSS* and *CPU* are pophook's, from wait4 via GNU time.\n\
With `--repeat N` each row is the run with the median wall time of N.\n\
Every run checks that each message arrived once with its Message-ID and that the\n\
mailbox is empty afterwards (scenario 5: nothing posted by idle cycles, every message\n\
still on the server). The corpus is generated from fixed seeds (SplitMix64),\n\
stored with CRLF line endings. The machine is shared, so figures are noisy; the targets\n\
are ratios of runs made one after another in the same invocation.\n";

/// Appends a dated section to BENCHMARKS.md (written with its header when missing).
pub fn append(path: &Path, section: &str) -> std::io::Result<()> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| HEADER.to_string());
    if !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(section);
    fs::write(path, text)
}
