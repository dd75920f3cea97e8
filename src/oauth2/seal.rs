//! Sealing a rotated refresh token before it goes into the state: the state alone
//! must not reveal it, and a token stored for another configuration must not open.

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{Key, KeyInit as _, XChaCha20Poly1305, XNonce};
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

const SEALED_VERSION: u8 = 2;
const NONCE_LEN: usize = 24;

/// XChaCha20-Poly1305 (RustCrypto): its 24-byte nonce is large enough to draw at random
/// for every seal. Layout: version ‖ nonce ‖ ciphertext+tag. The version byte is the
/// associated data, so it cannot be swapped without the tag failing; the mailbox, the
/// token endpoint and the client are bound through the key (`seal_key`).
pub(super) fn seal(key: &[u8; 32], token: &Secret) -> Vec<u8> {
    let nonce = XNonce::from(rand::random::<[u8; NONCE_LEN]>());
    let header = [SEALED_VERSION];
    let body = cipher(key)
        .encrypt(
            &nonce,
            Payload {
                msg: token.expose().as_bytes(),
                aad: &header,
            },
        )
        .expect("a refresh token is far below the cipher's length limit");
    [&header[..], nonce.as_slice(), &body].concat()
}

/// The token, when `sealed` was made by this version with `key` and is intact. One
/// sealed by an older pophook (version 1, unreleased) or for another configuration
/// does not open.
pub(super) fn unseal(key: &[u8; 32], sealed: &[u8]) -> Option<Secret> {
    let (header, rest) = sealed.split_at_checked(1)?;
    if header != [SEALED_VERSION] {
        return None;
    }
    let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
    let nonce = XNonce::try_from(nonce).ok()?;
    let token = cipher(key)
        .decrypt(
            &nonce,
            Payload {
                msg: body,
                aad: header,
            },
        )
        .ok()?;
    String::from_utf8(token).ok().map(Secret::new)
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key))
}

#[cfg(test)]
mod tests;
