//! Runs pophook as a child process under GNU time, which reports the child's peak RSS
//! and CPU time (from wait4's rusage), and kills it when it overruns: `pophook once` to
//! its exit, or `pophook run` for a while with its RSS sampled (or until the bench saw
//! what it waited for), then SIGTERM.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::report::{Detail, RunResult};

pub const GNU_TIME: &str = "/usr/bin/time";

pub struct ChildRun {
    /// From spawn to exit, as seen by the bench.
    pub wall: Duration,
    pub max_rss_kib: u64,
    /// User plus system CPU time of pophook.
    pub cpu: Duration,
}

impl ChildRun {
    /// The row's figures: this run's time and memory, with what the scenario checked.
    pub fn measured(&self, problem: Option<String>, detail: Option<Detail>) -> RunResult {
        RunResult::Measured {
            wall: self.wall,
            max_rss_kib: Some(self.max_rss_kib),
            cpu: Some(self.cpu),
            problem,
            detail,
        }
    }
}

/// A `pophook run` that was sampled and then stopped.
pub struct ServiceRun {
    pub run: ChildRun,
    /// VmRSS from /proc, every `every`, oldest first.
    pub samples_kib: Vec<u64>,
    /// From SIGTERM to exit.
    pub stop: Duration,
}

/// Runs `wrap… pophook once --config config`; its output goes to files in `dir`.
/// Fails on a non-zero exit or after `timeout`, with the tail of pophook's log.
pub fn run_once(
    pophook: &Path,
    config: &Path,
    dir: &Path,
    wrap: &[String],
    timeout: Duration,
) -> Result<ChildRun, String> {
    let log = dir.join("pophook.log");
    let start = Instant::now();
    let mut child = spawn(pophook, "once", config, dir, wrap, "info")?;
    let status = wait(&mut child, start + timeout, &log)?;
    let wall = start.elapsed();
    if !status.success() {
        return Err(format!("pophook exited with {status}\n{}", tail(&log, 20)));
    }
    rusage(dir, wall)
}

/// Runs `pophook run --config config` for `run_for`, sampling its RSS every `every`,
/// then sends it SIGTERM and waits up to `stop_timeout` for it to exit 0. Its log
/// (in `dir/pophook.log`) includes the per-cycle "nothing new" lines.
pub fn run_service(
    pophook: &Path,
    config: &Path,
    dir: &Path,
    run_for: Duration,
    every: Duration,
    stop_timeout: Duration,
) -> Result<ServiceRun, String> {
    let log = dir.join("pophook.log");
    let start = Instant::now();
    // No `--wrap` here: the process sampled and signalled must be pophook itself.
    let mut child = spawn(
        pophook,
        "run",
        config,
        dir,
        &[],
        "info,pophook::service=debug",
    )?;
    let pid = match pophook_pid(child.id(), Duration::from_secs(10)) {
        Some(pid) => pid,
        None => {
            kill_group(&mut child);
            return Err(format!(
                "pophook run did not start under {GNU_TIME}\n{}",
                tail(&log, 20)
            ));
        }
    };
    let mut samples_kib = Vec::new();
    let mut next = start + every;
    while next <= start + run_for {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "pophook run exited by itself with {status}\n{}",
                tail(&log, 20)
            ));
        }
        match vm_rss_kib(pid) {
            Some(kib) => samples_kib.push(kib),
            None => {
                kill_group(&mut child);
                return Err(format!("cannot read /proc/{pid}/status"));
            }
        }
        next += every;
    }
    let stopping = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = wait(&mut child, stopping + stop_timeout, &log)?;
    let stop = stopping.elapsed();
    let wall = start.elapsed();
    if !status.success() {
        return Err(format!(
            "pophook run exited with {status} after SIGTERM\n{}",
            tail(&log, 20)
        ));
    }
    Ok(ServiceRun {
        run: rusage(dir, wall)?,
        samples_kib,
        stop,
    })
}

/// A `pophook run` that was stopped once the bench saw what it waited for.
pub struct UntilRun<T> {
    pub run: ChildRun,
    /// From spawn to the moment `done` answered.
    pub until_done: Duration,
    /// What `done` answered.
    pub found: T,
}

/// Runs `pophook run --config config`, asking `done` every 10 ms until it answers
/// (scenario 7 scrapes /metrics once every message arrived, while pophook still
/// serves it), then sends SIGTERM and waits up to `stop_timeout` for exit 0. Fails
/// after `timeout` without an answer.
pub fn run_until<T>(
    pophook: &Path,
    config: &Path,
    dir: &Path,
    timeout: Duration,
    stop_timeout: Duration,
    mut done: impl FnMut() -> Option<T>,
) -> Result<UntilRun<T>, String> {
    let log = dir.join("pophook.log");
    let start = Instant::now();
    let mut child = spawn(pophook, "run", config, dir, &[], "info")?;
    let Some(pid) = pophook_pid(child.id(), Duration::from_secs(10)) else {
        kill_group(&mut child);
        return Err(format!(
            "pophook run did not start under {GNU_TIME}\n{}",
            tail(&log, 20)
        ));
    };
    let found = loop {
        if let Some(found) = done() {
            break found;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "pophook run exited by itself with {status}\n{}",
                tail(&log, 20)
            ));
        }
        if start.elapsed() > timeout {
            kill_group(&mut child);
            return Err(format!("timed out after {timeout:?}\n{}", tail(&log, 20)));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let until_done = start.elapsed();
    let stopping = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = wait(&mut child, stopping + stop_timeout, &log)?;
    if !status.success() {
        return Err(format!(
            "pophook run exited with {status} after SIGTERM\n{}",
            tail(&log, 20)
        ));
    }
    Ok(UntilRun {
        run: rusage(dir, start.elapsed())?,
        until_done,
        found,
    })
}

/// `time --output dir/rusage.txt wrap… pophook <subcommand> --config config`, its
/// output in `dir/pophook.log`.
fn spawn(
    pophook: &Path,
    subcommand: &str,
    config: &Path,
    dir: &Path,
    wrap: &[String],
    rust_log: &str,
) -> Result<Child, String> {
    let log_file = fs::File::create(dir.join("pophook.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new(GNU_TIME);
    command
        .arg("--format=%M %U %S")
        .arg("--output")
        .arg(dir.join("rusage.txt"))
        .args(wrap)
        .arg(pophook)
        .arg(subcommand)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        // Its own group, so a timeout kills pophook and not only `time`.
        .process_group(0);
    // `POPHOOK_*` variables override the configuration; the bench's file is the truth.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("POPHOOK_") {
            command.env_remove(name);
        }
    }
    command
        .spawn()
        .map_err(|e| format!("cannot run {GNU_TIME} (apt-get install time): {e}"))
}

/// Waits for the child's exit; past `deadline` kills its group and fails.
fn wait(child: &mut Child, deadline: Instant, log: &Path) -> Result<ExitStatus, String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            kill_group(child);
            return Err(format!(
                "timed out after {:?}\n{}",
                start.elapsed(),
                tail(log, 20)
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

/// GNU time's figures for the child that just exited.
fn rusage(dir: &Path, wall: Duration) -> Result<ChildRun, String> {
    let usage = fs::read_to_string(dir.join("rusage.txt"))
        .map_err(|e| format!("read {GNU_TIME}'s output: {e}"))?;
    // On failure GNU time prints a line before the figures; they are always last.
    let fields: Vec<&str> = usage
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let parse = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("unexpected {GNU_TIME} output: {usage:?}"))
    };
    Ok(ChildRun {
        wall,
        max_rss_kib: parse(0)? as u64,
        cpu: Duration::from_secs_f64(parse(1)? + parse(2)?),
    })
}

/// The pid of GNU time's child (pophook), once it has forked it.
fn pophook_pid(time_pid: u32, within: Duration) -> Option<u32> {
    let path = format!("/proc/{time_pid}/task/{time_pid}/children");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let children = fs::read_to_string(&path).ok()?;
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().ok();
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The process's resident set now (not its peak: that comes from GNU time).
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
