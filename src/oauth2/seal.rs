//! Sealing a rotated refresh token before it goes into the state: the state alone
//! must not reveal it, and a token stored for another configuration must not open.

use url::Url;

use crate::secret::Secret;

/// The key a refresh token is sealed with in the state: derived from the configured
/// refresh token and where it is used, so the state alone does not reveal the token,
/// and a stored token from another configuration (a new consent) does not open.
pub(super) fn seal_key(
    mailbox: &str,
    token_url: &Url,
    client_id: &str,
    configured: &Secret,
) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in [
        "pophook oauth2 refresh token v1",
        mailbox,
        token_url.as_str(),
        client_id,
        configured.expose(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().into()
}

const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;

/// Encrypt-then-MAC with HMAC-SHA256 alone (already a dependency, for signing): the
/// keystream is HMAC(enc key, nonce ‖ counter) in counter mode, the tag
/// HMAC(mac key, nonce ‖ ciphertext). Layout: version ‖ nonce ‖ tag ‖ ciphertext.
pub(super) fn seal(key: &[u8; 32], token: &Secret) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut body = token.expose().as_bytes().to_vec();
    apply_keystream(key, &nonce, &mut body);
    let tag = tag(key, &nonce, &body);
    let mut out = vec![SEALED_VERSION];
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&body);
    out
}

/// The token, when `sealed` was made with `key` and is intact.
pub(super) fn unseal(key: &[u8; 32], sealed: &[u8]) -> Option<Secret> {
    use hmac::Mac as _;
    let (&version, rest) = sealed.split_first()?;
    if version != SEALED_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (tag, body) = rest.split_at(TAG_LEN);
    let mut mac = mac(key, b"mac");
    mac.update(nonce);
    mac.update(body);
    mac.verify_slice(tag).ok()?;
    let mut body = body.to_vec();
    apply_keystream(key, nonce, &mut body);
    String::from_utf8(body).ok().map(Secret::new)
}

pub(super) fn mac(key: &[u8; 32], purpose: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac as _;
    let mut derive =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    derive.update(purpose);
    let subkey = derive.finalize().into_bytes();
    hmac::Hmac::<sha2::Sha256>::new_from_slice(&subkey).expect("HMAC accepts any key length")
}

pub(super) fn tag(key: &[u8; 32], nonce: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
    use hmac::Mac as _;
    let mut mac = mac(key, b"mac");
    mac.update(nonce);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

pub(super) fn apply_keystream(key: &[u8; 32], nonce: &[u8], data: &mut [u8]) {
    use hmac::Mac as _;
    for (counter, chunk) in data.chunks_mut(32).enumerate() {
        let mut block = mac(key, b"enc");
        block.update(nonce);
        block.update(&(counter as u64).to_be_bytes());
        let stream = block.finalize().into_bytes();
        for (byte, key_byte) in chunk.iter_mut().zip(stream.iter()) {
            *byte ^= key_byte;
        }
    }
}
