use super::*;

/// A config with one mailbox whose webhook is `url` plus `extra` webhook lines.
fn hook_yaml(url: &str, extra: &str) -> String {
    format!("webhook:\n  url: {url}\n{extra}mailboxes:\n{MAILBOX}    password: a\n")
}

#[test]
fn a_well_known_ingress_with_the_wrong_format_is_refused_naming_the_right_one() {
    let cases = [
        ("/rails/action_mailbox/relay/inbound_emails", "raw"),
        ("/rails/action_mailbox/postmark/inbound_emails", "postmark"),
        (
            "/rails/action_mailbox/mailgun/inbound_emails/mime",
            "mailgun",
        ),
        ("/anymail/postmark/inbound/", "postmark"),
        ("/anymail/mailgun/inbound_mime/", "mailgun"),
        ("/anymail/mailgun/inbound/", "mailgun"),
        ("/laravel-mailbox/postmark", "postmark"),
        ("/laravel-mailbox/mailgun/mime", "mailgun"),
        // Mounted under a prefix.
        ("/app/anymail/postmark/inbound/", "postmark"),
    ];
    let key = "  mailgun_signing_key: k\n";
    for (path, right) in cases {
        let url = format!("https://hooks.example.com{path}");
        for wrong in ["standard", "raw", "postmark", "mailgun"] {
            let yaml = hook_yaml(&url, &format!("  format: {wrong}\n{key}"));
            if wrong == right {
                load(&yaml).unwrap_or_else(|e| panic!("{path} with {wrong}: {e}"));
                continue;
            }
            let e = error(&yaml);
            assert!(
                e.contains("webhook.format") && e.contains(&format!("set `format: {right}`")),
                "{path} with {wrong}: {e}"
            );
        }
        // No `format` at all is `standard`, the silent failure of the issue.
        let e = error(&hook_yaml(&url, key));
        assert!(e.contains(&format!("`format: {right}`")), "{e}");
    }
}

#[test]
fn ingresses_pophook_cannot_speak_and_ordinary_paths() {
    let e = error(&hook_yaml(
        "https://app.example.com/rails/action_mailbox/sendgrid/inbound_emails",
        "",
    ));
    assert!(
        e.contains("webhook.url") && e.contains("relay ingress"),
        "{e}"
    );
    let e = error(&hook_yaml(
        "https://app.example.com/anymail/sendgrid/inbound/",
        "",
    ));
    assert!(e.contains("does not speak"), "{e}");
    for path in ["/inbound", "/hooks/anymail-postmark", "/mailgun/mime", "/"] {
        for format in ["standard", "raw", "postmark"] {
            load(&hook_yaml(
                &format!("https://app.example.com{path}"),
                &format!("  format: {format}\n"),
            ))
            .unwrap_or_else(|e| panic!("{path} {format}: {e}"));
        }
    }
}

#[test]
fn the_format_is_overridable_per_mailbox() {
    let config = load(&format!(
        "{WEBHOOK}  format: raw\nmailboxes:\n{MAILBOX}    password: a\n\
             {}    password: a\n    webhook: {{format: postmark}}\n",
        MAILBOX.replace("support", "sales")
    ))
    .unwrap();
    assert_eq!(config.mailboxes[0].webhook.format, Format::Raw);
    assert_eq!(config.mailboxes[1].webhook.format, Format::Postmark);
    let default = load(&hook_yaml("https://a.example.com/in", "")).unwrap();
    assert_eq!(default.mailboxes[0].webhook.format, Format::Standard);
    let e = error(&hook_yaml("https://a.example.com/in", "  format: json\n"));
    assert!(e.contains("format"), "{e}");
}

#[test]
fn basic_auth_comes_from_the_url_and_never_stays_in_it() {
    let config = load(&hook_yaml(
            "https://actionmailbox:s3cr%40t-pass@app.example.com/rails/action_mailbox/relay/inbound_emails?x=1",
            "  format: raw\n",
        ))
        .unwrap();
    let webhook = &config.mailboxes[0].webhook;
    let auth = webhook.basic_auth.as_ref().unwrap();
    assert_eq!(auth.username, "actionmailbox");
    assert_eq!(auth.password.expose(), "s3cr@t-pass");
    assert_eq!(
        webhook.url.as_str(),
        "https://app.example.com/rails/action_mailbox/relay/inbound_emails?x=1"
    );
    let printed = format!("{config:?} {}", webhook.url);
    assert!(!printed.contains("s3cr"), "{printed}");
    assert!(
        !printed.contains("x=1"),
        "the query may hold a token: {printed}"
    );
    // Credentials are part of what re-enables an endpoint disabled by a 410.
    let other = load(&hook_yaml(
        "https://actionmailbox:other@app.example.com/rails/action_mailbox/relay/inbound_emails?x=1",
        "  format: raw\n",
    ))
    .unwrap();
    assert_ne!(
        webhook.fingerprint(),
        other.mailboxes[0].webhook.fingerprint()
    );
    let e = error(&hook_yaml("https://u:%ff%fe@app.example.com/in", ""));
    assert!(e.contains("percent-encoded") && !e.contains("%ff"), "{e}");
}

#[test]
fn mailgun_needs_a_signing_key_from_any_source_and_never_prints_it() {
    let url = "https://app.example.com/anymail/mailgun/inbound_mime/";
    let e = error(&hook_yaml(url, "  format: mailgun\n"));
    assert!(
        e.contains("webhook.mailgun_signing_key") && e.contains("mailgun_signing_key_file"),
        "{e}"
    );
    let config = load(&hook_yaml(
        url,
        "  format: mailgun\n  mailgun_signing_key: key-inline-value\n",
    ))
    .unwrap();
    let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
    assert_eq!(key.map(Secret::expose), Some("key-inline-value"));
    assert!(!format!("{config:?}").contains("key-inline-value"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailgun-key");
    std::fs::write(&file, "key-from-file\n").unwrap();
    let config = load(&hook_yaml(
        url,
        &format!(
            "  format: mailgun\n  mailgun_signing_key_file: {}\n",
            file.display()
        ),
    ))
    .unwrap();
    let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
    assert_eq!(key.map(Secret::expose), Some("key-from-file"));
    std::env::set_var("PH_TEST_MAILGUN_KEY", "key-from-env");
    let config = load(&hook_yaml(
        url,
        "  format: mailgun\n  mailgun_signing_key_env: PH_TEST_MAILGUN_KEY\n",
    ))
    .unwrap();
    let key = config.mailboxes[0].webhook.mailgun_signing_key.as_ref();
    assert_eq!(key.map(Secret::expose), Some("key-from-env"));
    let e = error(&hook_yaml(
        url,
        "  format: mailgun\n  mailgun_signing_key: a\n  mailgun_signing_key_env: B\n",
    ));
    assert!(e.contains("only one of"), "{e}");
}

/// The 410 record's fingerprint is stored, and the webhook's secrets are in it: a copy of
/// the state must not confirm a guessed password at hash speed. It is PBKDF2 with the
/// printed URL as salt; every secret changes it; computing it twice, or on a clone,
/// gives the same.
#[test]
fn the_stored_fingerprint_is_a_slow_salted_hash_that_every_secret_changes() {
    let with = |url: &str, extra: &str| {
        load(&hook_yaml(url, extra))
            .unwrap()
            .mailboxes
            .remove(0)
            .webhook
    };
    let base = with("https://u:pw@app.example.com/in?token=t1", "");
    let fingerprint = base.fingerprint();
    assert_eq!(fingerprint, base.fingerprint());
    assert_eq!(fingerprint, base.clone().fingerprint());
    assert!(!fingerprint.contains("pw") && !fingerprint.contains("t1"));

    // What an attacker with the state would have to do per guess: the whole PBKDF2.
    let mut identity = Vec::new();
    base.identity(&mut |bytes: &[u8]| identity.extend_from_slice(bytes));
    let salt = "pophook webhook fingerprint v2 https://app.example.com/in?…";
    let guess = |rounds: u32| {
        let mut out = [0u8; 16];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(&identity, salt.as_bytes(), rounds, &mut out);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        format!("v2:{hex}")
    };
    const { assert!(crate::delivery::FINGERPRINT_ROUNDS >= 100_000) };
    assert_eq!(fingerprint, guess(crate::delivery::FINGERPRINT_ROUNDS));
    assert_ne!(
        fingerprint,
        guess(1),
        "one round would be a plain keyed hash"
    );

    for changed in [
        with("https://u:pw2@app.example.com/in?token=t1", ""),
        with("https://u2:pw@app.example.com/in?token=t1", ""),
        with("https://u:pw@app.example.com/in?token=t2", ""),
        with(
            "https://u:pw@app.example.com/in?token=t1",
            "  secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        ),
        with(
            "https://u:pw@app.example.com/in?token=t1",
            "  headers:\n    x-key: k\n",
        ),
    ] {
        assert_ne!(fingerprint, changed.fingerprint());
    }
}
