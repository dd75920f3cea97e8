use super::*;

const TOKEN: &str = "rt-rotated-0123456789-abcdefghijklmnopqrstuvwxyz";

fn url() -> Url {
    Url::parse("https://login.example.com/token").unwrap()
}

fn key() -> [u8; 32] {
    seal_key("box", &url(), "client", &Secret::new("rt-configured"))
}

#[test]
fn a_sealed_token_opens_with_its_key() {
    for token in ["r", TOKEN, &"x".repeat(2000)] {
        let sealed = seal(&key(), &Secret::new(token));
        assert_eq!(sealed[0], SEALED_VERSION);
        // version ‖ nonce ‖ ciphertext ‖ 16-byte tag
        assert_eq!(sealed.len(), 1 + NONCE_LEN + token.len() + 16);
        assert_eq!(unseal(&key(), &sealed), Some(Secret::new(token)));
    }
}

#[test]
fn a_token_sealed_for_another_configuration_does_not_open() {
    let sealed = seal(&key(), &Secret::new(TOKEN));
    let other_url = Url::parse("https://login.example.org/token").unwrap();
    let configured = Secret::new("rt-configured");
    for (what, other) in [
        (
            "mailbox",
            seal_key("other-box", &url(), "client", &configured),
        ),
        (
            "token url",
            seal_key("box", &other_url, "client", &configured),
        ),
        (
            "client",
            seal_key("box", &url(), "other-client", &configured),
        ),
        (
            "configured token (a new consent)",
            seal_key("box", &url(), "client", &Secret::new("rt-new-consent")),
        ),
    ] {
        assert_ne!(other, key(), "{what}");
        assert_eq!(unseal(&other, &sealed), None, "another {what}");
    }
}

#[test]
fn any_flipped_bit_or_cut_does_not_open() {
    let sealed = seal(&key(), &Secret::new(TOKEN));
    // Every bit: the version byte, the nonce, the ciphertext and the tag.
    for bit in 0..sealed.len() * 8 {
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(unseal(&key(), &tampered), None, "bit {bit} flipped");
    }
    for len in 0..sealed.len() {
        assert_eq!(unseal(&key(), &sealed[..len]), None, "cut to {len} bytes");
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(unseal(&key(), &longer), None, "a byte appended");
}

#[test]
fn a_token_sealed_by_version_1_does_not_open() {
    // Made by the version-1 construction (HMAC-SHA256 keystream and tag; unreleased)
    // with `key()`, nonce 00..0f, for "rt-rotated-by-an-older-pophook": its own
    // unseal opened it.
    let hex = "01000102030405060708090a0b0c0d0e0f\
               ac7a4611614d54115391e453a15300026a7b79fa0ce89b8f4e4b7c69fd2a9bb6\
               db4118482a3a982f55e8e89da5046153837589a632aff410ecd20d383b23";
    let v1: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(unseal(&key(), &v1), None);
    // Nor does a current one relabelled as version 1.
    let mut relabelled = seal(&key(), &Secret::new(TOKEN));
    relabelled[0] = 1;
    assert_eq!(unseal(&key(), &relabelled), None);
}

#[test]
fn each_seal_draws_a_fresh_nonce() {
    let token = Secret::new(TOKEN);
    let sealed: Vec<Vec<u8>> = (0..100).map(|_| seal(&key(), &token)).collect();
    for (i, a) in sealed.iter().enumerate() {
        for b in &sealed[i + 1..] {
            assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN], "a nonce repeated");
            assert_ne!(a, b);
        }
    }
}

#[test]
fn the_sealed_bytes_never_hold_the_token() {
    for _ in 0..100 {
        let sealed = seal(&key(), &Secret::new(TOKEN));
        // No 6-byte run of the token, anywhere in the blob.
        for needle in TOKEN.as_bytes().windows(6) {
            assert!(
                !sealed.windows(needle.len()).any(|w| w == needle),
                "the sealed token holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
}
