use std::time::Duration;

use super::*;
use crate::delivery::formats::Format;
use crate::event::AttachmentMode;
use crate::ops::shard::Shard;
use crate::pop3::{AuthMethod, TlsMode};
use crate::secret::Secret;

/// The receiver formats and the URL's credentials.
mod formats;

const WEBHOOK: &str = "webhook:\n  url: http://127.0.0.1:8080/inbound\n";
const MAILBOX: &str =
    "  - name: support\n    host: pop.example.com\n    username: support@example.com\n";

fn load(yaml: &str) -> Result<Config, ConfigError> {
    from_yaml(yaml)
}

fn error(yaml: &str) -> String {
    match load(yaml) {
        Ok(_) => panic!("config should be refused:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n")).unwrap();
    let m = &config.mailboxes[0];
    assert_eq!(m.server.tls, TlsMode::Implicit);
    assert_eq!(m.server.port, 995);
    assert_eq!(m.server.auth, AuthMethod::User);
    assert_eq!(m.poll_interval, Duration::from_secs(60));
    assert!(m.delete);
    assert_eq!(m.webhook.timeout, Duration::from_secs(30));
    assert!(!m.event.include_raw);
    assert_eq!(config.state_dir, PathBuf::from("./pophook-state"));
    let starttls = load(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n    tls: starttls\n"
    ))
    .unwrap();
    assert_eq!(starttls.mailboxes[0].server.port, 110);
}

#[test]
fn attachment_mode_defaults_to_inline_and_a_mailbox_can_override_it() {
    let sales = concat!(
        "  - name: sales\n    host: pop.example.com\n    username: sales@example.com\n",
        "    password: b\n    webhook:\n      attachments: omit\n",
    );
    let config = load(&format!(
        "{WEBHOOK}  attachments: metadata\n  max_inline_attachment_size: 1000\n\
             mailboxes:\n{MAILBOX}    password: a\n{sales}"
    ))
    .unwrap();
    let (first, second) = (&config.mailboxes[0].event, &config.mailboxes[1].event);
    assert_eq!(first.attachments, AttachmentMode::Metadata);
    assert_eq!(first.max_inline_attachment_size, Some(1000));
    assert_eq!(second.attachments, AttachmentMode::Omit);
    assert_eq!(second.max_inline_attachment_size, Some(1000));

    let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n")).unwrap();
    assert_eq!(
        config.mailboxes[0].event.attachments,
        AttachmentMode::Inline
    );
    assert_eq!(config.mailboxes[0].event.max_inline_attachment_size, None);
    let e = error(&format!(
        "{WEBHOOK}  attachments: links\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(e.contains("links"), "{e}");
}

#[test]
fn header_values_come_inline_from_files_or_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "Bearer from-file\n").unwrap();
    std::env::set_var("PH_TEST_HEADER_VAR", "from-env");
    let config = load(&format!(
            "{WEBHOOK}  headers:\n    Authorization: {{file: {}}}\n    X-Env: {{env: PH_TEST_HEADER_VAR}}\n    X-Inline: plain\n\
             mailboxes:\n{MAILBOX}    password: a\n",
            file.display()
        ))
        .unwrap();
    let headers: Vec<(&str, &str)> = config.mailboxes[0]
        .webhook
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [
            ("authorization", "Bearer from-file"),
            ("x-env", "from-env"),
            ("x-inline", "plain")
        ]
    );
    let e = error(&format!(
            "{WEBHOOK}  headers:\n    Authorization: {{file: /x, env: Y}}\nmailboxes:\n{MAILBOX}    password: a\n"
        ));
    assert!(e.contains("headers.Authorization"), "{e}");
}

#[test]
fn the_example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();
    // Point its secret files at real files.
    let mut yaml = example.clone();
    for secret in ["/run/secrets/webhook-secret", "/run/secrets/pop3-support"] {
        let path = dir.path().join(secret.rsplit('/').next().unwrap());
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        yaml = yaml.replace(secret, path.to_str().unwrap());
    }
    let config = load(&yaml).unwrap_or_else(|e| panic!("config.example.yaml: {e}"));
    let m = &config.mailboxes[0];
    assert_eq!(m.name, "support");
    assert_eq!(
        m.webhook.retry,
        crate::delivery::retry::RetryPolicy::default()
    );
    assert!(!m.webhook.signing_keys.is_empty());
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
fn a_badly_shaped_environment_value_is_reported_without_its_content() {
    use figment::Jail;
    Jail::expect_with(|jail| {
        jail.set_env(
            "POPHOOK_MAILBOXES",
            "[{name=demo, host=h, username=u, password=hunter2secret,}}",
        );
        jail.set_env("POPHOOK_WEBHOOK__URL", "http://127.0.0.1:1/");
        let e = super::load_or_default(None, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2secret"), "{e}");
        assert!(e.contains("mailboxes") || e.contains("MAILBOXES"), "{e}");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: pw\n    pasword: typo\n"
    ));
    assert!(e.contains("pasword"), "{e}");
    let e = error(&format!(
        "{WEBHOOK}  retries: 3\nmailboxes:\n{MAILBOX}    password: pw\n"
    ));
    assert!(e.contains("retries"), "{e}");
}

#[test]
fn a_missing_password_names_the_key_and_the_ways_to_give_it() {
    let e = error(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}"));
    assert!(e.contains("mailboxes[0].password"), "{e}");
    assert!(e.contains("password_file"), "{e}");
}

#[test]
fn two_sources_for_one_secret_are_refused_without_echoing_it() {
    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: hunter2\n    password_env: HOME\n"
    ));
    assert!(
        e.contains("only one of `password`, `password_file` and `password_env`"),
        "{e}"
    );
    assert!(!e.contains("hunter2"));
}

#[test]
fn secrets_come_from_files_with_the_trailing_newline_trimmed_and_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let config = load(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password_file: {}\n",
        file.display()
    ))
    .unwrap();
    assert_eq!(config.mailboxes[0].server.password.expose(), "from-file");

    std::env::set_var("PH_TEST_PASSWORD_VAR", "from-env");
    let config = load(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password_env: PH_TEST_PASSWORD_VAR\n"
    ))
    .unwrap();
    assert_eq!(config.mailboxes[0].server.password.expose(), "from-env");

    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password_env: PH_TEST_UNSET_VAR_XYZ\n"
    ));
    assert!(
        e.contains("password_env") && e.contains("PH_TEST_UNSET_VAR_XYZ"),
        "{e}"
    );
}

#[test]
fn duplicate_mailbox_names_are_refused() {
    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n{MAILBOX}    password: b\n"
    ));
    assert!(e.contains("mailboxes[1].name"), "{e}");
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn bad_webhook_urls_are_refused() {
    let e = error(&format!(
        "webhook:\n  url: not a url\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(e.contains("mailboxes[0].webhook.url"), "{e}");
    let e = error(&format!(
        "webhook:\n  url: http://hooks.example.com/in\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(e.contains("https"), "{e}");
    let e = error(&format!("mailboxes:\n{MAILBOX}    password: a\n"));
    assert!(e.contains("webhook.url") && e.contains("missing"), "{e}");
    // https anywhere, and plain http when explicitly allowed.
    load(&format!(
        "webhook:\n  url: https://hooks.example.com/in\nmailboxes:\n{MAILBOX}    password: a\n"
    ))
    .unwrap();
    load(&format!(
            "webhook:\n  url: http://app:8080/in\n  allow_insecure_webhook: true\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
}

#[test]
fn a_mailbox_webhook_overrides_the_default_key_by_key() {
    let config = load(&format!(
            "webhook:\n  url: http://127.0.0.1:1/a\n  timeout: 5s\n  headers: {{Authorization: Bearer x, X-A: '1'}}\n\
             mailboxes:\n{MAILBOX}    password: a\n    webhook:\n      url: http://127.0.0.1:1/b\n      headers: {{X-A: '2'}}\n"
        ))
        .unwrap();
    let webhook = &config.mailboxes[0].webhook;
    assert_eq!(webhook.url.as_str(), "http://127.0.0.1:1/b");
    assert_eq!(webhook.timeout, Duration::from_secs(5));
    let headers: Vec<(&str, &str)> = webhook
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(headers, [("authorization", "Bearer x"), ("x-a", "2")]);
}

#[test]
fn several_signing_keys_come_as_a_list_or_one_per_line_of_a_file() {
    let (ed25519, _) = crate::delivery::signing::keygen();
    let hmac = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = load(&format!(
        "{WEBHOOK}  secret: [{hmac}, \"{}\"]\nmailboxes:\n{MAILBOX}    password: a\n",
        ed25519.expose()
    ))
    .unwrap();
    let keys = &config.mailboxes[0].webhook.signing_keys;
    assert!(matches!(
        keys[..],
        [
            crate::delivery::signing::SigningKey::Hmac(_),
            crate::delivery::signing::SigningKey::Ed25519(_)
        ]
    ));
    assert!(!format!("{config:?}").contains(&ed25519.expose()[5..]));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, format!("{hmac}\n{}\n", ed25519.expose())).unwrap();
    let config = load(&format!(
        "{WEBHOOK}  secret_file: {}\nmailboxes:\n{MAILBOX}    password: a\n",
        file.display()
    ))
    .unwrap();
    assert_eq!(config.mailboxes[0].webhook.signing_keys.len(), 2);

    let e = error(&format!(
        "{WEBHOOK}  secret: [{hmac}, whsk_bad-key]\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(
        e.contains("webhook.secret[1]") && !e.contains("bad-key"),
        "{e}"
    );
}

#[test]
fn webhook_timeouts_default_from_timeout_and_override_per_mailbox() {
    let sales = MAILBOX.replace("support", "sales");
    let config = load(&format!(
        "{WEBHOOK}  timeout: 20s\nmailboxes:\n{MAILBOX}    password: a\n\
             {sales}    password: a\n    webhook: {{connect_timeout: 2s, response_timeout: 5s}}\n"
    ))
    .unwrap();
    let (first, second) = (&config.mailboxes[0].webhook, &config.mailboxes[1].webhook);
    assert_eq!(first.connect_timeout, Duration::from_secs(10));
    assert_eq!(first.response_timeout, Duration::from_secs(20));
    assert_eq!(second.timeout, Duration::from_secs(20));
    assert_eq!(second.connect_timeout, Duration::from_secs(2));
    assert_eq!(second.response_timeout, Duration::from_secs(5));
    let e = error(&format!(
        "{WEBHOOK}  response_timeout: 0s\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(e.contains("webhook.response_timeout"), "{e}");
}

#[test]
fn a_webhook_ca_file_must_be_a_readable_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    let yaml = format!(
        "{WEBHOOK}  tls_ca_file: {}\nmailboxes:\n{MAILBOX}    password: a\n",
        path.display()
    );
    let e = error(&yaml);
    assert!(
        e.contains("webhook.tls_ca_file") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(&path, "not a certificate").unwrap();
    let e = error(&yaml);
    assert!(
        e.contains("webhook.tls_ca_file") && e.contains("not a PEM"),
        "{e}"
    );
}

#[test]
fn signing_secrets_must_be_standard_webhooks_secrets() {
    let e = error(&format!(
        "{WEBHOOK}  secret: not-base64!!\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(e.contains("webhook.secret") && e.contains("whsec_"), "{e}");
    assert!(!e.contains("not-base64!!"), "{e}");
    let config = load(&format!(
            "{WEBHOOK}  secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
    assert!(!config.mailboxes[0].webhook.signing_keys.is_empty());
}

#[test]
fn tls_none_needs_allow_insecure() {
    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n    tls: none\n"
    ));
    assert!(e.contains("mailboxes[0].tls"), "{e}");
    load(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n    tls: none\n    allow_insecure: true\n"
    ))
    .unwrap();
}

#[test]
fn a_password_of_the_wrong_shape_is_not_echoed() {
    let e = error(&format!(
        "{WEBHOOK}mailboxes:\n{MAILBOX}    password: [hunter2]\n"
    ));
    assert!(e.contains("password"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn a_reachable_api_needs_a_token_which_is_never_printed() {
    let with_http =
        |http: &str| format!("{WEBHOOK}http: {http}\nmailboxes:\n{MAILBOX}    password: a\n");
    let e = error(&with_http("{listen: '0.0.0.0:9090'}"));
    assert!(
        e.contains("http.token") && e.contains("allow_unauthenticated_api"),
        "{e}"
    );
    let token = "t0ken-that-is-long-enough";
    let config = load(&with_http(&format!("{{listen: '0.0.0.0:9090', token: {token}, protect_metrics: true, allowed_hosts: [Pophook.Internal]}}"))).unwrap();
    let http = config.http.unwrap();
    assert_eq!(http.token.as_ref().map(|t| t.expose()), Some(token));
    assert!(http.protect_metrics);
    assert_eq!(http.allowed_hosts, ["pophook.internal"]);
    assert!(!format!("{http:?}").contains(token));
    // Loopback needs none; a short token is refused without echoing it.
    assert_eq!(
        load(&with_http("{listen: '127.0.0.1:9090'}"))
            .unwrap()
            .http
            .unwrap()
            .token,
        None
    );
    let e = error(&with_http(
        "{listen: '127.0.0.1:9090', token: short-s3cret}",
    ));
    assert!(
        e.contains("http.token") && !e.contains("short-s3cret"),
        "{e}"
    );
    let e = error(&with_http(
        "{listen: '127.0.0.1:9090', protect_metrics: true}",
    ));
    assert!(e.contains("protect_metrics"), "{e}");
}

#[test]
fn http_is_off_by_default_and_listen_must_be_an_address() {
    let config = load(&format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n")).unwrap();
    assert_eq!(config.http, None);
    let config = load(&format!(
            "{WEBHOOK}http: {{listen: '0.0.0.0:9090', allow_unauthenticated_api: true}}\nmailboxes:\n{MAILBOX}    password: a\n"
        ))
        .unwrap();
    let http = config.http.unwrap();
    assert_eq!(http.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(http.token, None);
    assert_eq!(http.local_url("/healthz"), "http://127.0.0.1:9090/healthz");
    let e = error(&format!(
        "{WEBHOOK}http: {{listen: 'localhost'}}\nmailboxes:\n{MAILBOX}    password: a\n"
    ));
    assert!(
        e.contains("http.listen") && e.contains("127.0.0.1:9090"),
        "{e}"
    );
}

#[test]
fn a_shard_polls_only_the_mailboxes_that_hash_to_its_index() {
    let names = ["support", "sales", "billing", "info", "noreply"];
    let mailboxes: String = names
        .iter()
        .map(|n| format!("  - {{name: {n}, host: h, username: u, password: p}}\n"))
        .collect();
    let mut seen = Vec::new();
    for index in 0..2 {
        let config = load(&format!(
            "{WEBHOOK}shard: {{index: {index}, count: 2}}\nmailboxes:\n{mailboxes}"
        ))
        .unwrap();
        assert_eq!(config.shard, Some(Shard { index, count: 2 }));
        for m in &config.mailboxes {
            assert_eq!(shard::owner(&m.name, 2), index);
            seen.push(m.name.clone());
        }
        assert_eq!(
            config.mailboxes.len() + config.other_shards.len(),
            names.len()
        );
        assert!(config.other_shards.iter().all(|(_, owner)| *owner != index));
    }
    seen.sort();
    let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "every mailbox polled by exactly one instance");

    let e = error(&format!(
        "{WEBHOOK}shard: {{index: 2, count: 2}}\nmailboxes:\n{mailboxes}"
    ));
    assert!(e.contains("shard.index") && e.contains("0 to 1"), "{e}");
    let e = error(&format!(
        "{WEBHOOK}shard: {{index: 0, count: 0}}\nmailboxes:\n{mailboxes}"
    ));
    assert!(e.contains("shard.count"), "{e}");
    let e = error(&format!(
        "{WEBHOOK}shard: {{index: 0}}\nmailboxes:\n{mailboxes}"
    ));
    assert!(e.contains("shard.count") && e.contains("missing"), "{e}");
}

#[test]
fn no_mailboxes_is_an_error_not_an_idle_service() {
    let e = error(WEBHOOK);
    assert!(e.contains("no mailboxes"), "{e}");
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
fn the_default_file_is_optional_but_a_named_file_must_exist() {
    use figment::Jail;
    Jail::expect_with(|jail| {
        let default = jail.directory().join("config.yaml");
        jail.set_env("POPHOOK_WEBHOOK__URL", "https://hooks.example.com/in");
        jail.set_env(
            "POPHOOK_MAILBOXES",
            "[{name=env, host=pop.example.com, username=u, password=p}]",
        );
        // No file at all: the environment alone is the configuration.
        let config = load_or_default(None, &default).unwrap();
        assert_eq!(config.mailboxes[0].name, "env");
        // A file at the default place is read, and the environment still wins.
        jail.create_file(
            "config.yaml",
            "state_dir: /from-file\nwebhook:\n  timeout: 5s\n",
        )?;
        let config = load_or_default(None, &default).unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/from-file"));
        assert_eq!(config.mailboxes[0].webhook.timeout, Duration::from_secs(5));
        // A file asked for by name must exist: a typo is not silently ignored.
        let e = load_or_default(Some(Path::new("typo.yaml")), &default).unwrap_err();
        assert!(e.to_string().contains("typo.yaml does not exist"), "{e}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
fn the_receivers_secret_variable_is_not_a_configuration_key() {
    use figment::Jail;
    Jail::expect_with(|jail| {
        jail.set_env(
            "POPHOOK_RECEIVE_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        jail.set_env("POPHOOK_WEBHOOK__URL", "https://hooks.example.com/in");
        jail.set_env(
            "POPHOOK_MAILBOXES",
            "[{name=env, host=pop.example.com, username=u, password=p}]",
        );
        load_or_default(None, &jail.directory().join("absent.yaml")).unwrap();
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
fn environment_variables_override_the_file() {
    use figment::Jail;
    Jail::expect_with(|jail| {
        jail.create_file(
            "pophook.yaml",
            &format!("{WEBHOOK}mailboxes:\n{MAILBOX}    password: a\n"),
        )?;
        jail.set_env("POPHOOK_WEBHOOK__URL", "https://override.example.com/hook");
        jail.set_env("POPHOOK_STATE_DIR", "/var/lib/pophook");
        jail.set_env("POPHOOK_CONFIG", "ignored-here");
        let config = super::load(Some(Path::new("pophook.yaml"))).unwrap();
        assert_eq!(
            config.mailboxes[0].webhook.url.as_str(),
            "https://override.example.com/hook"
        );
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/pophook"));
        jail.set_env("POPHOOK_SHARD__INDEX", "0");
        jail.set_env("POPHOOK_SHARD__COUNT", "1");
        jail.set_env("POPHOOK_HTTP__LISTEN", "127.0.0.1:9090");
        let config = super::load(Some(Path::new("pophook.yaml"))).unwrap();
        assert_eq!(config.shard, Some(Shard { index: 0, count: 1 }));
        assert_eq!(config.http.unwrap().listen.port(), 9090);
        Ok(())
    });
}
