//! A throwaway real Dovecot POP3 server per test: its own config, ports, users and
//! Maildirs in a temp dir, so tests in parallel never share state; stopped on drop.
//!
//! Dovecot runs as a child of the test process (`dovecot -F`), as root, and serves
//! mail as the unprivileged `nobody:nogroup` (Dovecot refuses uid 0 for mail users).
//! Messages are written to and read from the Maildirs directly, which is what lets a
//! test say "this is what is left on the server".

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::certs::TestCerts;

const DOVECOT: &str = "/usr/sbin/dovecot";
const HOST: &str = "127.0.0.1";
/// `nobody:nogroup` on Debian; Dovecot rejects mail uids below `first_valid_uid`
/// (500) and uid 0, so the Maildirs must belong to an ordinary unprivileged id.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Free ports are found by binding port 0 and releasing it, so another process can
/// take one before Dovecot binds it; then we start again on new ports.
const START_ATTEMPTS: usize = 5;
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Panics (never skips) when Dovecot is not installed, so a missing server fails CI.
pub fn require_dovecot() {
    if !Path::new(DOVECOT).exists() {
        panic!(
            "dovecot is not installed: run `sudo apt-get install -y dovecot-pop3d` \
             (or scripts/test.sh, which installs it)"
        );
    }
}

pub struct Dovecot {
    master: Child,
    plain_port: u16,
    tls_port: u16,
    certs: TestCerts,
    /// Orders delivered file names; per instance because the temp dir is.
    next_message: AtomicU64,
    // Declared last so it is removed after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// Starts a fresh Dovecot with no users, listening on two new loopback ports, and
    /// returns once both answer with a `+OK` greeting.
    pub fn start() -> Dovecot {
        Dovecot::start_with(|_| String::new())
    }

    /// Like [`Dovecot::start`], and also offers SASL XOAUTH2, accepting a token when
    /// `introspection_url` (RFC 7662, token POSTed as a form) says it is `active` for
    /// a `username` that is the login name. Users still need [`Dovecot::add_user`].
    pub fn start_oauth2(introspection_url: &str) -> Dovecot {
        Dovecot::start_with(|dir| {
            let ext = dir.join("oauth2.conf.ext");
            fs::write(
                &ext,
                format!(
                    "introspection_mode = post\nintrospection_url = {introspection_url}\n\
                     username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                ),
            )
            .unwrap();
            format!(
                "auth_mechanisms = plain login xoauth2\n\
                 passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {}\n}}\n",
                ext.display()
            )
        })
    }

    /// `extra` is appended to the configuration; it gets the server's directory.
    fn start_with(extra: impl Fn(&Path) -> String) -> Dovecot {
        require_dovecot();
        let dir = tempfile::Builder::new()
            .prefix("pophook-dovecot-")
            .tempdir()
            .expect("create a temp dir for Dovecot");
        // Temp dirs are 0700; Dovecot's unprivileged processes (login, mail) must be
        // able to walk into the base_dir and the homes below it.
        make_traversable(dir.path());
        for sub in ["certs", "home", "passwd"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
            make_traversable(&dir.path().join(sub));
        }
        let certs = TestCerts::generate(&dir.path().join("certs"));

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let (plain_port, tls_port) = free_ports();
            // Only a port clash is worth another attempt; start each with an empty log.
            let _ = fs::remove_file(dir.path().join("dovecot.log"));
            let conf = dir.path().join("dovecot.conf");
            let text = config(dir.path(), &certs, plain_port, tls_port) + &extra(dir.path());
            fs::write(&conf, text).unwrap();
            let stderr = fs::File::create(dir.path().join("stderr.log")).unwrap();
            let mut master = Command::new(DOVECOT)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                // Its own process group, so that `stop` can signal Dovecot's
                // service processes along with the master.
                .process_group(0)
                .stdout(stderr.try_clone().unwrap())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("could not run {DOVECOT}: {e}"));
            match wait_until_ready(&mut master, plain_port, tls_port, &certs.ca_cert) {
                Ok(()) => {
                    return Dovecot {
                        master,
                        plain_port,
                        tls_port,
                        certs,
                        next_message: AtomicU64::new(1),
                        dir,
                    }
                }
                Err(failure) => {
                    stop(&mut master);
                    let log = read_log(dir.path());
                    if !log.contains("Address already in use") {
                        panic!("Dovecot did not start: {failure}\n--- Dovecot log ---\n{log}");
                    }
                    last_failure = failure;
                }
            }
        }
        panic!(
            "Dovecot did not start after {START_ATTEMPTS} attempts: {last_failure}\n\
             --- Dovecot log ---\n{}",
            read_log(dir.path())
        );
    }

    /// Adds a mailbox user with an empty Maildir; the running server sees it at once.
    /// Names and passwords must not contain `:`, `/` or line breaks (the passwd-file
    /// format).
    pub fn add_user(&self, name: &str, password: &str) {
        assert!(
            !name.is_empty() && !name.contains([':', '/', '\n', '\r']) && name != "..",
            "unusable Dovecot user name {name:?}"
        );
        assert!(
            !password.contains([':', '\n', '\r']),
            "a passwd-file password cannot contain ':' or line breaks"
        );
        let home = self.home(name);
        fs::create_dir(&home).unwrap_or_else(|e| panic!("add user {name:?} twice? {e}"));
        for sub in ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] {
            fs::create_dir_all(home.join(sub)).unwrap();
        }
        for path in [
            home.clone(),
            home.join("Maildir"),
            home.join("Maildir/new"),
            home.join("Maildir/cur"),
            home.join("Maildir/tmp"),
        ] {
            give_to_mail_user(&path);
        }

        // One passwd-file per user: Dovecot re-reads a changed passwd-file at most
        // once a second, so a user added to a shared file just after another login
        // would stay unknown for up to a second. A file it has never seen is read at
        // once. Written elsewhere and renamed so Dovecot never reads half a line.
        let line = format!(
            "{name}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_GID}::{}::\n",
            home.display()
        );
        let tmp = self.dir.path().join(format!("passwd-new-{name}"));
        fs::write(&tmp, line).unwrap();
        fs::rename(&tmp, self.dir.path().join("passwd").join(name)).unwrap();
    }

    /// Delivers `raw` into the user's Maildir as a new message, byte for byte.
    /// Dovecot serves a bare LF as CRLF and a stored CRLF unchanged, so LF and CRLF
    /// input look the same to a POP3 client; real MTAs store LF.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        let maildir = self.maildir(user);
        let seq = self.next_message.fetch_add(1, Ordering::SeqCst);
        // Zero-padded so that name order is delivery order; Dovecot also assigns
        // UIDs (and so POP3 message numbers) to new mail in name order.
        let name = format!("{seq:010}.pophooktest");
        let tmp = maildir.join("tmp").join(&name);
        fs::write(&tmp, raw).unwrap();
        give_to_mail_user(&tmp);
        fs::rename(&tmp, maildir.join("new").join(&name)).unwrap();
    }

    /// How many messages the user's mailbox holds now (`new/` and `cur/`).
    pub fn message_count(&self, user: &str) -> usize {
        self.messages(user).len()
    }

    /// The bytes of every message in the user's mailbox, oldest delivery first.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        let maildir = self.maildir(user);
        // Dovecot renames new/X to cur/X:2, while a session runs; a file that moves
        // between listing and reading is simply read again on the next pass.
        'scan: for _ in 0..50 {
            // new/ before cur/: a file moving meanwhile is seen twice, never missed.
            let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
            for sub in ["new", "cur"] {
                for entry in fs::read_dir(maildir.join(sub)).unwrap() {
                    let entry = entry.unwrap();
                    let file_name = entry.file_name().to_string_lossy().into_owned();
                    let base = file_name.split(':').next().unwrap_or_default().to_owned();
                    files.insert(base, entry.path());
                }
            }
            let mut messages = Vec::with_capacity(files.len());
            for path in files.values() {
                match fs::read(path) {
                    Ok(bytes) => messages.push(bytes),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue 'scan,
                    Err(e) => panic!("read {}: {e}", path.display()),
                }
            }
            return messages;
        }
        panic!("{user}'s Maildir kept changing while it was read")
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// POP3 without TLS; CAPA lists STLS.
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// POP3 over implicit TLS (POP3S).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// PEM of the CA that signed the server certificate (for `localhost` and
    /// `127.0.0.1`).
    pub fn ca_file(&self) -> &Path {
        &self.certs.ca_cert
    }

    /// Everything Dovecot logged so far (startup errors first), for failing tests.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }

    fn maildir(&self, user: &str) -> PathBuf {
        let maildir = self.home(user).join("Maildir");
        assert!(
            maildir.is_dir(),
            "Dovecot has no user {user:?}: call add_user first"
        );
        maildir
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        stop(&mut self.master);
    }
}

fn wait_until_ready(
    master: &mut Child,
    plain_port: u16,
    tls_port: u16,
    ca: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let plain = SocketAddr::from(([127, 0, 0, 1], plain_port));
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    loop {
        if let Some(status) = master.try_wait().unwrap() {
            return Err(format!("the dovecot master exited with {status}"));
        }
        let last_error = match greeting(plain, None).and_then(|()| greeting(tls, Some(ca))) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "no POP3 greeting within {START_TIMEOUT:?}: {last_error}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to the whole process group: the service processes exit at once and
/// the master, which reaps them, follows (the master alone takes a second to wind
/// them down). SIGKILL for the group if that does not end it.
fn stop(master: &mut Child) {
    if let Ok(Some(_)) = master.try_wait() {
        return;
    }
    let group = format!("-{}", master.id());
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, "--", &group])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if signal("-TERM") {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = master.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    signal("-KILL");
    let _ = master.kill();
    let _ = master.wait();
}

/// Startup errors (before Dovecot opens its log) go to stderr, so both are read.
fn read_log(dir: &Path) -> String {
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!("{}{}", read("stderr.log"), read("dovecot.log"))
}

/// Connects and reads the `+OK` greeting, over TLS verified against `ca` if given.
fn greeting(addr: SocketAddr, ca: Option<&Path>) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let line = match ca {
        None => read_line(tcp)?,
        Some(ca) => {
            let pem = fs::read(ca).unwrap();
            let connector = native_tls::TlsConnector::builder()
                .add_root_certificate(native_tls::Certificate::from_pem(&pem).unwrap())
                .build()
                .unwrap();
            let tls = connector
                .connect("localhost", tcp)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            read_line(tls)?
        }
    };
    if line.starts_with("+OK") {
        Ok(())
    } else {
        Err(format!("unexpected greeting from {addr}: {line:?}"))
    }
}

fn read_line(stream: impl Read + Write) -> Result<String, String> {
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("read greeting: {e}"))?;
    Ok(line)
}

/// Two distinct loopback ports that were free a moment ago.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind((HOST, 0)).unwrap();
    let b = TcpListener::bind((HOST, 0)).unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn make_traversable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
}

fn give_to_mail_user(path: &Path) {
    chown(path, Some(MAIL_UID), Some(MAIL_GID)).unwrap_or_else(|e| {
        panic!(
            "chown {} to {MAIL_UID}:{MAIL_GID}: {e} (the Dovecot fixture must run as root)",
            path.display()
        )
    });
}

fn config(dir: &Path, certs: &TestCerts, plain_port: u16, tls_port: u16) -> String {
    let dir = dir.display();
    let cert = certs.server_cert.display();
    let key = certs.server_key.display();
    format!(
        r#"# Written by tests/common/dovecot.rs for one test; nothing from /etc/dovecot.
protocols = pop3
listen = {HOST}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
debug_log_path = {dir}/dovecot.log

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2

# Loopback counts as secure anyway; said explicitly so USER/PASS works without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
# Keep user names exactly as given (the default %Lu lowercases them).
auth_username_format = %u
# Failed logins answer after at most 0.5 s (Dovecot flushes failures on a timer).
auth_failure_delay = 0
auth_cache_size = 0
auth_verbose = yes

mail_location = maildir:~/Maildir
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/passwd/%u
}}

service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {plain_port}
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {tls_port}
    ssl = yes
  }}
}}

# Without this, every failed login from 127.0.0.1 makes later logins (even good
# ones) wait 2-15 s. An unreachable penalty socket turns the penalty off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
    )
}
