//! End-to-end benchmark of pophook (issues 6 and 9): a deterministic corpus delivered
//! into a throwaway Dovecot, pophook run as a child process posting to a local receiver,
//! wall time and peak RSS measured, and the same mailbox re-delivered and drained by a
//! bare pipelined POP3 client to measure the floor. Run it with `scripts/bench.sh`.
//!
//! # Layout
//! - `corpus`: the seeded message generator for each scenario.
//! - `receiver`: a hyper webhook endpoint that answers 204 (optionally after a delay)
//!   and notes which Message-IDs arrived.
//! - `child`: runs `pophook once` (or `run`, sampled, then SIGTERM) under GNU time,
//!   with a timeout.
//! - `floor`: the bare pipelined RETR+DELE client, plain or implicit TLS.
//! - `idle`: scenario 5, idle cycles over 100,000 remembered UIDLs (`delete: false`).
//! - `many`: scenario 6, 50 mailboxes in one `once`.
//! - `https`: scenario 7, an HTTPS receiver with a private CA: connections opened when
//!   it answers 200 with a JSON body vs 204.
//! - `memory`: scenario 8, 50 mailboxes of 2 MiB messages under `max_memory: 128MiB`
//!   (and 256 MiB, and 4 GiB: no bound), and tiny ones for the fixed overhead.
//! - `storage`: scenario 9, one message with a 40 MiB attachment in
//!   `attachments: store` mode against a real S3-compatible server (`s3s-fs`): the
//!   POST's size, pophook's peak RSS, and the object in the store.
//! - `report`: the table, the targets and the BENCHMARKS.md section.
//!
//! pophook runs with its defaults (one session per cycle, committed by
//! `commit_interval`) unless an option below says otherwise.
//!
//! Options (after `--` with cargo): `--only 1,3` runs some scenarios; `--quick` runs
//! small versions and writes nothing; `--no-write` leaves BENCHMARKS.md alone;
//! `--max-in-flight` passes `webhook.max_in_flight` in scenario 2 (the default);
//! `--commit-every N` sets the deprecated `commit_every` cap on every mailbox;
//! `--remembered N` is scenario 5's mailbox size (100,000; 5,000 with `--quick`);
//! `--run-for S` is how long scenario 5's `pophook run` polls (60 s; 10 s with
//! `--quick`); `--wrap 'CMD ARGS'` runs `pophook once` under CMD (e.g.
//! `perf record -g -o /tmp/perf.data --`) and writes nothing; `--repeat N` runs
//! everything N times (scenario 5: its idle `once`) and reports the run with the median
//! wall time.

mod child;
mod corpus;
mod floor;
mod https;
mod idle;
mod many;
mod memory;
mod receiver;
mod report;
mod storage;

// The tests' Dovecot fixture, reused as it is (it finds `certs` as `super::certs`).
#[allow(dead_code)]
#[path = "../../tests/common/certs.rs"]
mod certs;
#[allow(dead_code)]
#[path = "../../tests/common/dovecot.rs"]
mod dovecot;
// The tests' s3s-fs fixture (scenario 9), reused as it is.
#[allow(dead_code)]
#[path = "../../tests/common/s3.rs"]
mod s3;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use corpus::Corpus;
use dovecot::Dovecot;
use receiver::Receiver;
use report::{Row, RunResult};

const PASSWORD: &str = "bench-password";
/// Scenario 4's message, and the `max_message_size` its configuration allows.
const HUGE: usize = 50 * 1024 * 1024;
const HUGE_LIMIT: usize = 64 * 1024 * 1024;
/// Per-command timeout of pophook's POP3 session and of the floor's socket.
const POP3_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    only: Option<Vec<u8>>,
    quick: bool,
    write: bool,
    max_in_flight: bool,
    /// The deprecated `commit_every` cap for every mailbox; unset (pophook's default,
    /// no cap) when absent.
    commit_every: Option<usize>,
    /// Scenario 5's mailbox size when given; otherwise by `quick`.
    remembered: Option<usize>,
    /// How long scenario 5's `pophook run` polls when given; otherwise by `quick`.
    run_for: Option<Duration>,
    wrap: Vec<String>,
    repeat: usize,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            only: None,
            quick: false,
            write: true,
            max_in_flight: true,
            commit_every: None,
            remembered: None,
            run_for: None,
            wrap: Vec::new(),
            repeat: 1,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "--quick" => {
                    options.quick = true;
                    options.write = false;
                }
                "--no-write" => options.write = false,
                "--max-in-flight" => options.max_in_flight = true,
                "--commit-every" => {
                    options.commit_every = Some(count(&mut args, "--commit-every", 1000)?);
                }
                "--remembered" => {
                    options.remembered = Some(count(&mut args, "--remembered", 100_000)?);
                }
                "--run-for" => {
                    // Fewer seconds leave too few cycles to tell a trend.
                    let secs = count(&mut args, "--run-for", 60)?;
                    if secs < 10 {
                        return Err("--run-for needs at least 10 seconds".into());
                    }
                    options.run_for = Some(Duration::from_secs(secs as u64));
                }
                "--only" => {
                    let list = args.next().ok_or("--only needs a list, e.g. 1,3")?;
                    let ids = list
                        .split(',')
                        .map(|s| s.trim().parse::<u8>().map_err(|_| format!("--only {list}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    options.only = Some(ids);
                }
                "--repeat" => options.repeat = count(&mut args, "--repeat", 3)?,
                "--wrap" => {
                    let cmd = args.next().ok_or("--wrap needs a command")?;
                    options.wrap = cmd.split_whitespace().map(String::from).collect();
                    options.write = false;
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(options)
    }

    fn wants(&self, scenario: u8) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.contains(&scenario))
    }
}

/// The positive count that follows `option`.
fn count(
    args: &mut impl Iterator<Item = String>,
    option: &str,
    example: usize,
) -> Result<usize, String> {
    args.next()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{option} needs a count, e.g. {example}"))
}

/// What one scenario delivers and how it is run.
struct Scenario {
    id: u8,
    corpus: Corpus,
    /// How long the receiver takes to answer each request.
    delay: Duration,
    max_message_size: Option<usize>,
    /// Bound on each pophook run.
    timeout: Duration,
    runs: Vec<Run>,
}

enum Run {
    Pophook {
        tls: bool,
        max_in_flight: Option<u32>,
    },
    Floor {
        tls: bool,
    },
    NotApplicable(String, String),
}

fn scenarios(options: &Options) -> Vec<Scenario> {
    // `--quick` checks the harness itself in seconds.
    let scale = |n: usize| if options.quick { n / 20 } else { n };
    let in_flight = if options.max_in_flight {
        vec![
            Run::Pophook {
                tls: false,
                max_in_flight: Some(1),
            },
            Run::Pophook {
                tls: false,
                max_in_flight: Some(4),
            },
        ]
    } else {
        vec![
            Run::Pophook {
                tls: false,
                max_in_flight: None,
            },
            Run::NotApplicable(
                report::in_flight_run(4),
                "n/a: `webhook.max_in_flight` does not exist yet (`--max-in-flight`)".into(),
            ),
        ]
    };
    let plain_and_floor = || {
        vec![
            Run::Pophook {
                tls: false,
                max_in_flight: None,
            },
            Run::Floor { tls: false },
        ]
    };
    let all = vec![
        Scenario {
            id: 1,
            corpus: corpus::mixed("s1", scale(2000), 1),
            delay: Duration::ZERO,
            max_message_size: None,
            timeout: Duration::from_secs(300),
            runs: vec![
                Run::Pophook {
                    tls: false,
                    max_in_flight: None,
                },
                Run::Floor { tls: false },
                Run::Pophook {
                    tls: true,
                    max_in_flight: None,
                },
                Run::Floor { tls: true },
            ],
        },
        Scenario {
            id: 2,
            corpus: corpus::mixed("s2", scale(500), 2),
            delay: Duration::from_millis(20),
            max_message_size: None,
            timeout: Duration::from_secs(300),
            runs: in_flight,
        },
        Scenario {
            id: 3,
            corpus: corpus::small("s3", scale(10_000), 3),
            delay: Duration::ZERO,
            max_message_size: None,
            timeout: Duration::from_secs(600),
            runs: plain_and_floor(),
        },
        Scenario {
            id: 4,
            corpus: corpus::huge("s4", if options.quick { HUGE / 10 } else { HUGE }, 4),
            delay: Duration::ZERO,
            max_message_size: Some(HUGE_LIMIT),
            timeout: Duration::from_secs(300),
            runs: plain_and_floor(),
        },
    ];
    all.into_iter().filter(|s| options.wants(s.id)).collect()
}

/// Everything the runs share.
struct Bench {
    dovecot: Dovecot,
    receiver: Receiver,
    pophook: PathBuf,
    work: tempfile::TempDir,
    wrap: Vec<String>,
    secret: String,
    commit_every: Option<usize>,
}

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !Path::new(child::GNU_TIME).exists() {
        eprintln!(
            "error: {} is missing: apt-get install time (scripts/bench.sh does)",
            child::GNU_TIME
        );
        return ExitCode::FAILURE;
    }
    // The receiver gets one thread: pophook and Dovecot need the rest of the machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("start the receiver's runtime");
    let bench = Bench {
        dovecot: Dovecot::start(),
        receiver: Receiver::start(&runtime),
        pophook: PathBuf::from(env!("CARGO_BIN_EXE_pophook")),
        work: tempfile::Builder::new()
            .prefix("pophook-bench-")
            .tempdir()
            .expect("create the bench's work dir"),
        wrap: options.wrap.clone(),
        commit_every: options.commit_every,
        secret: format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ),
    };
    eprintln!(
        "pophook: {}; Dovecot on 127.0.0.1:{} (plain) and :{} (TLS)",
        bench.pophook.display(),
        bench.dovecot.plain_port(),
        bench.dovecot.tls_port()
    );

    // Before the runs, so the load average is the one they started under.
    let machine = report::machine();
    let mut rows = Vec::new();
    for scenario in scenarios(&options) {
        let user = format!("bench{}", scenario.id);
        bench.dovecot.add_user(&user, PASSWORD);
        eprintln!(
            "== scenario {}: {} messages, {:.1} MiB",
            scenario.id,
            scenario.corpus.len(),
            scenario.corpus.bytes() as f64 / 1024.0 / 1024.0
        );
        for run in &scenario.runs {
            let tries = (0..options.repeat)
                .map(|_| bench.run(&scenario, &user, run))
                .collect();
            let row = report::median(tries);
            print_row(&row);
            rows.push(row);
        }
    }
    if options.wants(idle::SCENARIO) {
        rows.extend(idle::run(&bench, &options));
    }
    if options.wants(many::SCENARIO) {
        rows.extend(many::run(&bench, &options));
    }
    if options.wants(https::SCENARIO) {
        rows.extend(https::run(&bench, &runtime, &options));
    }
    if options.wants(memory::SCENARIO) {
        rows.extend(memory::run(&bench, &options));
    }
    if options.wants(storage::SCENARIO) {
        rows.push(storage::run(&bench, &options));
    }

    let table = report::table(&rows);
    let mut targets = report::targets(&rows);
    if let Some(n) = options.commit_every {
        targets.insert_str(
            0,
            &format!("- Measured with the deprecated cap `commit_every: {n}`, not pophook's defaults; the issue's targets are for the defaults.\n"),
        );
    }
    println!("\n{table}\n{targets}");
    if options.write {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            let args: Vec<String> = std::env::args()
                .skip(1)
                .filter(|a| a != "--bench")
                .collect();
            format!("cargo bench --bench e2e -- {}", args.join(" "))
        });
        let date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_default();
        let section = format!(
            "## {date} — {}\n\nCommand: `{}`\n\n{}\n{table}\n{targets}\n",
            report::revision(repo),
            command.trim(),
            machine,
        );
        let path = repo.join("BENCHMARKS.md");
        match report::append(&path, &section) {
            Ok(()) => eprintln!("appended the figures to {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if rows.iter().any(Row::is_failure) {
        eprintln!("error: some runs failed (see the table)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One row as soon as it is measured, so a long run shows its progress.
fn print_row(row: &Row) {
    let table = report::table(std::slice::from_ref(row));
    eprintln!("{}", table.lines().nth(2).unwrap_or_default());
}

/// The process-wide part of a run's configuration; pophook's defaults where `None`.
#[derive(Clone, Debug, Default)]
struct GlobalConfig {
    max_in_flight: Option<u32>,
    /// The webhook URL when not the bench's plain receiver (scenario 7's HTTPS ones).
    url: Option<String>,
    /// `webhook.tls_ca_file`: the CA of an HTTPS receiver.
    tls_ca_file: Option<PathBuf>,
    /// `max_memory`, the budget for message bytes in flight (scenario 8).
    max_memory: Option<u64>,
    /// `http.listen`, for a `pophook run` whose /metrics is scraped.
    http_listen: Option<SocketAddr>,
    /// The top-level `storage` section (YAML, from `s3::S3::storage_yaml`); when set,
    /// the webhook has `attachments: store` (scenario 9).
    storage: Option<String>,
}

impl GlobalConfig {
    fn in_flight(max_in_flight: Option<u32>) -> GlobalConfig {
        GlobalConfig {
            max_in_flight,
            ..GlobalConfig::default()
        }
    }
}

/// One `mailboxes[]` entry of a run's configuration; pophook's defaults for the rest.
struct MailboxConfig<'a> {
    name: String,
    user: &'a str,
    tls: bool,
    max_message_size: Option<usize>,
    /// `delete: false` is written; `true` is pophook's default.
    delete: bool,
    poll_interval: Option<Duration>,
}

impl<'a> MailboxConfig<'a> {
    fn new(name: impl Into<String>, user: &'a str) -> MailboxConfig<'a> {
        MailboxConfig {
            name: name.into(),
            user,
            tls: false,
            max_message_size: None,
            delete: true,
            poll_interval: None,
        }
    }
}

impl Bench {
    fn run(&self, scenario: &Scenario, user: &str, run: &Run) -> Row {
        let corpus = &scenario.corpus;
        let row = |run: String, result: RunResult| Row {
            scenario: scenario.id,
            run,
            messages: corpus.len(),
            bytes: corpus.bytes(),
            delivers: true,
            result,
        };
        let (name, result) = match run {
            Run::NotApplicable(name, why) => {
                return row(name.clone(), RunResult::NotApplicable(why.clone()))
            }
            Run::Pophook { tls, max_in_flight } => {
                let name = match max_in_flight {
                    Some(n) => report::in_flight_run(*n),
                    None if scenario.id == 2 => report::IN_FLIGHT_ABSENT.into(),
                    None if *tls => report::POPHOOK_TLS.into(),
                    None => report::POPHOOK_PLAIN.into(),
                };
                (name, self.pophook(scenario, user, *tls, *max_in_flight))
            }
            Run::Floor { tls } => {
                let name = if *tls {
                    report::FLOOR_TLS
                } else {
                    report::FLOOR_PLAIN
                };
                (name.to_string(), self.floor(corpus, user, *tls))
            }
        };
        match &result {
            RunResult::Failed(why) => eprintln!("scenario {}, {name}: FAILED: {why}", scenario.id),
            RunResult::Measured {
                problem: Some(why), ..
            } => eprintln!("scenario {}, {name}: FAILED: {why}", scenario.id),
            _ => {}
        }
        if !result.is_ok() {
            self.empty(user);
        }
        row(name, result)
    }

    /// Leaves the mailbox empty for the next run, whatever happened in this one.
    fn empty(&self, user: &str) {
        let _ = floor::drain(
            self.addr(false),
            user,
            PASSWORD,
            floor::Transport::Plain,
            POP3_TIMEOUT,
        );
    }

    fn addr(&self, tls: bool) -> SocketAddr {
        let port = if tls {
            self.dovecot.tls_port()
        } else {
            self.dovecot.plain_port()
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn deliver(&self, corpus: &Corpus, user: &str) {
        for message in &corpus.messages {
            self.dovecot.deliver(user, message);
        }
    }

    fn pophook(
        &self,
        scenario: &Scenario,
        user: &str,
        tls: bool,
        max_in_flight: Option<u32>,
    ) -> RunResult {
        let corpus = &scenario.corpus;
        self.deliver(corpus, user);
        self.receiver.reset(scenario.delay);
        let mailbox = MailboxConfig {
            tls,
            max_message_size: scenario.max_message_size,
            ..MailboxConfig::new("bench", user)
        };
        let global = GlobalConfig::in_flight(max_in_flight);
        let child = match self.once(&global, &[mailbox], scenario.timeout) {
            Ok(child) => child,
            Err(e) => return RunResult::Failed(e),
        };
        let received = self.receiver.take();
        let problem = check_arrivals(&corpus.message_ids, &received.message_ids)
            .or_else(|| self.check_empty(user))
            .or_else(|| max_in_flight.and_then(|n| over_in_flight(&received, n)));
        child.measured(problem, None)
    }

    fn floor(&self, corpus: &Corpus, user: &str, tls: bool) -> RunResult {
        self.deliver(corpus, user);
        let ca_pem = match fs::read(self.dovecot.ca_file()) {
            Ok(pem) => pem,
            Err(e) => return RunResult::Failed(format!("read the CA: {e}")),
        };
        let transport = if tls {
            floor::Transport::Tls { ca_pem: &ca_pem }
        } else {
            floor::Transport::Plain
        };
        match floor::drain(self.addr(tls), user, PASSWORD, transport, POP3_TIMEOUT) {
            Ok(drained) => {
                let mut problem = (drained.messages != corpus.len())
                    .then(|| format!("{} of {} messages drained", drained.messages, corpus.len()));
                if problem.is_none() && drained.bytes != corpus.bytes() {
                    problem = Some(format!(
                        "{} bytes drained, {} delivered",
                        drained.bytes,
                        corpus.bytes()
                    ));
                }
                if problem.is_none() {
                    problem = self.check_empty(user);
                }
                RunResult::Measured {
                    wall: drained.wall,
                    max_rss_kib: None,
                    cpu: None,
                    problem,
                    detail: None,
                }
            }
            Err(e) => RunResult::Failed(format!("floor: {e}")),
        }
    }

    fn check_empty(&self, user: &str) -> Option<String> {
        match self.dovecot.message_count(user) {
            0 => None,
            left => Some(format!("{left} messages left in the mailbox")),
        }
    }

    /// `pophook once` with this configuration, in a fresh directory, under `--wrap`.
    fn once(
        &self,
        global: &GlobalConfig,
        mailboxes: &[MailboxConfig<'_>],
        timeout: Duration,
    ) -> Result<child::ChildRun, String> {
        let (dir, config) = self.configure(global, mailboxes)?;
        child::run_once(&self.pophook, &config, dir.path(), &self.wrap, timeout)
    }

    /// A fresh directory (for the configuration, the state and the log) with the
    /// configuration written to `pophook.yaml` in it.
    fn configure(
        &self,
        global: &GlobalConfig,
        mailboxes: &[MailboxConfig<'_>],
    ) -> Result<(tempfile::TempDir, PathBuf), String> {
        let dir = tempfile::tempdir_in(self.work.path()).map_err(|e| format!("temp dir: {e}"))?;
        let config = dir.path().join("pophook.yaml");
        let yaml = self.config(dir.path(), global, mailboxes);
        fs::write(&config, yaml).map_err(|e| format!("write the config: {e}"))?;
        Ok((dir, config))
    }

    fn config(&self, dir: &Path, global: &GlobalConfig, mailboxes: &[MailboxConfig<'_>]) -> String {
        let mut webhook = format!(
            "  url: {}\n  timeout: 60s\n  secret: {}\n",
            global.url.clone().unwrap_or_else(|| self.receiver.url()),
            self.secret
        );
        if let Some(n) = global.max_in_flight {
            webhook.push_str(&format!("  max_in_flight: {n}\n"));
        }
        if let Some(ca) = &global.tls_ca_file {
            webhook.push_str(&format!("  tls_ca_file: {}\n", ca.display()));
        }
        if global.storage.is_some() {
            webhook.push_str("  attachments: store\n");
        }
        let mut yaml = format!("state_dir: {}\n", dir.join("state").display());
        if let Some(bytes) = global.max_memory {
            yaml.push_str(&format!("max_memory: {bytes}\n"));
        }
        if let Some(listen) = global.http_listen {
            yaml.push_str(&format!("http:\n  listen: {listen}\n"));
        }
        if let Some(storage) = &global.storage {
            yaml.push_str(storage);
            if !storage.ends_with('\n') {
                yaml.push('\n');
            }
        }
        yaml.push_str(&format!("webhook:\n{webhook}mailboxes:\n"));
        for m in mailboxes {
            yaml.push_str(&format!(
                "  - name: {}\n    host: 127.0.0.1\n    port: {}\n    username: {}\n    password: {PASSWORD}\n    timeout: {}s\n",
                m.name,
                if m.tls { self.dovecot.tls_port() } else { self.dovecot.plain_port() },
                m.user,
                POP3_TIMEOUT.as_secs(),
            ));
            if m.tls {
                yaml.push_str(&format!(
                    "    tls: implicit\n    tls_ca_file: {}\n",
                    self.dovecot.ca_file().display()
                ));
            } else {
                yaml.push_str("    tls: none\n    allow_insecure: true\n");
            }
            if let Some(size) = m.max_message_size {
                yaml.push_str(&format!("    max_message_size: {size}\n"));
            }
            if !m.delete {
                yaml.push_str("    delete: false\n");
            }
            if let Some(every) = m.poll_interval {
                yaml.push_str(&format!("    poll_interval: {}s\n", every.as_secs()));
            }
            if let Some(n) = self.commit_every {
                yaml.push_str(&format!("    commit_every: {n}\n"));
            }
        }
        yaml
    }
}

/// Whether the receiver saw more requests at once than `max_in_flight` allows.
fn over_in_flight(received: &receiver::Received, max_in_flight: u32) -> Option<String> {
    (received.max_concurrent > u64::from(max_in_flight)).then(|| {
        format!(
            "{} requests at once with max_in_flight {max_in_flight}",
            received.max_concurrent
        )
    })
}

/// Every message arrived exactly once, recognised by its Message-ID.
fn check_arrivals(expected: &[String], arrived: &[String]) -> Option<String> {
    let mut arrived = arrived.to_vec();
    arrived.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    if arrived == expected {
        return None;
    }
    let missing = expected
        .iter()
        .filter(|id| arrived.binary_search(id).is_err())
        .count();
    Some(format!(
        "{} requests for {} messages, {missing} never arrived",
        arrived.len(),
        expected.len()
    ))
}
