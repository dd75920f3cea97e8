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
