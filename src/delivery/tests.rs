use super::*;

/// The test vector of the Standard Webhooks reference libraries.
#[test]
fn signature_matches_the_specification_test_vector() {
    let key = Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let signature = sign(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn credentials_leave_the_url_and_it_prints_without_its_query() {
    let mut url =
        url::Url::parse("https://actionmailbox:p%40ss%3Aw@hooks.example.com:8443/in?token=t0k")
            .unwrap();
    let auth = BasicAuth::take_from(&mut url).unwrap().unwrap();
    assert_eq!(auth.username, "actionmailbox");
    assert_eq!(auth.password.expose(), "p@ss:w");
    let url = WebhookUrl::new(url);
    assert_eq!(url.as_str(), "https://hooks.example.com:8443/in?token=t0k");
    assert_eq!(url.to_string(), "https://hooks.example.com:8443/in?…");
    assert_eq!(
        format!("{url:?}"),
        "\"https://hooks.example.com:8443/in?…\""
    );

    let mut plain = url::Url::parse("https://hooks.example.com/in").unwrap();
    assert_eq!(BasicAuth::take_from(&mut plain), Ok(None));
    let mut bad = url::Url::parse("https://u:%ff@hooks.example.com/").unwrap();
    assert!(BasicAuth::take_from(&mut bad).is_err());
    // A user name alone is still basic auth, with an empty password.
    let mut user = url::Url::parse("https://user@hooks.example.com/").unwrap();
    let auth = BasicAuth::take_from(&mut user).unwrap().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.expose()),
        ("user", "")
    );
}

#[test]
fn unavailable_endpoints_are_told_apart_from_refusals() {
    let status = |status| DeliveryError::Status {
        status,
        retry_after: None,
    };
    for code in [408, 425, 429, 500, 502, 503] {
        assert!(status(code).is_endpoint_unavailable(), "{code}");
    }
    for code in [301, 400, 401, 404, 410, 422] {
        assert!(!status(code).is_endpoint_unavailable(), "{code}");
    }
    assert!(DeliveryError::Network("x".into()).is_endpoint_unavailable());
}

#[test]
fn retry_after_reads_seconds_and_dates_and_is_capped() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", "120".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
    headers.insert("retry-after", "999999".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(3600)));
    headers.insert(
        "retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    headers.insert("retry-after", "soon".parse().unwrap());
    assert_eq!(retry_after(&headers), None);
}
