//! A real Django project with django-anymail's inbound webhooks (`tests/django/`), run
//! with Django's own server on a loopback port, so pophook's `postmark` and `mailgun`
//! formats are judged by the parser people actually use, not by an imitation of it.
//!
//! Django and django-anymail come from PyPI into a virtualenv under the target
//! directory, created once and reused while `tests/django/requirements.txt` is the same.
//! Without python3's venv module or PyPI the tests fail, saying what to install; they
//! are never skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::webapp::{run, WebApp};

const PROJECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/django");

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

/// A running Django receiver; stopped on drop.
pub struct Django {
    pub app: WebApp,
}

impl Django {
    /// Starts the project with anymail's `WEBHOOK_SECRET` set to `basic_auth`
    /// (`user:password`) and `MAILGUN_WEBHOOK_SIGNING_KEY` to `mailgun_key`.
    pub fn start(basic_auth: &str, mailgun_key: &str) -> Django {
        let python = python();
        let app = WebApp::start("Django", |port, dir| {
            fs::create_dir(dir.join("out")).unwrap();
            let mut command = Command::new(python);
            command
                .current_dir(PROJECT)
                .args([
                    "manage.py",
                    "runserver",
                    &format!("127.0.0.1:{port}"),
                    "--noreload",
                ])
                .env("INBOUND_BASIC_AUTH", basic_auth)
                .env("INBOUND_MAILGUN_KEY", mailgun_key)
                .env("INBOUND_OUTPUT_DIR", dir.join("out"))
                .env("PYTHONDONTWRITEBYTECODE", "1");
            command
        });
        Django { app }
    }

    /// `http://{userinfo}@127.0.0.1:PORT{path}`; `userinfo` may be empty.
    pub fn url(&self, userinfo: &str, path: &str) -> String {
        self.app.url(userinfo, path)
    }

    /// What the inbound handler recorded so far, one JSON object per message, in no
    /// particular order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.app.dir().join("out")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = fs::read_to_string(&path).unwrap();
                out.push(serde_json::from_str(&text).unwrap());
            }
        }
        out
    }

    pub fn log(&self) -> String {
        self.app.log()
    }
}
