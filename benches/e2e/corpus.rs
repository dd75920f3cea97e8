//! The benchmark's mail, generated from a fixed seed so that every run, on every
//! machine, fetches the same bytes: no network, nothing checked in.
//!
//! Messages use CRLF, as POP3 carries them, so the bytes delivered are the bytes on the
//! wire and "MiB/s" means the same for pophook and the floor. No line starts with `.`,
//! so nothing is dot-stuffed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// Messages to deliver, and the `Message-ID` (without brackets) each must arrive with.
pub struct Corpus {
    pub messages: Vec<Vec<u8>>,
    pub message_ids: Vec<String>,
}

impl Corpus {
    pub fn bytes(&self) -> u64 {
        self.messages.iter().map(|m| m.len() as u64).sum()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    fn push(&mut self, message_id: String, message: Vec<u8>) {
        self.message_ids.push(message_id);
        self.messages.push(message);
    }

    fn new() -> Corpus {
        Corpus {
            messages: Vec::new(),
            message_ids: Vec::new(),
        }
    }
}

/// Scenario 1's mix, in a shuffled order: 60% plain text of ~2 KiB, 30%
/// multipart/alternative of ~8 KiB, 10% with a 64 KiB attachment (base64, ~88 KiB).
pub fn mixed(tag: &str, count: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    // Exact proportions, in an order that still looks random.
    let mut kinds: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut corpus = Corpus::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let id = message_id(tag, i);
        let message = match kind {
            0..=5 => plain(&mut rng, &id, 2 * 1024),
            6..=8 => alternative(&mut rng, &id, 8 * 1024),
            _ => with_attachment(&mut rng, &id, 64 * 1024),
        };
        corpus.push(id, message);
    }
    corpus
}

/// Scenario 3: short plain-text messages (~600 bytes), where per-message costs dominate.
pub fn small(tag: &str, count: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    let mut corpus = Corpus::new();
    for i in 0..count {
        let id = message_id(tag, i);
        let message = plain(&mut rng, &id, 600);
        corpus.push(id, message);
    }
    corpus
}

/// Scenario 4: one message of about `size` bytes, almost all of it one base64
/// attachment.
pub fn huge(tag: &str, size: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    let id = message_id(tag, 0);
    // 57 raw bytes make one 76-character base64 line plus CRLF.
    let attachment = size.saturating_sub(2048) / 78 * 57;
    let mut corpus = Corpus::new();
    corpus.push(id.clone(), with_attachment(&mut rng, &id, attachment));
    corpus
}

fn message_id(tag: &str, i: usize) -> String {
    format!("{tag}-{i:06}@bench.pophook.test")
}

fn headers(rng: &mut Rng, id: &str, content_type: &str) -> String {
    // Only ASCII words make local parts.
    let from = WORDS[rng.below(ASCII_WORDS as u64) as usize];
    let subject = words(rng, 40);
    // Deterministic, so the corpus stays byte-identical between runs.
    let day = 1 + rng.below(28);
    format!(
        "Return-Path: <{from}@sender.example>\r\n\
         Received: from mx.sender.example (mx.sender.example [192.0.2.7])\r\n\
         \tby mx.bench.pophook.test with ESMTPS id {:016x}\r\n\
         \tfor <support@bench.pophook.test>; Mon, {day} Feb 2026 09:00:00 +0000\r\n\
         From: \"{from} customer\" <{from}@sender.example>\r\n\
         To: Support <support@bench.pophook.test>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, {day} Feb 2026 09:00:00 +0000\r\n\
         Message-ID: <{id}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: {content_type}\r\n",
        rng.next()
    )
}

fn plain(rng: &mut Rng, id: &str, size: usize) -> Vec<u8> {
    let mut out = headers(rng, id, "text/plain; charset=utf-8");
    out.push_str("\r\n");
    let body = size.saturating_sub(out.len());
    paragraphs(rng, &mut out, body);
    out.into_bytes()
}

fn alternative(rng: &mut Rng, id: &str, size: usize) -> Vec<u8> {
    let boundary = format!("alt-{:016x}", rng.next());
    let mut out = headers(
        rng,
        id,
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );
    let budget = size.saturating_sub(out.len() + 200);
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    paragraphs(rng, &mut out, budget * 2 / 5);
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n"
    ));
    let html_start = out.len();
    while out.len() - html_start < budget * 3 / 5 {
        out.push_str("<p>");
        let text = words(rng, 60);
        out.push_str(&text);
        out.push_str(" <b>");
        out.push_str(&words(rng, 10));
        out.push_str("</b></p>\r\n");
    }
    out.push_str(&format!("</body></html>\r\n--{boundary}--\r\n"));
    out.into_bytes()
}

/// Scenario 9: one message with a binary attachment of exactly `attachment` bytes
/// (base64 in the message), and the attachment itself, to check what was stored.
pub fn with_file(tag: &str, attachment: usize, seed: u64) -> (Corpus, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let id = message_id(tag, 0);
    let (message, file) = with_attachment_file(&mut rng, &id, attachment);
    let mut corpus = Corpus::new();
    corpus.push(id, message);
    (corpus, file)
}

fn with_attachment(rng: &mut Rng, id: &str, attachment: usize) -> Vec<u8> {
    with_attachment_file(rng, id, attachment).0
}

/// The message and its attachment's bytes.
fn with_attachment_file(rng: &mut Rng, id: &str, attachment: usize) -> (Vec<u8>, Vec<u8>) {
    let boundary = format!("mix-{:016x}", rng.next());
    let mut out = headers(
        rng,
        id,
        &format!("multipart/mixed; boundary=\"{boundary}\""),
    );
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    paragraphs(rng, &mut out, 1024);
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"report-{:08x}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
        rng.next() as u32
    ));
    let mut raw = vec![0u8; attachment];
    rng.fill(&mut raw);
    let mut bytes = out.into_bytes();
    bytes.reserve(attachment / 57 * 78 + 128);
    for chunk in raw.chunks(57) {
        bytes.extend_from_slice(BASE64.encode(chunk).as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (bytes, raw)
}

/// Lines of at most 72 characters until `size` bytes, in paragraphs.
fn paragraphs(rng: &mut Rng, out: &mut String, size: usize) {
    let start = out.len();
    while out.len() - start < size {
        let mut line = String::new();
        while line.len() < 64 {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        }
        out.push_str(&line);
        out.push_str("\r\n");
        if rng.below(6) == 0 {
            out.push_str("\r\n");
        }
    }
}

fn words(rng: &mut Rng, max: usize) -> String {
    let mut text = String::new();
    while text.len() < max {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    text
}

/// The first `ASCII_WORDS` of `WORDS` are ASCII; the rest exercise UTF-8 decoding.
const ASCII_WORDS: usize = 55;
const WORDS: &[&str] = &[
    "order",
    "invoice",
    "delivery",
    "parcel",
    "refund",
    "account",
    "password",
    "please",
    "thanks",
    "hello",
    "regards",
    "urgent",
    "question",
    "support",
    "ticket",
    "number",
    "yesterday",
    "tomorrow",
    "arrived",
    "missing",
    "damaged",
    "replace",
    "shipping",
    "address",
    "customer",
    "service",
    "problem",
    "update",
    "status",
    "payment",
    "card",
    "bank",
    "transfer",
    "receipt",
    "product",
    "warranty",
    "return",
    "label",
    "courier",
    "tracking",
    "weekend",
    "morning",
    "evening",
    "quickly",
    "again",
    "still",
    "never",
    "always",
    "maybe",
    "would",
    "could",
    "should",
    "really",
    "because",
    "however",
    "Müller",
    "Zoë",
    "café",
    "naïve",
    "Ærø",
    "Łódź",
    "東京",
    "привет",
    "ελληνικά",
];

/// SplitMix64: tiny, fast and fixed forever, unlike a library's "standard" generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}
