//! `stripped_text`: the part of a reply the sender wrote this time, without the quoted
//! history (`On … wrote:`, `>` lines, Outlook's headers) and without the signature.
//!
//! No maintained Rust crate does this (Postmark's and Mailgun's are services, talon is
//! Python), so it is a small line-based reader, tested on the reply styles of the common
//! clients; what it does not recognise it leaves in, since losing words is worse.

/// The reply's new text, or `None` when nothing was stripped.
pub(super) fn stripped_text(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if history_starts(&lines, i) {
            break;
        }
        if is_signature_separator(line) {
            break;
        }
        // A `>` line quotes what is answered; dropping it keeps the answers of an
        // interleaved reply.
        if line.trim_start().starts_with('>') {
            i += 1;
            continue;
        }
        kept.push(line);
        i += 1;
    }
    // Mobile clients' one-line signatures, at the very end only.
    while let Some(last) = kept.last() {
        if last.trim().is_empty() || is_mobile_signature(last) {
            kept.pop();
        } else {
            break;
        }
    }
    let stripped = kept.join("\n").trim().to_owned();
    // Compared with the text read the same way: its CRs that end no line are the
    // message's own and stay on both sides.
    (stripped != lines.join("\n").trim()).then_some(stripped)
}

/// Whether the quoted history starts at line `i`: an attribution line (perhaps wrapped
/// over up to three lines), an Outlook separator, or an Outlook header block.
fn history_starts(lines: &[&str], i: usize) -> bool {
    let line = lines[i].trim();
    if line.is_empty() {
        return false;
    }
    // `On Mon, 4 Mar 2024 at 10:00, Ann <ann@example.com> wrote:`, which Gmail wraps.
    let mut joined = String::new();
    for next in lines.iter().skip(i).take(3) {
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(next.trim());
        if is_attribution(&joined) {
            return true;
        }
        if next.trim().is_empty() {
            break;
        }
    }
    // Every separator below starts with `-` or holds a `:`: most lines are spared
    // lowercasing.
    if line.starts_with('-') || line.contains(':') {
        let lower = line.to_lowercase();
        // `-----Original Message-----` and its translations.
        if lower.starts_with("---") && ORIGINAL_MESSAGE.iter().any(|m| lower.contains(m)) {
            return true;
        }
        if FORWARDED
            .iter()
            .any(|m| lower.starts_with(m) || lower.trim_matches('-').trim().starts_with(m))
        {
            return true;
        }
    }
    // Outlook's `____` rule.
    if line.len() >= 20 && line.bytes().all(|b| b == b'_') {
        return true;
    }
    // `From: …` followed by at least two of `Sent:`/`Date:`/`To:`/`Subject:` in the
    // next five lines: Outlook and Apple Mail put the answered message's headers there.
    // Two, so that a sentence starting "From:" and one "To:" line do not cut a reply.
    if has_field(line, FROM) {
        let fields = lines
            .iter()
            .skip(i + 1)
            .take(5)
            .filter(|next| has_field(next.trim(), HEADER_FIELDS))
            .count();
        return fields >= 2;
    }
    false
}

fn is_attribution(text: &str) -> bool {
    // Cheap tests first: this runs for every line of every text.
    if !text.trim_end().ends_with(':') {
        return false;
    }
    let lower = text.to_lowercase();
    let lower = lower.trim_end();
    if lower.len() > 400 {
        return false;
    }
    // Most clients start with a word like "On" or "Le"; some (Gmail in Polish or
    // Czech) start with the date, and then the address in the line must show it.
    let start = ATTRIBUTION_START
        .iter()
        .find(|s| lower.starts_with(*s))
        .map(|s| s.len());
    let start = match start {
        Some(len) => len,
        None if lower.contains('@') => 0,
        None => return false,
    };
    // `… wrote:` in English, but `… schreef Ann <ann@example.com>:` in Dutch or German,
    // so the verb may stand anywhere before the final colon.
    lower.len() > start + 3
        && lower.ends_with(':')
        && ATTRIBUTION_VERB.iter().any(|verb| lower.contains(verb))
}

fn has_field(line: &str, names: &[&str]) -> bool {
    if !line.contains(':') {
        return false;
    }
    let lower = line.to_lowercase();
    names.iter().any(|name| {
        lower
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    }) && line.contains(':')
        // `*From:*` as Outlook's HTML renders it.
        || line.starts_with('*') && has_field(line.trim_start_matches('*'), names)
}

/// `-- ` (RFC 3676 §4.3), also without its space, since clients and lists trim it.
fn is_signature_separator(line: &str) -> bool {
    line == "-- " || line == "--"
}

fn is_mobile_signature(line: &str) -> bool {
    let lower = line.trim().to_lowercase();
    MOBILE.iter().any(|m| lower.starts_with(m)) && lower.len() < 60
}

/// How attributions start, in the languages mail clients ship.
const ATTRIBUTION_START: &[&str] = &[
    "on ",
    "le ",
    "am ",
    "el ",
    "il ",
    "op ",
    "em ",
    "den ",
    "på ",
    "w dniu ",
    "dne ",
    "в ",
    "pe ",
    "el dia ",
    "il giorno ",
    "quoting ",
    "citando ",
    "zitat von ",
];

/// The verb of an attribution, in the same languages.
const ATTRIBUTION_VERB: &[&str] = &[
    "wrote",
    "writes",
    "a écrit",
    "schrieb",
    "escribió",
    "ha scritto",
    "schreef",
    "escreveu",
    "napisał",
    "skrev",
    "написал",
    "пишет",
    "napsal",
    "kirjoitti",
    "va escriure",
    "a scris",
];

const ORIGINAL_MESSAGE: &[&str] = &[
    "original message",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "mensagem original",
    "originalmeddelande",
    "wiadomość oryginalna",
];

const FORWARDED: &[&str] = &[
    "begin forwarded message:",
    "---------- forwarded message",
    "-------- forwarded message",
];

const FROM: &[&str] = &["from", "von", "de", "da", "van", "från", "od", "от"];

const HEADER_FIELDS: &[&str] = &[
    "sent",
    "date",
    "to",
    "subject",
    "gesendet",
    "datum",
    "an",
    "betreff",
    "envoyé",
    "à",
    "objet",
    "enviado",
    "para",
    "asunto",
    "inviato",
    "oggetto",
    "verzonden",
    "onderwerp",
];

const MOBILE: &[&str] = &[
    "sent from my ",
    "sent from outlook",
    "get outlook for ",
    "sent from mail for windows",
    "sent from yahoo mail",
    "envoyé de mon ",
    "von meinem ",
    "enviado desde mi ",
    "inviato da ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_from_common_clients_keep_only_the_new_text() {
        let cases: &[(&str, &str)] = &[
            // Gmail, attribution wrapped over two lines.
            (
                "Sounds good, see you then.\n\nOn Mon, Mar 4, 2024 at 10:00 AM Ann Example <\nann@example.com> wrote:\n\n> Shall we meet at 10?\n> Ann\n",
                "Sounds good, see you then.",
            ),
            // Apple Mail.
            (
                "Yes.\n\nSent from my iPhone\n\n> On 4 Mar 2024, at 10:00, Ann <ann@example.com> wrote:\n> \n> Coming?\n",
                "Yes.",
            ),
            (
                "Thanks!\n\n> Am 04.03.2024 um 10:00 schrieb Ann <ann@example.com>:\n> \n> Hallo\n",
                "Thanks!",
            ),
            // Thunderbird.
            (
                "Agreed.\n\nOn 04/03/2024 10:00, Ann wrote:\n> The plan is fine.\n",
                "Agreed.",
            ),
            // Outlook desktop.
            (
                "Please find it attached.\n\nBest regards\nBob\n\n-----Original Message-----\nFrom: Ann <ann@example.com>\nSent: Monday, March 4, 2024 10:00 AM\nTo: Bob\nSubject: Report\n\nCan you send the report?\n",
                "Please find it attached.\n\nBest regards\nBob",
            ),
            // Outlook on the web: a rule of underscores and a header block.
            (
                "Done.\n\n________________________________\nFrom: Ann <ann@example.com>\nSent: 04 March 2024 10:00\nTo: Bob\nSubject: Task\n\nIs it done?\n",
                "Done.",
            ),
            // Outlook, HTML rendered to text: a header block with no separator.
            (
                "Confirmed.\n\nFrom: Ann <ann@example.com>\nDate: Monday, 4 March 2024 at 10:00\nTo: Bob <bob@example.org>\nSubject: Booking\n\nPlease confirm.\n",
                "Confirmed.",
            ),
            // Signature after `-- `.
            (
                "See you.\n-- \nBob Example\nACME Corp\n",
                "See you.",
            ),
            // Mobile client, German.
            (
                "Ok, passt.\n\nVon meinem iPhone gesendet\n",
                "Ok, passt.",
            ),
            // French, Spanish and Dutch attributions.
            (
                "Merci.\n\nLe lun. 4 mars 2024 à 10:00, Ann <ann@example.com> a écrit :\n> Bonjour\n",
                "Merci.",
            ),
            (
                "Gracias.\n\nEl lun, 4 mar 2024 a las 10:00, Ann (<ann@example.com>) escribió:\n> Hola\n",
                "Gracias.",
            ),
            (
                "Prima.\n\nOp ma 4 mrt 2024 om 10:00 schreef Ann <ann@example.com>:\n> Hoi\n",
                "Prima.",
            ),
            // Yahoo, Italian, Portuguese and Polish Gmail.
            (
                "Fine.\n\nOn Monday, March 4, 2024, 10:00:00 AM GMT+1, Ann <ann@example.com> wrote:\n\n\nHello\n",
                "Fine.",
            ),
            (
                "Va bene.\n\nIl giorno lun 4 mar 2024 alle ore 10:00 Ann <ann@example.com> ha\nscritto:\n> Ciao\n",
                "Va bene.",
            ),
            (
                "Obrigado.\n\nEm seg., 4 de mar. de 2024 às 10:00, Ann <ann@example.com>\nescreveu:\n> Olá\n",
                "Obrigado.",
            ),
            (
                "Dzięki.\n\npon., 4 mar 2024 o 10:00 Ann <ann@example.com> napisał(a):\n> Cześć\n",
                "Dzięki.",
            ),
            // Swedish Gmail and a Russian client.
            (
                "Tack.\n\nDen mån 4 mars 2024 kl 10:00 skrev Ann <ann@example.com>:\n> Hej\n",
                "Tack.",
            ),
            (
                "Спасибо.\n\n4 марта 2024 г., в 10:00, Ann <ann@example.com> написал(а):\n> Привет\n",
                "Спасибо.",
            ),
            // An interleaved reply keeps every answer.
            (
                "> Can you come?\nYes.\n> At ten?\nBetter at eleven.\n",
                "Yes.\nBetter at eleven.",
            ),
            // Forwarded.
            (
                "FYI\n\n---------- Forwarded message ---------\nFrom: Ann <ann@example.com>\nDate: Mon, 4 Mar 2024\nSubject: News\n\nHello\n",
                "FYI",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(stripped_text(text).as_deref(), Some(*expected), "{text}");
        }
    }

    #[test]
    fn text_with_nothing_to_strip_gives_null() {
        for text in [
            "Just a message.\n",
            "Just a message.",
            "",
            "Once upon a time he wrote: a book.\nThe end.",
            "From: the desk of Bob\nnothing else here\n",
            "From: our records, you owe 5 EUR.\nTo: be paid by Friday.\n",
            "Ask Ann about the plan; she wrote it on Monday\n",
            "He wrote the following 3 points:\n1. a\n2. b\n",
        ] {
            assert_eq!(stripped_text(text), None, "{text:?}");
        }
        // CRLF text compares as text, not as a change, and so does a CR of the
        // message's own (a lone one, or one decoded from `=0D`).
        assert_eq!(stripped_text("Hello\r\nthere\r\n"), None);
        assert_eq!(stripped_text("a lone\rCR\nand an encoded one\r\nend"), None);
        assert_eq!(
            stripped_text("a lone\rCR\r\nand an encoded one\r\r\nend"),
            None
        );
    }

    #[test]
    fn text_that_is_all_quote_gives_an_empty_reply_not_null() {
        let forward = "On Mon, 4 Mar 2024 at 10:00, Ann <ann@example.com> wrote:\n> the plan\n";
        assert_eq!(stripped_text(forward).as_deref(), Some(""));
    }
}
