use super::*;
use crate::secret::Secret;

fn endpoint() -> HttpConfig {
    HttpConfig::open(([127, 0, 0, 1], 8025).into())
}

/// A key, and how to change it.
type Change = (&'static str, fn(&mut HttpConfig));

#[test]
fn every_changed_http_key_is_named_and_nothing_else() {
    let running = endpoint();
    let changes: [Change; 5] = [
        ("http.listen", |h| h.listen = ([127, 0, 0, 1], 8026).into()),
        ("http.token", |h| {
            h.token = Some(Secret::new("a-token-of-some-length"))
        }),
        ("http.protect_metrics", |h| h.protect_metrics = true),
        ("http.allowed_hosts", |h| {
            h.allowed_hosts = vec!["pophook.internal".into()]
        }),
        ("http.max_connections", |h| h.max_connections = 8),
    ];
    for (key, change) in changes {
        let mut new = endpoint();
        change(&mut new);
        assert_eq!(http_changes(Some(&running), Some(&new)), [key]);
    }
    assert!(http_changes(Some(&running), Some(&endpoint())).is_empty());
    assert!(http_changes(None, None).is_empty());
    assert_eq!(http_changes(None, Some(&running)), ["http"]);
    assert_eq!(http_changes(Some(&running), None), ["http"]);
}
