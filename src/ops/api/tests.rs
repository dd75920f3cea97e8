use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[test]
fn host_names_lose_their_port_and_brackets() {
    for (host, name) in [
        ("127.0.0.1:9090", "127.0.0.1"),
        ("[::1]:9090", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("pophook.internal:80", "pophook.internal"),
        ("::1", "::1"),
    ] {
        assert_eq!(host_name(host), name, "{host}");
    }
}

#[test]
fn ip_addresses_localhost_and_configured_names_are_served_other_names_are_not() {
    let mut http = HttpConfig::open("127.0.0.1:9090".parse().unwrap());
    http.allowed_hosts = vec!["pophook.internal".into()];
    let access = Access::new(&http);
    for host in [
        "127.0.0.1:9090",
        "10.1.2.3:9090",
        "[::1]:9090",
        "LOCALHOST:9090",
        "pophook.internal",
    ] {
        assert!(access.host_allowed(&headers(&[("host", host)])), "{host}");
    }
    for host in ["rebind.example:9090", "localhost.example.com", ""] {
        assert!(!access.host_allowed(&headers(&[("host", host)])), "{host}");
    }
    assert!(!access.host_allowed(&HeaderMap::new()), "no Host at all");
}

#[test]
fn only_the_exact_bearer_token_is_authorized() {
    let mut http = HttpConfig::open("127.0.0.1:9090".parse().unwrap());
    assert!(
        Access::new(&http).authorized(&HeaderMap::new()),
        "no token set"
    );
    http.token = Some(Secret::new("t0ken-0123456789abcdef"));
    let access = Access::new(&http);
    let auth = |value: &str| access.authorized(&headers(&[("authorization", value)]));
    assert!(auth("Bearer t0ken-0123456789abcdef"));
    assert!(!auth("Bearer t0ken-0123456789abcde"));
    assert!(!auth("Basic t0ken-0123456789abcdef"));
    assert!(!auth("t0ken-0123456789abcdef"));
    assert!(!access.authorized(&HeaderMap::new()));
}

/// GET /healthz through the whole router (the access guard included).
async fn healthz_answer(api: Arc<Api>) -> (StatusCode, String) {
    let request = Request::get("/healthz")
        .header(header::HOST, "127.0.0.1:9090")
        .body(axum::body::Body::empty())
        .unwrap();
    let mut app = router(api);
    let response = tower_service::Service::call(&mut app, request)
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn healthz_answers_503_naming_a_stalled_flush_and_200_once_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let watchdog =
        crate::watchdog::Watchdog::new(Duration::from_secs(30), Duration::from_secs(120));
    let ledger = Ledger::open(dir.path(), watchdog.clone()).unwrap();
    let api = Arc::new(Api {
        ledger: ledger.clone(),
        monitor: Arc::new(Monitor::new(&[])),
        mailboxes: Default::default(),
        shard: Default::default(),
        shutdown: Shutdown::never(),
        http: HttpConfig::open("127.0.0.1:9090".parse().unwrap()),
        reload: None,
    });
    assert_eq!(
        healthz_answer(api.clone()).await,
        (StatusCode::OK, "ok\n".into())
    );

    // A flush that has not returned, seen by the watchdog 31 s later (its clock is
    // given, not waited for).
    let flush = watchdog.begin("the state flush");
    assert_eq!(
        healthz_answer(api.clone()).await.0,
        StatusCode::OK,
        "in progress is not stalled"
    );
    watchdog.check(std::time::Instant::now() + Duration::from_secs(31));
    let (status, body) = healthz_answer(api.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("the state flush has made no progress"),
        "{body}"
    );

    drop(flush);
    assert_eq!(
        healthz_answer(api.clone()).await,
        (StatusCode::OK, "ok\n".into())
    );

    // Past the fatal bound it stays 503 until the process exits.
    let stuck = watchdog.begin("the state flush");
    watchdog.check(std::time::Instant::now() + Duration::from_secs(121));
    let (status, body) = healthz_answer(api).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("exiting"), "{body}");
    drop(stuck);
    ledger.close().await.unwrap();
}
