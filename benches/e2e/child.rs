//! Runs `pophook once` as a child process under GNU time, which reports the child's
//! peak RSS and CPU time (from wait4's rusage), and kills it when it overruns.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const GNU_TIME: &str = "/usr/bin/time";

pub struct ChildRun {
    /// From spawn to exit, as seen by the bench.
    pub wall: Duration,
    pub max_rss_kib: u64,
    /// User plus system CPU time of pophook.
    pub cpu: Duration,
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
    let usage = dir.join("rusage.txt");
    let log = dir.join("pophook.log");
    let log_file = fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut command = Command::new(GNU_TIME);
    command
        .arg("--format=%M %U %S")
        .arg("--output")
        .arg(&usage)
        .args(wrap)
        .arg(pophook)
        .arg("once")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
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

    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {GNU_TIME} (apt-get install time): {e}"))?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}\n{}", tail(&log, 20)));
        }
        thread::sleep(Duration::from_millis(1));
    };
    let wall = start.elapsed();
    if !status.success() {
        return Err(format!("pophook exited with {status}\n{}", tail(&log, 20)));
    }
    let usage = fs::read_to_string(&usage).map_err(|e| format!("read {GNU_TIME}'s output: {e}"))?;
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

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
