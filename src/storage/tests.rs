use super::*;

fn storage(extra: &str) -> Result<Storage, String> {
    let yaml = format!(
            "endpoint: http://127.0.0.1:9000\nbucket: mail\naccess_key: AKIA\nsecret_key: s3cr3t-value\n{extra}"
        );
    let raw: RawStorage = serde_yaml_from(&yaml);
    validate(raw).map_err(|e| e.to_string())
}

fn serde_yaml_from(yaml: &str) -> RawStorage {
    use figment::providers::{Format as _, Yaml};
    figment::Figment::from(Yaml::string(yaml))
        .extract()
        .unwrap()
}

#[test]
fn keys_are_derived_from_the_event_id_and_the_part_index() {
    let s = storage("prefix: pophook/\n").unwrap();
    assert_eq!(
        s.attachment_key("msg_1", 0, Some("report.pdf")),
        "pophook/msg_1/0-report.pdf"
    );
    // Stable: the same inputs, the same key (a retry overwrites).
    assert_eq!(
        s.attachment_key("msg_1", 3, Some("Ünïcode name/../x.txt")),
        s.attachment_key("msg_1", 3, Some("Ünïcode name/../x.txt"))
    );
    assert_eq!(
        s.attachment_key("msg_1", 3, Some("Ünïcode name/../x.txt")),
        "pophook/msg_1/3-_n_code_name_.._x.txt"
    );
    assert_eq!(
        s.attachment_key("msg_1", 1, None),
        "pophook/msg_1/1-attachment"
    );
    assert_eq!(
        s.attachment_key("msg_1", 1, Some("..")),
        "pophook/msg_1/1-attachment"
    );
    assert_eq!(s.raw_key("msg_1"), "pophook/msg_1/raw.eml");
    assert_eq!(sanitise(Some(&"a".repeat(500))).len(), 100);
    let bare = storage("").unwrap();
    assert_eq!(bare.raw_key("msg_2"), "msg_2/raw.eml");
}

#[test]
fn presigned_urls_point_at_the_object_and_expire_as_configured() {
    let s = storage("prefix: p/\nurl_expiry: 1h\n").unwrap();
    let url = url::Url::parse(&s.presign_get("p/msg_1/0-a.pdf")).unwrap();
    assert_eq!(url.path(), "/mail/p/msg_1/0-a.pdf");
    let query: std::collections::HashMap<_, _> = url.query_pairs().collect();
    assert_eq!(query["X-Amz-Expires"], "3600");
    assert!(query.contains_key("X-Amz-Signature"));
    let default = storage("").unwrap();
    let url = url::Url::parse(&default.presign_get("k")).unwrap();
    assert!(url.query().unwrap().contains("X-Amz-Expires=604800"));
}

#[test]
fn bad_settings_are_refused_naming_the_key_and_the_fix() {
    let cases = [
        (
            "endpoint: not a url\n",
            "storage.endpoint",
            "not a valid URL",
        ),
        (
            "endpoint: ftp://host\n",
            "storage.endpoint",
            "scheme \"ftp\"",
        ),
        (
            "endpoint: https://user:pw@s3.example.com\n",
            "storage.endpoint",
            "holds credentials",
        ),
        (
            "endpoint: https://s3.example.com/?x=1\n",
            "storage.endpoint",
            "no query",
        ),
        ("url_expiry: 8d\n", "storage.url_expiry", "at most 7 days"),
        (
            "url_expiry: 0s\n",
            "storage.url_expiry",
            "between 1s and 7d",
        ),
        ("prefix: /abs\n", "storage.prefix", "not starting with '/'"),
        ("prefix: a/../b\n", "storage.prefix", "key prefix"),
        ("region: \"eu west\"\n", "storage.region", "not a region"),
        ("timeout: 0s\n", "storage.timeout", "more than 0s"),
        (
            "addressing: virtual_host\n",
            "storage.addressing",
            "addressing: path",
        ),
    ];
    for (extra, key, reason) in cases {
        // A later key overrides the default one above it.
        let e = storage(extra).unwrap_err();
        assert!(e.contains(key) && e.contains(reason), "{extra}: {e}");
        assert!(!e.contains("s3cr3t-value") && !e.contains(":pw@"), "{e}");
    }
    let raw = serde_yaml_from("endpoint: http://127.0.0.1:9000\nbucket: mail\naccess_key: a\n");
    let e = validate(raw).unwrap_err().to_string();
    assert!(
        e.contains("storage.secret_key") && e.contains("secret_key_file"),
        "{e}"
    );
    let raw = serde_yaml_from("bucket: mail\naccess_key: a\nsecret_key: b\n");
    assert!(validate(raw)
        .unwrap_err()
        .to_string()
        .contains("storage.endpoint"));
    assert!(storage("url_expiry: 7d\n").is_ok());
}

const STORE: &str = "storage:\n  endpoint: http://127.0.0.1:9000\n  bucket: mail\n  access_key: AKIA\n  secret_key: s3cr3t-value\n";

fn config(webhook: &str, storage: &str) -> Result<crate::config::Config, String> {
    crate::config::from_yaml(&format!(
            "webhook:\n  url: http://127.0.0.1:8080/inbound\n{webhook}mailboxes:\n  - name: box\n    host: pop.example.com\n    username: u\n    password: p\n{storage}"
        ))
        .map_err(|e| e.to_string())
}

#[test]
fn store_modes_need_a_storage_section_and_the_standard_format() {
    let ok = config(
        "  attachments: store\n  store_larger_than: 1000\n  raw: store\n",
        STORE,
    )
    .unwrap();
    let hook = &ok.mailboxes[0].event;
    assert!(hook.storage.is_some() && hook.raw_store && !hook.include_raw);
    assert_eq!(hook.store_larger_than, 1000);
    assert!(ok.storage.is_some());
    assert!(!format!("{ok:?}").contains("s3cr3t-value"));

    // A store that nothing uses is not handed to the webhook.
    let unused = config("", STORE).unwrap();
    assert!(unused.mailboxes[0].event.storage.is_none());

    let e = config("  attachments: store\n", "").unwrap_err();
    assert!(
        e.contains("mailboxes[0].webhook.attachments") && e.contains("`storage` section"),
        "{e}"
    );
    let e = config("  raw: store\n", "").unwrap_err();
    assert!(
        e.contains("mailboxes[0].webhook.raw") && e.contains("`storage` section"),
        "{e}"
    );
    let e = config("  attachments: store\n  format: postmark\n", STORE).unwrap_err();
    assert!(
        e.contains("`format: standard`") && e.contains("postmark"),
        "{e}"
    );
    let e = config("  raw: store\n  include_raw: true\n", STORE).unwrap_err();
    assert!(e.contains("choose one"), "{e}");
    let inline = config("  raw: inline\n", "").unwrap();
    assert!(inline.mailboxes[0].event.include_raw);
    let e = config("  raw: links\n", "").unwrap_err();
    assert!(e.contains("raw"), "{e}");
    let e = config("", "storage:\n  endpoint: http://127.0.0.1:9000\n  bucket: b\n  access_key: a\n  secret_key: s\n  url_expiry: 30d\n").unwrap_err();
    assert!(
        e.contains("storage.url_expiry") && e.contains("7 days"),
        "{e}"
    );
}

#[test]
fn credentials_come_inline_from_files_or_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from-file\n").unwrap();
    let yaml = format!(
            "endpoint: http://127.0.0.1:9000\nbucket: mail\naccess_key_env: POPHOOK_TEST_STORAGE_ACCESS\nsecret_key_file: {}\n",
            file.display()
        );
    std::env::set_var("POPHOOK_TEST_STORAGE_ACCESS", "from-env");
    let s = validate(serde_yaml_from(&yaml)).unwrap();
    assert_eq!(s.access_key.expose(), "from-env");
    assert_eq!(s.secret_key.expose(), "from-file");
    let both = "endpoint: http://127.0.0.1:9000\nbucket: mail\naccess_key: a\nsecret_key: b\nsecret_key_env: X\n";
    let e = validate(serde_yaml_from(both)).unwrap_err().to_string();
    assert!(
        e.contains("set only one of `secret_key`, `secret_key_file` and `secret_key_env`"),
        "{e}"
    );
}

#[test]
fn debug_never_shows_the_credentials() {
    let s = storage("").unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("s3cr3t-value") && !shown.contains("AKIA"),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"));
}

#[test]
fn error_answers_are_classified_by_code_then_status() {
    let at = || Place {
        endpoint: "http://h/".into(),
        bucket: "b".into(),
        key: "k".into(),
    };
    let xml = |code: &str| {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
    };
    assert!(matches!(
        classify(404, xml("NoSuchBucket").as_bytes(), at()),
        StorageError::MissingBucket { .. }
    ));
    assert!(matches!(
        classify(403, xml("SignatureDoesNotMatch").as_bytes(), at()),
        StorageError::BadCredentials { .. }
    ));
    assert!(matches!(
        classify(403, xml("InvalidAccessKeyId").as_bytes(), at()),
        StorageError::BadCredentials { .. }
    ));
    assert!(matches!(
        classify(403, xml("AccessDenied").as_bytes(), at()),
        StorageError::NoPermission { .. }
    ));
    assert!(matches!(
        classify(403, b"", at()),
        StorageError::NoPermission { .. }
    ));
    assert!(matches!(
        classify(503, xml("SlowDown").as_bytes(), at()),
        StorageError::Status { status: 503, .. }
    ));
    assert_eq!(
        s3_code(b"<Code>a<b</Code>"),
        None,
        "only a plain code is repeated"
    );
}
