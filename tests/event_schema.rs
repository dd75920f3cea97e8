//! `docs/event.schema.json` is what receivers code against: every event pophook can
//! build must validate, and the schema must refuse events that are not pophook's.

use std::path::PathBuf;

use jsonschema::Validator;
use pophook::event::{build_event, AttachmentMode, EventMeta};
use serde_json::{json, Value};
use time::macros::datetime;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/event.schema.json");
const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eml");

fn schema() -> Value {
    let text = std::fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("{SCHEMA}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{SCHEMA} is not JSON: {e}"))
}

fn validator() -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap_or_else(|e| panic!("{SCHEMA} does not compile: {e}"))
}

fn meta(mode: AttachmentMode, include_raw: bool, max: Option<u64>) -> EventMeta<'static> {
    EventMeta {
        mailbox: "support",
        uidl: "UID1",
        received_at: datetime!(2024-03-16 12:00:00 UTC),
        include_raw,
        truncated: false,
        attachments: mode,
        max_inline_attachment_size: max,
    }
}

fn golden_messages() -> Vec<(PathBuf, Vec<u8>)> {
    let mut emls: Vec<PathBuf> = std::fs::read_dir(GOLDEN_DIR)
        .unwrap_or_else(|e| panic!("cannot read {GOLDEN_DIR}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    emls.sort();
    assert!(!emls.is_empty(), "no .eml files in {GOLDEN_DIR}");
    emls.into_iter()
        .map(|path| {
            let raw = std::fs::read(&path).unwrap();
            (path, raw)
        })
        .collect()
}

fn event_json(meta: &EventMeta<'_>, raw: &[u8]) -> Value {
    serde_json::to_value(build_event(meta, raw)).unwrap()
}

fn errors(validator: &Validator, event: &Value) -> Option<String> {
    let errors = validator.iter_errors(event).into_errors();
    (!errors.is_empty()).then(|| errors.to_string())
}

#[test]
fn the_schema_is_valid_draft_2020_12_and_every_object_requires_all_its_fields() {
    let schema = schema();
    jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{SCHEMA}: {e}"));

    // The events have no optional fields (absent things are null or []), so every
    // object schema must be closed and require each property it names.
    fn check(path: &str, node: &Value, objects: &mut usize) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    if map.get("type") == Some(&json!("object")) {
                        *objects += 1;
                        assert_eq!(
                            map.get("additionalProperties"),
                            Some(&json!(false)),
                            "{path}: additionalProperties must be false"
                        );
                        let mut required: Vec<&str> = map["required"]
                            .as_array()
                            .unwrap_or_else(|| panic!("{path}: no required list"))
                            .iter()
                            .map(|name| name.as_str().unwrap())
                            .collect();
                        let mut named: Vec<&str> = properties.keys().map(String::as_str).collect();
                        required.sort_unstable();
                        named.sort_unstable();
                        assert_eq!(required, named, "{path}: required vs properties");
                    }
                }
                for (key, value) in map {
                    check(&format!("{path}/{key}"), value, objects);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| check(path, item, objects)),
            _ => {}
        }
    }
    let mut objects = 0;
    check("#", &schema, &mut objects);
    // event, data, address, header, attachment, authentication_results, spam
    assert_eq!(objects, 7);
}

#[test]
fn every_golden_message_validates_in_every_mode() {
    let validator = validator();
    let modes = [
        AttachmentMode::Inline,
        AttachmentMode::Metadata,
        AttachmentMode::Omit,
    ];
    let mut failures = Vec::new();
    // What the events covered, so this test cannot pass on events without the
    // interesting shapes.
    let (mut inline, mut omitted, mut auth, mut bounce, mut auto_reply) = (0, 0, 0, 0, 0);
    let (mut spam, mut stripped) = (0, 0);
    for (path, raw) in golden_messages() {
        for mode in modes {
            for include_raw in [false, true] {
                for max in [None, Some(64)] {
                    let meta = meta(mode, include_raw, max);
                    let event = event_json(&meta, &raw);
                    if let Some(errors) = errors(&validator, &event) {
                        failures.push(format!(
                            "{} ({mode:?}, include_raw {include_raw}, max {max:?}):\n{errors}",
                            path.display()
                        ));
                    }
                    let data = &event["data"];
                    for attachment in data["attachments"].as_array().unwrap() {
                        match attachment["content_omitted"].as_bool().unwrap() {
                            true => omitted += 1,
                            false => inline += 1,
                        }
                    }
                    auth += usize::from(!data["authentication_results"].is_null());
                    bounce += usize::from(data["bounce"] == json!(true));
                    auto_reply += usize::from(data["auto_reply"] == json!(true));
                    spam += usize::from(!data["spam"].is_null());
                    stripped += usize::from(!data["stripped_text"].is_null());
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (what, count) in [
        ("inline attachments", inline),
        ("omitted attachments", omitted),
        ("authentication_results", auth),
        ("bounces", bounce),
        ("auto-replies", auto_reply),
        ("spam verdicts", spam),
        ("stripped replies", stripped),
    ] {
        assert!(count > 0, "no golden event had {what}");
    }
}

#[test]
fn truncated_and_unparseable_messages_validate() {
    let validator = validator();
    let truncated = EventMeta {
        truncated: true,
        ..meta(AttachmentMode::Inline, false, None)
    };
    let event = event_json(&truncated, b"From: a@example.com\r\nSubject: hi\r\n\r\n");
    assert_eq!(errors(&validator, &event), None);

    for raw in [&b""[..], b"\r\n\r\njust a body, no header section\r\n"] {
        for mode in [AttachmentMode::Inline, AttachmentMode::Omit] {
            let event = event_json(&meta(mode, false, None), raw);
            assert!(event["data"]["parse_error"].is_string(), "{raw:?}");
            assert_eq!(errors(&validator, &event), None, "{raw:?}");
        }
    }
}

#[test]
fn events_pophook_would_not_send_are_refused() {
    let validator = validator();
    let golden = |name: &str| {
        let (_, raw) = golden_messages()
            .into_iter()
            .find(|(path, _)| {
                path.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(name)
            })
            .unwrap_or_else(|| panic!("no golden message {name}"));
        event_json(&meta(AttachmentMode::Inline, false, None), &raw)
    };
    let with_attachments = golden("004-");
    let with_auth = golden("014-");
    let with_spam = golden("033-");
    assert_eq!(errors(&validator, &with_attachments), None);
    assert_eq!(errors(&validator, &with_auth), None);
    assert_eq!(errors(&validator, &with_spam), None);

    type Mutation = fn(&mut Value);
    let broken: [(&str, &Value, Mutation); 21] = [
        ("no data.id", &with_attachments, |e| {
            e["data"].as_object_mut().unwrap().remove("id");
        }),
        ("size as a string", &with_attachments, |e| {
            e["data"]["size"] = json!("1234");
        }),
        ("negative size", &with_attachments, |e| {
            e["data"]["size"] = json!(-1)
        }),
        ("an unknown field", &with_attachments, |e| {
            e["data"]["spam_score"] = json!(5);
        }),
        ("another event type", &with_attachments, |e| {
            e["type"] = json!("email.sent");
        }),
        ("a timestamp that is not RFC 3339", &with_attachments, |e| {
            e["timestamp"] = json!("yesterday");
        }),
        ("an id that is not ours", &with_attachments, |e| {
            e["data"]["id"] = json!("12345");
        }),
        ("bounce as a string", &with_attachments, |e| {
            e["data"]["bounce"] = json!("no");
        }),
        (
            "an address without its address field",
            &with_attachments,
            |e| {
                e["data"]["from"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("address");
            },
        ),
        ("content both omitted and present", &with_attachments, |e| {
            e["data"]["attachments"][0]["content_omitted"] = json!(true);
        }),
        ("content missing but not omitted", &with_attachments, |e| {
            e["data"]["attachments"][0]["content_base64"] = Value::Null;
        }),
        ("an unknown disposition", &with_attachments, |e| {
            e["data"]["attachments"][0]["disposition"] = json!("attached");
        }),
        ("a parse error without raw", &with_attachments, |e| {
            e["data"]["parse_error"] = json!("could not parse");
        }),
        ("an unknown verdict", &with_auth, |e| {
            e["data"]["authentication_results"]["spf"] = json!("maybe");
        }),
        ("a verdict in upper case", &with_auth, |e| {
            e["data"]["authentication_results"]["dkim"] = json!("PASS");
        }),
        ("spam flagged as a string", &with_spam, |e| {
            e["data"]["spam"]["flagged"] = json!("yes");
        }),
        ("a spam score as a string", &with_spam, |e| {
            e["data"]["spam"]["score"] = json!("6");
        }),
        ("a spam source pophook does not read", &with_spam, |e| {
            e["data"]["spam"]["source"] = json!("x-my-filter");
        }),
        ("spam without its source", &with_spam, |e| {
            e["data"]["spam"].as_object_mut().unwrap().remove("source");
        }),
        ("stripped_text as a list", &with_spam, |e| {
            e["data"]["stripped_text"] = json!(["Yes"]);
        }),
        ("authentication_results without dmarc", &with_auth, |e| {
            let results = e["data"]["authentication_results"].as_object_mut().unwrap();
            results.remove("dmarc");
        }),
    ];
    for (what, event, mutate) in broken {
        let mut event = event.clone();
        mutate(&mut event);
        assert!(
            !validator.is_valid(&event),
            "the schema accepted an event with {what}"
        );
    }
}
