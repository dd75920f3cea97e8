use super::*;

#[test]
fn the_xoauth2_response_is_the_documented_string_in_base64() {
    let response = xoauth2_response(
        "someuser@example.com",
        &Secret::new("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
    );
    // The example from Google's XOAUTH2 protocol documentation.
    assert_eq!(
            response.expose(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response.expose())
        .unwrap();
    assert_eq!(
            decoded,
            b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
        );
    assert_eq!(format!("{response}"), "[redacted]");
}

#[test]
fn tokens_are_reused_until_a_minute_or_ten_percent_before_expiry() {
    assert_eq!(
        reuse_for(Duration::from_secs(3600)),
        Duration::from_secs(3540)
    );
    assert_eq!(
        reuse_for(Duration::from_secs(600)),
        Duration::from_secs(540)
    );
    assert_eq!(
        reuse_for(Duration::from_secs(300)),
        Duration::from_secs(270)
    );
    assert_eq!(reuse_for(Duration::from_secs(10)), Duration::from_secs(9));
    assert_eq!(reuse_for(Duration::ZERO), Duration::ZERO);
}

#[test]
fn a_token_response_gives_the_token_its_lifetime_and_a_rotated_refresh_token() {
    let body = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.x.y","refresh_token":"rt-2"}"#;
    let response = parse_token_response("the token endpoint https://t", 200, body).unwrap();
    assert_eq!(response.access_token.expose(), "eyJ0eXAi.x.y");
    assert_eq!(response.expires_in, Some(Duration::from_secs(3599)));
    assert_eq!(response.refresh_token.unwrap().expose(), "rt-2");

    let body = br#"{"access_token":"a","expires_in":"120"}"#;
    let response = parse_token_response("the token endpoint https://t", 200, body).unwrap();
    assert_eq!(response.expires_in, Some(Duration::from_secs(120)));
    assert!(response.refresh_token.is_none());

    let response = parse_token_response(
        "the token endpoint https://t",
        200,
        br#"{"access_token":"a"}"#,
    )
    .unwrap();
    assert_eq!(response.expires_in, None);
}

#[test]
fn unusable_token_responses_are_errors_that_do_not_repeat_the_body() {
    let error = |status, body: &[u8]| {
        parse_token_response("the token endpoint https://t", status, body).unwrap_err()
    };

    let e = error(400, br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#);
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains("HTTP 400 (invalid_client: AADSTS7000215"),
        "{text}"
    );

    let e = error(503, b"<html>Service Unavailable</html>");
    assert!(e.is_transient());
    assert!(!e.to_string().contains("html"), "{e}");

    let e = error(200, br#"{"access_token":"has space","expires_in":1}"#);
    assert!(e.to_string().contains("spaces"), "{e}");
    assert!(!e.to_string().contains("has space"), "{e}");
    let e = error(200, br#"{"access_token":"a","token_type":"mac"}"#);
    assert!(e.to_string().contains("Bearer"), "{e}");
    let e = error(200, br#"{"token":"secret-ish"}"#);
    assert!(!e.to_string().contains("secret-ish"), "{e}");
    let e = error(200, b"secret-ish");
    assert!(!e.to_string().contains("secret-ish"), "{e}");
}

#[test]
fn echoed_secrets_are_scrubbed_from_endpoint_errors() {
    let secret = Secret::new("s3cr3t");
    assert_eq!(
        scrub("bad secret s3cr3t given", &[&secret, &Secret::new("")]),
        "bad secret [redacted] given"
    );
}

#[test]
fn tokens_are_trimmed_and_must_be_printable_ascii() {
    assert_eq!(
        checked_token("  abc.def\n", "x").unwrap().expose(),
        "abc.def"
    );
    assert!(checked_token("\n", "x")
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert!(checked_token("a\x01b", "x").is_err());
    assert!(checked_token("a b", "x").is_err());
    assert!(checked_token("tök", "x").is_err());
}

#[test]
fn error_challenges_are_decoded_for_the_error_message() {
    let challenge = base64::engine::general_purpose::STANDARD
        .encode(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
    assert_eq!(
        describe_challenge(challenge.as_bytes()).unwrap(),
        r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#
    );
    assert_eq!(describe_challenge(b""), None);
    assert_eq!(describe_challenge(b"not base64!"), None);
    let control = base64::engine::general_purpose::STANDARD.encode("a\r\nb");
    assert_eq!(
        describe_challenge(control.as_bytes()).unwrap(),
        "a\u{fffd}\u{fffd}b"
    );
}

#[test]
fn the_debug_form_names_the_source_but_no_secret_or_command() {
    let provider = Provider::Command("curl -d client_secret=hunter2 https://x".into());
    assert_eq!(format!("{provider:?}"), "token_command");
    let provider = Provider::ClientCredentials {
        token_url: Url::parse("https://login.example.com/token").unwrap(),
        client_id: "app".into(),
        client_secret: Secret::new("hunter2"),
        scope: None,
    };
    let source = TokenSource::new("m", provider, Duration::from_secs(1)).unwrap();
    let printed = format!("{source:?}");
    assert!(printed.contains("login.example.com"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[tokio::test]
async fn a_token_file_is_read_on_every_login() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let source =
        TokenSource::new("m", Provider::File(path.clone()), Duration::from_secs(5)).unwrap();
    assert_eq!(source.token().await.unwrap().expose(), "first");
    std::fs::write(&path, "second").unwrap();
    assert_eq!(source.token().await.unwrap().expose(), "second");
    std::fs::remove_file(&path).unwrap();
    let e = source.token().await.unwrap_err();
    assert!(e.to_string().contains("cannot read the token file"), "{e}");
}

#[tokio::test]
async fn a_token_command_s_output_is_the_token_or_a_token_response() {
    let run = |command: &str| {
        let source = TokenSource::new(
            "m",
            Provider::Command(command.into()),
            Duration::from_secs(2),
        )
        .unwrap();
        async move { source.token().await }
    };
    assert_eq!(run("echo cmd-token").await.unwrap().expose(), "cmd-token");
    let json = r#"printf '{"access_token":"from-json","expires_in":60}'"#;
    assert_eq!(run(json).await.unwrap().expose(), "from-json");

    let e = run("echo leaked-password >&2; exit 3").await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(!text.contains("leaked-password"), "{text}");
    assert!(!e.is_transient());

    let e = run("sleep 10").await.unwrap_err();
    assert!(e.to_string().contains("did not finish"), "{e}");
    assert!(e.is_transient());

    let e = run("true").await.unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}
