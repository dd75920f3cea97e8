//! The `webhook-signature` header of the Standard Webhooks specification: every
//! configured key signs, and the signatures go space-separated into one header, so a
//! receiver can rotate keys without a moment where nothing verifies. A `whsec_` secret
//! signs `v1,` (HMAC-SHA256); a `whsk_` ed25519 secret key signs `v1a,`, which
//! receivers verify with the `whpk_` public key and so never hold a key that signs.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey as Ed25519Secret, VerifyingKey as Ed25519Public};

use crate::secret::Secret;

const SECRET_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// One key pophook signs with.
#[derive(Clone)]
pub enum SigningKey {
    /// The HMAC key, as base64 (the part after `whsec_`).
    Hmac(Secret),
    Ed25519(Ed25519Secret),
}

/// Never the key itself.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Hmac(_) => f.write_str("Hmac([redacted])"),
            SigningKey::Ed25519(_) => f.write_str("Ed25519([redacted])"),
        }
    }
}

impl SigningKey {
    /// A `whsk_` ed25519 secret key, or else a `whsec_` HMAC secret (the prefix may be
    /// left out, as before). Errors name the problem, never the value.
    pub fn parse(secret: &Secret) -> Result<SigningKey, &'static str> {
        match secret.expose().strip_prefix(SECRET_KEY_PREFIX) {
            Some(encoded) => ed25519_secret(encoded).map(SigningKey::Ed25519),
            None => crate::delivery::signing_key(secret).map(SigningKey::Hmac),
        }
    }

    /// `v1,<base64 HMAC>` or `v1a,<base64 ed25519 signature>` of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        match self {
            SigningKey::Hmac(key) => crate::delivery::sign(key, id, timestamp, body),
            SigningKey::Ed25519(key) => {
                let signature = key.sign(&signed_content(id, timestamp, body));
                format!("v1a,{}", BASE64.encode(signature.to_bytes()))
            }
        }
    }

    /// What identifies the key in a webhook configuration's fingerprint: the key bytes
    /// after a tag, hashed there and never stored.
    pub fn fingerprint_part(&self) -> (u8, Vec<u8>) {
        match self {
            SigningKey::Hmac(key) => (1, key.expose().as_bytes().to_vec()),
            SigningKey::Ed25519(key) => (5, key.to_bytes().to_vec()),
        }
    }

    /// The `whpk_` public key receivers verify with; `None` for an HMAC secret.
    pub fn public_key(&self) -> Option<String> {
        match self {
            SigningKey::Hmac(_) => None,
            SigningKey::Ed25519(key) => Some(public_key_text(&key.verifying_key())),
        }
    }
}

/// [`signature_header`] over a body given piece by piece, in order. `None` when a key
/// is ed25519, which needs the body whole.
pub fn signature_header_pieces(
    keys: &[SigningKey],
    id: &str,
    timestamp: u64,
    pieces: impl Iterator<Item = bytes::Bytes>,
) -> Option<String> {
    let mut macs = keys
        .iter()
        .map(|key| match key {
            SigningKey::Hmac(key) => Some(crate::delivery::signing_mac(key, id, timestamp)),
            SigningKey::Ed25519(_) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    use hmac::Mac as _;
    for piece in pieces {
        for mac in &mut macs {
            mac.update(&piece);
        }
    }
    Some(
        macs.into_iter()
            .map(crate::delivery::v1_signature)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The header value for `keys`: every signature, space-separated, in the order the keys
/// are configured.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| key.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A key a receiver checks signatures with.
#[derive(Clone)]
pub enum VerifyingKey {
    /// The HMAC key, as base64.
    Hmac(Secret),
    Ed25519(Ed25519Public),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyingKey::Hmac(_) => f.write_str("Hmac([redacted])"),
            VerifyingKey::Ed25519(key) => write!(f, "Ed25519({})", public_key_text(key)),
        }
    }
}

impl VerifyingKey {
    /// A `whpk_` public key, a `whsk_` secret key (its public half is used) or a
    /// `whsec_` secret.
    pub fn parse(text: &str) -> Result<VerifyingKey, &'static str> {
        let text = text.trim();
        if let Some(encoded) = text.strip_prefix(PUBLIC_KEY_PREFIX) {
            let bytes: [u8; 32] = BASE64
                .decode(encoded)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or("not an ed25519 public key: expected `whpk_` followed by the base64 of 32 bytes (`pophook keygen` prints one)")?;
            return Ed25519Public::from_bytes(&bytes)
                .map(VerifyingKey::Ed25519)
                .map_err(|_| "not a valid ed25519 public key");
        }
        match SigningKey::parse(&Secret::new(text))? {
            SigningKey::Hmac(key) => Ok(VerifyingKey::Hmac(key)),
            SigningKey::Ed25519(key) => Ok(VerifyingKey::Ed25519(key.verifying_key())),
        }
    }

    /// Whether `candidate` (one entry of the header, `v1,…` or `v1a,…`) is this key's
    /// signature of the message.
    pub fn verifies(&self, candidate: &str, id: &str, timestamp: u64, body: &[u8]) -> bool {
        match self {
            VerifyingKey::Hmac(key) => {
                let expected = crate::delivery::sign(key, id, timestamp, body);
                constant_time_eq(candidate.as_bytes(), expected.as_bytes())
            }
            VerifyingKey::Ed25519(key) => {
                let Some(encoded) = candidate.strip_prefix("v1a,") else {
                    return false;
                };
                let Some(bytes) = BASE64
                    .decode(encoded)
                    .ok()
                    .and_then(|b| <[u8; 64]>::try_from(b).ok())
                else {
                    return false;
                };
                let signature = ed25519_dalek::Signature::from_bytes(&bytes);
                key.verify_strict(&signed_content(id, timestamp, body), &signature)
                    .is_ok()
            }
        }
    }
}

/// A new ed25519 key pair: the `whsk_` secret key (the 32-byte seed followed by the
/// public key, as NaCl-style libraries write it) and the `whpk_` public key.
pub fn keygen() -> (Secret, String) {
    let key = Ed25519Secret::from_bytes(&rand::random::<[u8; 32]>());
    let mut bytes = key.to_bytes().to_vec();
    bytes.extend_from_slice(key.verifying_key().as_bytes());
    let secret = Secret::new(format!("{SECRET_KEY_PREFIX}{}", BASE64.encode(&bytes)));
    (secret, public_key_text(&key.verifying_key()))
}

fn public_key_text(key: &Ed25519Public) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(key.as_bytes()))
}

/// The base64 after `whsk_`: a 32-byte seed, or the seed followed by its public key
/// (which must match, so a key pasted from two places is caught).
fn ed25519_secret(encoded: &str) -> Result<Ed25519Secret, &'static str> {
    const SHAPE: &str = "not an ed25519 secret key: expected `whsk_` followed by the base64 of 32 or 64 bytes (`pophook keygen` prints one)";
    let bytes = BASE64.decode(encoded).map_err(|_| SHAPE)?;
    let seed: [u8; 32] = bytes
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or(SHAPE)?;
    let key = Ed25519Secret::from_bytes(&seed);
    match bytes.len() {
        32 => Ok(key),
        64 if bytes[32..] == key.verifying_key().as_bytes()[..] => Ok(key),
        64 => Err("the ed25519 secret key's second half is not its public key; copy the whole `whsk_` value that `pophook keygen` printed"),
        _ => Err(SHAPE),
    }
}

/// What is signed: `{id}.{timestamp}.{body}`.
fn signed_content(id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// Compares without stopping at the first difference, so timing does not reveal how
/// much of a forged signature was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn every_key_signs_and_each_signature_verifies_with_its_own_key_only() {
        let (secret, public) = keygen();
        let keys = [
            SigningKey::parse(&Secret::new(WHSEC)).unwrap(),
            SigningKey::parse(&secret).unwrap(),
        ];
        assert_eq!(keys[1].public_key().as_deref(), Some(public.as_str()));
        let header = signature_header(&keys, "msg_1", 1614265330, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert!(parts[0].starts_with("v1,") && parts[1].starts_with("v1a,"));

        let hmac = VerifyingKey::parse(WHSEC).unwrap();
        let ed = VerifyingKey::parse(&public).unwrap();
        assert!(hmac.verifies(parts[0], "msg_1", 1614265330, b"{}"));
        assert!(!hmac.verifies(parts[1], "msg_1", 1614265330, b"{}"));
        assert!(ed.verifies(parts[1], "msg_1", 1614265330, b"{}"));
        assert!(!ed.verifies(parts[1], "msg_1", 1614265330, b"{ }"));
        assert!(!ed.verifies(parts[1], "msg_2", 1614265330, b"{}"));
        assert!(!ed.verifies(parts[0], "msg_1", 1614265330, b"{}"));
        // The secret key verifies as its public half.
        let from_secret = VerifyingKey::parse(secret.expose()).unwrap();
        assert!(from_secret.verifies(parts[1], "msg_1", 1614265330, b"{}"));
    }

    /// RFC 8032, section 7.1, test 1: the empty message is not what pophook signs, but
    /// the seed-to-key derivation and the signature bytes are the standard ones.
    #[test]
    fn a_32_byte_seed_gives_the_rfc_8032_public_key() {
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let seed: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let key =
            SigningKey::parse(&Secret::new(format!("whsk_{}", BASE64.encode(&seed)))).unwrap();
        let public = key.public_key().unwrap();
        let bytes = BASE64
            .decode(public.strip_prefix("whpk_").unwrap())
            .unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for bad in ["whsk_bm90IGEga2V5", "whsk_!!!", "whpk_c2hvcnQ="] {
            let error = match bad.starts_with("whpk_") {
                true => VerifyingKey::parse(bad).unwrap_err(),
                false => SigningKey::parse(&Secret::new(bad)).unwrap_err(),
            };
            assert!(!error.contains(bad), "{error}");
        }
        let (secret, _) = keygen();
        let mut bytes = BASE64
            .decode(secret.expose().strip_prefix("whsk_").unwrap())
            .unwrap();
        bytes[40] ^= 1;
        let mixed = Secret::new(format!("whsk_{}", BASE64.encode(&bytes)));
        assert!(SigningKey::parse(&mixed)
            .unwrap_err()
            .contains("public key"));
        assert_eq!(
            format!("{:?}", SigningKey::parse(&secret).unwrap()),
            "Ed25519([redacted])"
        );
    }
}
