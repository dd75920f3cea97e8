//! A real Django project with django-anymail's inbound webhooks (`tests/django/`), run
//! with Django's own server on a loopback port, so pophook's `postmark` and `mailgun`
//! formats are judged by the parser people actually use, not by an imitation of it.
//!
//! Django and django-anymail come from PyPI into a virtualenv under the target
//! directory, created once and reused while `tests/django/requirements.txt` is the same.
//! Without python3's venv module or PyPI the tests fail, saying what to install; they
//! are never skipped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PROJECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The virtualenv's python, created and filled on first use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("django-venv");
        let python = venv.join("bin/python");
        let requirements = fs::read_to_string(Path::new(PROJECT).join("requirements.txt"))
            .expect("read tests/django/requirements.txt");
        let marker = venv.join("pophook-requirements.txt");
        if python.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(&requirements) {
            return python;
        }
        let _ = fs::remove_dir_all(&venv);
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv failed. Install python3 with its venv module \
             (Debian/Ubuntu: `apt-get install -y python3-venv`), or run scripts/test.sh, \
             which installs it",
        );
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(Path::new(PROJECT).join("requirements.txt")),
            "pip could not install Django and django-anymail from PyPI; these tests need \
             network access to pypi.org (or a PyPI mirror set with PIP_INDEX_URL)",
        );
        fs::write(&marker, &requirements).unwrap();
        python
    })
}

fn run(command: &mut Command, hint: &str) {
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

/// A running Django receiver; stopped on drop.
pub struct Django {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Django {
    /// Starts the project with anymail's `WEBHOOK_SECRET` set to `basic_auth`
    /// (`user:password`) and `MAILGUN_WEBHOOK_SIGNING_KEY` to `mailgun_key`.
    pub fn start(basic_auth: &str, mailgun_key: &str) -> Django {
        let python = python();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Output to a file: an unread pipe would block the server once it fills.
        let log = fs::File::create(dir.path().join("django.log")).unwrap();
        let child = Command::new(python)
            .current_dir(PROJECT)
            .args([
                "manage.py",
                "runserver",
                &format!("127.0.0.1:{port}"),
                "--noreload",
            ])
            .env("INBOUND_BASIC_AUTH", basic_auth)
            .env("INBOUND_MAILGUN_KEY", mailgun_key)
            .env("INBOUND_OUTPUT_DIR", dir.path().join("out"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Django's runserver");
        let mut django = Django { child, port, dir };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = django.child.try_wait() {
                panic!(
                    "Django exited ({status}) before listening:\n{}",
                    django.log()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "Django did not listen within {START_TIMEOUT:?}:\n{}",
                    django.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        django
    }

    /// `http://{userinfo}@127.0.0.1:PORT{path}`; `userinfo` may be empty.
    pub fn url(&self, userinfo: &str, path: &str) -> String {
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("http://{userinfo}{at}127.0.0.1:{}{path}", self.port)
    }

    /// What the inbound handler recorded so far, one JSON object per message, in no
    /// particular order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.dir.path().join("out")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = fs::read_to_string(&path).unwrap();
                out.push(serde_json::from_str(&text).unwrap());
            }
        }
        out
    }

    /// Django's output: requests, warnings and tracebacks.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("django.log")).unwrap_or_default()
    }
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
