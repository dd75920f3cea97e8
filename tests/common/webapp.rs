//! A receiver application run as a child process on a loopback port (Django, Rails),
//! with its output in a file and a directory of its own; stopped on drop.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct WebApp {
    name: &'static str,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl WebApp {
    /// Starts the command `command(port, dir)` builds and returns once `port` accepts
    /// connections; panics with the application's output if it exits or takes too long.
    pub fn start(name: &'static str, command: impl FnOnce(u16, &Path) -> Command) -> WebApp {
        let dir = tempfile::tempdir().unwrap();
        let port = super::process::free_port();
        // Output to a file: an unread pipe would block the server once it fills.
        let log = fs::File::create(dir.path().join("server.log")).unwrap();
        let child = command(port, dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut app = WebApp {
            name,
            child,
            port,
            dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = app.child.try_wait() {
                panic!("{name} exited ({status}) before listening:\n{}", app.log());
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "{name} did not listen within {START_TIMEOUT:?}:\n{}",
                    app.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        app
    }

    /// `http://{userinfo}@127.0.0.1:PORT{path}`; `userinfo` may be empty.
    pub fn url(&self, userinfo: &str, path: &str) -> String {
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("http://{userinfo}{at}127.0.0.1:{}{path}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The application's output: requests, warnings and tracebacks.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        format!("--- {} log:\n{log}", self.name)
    }
}

impl Drop for WebApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a setup command, panicking with `hint` and its output when it fails.
pub fn run(command: &mut Command, hint: &str) {
    match command.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{hint}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{hint} ({e})"),
    }
}
