//! A real S3-compatible server for the storage tests: `s3s-fs` on 127.0.0.1, which
//! checks SigV4 signatures (headers and presigned URLs) and keeps each object as a file
//! under `<root>/<bucket>/<key>`, so a test can list what was stored.
//!
//! Installed with `cargo install` when missing (scripts/ensure-deps.sh does the same);
//! a server that cannot be installed or started fails the test with a hint, never skips it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The version pinned for reproducible tests (0.15 and later need a newer Rust than the
/// project's `rust-version`).
pub const S3S_FS_VERSION: &str = "0.14.1";
pub const ACCESS_KEY: &str = "pophook-test-access";
pub const SECRET_KEY: &str = "pophook-test-secret-0123456789";

pub struct S3 {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl S3 {
    /// Starts a server with [`ACCESS_KEY`]/[`SECRET_KEY`] and an empty root; create
    /// buckets with [`S3::create_bucket`].
    pub fn start() -> S3 {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).unwrap();
        // Free port: bound and released; s3s-fs binds it right away.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut s3 = S3 { child, port, dir };
        s3.wait_until_listening();
        s3
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "s3s-fs exited ({status}) before listening on 127.0.0.1:{}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "s3s-fs did not listen on 127.0.0.1:{} within 30s; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A bucket is a directory under the root.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root().join(name)).unwrap();
    }

    /// Every object in `bucket`: (key, bytes), sorted by key.
    pub fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        let base = self.root().join(bucket);
        let mut found = Vec::new();
        walk(&base, &base, &mut found);
        found.sort();
        found
    }

    /// The `storage` section for this server, `bucket` and `secret`, plus `extra` lines.
    pub fn storage_yaml(&self, bucket: &str, secret: &str, extra: &str) -> String {
        format!(
            "storage:\n  endpoint: {}\n  region: us-east-1\n  bucket: {bucket}\n  access_key: {ACCESS_KEY}\n  secret_key: {secret}\n  prefix: mail/\n{extra}",
            self.endpoint()
        )
    }
}

fn walk(base: &Path, dir: &Path, found: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(base, &path, found);
        } else {
            let key = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            found.push((key, std::fs::read(&path).unwrap()));
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `s3s-fs` binary: on PATH, in cargo's bin directory, or installed now.
fn binary() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find() {
        return found;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(&cargo)
        .args(["install", "s3s-fs", "--locked", "--version", S3S_FS_VERSION])
        .args(["--features", "binary"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("s3s-fs is missing and `{cargo} install` cannot run: {e}"));
    match find() {
        Some(found) if output.status.success() => found,
        _ => panic!(
            "the storage tests need s3s-fs (a local S3 server that checks signatures) and installing it failed; \
             run `cargo install s3s-fs --locked --version {S3S_FS_VERSION} --features binary` \
             (scripts/ensure-deps.sh does) and make sure ~/.cargo/bin is on PATH:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("s3s-fs"))
        .find(|candidate| candidate.is_file())
}
