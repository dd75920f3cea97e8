//! Who a message was delivered to: the envelope recipient the receiving server wrote
//! into the message, and its plus-address tag (`support+ticket-42@…` → `ticket-42`),
//! which receivers use to route replies to the right ticket or thread.

use mail_parser::{Address, Header, HeaderName};

/// Header fields that carry the envelope recipient, in the order they are trusted:
/// Postfix and Dovecot write `Delivered-To`, Postfix also `X-Original-To` (the address
/// before alias expansion), qmail and some forwarders `X-Envelope-To`.
const ENVELOPE_FIELDS: [&str; 3] = ["delivered-to", "x-original-to", "x-envelope-to"];

/// The envelope recipient from `raw`'s top-level `headers`: the first of
/// [`ENVELOPE_FIELDS`] that holds an address (the topmost occurrence, which the final
/// delivery wrote), else the first `To` address.
pub fn recipient(raw: &[u8], headers: &[Header<'_>]) -> Option<String> {
    for field in ENVELOPE_FIELDS {
        let found = headers
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(field))
            .find_map(|h| {
                let value = raw.get(h.offset_start as usize..h.offset_end as usize)?;
                address_in(&String::from_utf8_lossy(value))
            });
        if found.is_some() {
            return found;
        }
    }
    headers
        .iter()
        .filter(|h| h.name == HeaderName::To)
        .find_map(|h| match h.value.as_address()? {
            Address::List(list) => list.iter().find_map(|a| a.address.clone()),
            Address::Group(groups) => groups
                .iter()
                .flat_map(|g| &g.addresses)
                .find_map(|a| a.address.clone()),
        })
        .map(|address| address.into_owned())
}

/// The plus-address tag of `address`: what follows the first `+` in the local part.
/// `None` without a tag (an empty tag, `a+@x`, counts as none).
pub fn mailbox_hash(address: &str) -> Option<String> {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    let (_, tag) = local.split_once('+')?;
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// The first address in an envelope field's text: `<a@b>`, `a@b`, or the first of a
/// comma-separated list; `None` when there is no plausible address.
fn address_in(value: &str) -> Option<String> {
    let value = value.trim();
    let candidate = match value.find('<') {
        Some(start) => value[start + 1..].split('>').next()?,
        None => value.split([',', ' ', '\t', '\r', '\n']).next()?,
    };
    let candidate = candidate.trim();
    let plausible = candidate.contains('@')
        && !candidate.starts_with('@')
        && !candidate
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    plausible.then(|| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn of(message: &str) -> Option<String> {
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();
        recipient(message.as_bytes(), &parsed.parts[0].headers)
    }

    #[test]
    fn envelope_fields_win_over_to_in_their_order() {
        let to = "To: Team <team@example.com>, other@example.com\r\n";
        assert_eq!(
            of(&format!("{to}Subject: x\r\n\r\nbody")).as_deref(),
            Some("team@example.com")
        );
        assert_eq!(
            of(&format!(
                "X-Envelope-To: env@example.com\r\nX-Original-To: orig@example.com\r\n{to}\r\nbody"
            ))
            .as_deref(),
            Some("orig@example.com")
        );
        assert_eq!(
            of(&format!(
                "X-Original-To: orig@example.com\r\nDelivered-To: support+ticket-42@example.com\r\n\
                 Delivered-To: outer@example.com\r\n{to}\r\nbody"
            ))
            .as_deref(),
            Some("support+ticket-42@example.com"),
            "the topmost Delivered-To is the final delivery"
        );
        assert_eq!(
            of(&format!("X-Envelope-To: <env@example.com>\r\n{to}\r\nbody")).as_deref(),
            Some("env@example.com")
        );
    }

    #[test]
    fn unusable_envelope_fields_fall_through_and_no_recipient_is_none() {
        assert_eq!(
            of("Delivered-To: nobody\r\nTo: a@example.com\r\n\r\nx").as_deref(),
            Some("a@example.com")
        );
        assert_eq!(of("Subject: no recipient\r\n\r\nx"), None);
        assert_eq!(
            of("To: Undisclosed:;\r\nCc: c@example.com\r\n\r\nx"),
            None,
            "an empty group has no address, and Cc is not a recipient guess"
        );
    }

    #[test]
    fn the_mailbox_hash_is_the_plus_tag_of_the_local_part() {
        assert_eq!(
            mailbox_hash("support+ticket-42@example.com").as_deref(),
            Some("ticket-42")
        );
        assert_eq!(mailbox_hash("a+b+c@example.com").as_deref(), Some("b+c"));
        assert_eq!(mailbox_hash("support@example.com"), None);
        assert_eq!(mailbox_hash("support+@example.com"), None);
        assert_eq!(mailbox_hash("x@plus+domain.example"), None);
    }
}
