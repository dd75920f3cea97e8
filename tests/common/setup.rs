//! Builds pophook configurations for tests: YAML text in, a validated `Config` out,
//! with its state in a temp dir that lives as long as the returned guard.

use pophook::config::{self, Config};

pub struct TestConfig {
    pub config: Config,
    pub yaml: String,
    pub dir: tempfile::TempDir,
}

/// `mailboxes_yaml` is the list under `mailboxes:` (already indented by two spaces);
/// `webhook_yaml` the lines under `webhook:` (indented by two spaces).
pub fn config(webhook_yaml: &str, mailboxes_yaml: &str) -> TestConfig {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let yaml = format!(
        "state_dir: {}\nwebhook:\n{webhook_yaml}\nmailboxes:\n{mailboxes_yaml}\n",
        state.display()
    );
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    let config = config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
    TestConfig { config, yaml, dir }
}

impl TestConfig {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Runs the `pophook` binary with `args` and `--config` pointing at this config.
    pub fn pophook(&self, args: &[&str]) -> std::process::Output {
        self.pophook_env(args, &[])
    }

    /// [`TestConfig::pophook`] with extra environment variables.
    pub fn pophook_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let path = self.path();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", path.to_str().unwrap()]);
        std::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
            .args(all)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

/// A mailbox entry for the scripted POP3 server (user `user`, password `secret`),
/// plain on loopback, with short timeouts and polls.
pub fn scripted_mailbox(name: &str, port: u16, extra: &str) -> String {
    format!(
        "  - name: {name}\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    username: user\n    password: secret\n    timeout: 3s\n    poll_interval: 1s\n{extra}"
    )
}

/// The lines under `webhook:` for a test receiver at `url`, plus `extra`.
pub fn hook(url: &str, extra: &str) -> String {
    format!("  url: {url}\n  timeout: 3s\n{extra}")
}

/// Webhook keys for tests that expect a failed POST to be retried by the very next
/// cycle: the retry schedule's waits are all zero.
pub const RETRY_AT_ONCE: &str = "  retry: {schedule: [0s, 0s, 0s, 0s, 0s, 0s]}";

/// One mailbox entry, plain POP3 on loopback (Dovecot counts loopback as secure).
pub fn plain_mailbox(name: &str, port: u16, user: &str, password: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    username: {user}\n    password: {password}\n    poll_interval: 1s\n    timeout: 10s\n{extra}"
    )
}

/// A short test message; `n` makes its subject and body unique.
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: support@example.com\r\nSubject: test {n}\r\nMessage-ID: <m{n}@example.com>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nHello {n}.\r\n"
    )
    .into_bytes()
}
