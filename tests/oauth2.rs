//! `auth: xoauth2` against the scripted POP3 server and a mock token endpoint: each
//! token source, token reuse and refresh, the SASL forms servers want, rejected
//! tokens, and configuration errors. Checks what was sent, delivered and left over.

mod common;

use base64::Engine as _;
use common::dovecot::Dovecot;
use common::receiver::Receiver;
use common::scripted::{Script, Scripted};
use common::setup::{config, message, TestConfig};
use common::token_server::{TokenReply, TokenServer};
use pophook::pop3::{Pop3Error, Session};
use pophook::service;

const USER: &str = "support@example.com";
const CLIENT_SECRET: &str = "app-secret-value";

/// A mailbox on the scripted server logging in with XOAUTH2; `oauth2` is the lines
/// under `oauth2:`, indented by six spaces.
fn mailbox(port: u16, oauth2: &str) -> String {
    format!(
        "  - name: oauth\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_insecure: true\n    username: {USER}\n    auth: xoauth2\n    timeout: 5s\n    oauth2:\n{oauth2}"
    )
}

fn client_credentials(tokens: &TokenServer) -> String {
    format!(
        "      token_url: {}\n      client_id: app-id\n      client_secret: {CLIENT_SECRET}\n      scope: https://outlook.office365.com/.default\n",
        tokens.url()
    )
}

async fn scripted(tokens: &[&str], messages: usize) -> Scripted {
    Scripted::start(Script {
        messages: (1..=messages).map(message).collect(),
        user: USER.into(),
        xoauth2: Some(tokens.iter().map(|t| t.to_string()).collect()),
        ..Script::default()
    })
    .await
}

fn setup(receiver: &Receiver, server: &Scripted, oauth2: &str) -> TestConfig {
    config(
        &format!("  url: {}\n  timeout: 5s", receiver.url()),
        &mailbox(server.port(), oauth2),
    )
}

async fn login(cfg: &TestConfig) -> Result<(), Pop3Error> {
    let session = Session::connect(&cfg.config.mailboxes[0].server).await?;
    session.quit().await
}

/// The tokens the server received in XOAUTH2 responses, in order, after checking
/// each response is exactly `user=<USER>^Aauth=Bearer <token>^A^A`.
fn tokens_sent(server: &Scripted) -> Vec<String> {
    let commands = server.commands();
    let mut responses = Vec::new();
    for (i, line) in commands.iter().enumerate() {
        if let Some(response) = line.strip_prefix("AUTH XOAUTH2 ") {
            responses.push(response.to_string());
        } else if line == "AUTH XOAUTH2" {
            if let Some(next) = commands.get(i + 1).filter(|l| !l.starts_with("AUTH")) {
                responses.push(next.clone());
            }
        }
    }
    responses
        .iter()
        .map(|response| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(response)
                .unwrap_or_else(|_| panic!("XOAUTH2 response is not base64: {response}"));
            let text = String::from_utf8(decoded).unwrap();
            let token = text
                .strip_prefix(&format!("user={USER}\x01auth=Bearer "))
                .and_then(|rest| rest.strip_suffix("\x01\x01"))
                .unwrap_or_else(|| panic!("not an XOAUTH2 response: {text:?}"));
            token.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_deliver_a_message_through_xoauth2() {
    let tokens = TokenServer::start(Some(3600)).await;
    let server = scripted(&["tok-1"], 1).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}");
    assert_eq!(receiver.accepted().len(), 1);
    assert!(server.remaining().is_empty(), "delivered mail is deleted");

    let requests = tokens.requests();
    assert_eq!(requests.len(), 1);
    let form = &requests[0];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "app-id");
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(form["scope"], "https://outlook.office365.com/.default");

    // Two-step, as Microsoft 365 requires: AUTH XOAUTH2, "+ ", then the response.
    let commands = server.commands();
    let auth = commands.iter().position(|c| c == "AUTH XOAUTH2").unwrap();
    assert!(!commands[auth + 1].starts_with("AUTH"));
    assert_eq!(tokens_sent(&server), ["tok-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_refresh_token_flow_uses_the_rotated_refresh_token_next_time() {
    // No expires_in: a token is not reused, so every cycle asks for a new one.
    let tokens = TokenServer::start(None).await;
    let server = scripted(&["tok-1", "tok-2"], 1).await;
    let receiver = Receiver::start().await;
    let oauth2 = format!(
        "      token_url: {}\n      client_id: gmail-client\n      client_secret: {CLIENT_SECRET}\n      refresh_token: rt-0\n",
        tokens.url()
    );
    let cfg = setup(&receiver, &server, &oauth2);

    for _ in 0..2 {
        let outcomes = service::once(&cfg.config).await.unwrap();
        assert!(outcomes[0].is_success(), "{outcomes:?}");
    }
    assert_eq!(receiver.accepted().len(), 1);
    assert!(server.remaining().is_empty());

    let requests = tokens.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["grant_type"], "refresh_token");
    assert_eq!(requests[0]["refresh_token"], "rt-0");
    assert_eq!(requests[0]["client_id"], "gmail-client");
    assert_eq!(requests[0]["client_secret"], CLIENT_SECRET);
    assert!(!requests[0].contains_key("scope"));
    assert_eq!(
        requests[1]["refresh_token"], "rt-1",
        "the endpoint rotated the refresh token"
    );
    assert_eq!(tokens_sent(&server), ["tok-1", "tok-2"]);
}

#[tokio::test]
async fn a_token_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "file-token-a\n").unwrap();
    let server = scripted(&["file-token-a"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(
        &receiver,
        &server,
        &format!("      token_file: {}\n", file.display()),
    );

    login(&cfg).await.unwrap();
    // Whatever renews the token rewrites the file; the old token stops working.
    std::fs::write(&file, "file-token-b\n").unwrap();
    server.set_xoauth2_tokens(&["file-token-b"]);
    login(&cfg).await.unwrap();

    assert_eq!(
        tokens_sent(&server),
        ["file-token-a", "file-token-b"],
        "the new token is used at once, without a rejected attempt"
    );
}

#[tokio::test]
async fn a_token_command_runs_for_every_login() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let server = scripted(&["cmd-token"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(
        &receiver,
        &server,
        &format!(
            "      token_command: \"echo run >> '{}'; printf 'cmd-token\\\\n'\"\n",
            runs.display()
        ),
    );

    login(&cfg).await.unwrap();
    login(&cfg).await.unwrap();
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    assert_eq!(tokens_sent(&server), ["cmd-token", "cmd-token"]);
}

#[tokio::test]
async fn a_failing_token_command_reports_its_status_not_its_output() {
    let server = scripted(&["cmd-token"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(
        &receiver,
        &server,
        "      token_command: \"echo password=hunter2 >&2; exit 7\"\n",
    );
    let error = login(&cfg).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("`token_command` exit status: 7"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        error.is_auth(),
        "a broken command needs fixing, not fast retries"
    );
    assert!(tokens_sent(&server).is_empty());
}

#[tokio::test]
async fn a_token_is_reused_until_shortly_before_it_expires() {
    // Reused for 90% of 3 s.
    let tokens = TokenServer::start(Some(3)).await;
    let server = scripted(&["tok-1", "tok-2"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    login(&cfg).await.unwrap();
    login(&cfg).await.unwrap();
    assert_eq!(tokens.requests().len(), 1, "the cached token is reused");

    tokio::time::sleep(std::time::Duration::from_millis(2800)).await;
    login(&cfg).await.unwrap();
    assert_eq!(tokens.requests().len(), 2, "refreshed before it expired");
    assert_eq!(tokens_sent(&server), ["tok-1", "tok-1", "tok-2"]);
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_login_retried() {
    let tokens = TokenServer::start(Some(3600)).await;
    // tok-1 was revoked (or expired early): only a new token gets in.
    let server = scripted(&["tok-2"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    login(&cfg).await.unwrap();
    assert_eq!(tokens.requests().len(), 2);
    assert_eq!(tokens_sent(&server), ["tok-1", "tok-2"]);
    assert_eq!(server.sessions(), 1, "retried in the same session");
    // The error challenge was acknowledged with an empty line.
    assert!(server.commands().iter().any(|c| c.is_empty()));

    // The refreshed token is the cached one now.
    login(&cfg).await.unwrap();
    assert_eq!(tokens.requests().len(), 2);
}

#[tokio::test]
async fn a_server_that_wants_the_response_on_one_line_gets_it() {
    let tokens = TokenServer::start(Some(3600)).await;
    let server = Scripted::start(Script {
        user: USER.into(),
        xoauth2: Some(vec!["tok-2".into()]),
        xoauth2_one_line_only: true,
        xoauth2_plain_reject: true,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    login(&cfg).await.unwrap();
    let auth: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("AUTH"))
        .map(|c| c.chars().take(14).collect())
        .collect();
    // Two-step refused, one line with tok-1 rejected, one line with tok-2 accepted.
    assert_eq!(auth, ["AUTH XOAUTH2", "AUTH XOAUTH2 d", "AUTH XOAUTH2 d"]);
    assert_eq!(tokens_sent(&server), ["tok-1", "tok-2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_rejected_twice_is_an_auth_error_without_secrets() {
    let tokens = TokenServer::start(Some(3600)).await;
    let server = scripted(&[], 1).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    let error = login(&cfg).await.unwrap_err();
    assert!(error.is_auth(), "{error}");
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains("Invalid credentials"), "{text}");
    assert!(
        text.contains(r#""scope":"https://mail.google.com/""#),
        "the server's error challenge is shown: {text}"
    );
    assert_eq!(tokens.requests().len(), 2, "refreshed once, not more");
    assert_eq!(tokens_sent(&server), ["tok-1", "tok-2"]);

    let outcomes = service::once(&cfg.config).await.unwrap();
    let reported = outcomes[0].result.as_ref().unwrap_err();
    for text in [&text, reported] {
        for secret in ["tok-1", "tok-2", "tok-3", "tok-4", CLIENT_SECRET, "dXNlcj"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert!(receiver.requests().is_empty());
    assert_eq!(server.remaining().len(), 1);
}

#[tokio::test]
async fn a_token_endpoint_refusing_the_client_is_an_auth_error_and_nothing_is_sent() {
    let tokens = TokenServer::start(Some(3600)).await;
    tokens.push_replies([TokenReply::Error(
        401,
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided.",
    )]);
    let server = scripted(&["tok-1"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));

    let error = login(&cfg).await.unwrap_err();
    let text = error.to_string();
    assert!(error.is_auth(), "{text}");
    assert!(
        text.contains("HTTP 401 (invalid_client: AADSTS7000215"),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert!(
        !server.commands().iter().any(|c| c.starts_with("AUTH")),
        "no login without a token"
    );

    // An endpoint that is down is worth retrying soon.
    tokens.push_replies([TokenReply::Error(503, "temporarily_unavailable", "busy")]);
    let error = login(&cfg).await.unwrap_err();
    assert!(error.is_transient() && !error.is_auth(), "{error}");
}

/// A real Dovecot with `passdb { driver = oauth2 }`, validating each token against the
/// mock endpoint's introspection: a revoked token is refused with Dovecot's own error
/// challenge, and the new one gets in.
#[tokio::test(flavor = "multi_thread")]
async fn dovecot_accepts_a_fresh_token_after_refusing_a_revoked_one() {
    let tokens = TokenServer::start(Some(3600)).await;
    tokens.set_subject("oauth");
    let dovecot = Dovecot::start_oauth2(&tokens.introspection_url());
    dovecot.add_user("oauth", "not-used-by-xoauth2");
    dovecot.deliver("oauth", &message(1));
    dovecot.deliver("oauth", &message(2));
    let receiver = Receiver::start().await;
    let mailbox = format!(
        "  - name: dovecot-oauth\n    host: {}\n    port: {}\n    tls: none\n    allow_insecure: true\n    username: oauth\n    auth: xoauth2\n    timeout: 10s\n    oauth2:\n{}",
        dovecot.host(),
        dovecot.plain_port(),
        client_credentials(&tokens),
    );
    let cfg = config(
        &format!("  url: {}\n  timeout: 5s", receiver.url()),
        &mailbox,
    );

    // A first cycle caches tok-1; then it is revoked.
    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}\n{}", dovecot.log());
    assert_eq!(receiver.accepted().len(), 2);
    assert_eq!(dovecot.message_count("oauth"), 0);
    tokens.revoke("tok-1");
    dovecot.deliver("oauth", &message(3));

    let outcomes = service::once(&cfg.config).await.unwrap();
    assert!(outcomes[0].is_success(), "{outcomes:?}\n{}", dovecot.log());
    assert_eq!(receiver.accepted().len(), 3);
    assert_eq!(dovecot.message_count("oauth"), 0);
    assert_eq!(
        tokens.requests().len(),
        2,
        "one refresh after the rejection"
    );
    assert!(tokens.introspections() >= 3, "Dovecot checked every token");

    // Revoking every token makes the login an auth error.
    tokens.revoke("tok-2");
    tokens.revoke("tok-3");
    let error = login(&cfg).await.unwrap_err();
    assert!(error.is_auth(), "{error}");
}

fn config_error(oauth2_and_more: &str) -> String {
    let yaml = format!(
        "webhook: {{url: 'http://127.0.0.1:1/'}}\nmailboxes:\n  - name: m\n    host: pop.example.com\n    username: {USER}\n{oauth2_and_more}"
    );
    match pophook::config::from_yaml(&yaml) {
        Ok(_) => panic!("should be refused:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "t").unwrap();

    let e = config_error(&format!(
        "    auth: xoauth2\n    oauth2:\n      token_file: {}\n      client_id: app\n      client_secret: {CLIENT_SECRET}\n",
        file.display()
    ));
    assert!(e.contains("`mailboxes[0].oauth2`"), "{e}");
    assert!(e.contains("exactly one token source"), "{e}");
    assert!(
        e.contains("`token_file`") && e.contains("`client_id`"),
        "{e}"
    );
    assert!(!e.contains(CLIENT_SECRET), "{e}");

    let e = config_error(
        "    auth: xoauth2\n    oauth2:\n      token_command: x\n      token_file: /t\n",
    );
    assert!(e.contains("exactly one token source"), "{e}");

    let e = config_error(&format!(
        "    auth: xoauth2\n    oauth2:\n      tenant: contoso.onmicrosoft.com\n      client_secret: {CLIENT_SECRET}\n"
    ));
    assert!(
        e.contains("`mailboxes[0].oauth2.client_id`: missing"),
        "{e}"
    );

    let e = config_error("    auth: xoauth2\n    oauth2:\n      tenant: contoso.onmicrosoft.com\n      client_id: app\n");
    assert!(
        e.contains("`mailboxes[0].oauth2.client_secret`: missing"),
        "{e}"
    );

    let e = config_error(
        "    auth: xoauth2\n    oauth2:\n      client_id: app\n      client_secret: s\n",
    );
    assert!(
        e.contains("`mailboxes[0].oauth2.token_url`: missing"),
        "{e}"
    );

    let e = config_error("    auth: xoauth2\n    oauth2:\n      tenant: t\n      token_url: https://x/\n      client_id: app\n      client_secret: s\n");
    assert!(
        e.contains("`mailboxes[0].oauth2.token_url`") && e.contains("not both"),
        "{e}"
    );

    let e = config_error("    auth: xoauth2\n    oauth2:\n      token_url: http://login.example.com/token\n      client_id: app\n      client_secret: s\n");
    assert!(
        e.contains("`mailboxes[0].oauth2.token_url`: must be https"),
        "{e}"
    );

    let e = config_error("    auth: xoauth2\n    oauth2:\n      tenant: 'a/../b'\n      client_id: app\n      client_secret: s\n");
    assert!(e.contains("`mailboxes[0].oauth2.tenant`"), "{e}");

    let e = config_error("    auth: xoauth2\n");
    assert!(e.contains("`mailboxes[0].oauth2`: missing"), "{e}");

    let e = config_error("    oauth2:\n      token_file: /t\n");
    assert!(
        e.contains("`mailboxes[0].auth`") && e.contains("xoauth2"),
        "{e}"
    );

    let e = config_error(
        "    auth: xoauth2\n    password: hunter2\n    oauth2:\n      token_command: x\n",
    );
    assert!(e.contains("`mailboxes[0].password`: not used"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");

    let e = config_error("    auth: xoauth2\n    oauth2:\n      token_file: /does/not/exist\n");
    assert!(
        e.contains("`mailboxes[0].oauth2.token_file`: cannot read"),
        "{e}"
    );

    let e = config_error("    auth: xoauth2\n    oauth2:\n      client_id: a\n      client_secret: s\n      clientsecret: typo\n");
    assert!(e.contains("clientsecret"), "{e}");

    let e = config_error(
        "    auth: xoauth2\n    oauth2:\n      tenant: t\n      client_id: a\n      client_secret: s\n      client_secret_env: S\n",
    );
    assert!(
        e.contains("only one of `client_secret`, `client_secret_file` and `client_secret_env`"),
        "{e}"
    );
}

#[test]
fn a_tenant_means_the_microsoft_token_endpoint() {
    let yaml = format!(
        "webhook: {{url: 'http://127.0.0.1:1/'}}\nmailboxes:\n  - name: m\n    host: outlook.office365.com\n    username: {USER}\n    auth: xoauth2\n    oauth2:\n      tenant: contoso.onmicrosoft.com\n      client_id: app\n      client_secret: {CLIENT_SECRET}\n"
    );
    let config = pophook::config::from_yaml(&yaml).unwrap();
    let server = &config.mailboxes[0].server;
    let printed = format!("{server:?}");
    assert!(
        printed.contains("client credentials at https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"),
        "{printed}"
    );
    assert!(!printed.contains(CLIENT_SECRET), "{printed}");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_transient() {
    let server = scripted(&["tok-1"], 0).await;
    let receiver = Receiver::start().await;
    let cfg = setup(
        &receiver,
        &server,
        "      token_url: http://127.0.0.1:1/token\n      client_id: app\n      client_secret: s\n",
    );
    let error = login(&cfg).await.unwrap_err();
    let text = error.to_string();
    assert!(error.is_transient() && !error.is_auth(), "{text}");
    assert!(
        text.contains("cannot reach the token endpoint http://127.0.0.1:1/token"),
        "{text}"
    );
}

/// Every file under `dir`, with its mode.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            out.push((path.clone(), std::fs::read(&path).unwrap(), mode));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_refresh_token_survives_a_restart_sealed_in_a_private_state() {
    let tokens = TokenServer::start(Some(3600)).await;
    let server = scripted(&["tok-1", "tok-2", "tok-3", "tok-4"], 1).await;
    let receiver = Receiver::start().await;
    let oauth2 = format!(
        "      token_url: {}\n      client_id: gmail-client\n      refresh_token: rt-0\n",
        tokens.url()
    );
    let cfg = setup(&receiver, &server, &oauth2);

    // Three runs of the binary: each a fresh process, as after a restart.
    for run in 0..3 {
        let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("rt-"),
            "run {run} logged a refresh token: {stderr}"
        );
    }
    let presented: Vec<String> = tokens
        .requests()
        .iter()
        .map(|form| form["refresh_token"].clone())
        .collect();
    assert_eq!(presented, ["rt-0", "rt-1", "rt-2"], "always the newest one");

    let state = cfg.dir.path().join("state");
    use std::os::unix::fs::PermissionsExt as _;
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let files = files_under(&state);
    assert!(!files.is_empty());
    for (path, bytes, mode) in files {
        assert!(
            !bytes
                .windows(5)
                .any(|w| w.starts_with(b"rt-") && w[3].is_ascii_digit()),
            "{} holds a refresh token in clear",
            path.display()
        );
        // Every file, also those sled made after opening (snapshots, blobs).
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
    }

    // A new consent (another configured refresh token) is used as given: the stored
    // one belonged to the old configuration.
    let renewed = cfg
        .yaml
        .replace("refresh_token: rt-0", "refresh_token: rt-new");
    std::fs::write(cfg.path(), renewed).unwrap();
    server.push_message(message(2), "uid-2");
    let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tokens.requests()[3]["refresh_token"], "rt-new");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_token_expiry_is_a_metric() {
    let tokens = TokenServer::start(Some(3600)).await;
    let server = scripted(&["tok-1"], 1).await;
    let receiver = Receiver::start().await;
    let cfg = setup(&receiver, &server, &client_credentials(&tokens));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (trigger, shutdown) = pophook::shutdown::channel();
    let service = tokio::spawn(service::run_on(
        cfg.config.clone(),
        Some(listener),
        shutdown,
    ));
    receiver
        .wait_for_accepted(1, std::time::Duration::from_secs(15))
        .await;
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("pophook_oauth2_token_expiry_timestamp_seconds{mailbox=\"oauth\"}"))
        .unwrap_or_else(|| panic!("no expiry series:\n{metrics}"));
    let expiry: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 3000.0 && expiry < now + 3700.0,
        "{expiry} vs now {now}"
    );
    trigger.trigger();
    service.await.unwrap().unwrap();
}
