//! Key rotation and asymmetric signatures, as a receiver sees them: with two `whsec_`
//! secrets and one `whsk_` key configured, the official Standard Webhooks library
//! verifies the request with either secret alone, an independent ed25519
//! implementation (Python's `cryptography`) verifies the `v1a` signature with the public
//! key `pophook keygen` printed, and `pophook receive` accepts it with that public key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::Receive;
use common::receiver::Receiver;
use common::scripted::Scripted;
use common::setup::{config, hook, message, scripted_mailbox};

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_bmV3IGtleSBvZiBlbm91Z2ggbGVuZ3RoIGZvciBobWFj";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `pophook keygen`: (secret key, public key).
fn keygen() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pophook"))
        .arg("keygen")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut keys = stdout.lines().filter(|l| !l.starts_with('#'));
    let secret = keys.next().unwrap().to_string();
    let public = keys.next().unwrap().to_string();
    assert!(
        secret.starts_with("whsk_") && public.starts_with("whpk_"),
        "{stdout}"
    );
    (secret, public)
}

/// A Python that can `import cryptography`: the system's, or one in a venv made under
/// `dir` with `cryptography` installed from PyPI. Panics naming what is missing.
fn python_with_cryptography(dir: &Path) -> PathBuf {
    let has = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import cryptography.hazmat.primitives.asymmetric.ed25519",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let system = PathBuf::from("python3");
    if has(&system) {
        return system;
    }
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is needed to verify v1a signatures independently");
    assert!(
        made.success(),
        "python3 -m venv failed (apt-get install python3-venv)"
    );
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "cryptography"])
        .status()
        .unwrap();
    assert!(installed.success(), "pip install cryptography failed");
    assert!(has(&python));
    python
}

/// Verifies `signature` (base64) over `{id}.{timestamp}.{body}` with the ed25519 public
/// key (base64 of 32 bytes) in Python; true when it verifies.
fn python_verifies(python: &Path, public: &str, signature: &str, content: &[u8]) -> bool {
    const SCRIPT: &str = r#"
import base64, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sys.argv[1]))
try:
    key.verify(base64.b64decode(sys.argv[2]), sys.stdin.buffer.read())
except InvalidSignature:
    sys.exit(3)
"#;
    let mut child = Command::new(python)
        .args(["-c", SCRIPT, public, signature])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(content).unwrap();
    let status = child.wait().unwrap();
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "the Python verifier failed: {status}"
    );
    status.success()
}

fn header_map(request: &common::receiver::Recorded) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn receivers_verify_with_either_rotated_secret_and_with_the_ed25519_public_key() {
    let (secret_key, public_key) = keygen();
    let server = Scripted::with_messages(vec![message(1)]).await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(
            &receiver.url(),
            &format!("  secret: [{OLD}, {NEW}, \"{secret_key}\"]"),
        ),
        &scripted_mailbox("box", server.port(), ""),
    );
    let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let request = &receiver.accepted()[0];
    let headers = header_map(request);
    let signatures: Vec<&str> = request
        .header("webhook-signature")
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(signatures.len(), 3, "{signatures:?}");

    // Before and after the rotation, a receiver holding one secret verifies.
    for secret in [OLD, NEW] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&request.body, &headers)
            .unwrap_or_else(|e| panic!("{secret}: {e:?}"));
    }
    let stranger = "whsec_c3RyYW5nZXIga2V5IG9mIGVub3VnaCBsZW5ndGg=";
    assert!(standardwebhooks::Webhook::new(stranger)
        .unwrap()
        .verify(&request.body, &headers)
        .is_err());

    // The v1a signature, checked by an implementation that is not pophook's.
    let v1a = signatures
        .iter()
        .find_map(|s| s.strip_prefix("v1a,"))
        .expect("a v1a signature");
    let content = [
        request.header("webhook-id").unwrap().as_bytes(),
        b".",
        request.header("webhook-timestamp").unwrap().as_bytes(),
        b".",
        &request.body,
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let python = python_with_cryptography(dir.path());
    let public = public_key.strip_prefix("whpk_").unwrap();
    assert!(python_verifies(&python, public, v1a, &content));
    let mut tampered = content.clone();
    tampered.push(b' ');
    assert!(!python_verifies(&python, public, v1a, &tampered));

    // Nothing printed the secret key.
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let check = tokio::task::block_in_place(|| cfg.pophook(&["check"]));
    let printed = format!("{printed}{}{}", text(&check.stdout), text(&check.stderr));
    assert!(!printed.contains(&secret_key[5..]), "{printed}");
}

/// `pophook receive` with the public key (and an unrelated secret beside it) accepts
/// pophook's requests; with only another key it answers 401, so nothing is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn pophook_receive_verifies_v1a_with_the_public_key() {
    let (secret_key, public_key) = keygen();
    let (_, other_public) = keygen();
    for (keys, delivered) in [
        (format!("{OLD},{public_key}"), true),
        (other_public.clone(), false),
    ] {
        let receive = Receive::start(&keys).await;
        let server = Scripted::with_messages(vec![message(1)]).await;
        let cfg = config(
            &hook(
                &receive.url("/inbound"),
                &format!("  secret: \"{secret_key}\"\n  retry: {{schedule: [1h]}}"),
            ),
            &scripted_mailbox("box", server.port(), ""),
        );
        let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
        assert_eq!(
            out.status.success(),
            delivered,
            "keys {keys}: {}",
            text(&out.stderr)
        );
        assert_eq!(server.remaining().is_empty(), delivered);
        let printed = receive.stop().await;
        match delivered {
            true => assert!(printed.contains("[box]"), "{printed}"),
            false => assert!(printed.contains("bad signature"), "{printed}"),
        }
    }
}
