//! The real `pophook` binary at `RUST_LOG=trace`, in text and JSON log format, running
//! `once` and `check` with USER/PASS, SASL PLAIN and XOAUTH2, logging in right and wrong,
//! refusing broken configurations, posting to a webhook that works, fails or is down: no
//! password, SASL response, OAuth2 secret or token, signing secret, header token or
//! credential in the webhook URL may appear anywhere in what it prints.
//!
//! Every secret below contains the marker `SECRET`, so a secret leaked in part (cut,
//! quoted, or inside an error) is caught as well as a whole one.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::receiver::Receiver;
use common::scripted::{Script, Scripted};
use common::setup::message;
use common::token_server::TokenServer;

const USER: &str = "user";
const PASSWORD: &str = "pw-SECRET-7f3a9";
const TOKEN: &str = "tok-SECRET-123";
const URL_PASSWORD: &str = "url-SECRET-8";
const URL_KEY: &str = "query-SECRET-9";
const MAILGUN_KEY: &str = "mailgun-SECRET-11";
const MARKER: &str = "SECRET";
/// The signing key's bytes; the secret is `whsec_` + their base64.
const KEY: &[u8] = b"key-SECRET-0123456789abcdef-xyz!";

fn whsec_key() -> String {
    BASE64.encode(KEY)
}

fn whsec() -> String {
    format!("whsec_{}", whsec_key())
}

/// SASL PLAIN's response for `password`: base64 of `\0user\0password`.
fn sasl_plain(password: &str) -> String {
    BASE64.encode(format!("\0{USER}\0{password}"))
}

/// Every form in which the configured secrets could leak.
fn secrets(password: &str) -> Vec<String> {
    vec![
        MARKER.to_string(),
        password.to_string(),
        sasl_plain(password),
        whsec(),
        whsec_key(),
        TOKEN.to_string(),
        URL_PASSWORD.to_string(),
        // The basic-auth header value made from the URL's userinfo.
        BASE64.encode(format!("hook:{URL_PASSWORD}")),
        URL_KEY.to_string(),
        MAILGUN_KEY.to_string(),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn arg(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Auth {
    User,
    Plain,
}

impl Auth {
    fn yaml(self) -> &'static str {
        match self {
            Auth::User => "user",
            Auth::Plain => "plain",
        }
    }

    /// Trace lines that show the login happened, and was logged, without the secret.
    fn trace_lines(self) -> [&'static str; 2] {
        match self {
            Auth::User => ["C: USER user", "C: PASS [redacted]"],
            Auth::Plain => ["C: AUTH PLAIN", "C: [redacted SASL response]"],
        }
    }
}

/// Runs `pophook --log-format FORMAT COMMAND --config CONFIG` with `RUST_LOG=trace` and
/// nothing else from the environment; returns its output and stdout+stderr together.
async fn pophook(format: Format, command: &str, config: &Path) -> (Output, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pophook"))
        .args(["--log-format", format.arg(), command, "--config"])
        .arg(config)
        .env_clear()
        .env("RUST_LOG", "trace")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("pophook {command} did not finish within 60s"))
        .expect("run the pophook binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn assert_no_secret(output: &str, password: &str, what: &str) {
    for secret in secrets(password) {
        if let Some(at) = output.find(&secret) {
            let line_start = output[..at].rfind('\n').map_or(0, |n| n + 1);
            let line_end = output[at..].find('\n').map_or(output.len(), |n| at + n);
            panic!(
                "{what}: the output contains {secret:?}:\n{}",
                &output[line_start..line_end]
            );
        }
    }
}

/// The receiver's URL with a key in its query, as some endpoints want it.
fn url_with_key(receiver_url: &str) -> String {
    format!("{receiver_url}?key={URL_KEY}")
}

/// A config file for one mailbox on the scripted server, posting to `url` with a
/// signing secret and an `Authorization` header.
fn write_config(
    dir: &Path,
    port: u16,
    auth: Auth,
    password: &str,
    url: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "state_dir: {state}\n\
         webhook:\n  url: \"{url}\"\n  secret: {secret}\n  headers: {{Authorization: \"Bearer {TOKEN}\"}}\n\
         mailboxes:\n  - name: redaction\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    \
         username: {USER}\n    password: {password}\n    auth: {auth}\n    timeout: 5s\n",
        state = dir.join("state").display(),
        secret = whsec(),
        auth = auth.yaml(),
    );
    let path = dir.join("pophook.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

struct Setup {
    server: Scripted,
    receiver: Receiver,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

async fn setup(auth: Auth, configured_password: &str) -> Setup {
    let server = Scripted::start(Script {
        messages: vec![message(1)],
        user: USER.into(),
        password: PASSWORD.into(),
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = url_with_key(&receiver.url());
    let config = write_config(dir.path(), server.port(), auth, configured_password, &url);
    Setup {
        server,
        receiver,
        dir,
        config,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_logs_of_once_and_check_carry_no_secret() {
    for format in [Format::Text, Format::Json] {
        for auth in [Auth::User, Auth::Plain] {
            let what = format!("{format:?} log, auth {auth:?}");

            let s = setup(auth, PASSWORD).await;
            let (run, output) = pophook(format, "once", &s.config).await;
            assert!(run.status.success(), "{what}: once failed:\n{output}");
            // Something secret was really handled: the message went out signed and with
            // the token, and the login and the post were traced.
            let posted = s.receiver.accepted();
            assert_eq!(posted.len(), 1, "{what}: {output}");
            assert_eq!(
                posted[0].header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            );
            assert!(posted[0].header("webhook-signature").is_some());
            assert_eq!(posted[0].path, format!("/inbound?key={URL_KEY}"));
            assert!(s.server.remaining().is_empty(), "{what}");
            for line in auth
                .trace_lines()
                .into_iter()
                .chain(["C: RETR 1", "C: QUIT"])
            {
                assert!(output.contains(line), "{what}: no {line:?} in:\n{output}");
            }
            assert_no_secret(&output, PASSWORD, &format!("{what}, once"));

            let s = setup(auth, PASSWORD).await;
            let (run, output) = pophook(format, "check", &s.config).await;
            assert!(run.status.success(), "{what}: check failed:\n{output}");
            for line in auth.trace_lines().into_iter().chain(["C: STAT"]) {
                assert!(output.contains(line), "{what}: no {line:?} in:\n{output}");
            }
            assert!(output.contains("redaction: ok"), "{what}: {output}");
            assert_no_secret(&output, PASSWORD, &format!("{what}, check"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_credentials_and_tokens_stay_out_of_the_trace_log() {
    const CLIENT_SECRET: &str = "client-SECRET-10";
    const REFRESH_TOKEN: &str = "refresh-SECRET-11";
    // What the token endpoint hands out: an access token and a rotated refresh token.
    let issued = ["tok-1", "rt-1"];
    let xoauth2_response = BASE64.encode(format!("user={USER}\x01auth=Bearer tok-1\x01\x01"));
    let grants = [
        (
            "client credentials",
            "      scope: https://outlook.office365.com/.default\n",
        ),
        (
            "refresh token",
            &*format!("      refresh_token: {REFRESH_TOKEN}\n"),
        ),
    ];
    for (grant, oauth2_extra) in grants {
        for format in [Format::Text, Format::Json] {
            for command in ["once", "check"] {
                let what = format!("xoauth2 {grant} ({format:?}, {command})");
                let tokens = TokenServer::start(Some(3600)).await;
                let server = Scripted::start(Script {
                    messages: vec![message(1)],
                    user: USER.into(),
                    xoauth2: Some(vec!["tok-1".into()]),
                    ..Script::default()
                })
                .await;
                let receiver = Receiver::start().await;
                let dir = tempfile::tempdir().unwrap();
                let yaml = format!(
                    "state_dir: {state}\n\
                     webhook:\n  url: {url}\n  secret: {secret}\n\
                     mailboxes:\n  - name: redaction\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    \
                     allow_insecure: true\n    username: {USER}\n    auth: xoauth2\n    timeout: 5s\n    \
                     oauth2:\n      token_url: {token_url}\n      client_id: app-id\n      \
                     client_secret: {CLIENT_SECRET}\n{oauth2_extra}",
                    state = dir.path().join("state").display(),
                    url = receiver.url(),
                    secret = whsec(),
                    port = server.port(),
                    token_url = tokens.url(),
                );
                let config = dir.path().join("pophook.yaml");
                std::fs::write(&config, yaml).unwrap();

                let (run, output) = pophook(format, command, &config).await;
                assert!(run.status.success(), "{what}: failed:\n{output}");
                assert_eq!(tokens.requests().len(), 1, "{what}: no token fetched");
                assert!(output.contains("C: AUTH XOAUTH2"), "{what}: {output}");
                assert_no_secret(&output, PASSWORD, &what);
                for secret in issued.iter().copied().chain([&*xoauth2_response]) {
                    assert!(
                        !output.contains(secret),
                        "{what}: the output contains {secret:?}:\n{output}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_login_is_reported_without_the_password() {
    let wrong = "wrong-SECRET-pw";
    for format in [Format::Text, Format::Json] {
        for auth in [Auth::User, Auth::Plain] {
            let what = format!("{format:?} log, auth {auth:?}");
            for command in ["once", "check"] {
                let s = setup(auth, wrong).await;
                let (run, output) = pophook(format, command, &s.config).await;
                assert!(!run.status.success(), "{what}: {command} succeeded");
                assert!(
                    output.contains("login rejected"),
                    "{what}, {command}: no login error in:\n{output}"
                );
                assert!(output.contains(auth.trace_lines()[1]), "{what}: {output}");
                assert_no_secret(&output, wrong, &format!("{what}, {command}"));
                assert!(s.receiver.requests().is_empty());
                assert_eq!(s.server.remaining().len(), 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_webhook_is_reported_without_the_credentials_in_its_url() {
    // A port nobody listens on, and a receiver answering 500.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/inbound", closed.local_addr().unwrap());
    drop(closed);
    let failing = Receiver::start().await;
    failing.set_default(common::receiver::Reply::Status(500));

    for (what, base) in [("unreachable", closed_url), ("HTTP 500", failing.url())] {
        let url =
            url_with_key(&base).replacen("http://", &format!("http://hook:{URL_PASSWORD}@"), 1);
        for format in [Format::Text, Format::Json] {
            let s = setup(Auth::User, PASSWORD).await;
            let config = write_config(s.dir.path(), s.server.port(), Auth::User, PASSWORD, &url);
            let (run, output) = pophook(format, "once", &config).await;
            let what = format!("{what} webhook ({format:?})");
            assert!(!run.status.success(), "{what}: once succeeded");
            assert!(
                output.contains("not delivered"),
                "{what}: no delivery error in:\n{output}"
            );
            assert_no_secret(&output, PASSWORD, &what);
            assert_eq!(s.server.remaining().len(), 1, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_configuration_is_refused_without_echoing_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password-file"), "file-SECRET-4\n").unwrap();
    let webhook = format!(
        "webhook:\n  url: http://127.0.0.1:9/inbound\n  secret: {}\n",
        whsec()
    );
    let mailbox = "mailboxes:\n  - name: bad\n    host: 127.0.0.1\n    username: user\n";
    let cases = [
        (
            "a password given as a list",
            format!("{webhook}{mailbox}    password: [list-SECRET-1, other-SECRET-2]\n"),
            "password",
        ),
        (
            "a password given as a map",
            format!("{webhook}{mailbox}    password: {{value: map-SECRET-3}}\n"),
            "password",
        ),
        (
            "two sources for the password",
            format!(
                "{webhook}{mailbox}    password: two-SECRET-5\n    password_file: {}\n",
                dir.path().join("password-file").display()
            ),
            "only one of",
        ),
        (
            "two sources for the webhook secret",
            format!("{webhook}  secret_env: PATH\n{mailbox}    password: {PASSWORD}\n"),
            "only one of",
        ),
        (
            "a webhook secret that is not base64",
            format!(
                "webhook:\n  url: http://127.0.0.1:9/inbound\n  secret: whsec_not-base64-SECRET!\n{mailbox}    password: {PASSWORD}\n"
            ),
            "whsec_",
        ),
        (
            "a header value with a control character",
            format!(
                "{webhook}  headers: {{Authorization: \"Bearer {TOKEN}\\u0001\"}}\n{mailbox}    password: {PASSWORD}\n"
            ),
            "header value",
        ),
        (
            "a password with a line break",
            format!("{webhook}{mailbox}    password: \"line-SECRET-6\\r\\nQUIT\"\n"),
            "line break",
        ),
        (
            "a misspelt password key",
            format!("{webhook}{mailbox}    pasword: typo-SECRET-7\n    password: {PASSWORD}\n"),
            "pasword",
        ),
    ];
    for (what, yaml, cause) in cases {
        let path = dir.path().join("pophook.yaml");
        std::fs::write(&path, &yaml).unwrap();
        for format in [Format::Text, Format::Json] {
            for command in ["once", "check"] {
                let (run, output) = pophook(format, command, &path).await;
                let what = format!("{what} ({format:?}, {command})");
                assert!(!run.status.success(), "{what}: accepted:\n{yaml}");
                assert!(
                    output.contains(cause),
                    "{what}: {cause:?} not in:\n{output}"
                );
                assert_no_secret(&output, PASSWORD, &what);
            }
        }
    }
}

/// Every file under `dir`, to look for secrets in what pophook stored.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_from_the_url_and_the_mailgun_key_stay_out_of_logs_check_and_state() {
    for (reply, delivered) in [(204, true), (401, false), (410, false)] {
        for format in [Format::Text, Format::Json] {
            let what = format!("webhook answering {reply} ({format:?})");
            let s = setup(Auth::User, PASSWORD).await;
            s.receiver
                .set_default(common::receiver::Reply::Status(reply));
            let url = url_with_key(&s.receiver.url()).replacen(
                "http://",
                &format!("http://hook:{URL_PASSWORD}@"),
                1,
            );
            let yaml = format!(
                "state_dir: {state}\n\
                 webhook:\n  url: \"{url}\"\n  format: mailgun\n  mailgun_signing_key: {MAILGUN_KEY}\n\
                 mailboxes:\n  - name: redaction\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    \
                 username: {USER}\n    password: {PASSWORD}\n    timeout: 5s\n",
                state = s.dir.path().join("state").display(),
                port = s.server.port(),
            );
            std::fs::write(&s.config, yaml).unwrap();

            let (run, output) = pophook(format, "once", &s.config).await;
            assert_eq!(run.status.success(), delivered, "{what}:\n{output}");
            // The secrets were really used: basic auth from the URL, and a Mailgun form.
            let request = &s.receiver.requests()[0];
            assert_eq!(
                request.header("authorization"),
                Some(format!("Basic {}", BASE64.encode(format!("hook:{URL_PASSWORD}"))).as_str())
            );
            assert!(String::from_utf8_lossy(&request.body).contains("name=\"signature\""));
            assert_no_secret(&output, PASSWORD, &format!("{what}, once"));
            if reply == 410 {
                assert!(output.contains("410"), "{what}: {output}");
            }

            let (_, output) = pophook(format, "check", &s.config).await;
            assert!(
                output.contains("webhook: mailgun to http://127.0.0.1:")
                    && output.contains("/inbound?… with basic auth"),
                "{what}: check shows where and how mail goes: {output}"
            );
            assert_no_secret(&output, PASSWORD, &format!("{what}, check"));

            let stored = files_under(&s.dir.path().join("state"));
            assert!(!stored.is_empty(), "{what}: no state written");
            for (path, bytes) in stored {
                for secret in secrets(PASSWORD) {
                    assert!(
                        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                        "{what}: {} holds {secret:?}",
                        path.display()
                    );
                }
            }
        }
    }
}
