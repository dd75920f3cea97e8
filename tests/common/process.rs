//! The `pophook` binary as a child process, for tests that need a real one (signals,
//! descriptor limits, a reload, `pophook receive`), and the HTTP probes they poll it with.
//! A child's output goes to a file: an unread pipe would block it once full.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::setup::TestConfig;

const BIN: &str = env!("CARGO_BIN_EXE_pophook");
/// How long a SIGTERM may take; well above any `shutdown_timeout` the tests set.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A loopback port nothing listens on now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code and body of a GET; panics naming the URL when nothing answers.
pub async fn get(url: &str) -> (u16, String) {
    try_get(url)
        .await
        .unwrap_or_else(|| panic!("GET {url}: no answer"))
}

/// The status code and body of a GET, `None` while nothing answers.
pub async fn try_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Polls `probe` until it answers `Some`; `None` once `timeout` has passed.
async fn poll<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `probe` answers once it answers `Some`; panics with `what` after `timeout`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> F,
) -> T {
    poll(timeout, probe)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Waits until `done` holds; panics with `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    eventually(what, timeout, || std::future::ready(done().then_some(()))).await
}

/// A running `pophook` child, its stderr in a file; killed when dropped.
pub struct Pophook {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Pophook {
    /// `pophook ARGS --config CONFIG`, its stderr into the file `log`.
    pub fn spawn(args: &[&str], config: &Path, log: &Path) -> Pophook {
        Pophook::spawn_command(tokio::process::Command::new(BIN), args, config, log)
    }

    /// `pophook run` on `cfg`, its stderr in `cfg`'s directory; returns once `/healthz`
    /// on `port` answers.
    pub async fn run(cfg: &TestConfig, port: u16) -> Pophook {
        let log = cfg.dir.path().join("stderr.log");
        let child = Pophook::spawn(&["run"], &cfg.path(), &log);
        child.wait_healthy(port).await;
        child
    }

    /// [`Pophook::spawn`] under util-linux's `prlimit --nofile=N:N`.
    pub fn spawn_with_nofile(nofile: u32, args: &[&str], config: &Path, log: &Path) -> Pophook {
        let mut command = tokio::process::Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(BIN);
        Pophook::spawn_command(command, args, config, log)
    }

    fn spawn_command(
        mut command: tokio::process::Command,
        args: &[&str],
        config: &Path,
        log: &Path,
    ) -> Pophook {
        let child = command
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .kill_on_drop(true)
            .spawn()
            .expect("run pophook (with `prlimit` from util-linux when a limit is asked for)");
        Pophook {
            child,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("pophook was already reaped")
    }

    /// What pophook has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`"HUP"`, `"TERM"`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.pid());
    }

    /// Returns once `/healthz` on `port` answers 200; panics with the log after 20 s.
    pub async fn wait_healthy(&self, port: u16) {
        let health = format!("http://127.0.0.1:{port}/healthz");
        self.eventually("pophook's /healthz", Duration::from_secs(20), || async {
            try_get(&health).await.filter(|(status, _)| *status == 200)
        })
        .await;
    }

    /// [`eventually`], with pophook's log in the panic.
    pub async fn eventually<T, F: Future<Output = Option<T>>>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> F,
    ) -> T {
        poll(timeout, probe).await.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; pophook's log:\n{}",
                self.log()
            )
        })
    }

    /// Waits until `done` holds; panics with `what` and pophook's log after `timeout`.
    pub async fn until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        self.eventually(what, timeout, || std::future::ready(done().then_some(())))
            .await
    }

    /// The exit status; panics with the log when pophook still runs after `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "pophook still runs {timeout:?} later; its log:\n{}",
                self.log()
            ),
        }
    }

    /// SIGTERM, and the exit status; panics with the log when pophook still runs 30 s on.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_within(STOP_TIMEOUT).await
    }

    /// SIGTERM, which must end pophook with exit 0; returns its log.
    pub async fn stop(mut self) -> String {
        let status = self.terminate().await;
        let log = self.log();
        assert!(status.success(), "exit {status} after SIGTERM:\n{log}");
        log
    }

    /// SIGKILL: no clean close.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// `pophook receive` on a free port, its stdout (one line per request) in a file.
pub struct Receive {
    child: tokio::process::Child,
    port: u16,
    stdout: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receive {
    /// Starts `pophook receive --secret SECRET` and returns once it accepts connections.
    pub async fn start(secret: &str) -> Receive {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let port = free_port();
        let child = tokio::process::Command::new(BIN)
            .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--secret", secret])
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually(
            "pophook receive to listen",
            Duration::from_secs(5),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        Receive {
            child,
            port,
            stdout,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Kills it and returns all it printed.
    pub async fn stop(mut self) -> String {
        self.child.kill().await.unwrap();
        std::fs::read_to_string(&self.stdout).unwrap()
    }
}
