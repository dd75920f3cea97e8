//! Hostile server bytes through the POP3 codec: status lines, then a multi-line body
//! after every `+OK` the input says has one, then the listing parsers on each body.
//!
//! Nothing may panic, every bound must hold, and the outcome must not depend on how
//! the bytes were split into reads: one chunk, two chunks at a fuzzer-chosen point,
//! and (for short inputs) one byte at a time all decode alike.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pophook::pop3::codec::{
    self, CodecError, MultiLineDecoder, ResponseCode, Status, StatusDecoder,
};

/// Longest text a `-ERR` reply may carry into the logs (the codec's cap plus "…").
const MAX_REPLY_CHARS: usize = 301;
/// A `Malformed` message quotes at most ~100 characters of input; anything near this
/// long means hostile bytes reach the logs uncapped.
const MAX_ERROR_LEN: usize = 512;

#[derive(Clone, Copy)]
struct Limits {
    max_line: usize,
    max_total: usize,
    /// Bit `i` set: the `i`-th `+OK` is followed by a multi-line body.
    bodies: u32,
}

#[derive(Debug, PartialEq)]
enum Step {
    Status(Status),
    Body(Bytes),
}

#[derive(Debug, PartialEq)]
enum End {
    /// The input stopped mid-response: what is still buffered, and how much of a body
    /// in progress was decoded.
    Incomplete { buffered: Vec<u8>, received: usize },
    /// The buffer's contents after an error are unspecified, so only the error counts.
    Error(CodecError),
}

fn decode(chunks: &[&[u8]], limits: Limits) -> (Vec<Step>, End) {
    let mut status = StatusDecoder::new(limits.max_line);
    let mut multi = MultiLineDecoder::new(limits.max_line, limits.max_total);
    let mut buf = BytesMut::new();
    let mut chunks = chunks.iter();
    let mut steps = Vec::new();
    let mut oks = 0;
    let mut in_body = false;
    loop {
        let decoded = if in_body {
            multi.decode(&mut buf).map(|body| body.map(Step::Body))
        } else {
            status.decode(&mut buf).map(|line| line.map(Step::Status))
        };
        match decoded {
            Err(error) => return (steps, End::Error(error)),
            Ok(Some(step)) => {
                in_body = match &step {
                    Step::Status(Status::Ok(_)) => {
                        oks += 1;
                        limits.bodies & (1 << (oks % 32)) != 0
                    }
                    _ => false,
                };
                steps.push(step);
            }
            Ok(None) => match chunks.next() {
                Some(chunk) => buf.extend_from_slice(chunk),
                None => {
                    let received = if in_body { multi.received() } else { 0 };
                    let buffered = buf.to_vec();
                    return (steps, End::Incomplete { buffered, received });
                }
            },
        }
    }
}

fn check_step(step: &Step, limits: Limits) {
    match step {
        Step::Status(Status::Ok(text) | Status::Continue(text)) => {
            assert!(!text.contains(&b'\n'), "a status text spans lines");
            assert!(text.len() < limits.max_line, "status text over max_line");
            check_error(codec::parse_stat(text).err());
        }
        Step::Status(Status::Err(reply)) => {
            check_log_text(&reply.text);
            if let Some(ResponseCode::Other(code)) = &reply.code {
                check_log_text(code);
            }
        }
        Step::Body(body) => {
            assert!(body.len() <= limits.max_total, "body over max_total");
            for line in body.split_inclusive(|&b| b == b'\n') {
                // Unstuffing only ever shortens a line.
                assert!(line.len() <= limits.max_line, "body line over max_line");
            }
            for line in codec::lines(body) {
                assert!(!line.contains(&b'\n'));
                match codec::parse_uidl_line(line) {
                    Ok((msg, uid)) => {
                        assert!(msg >= 1);
                        assert!((1..=70).contains(&uid.len()), "uid length {}", uid.len());
                        assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
                    }
                    Err(error) => check_error(Some(error)),
                }
                match codec::parse_list_line(line) {
                    Ok((msg, _)) => assert!(msg >= 1),
                    Err(error) => check_error(Some(error)),
                }
            }
            for capability in codec::parse_capa(body) {
                assert!(!capability.is_empty());
                assert_eq!(capability.as_bytes().trim_ascii(), capability.as_bytes());
            }
        }
    }
}

/// Server text that reaches the logs: capped and unable to forge a log line.
fn check_log_text(text: &str) {
    assert!(
        text.chars().count() <= MAX_REPLY_CHARS,
        "reply text not capped"
    );
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
}

fn check_error(error: Option<CodecError>) {
    if let Some(error) = error {
        let message = error.to_string();
        assert!(
            message.len() < MAX_ERROR_LEN,
            "error message not capped: {message}"
        );
        assert!(!message.contains(['\r', '\n']), "line break in {message:?}");
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((head, data)) = input.split_first_chunk::<8>() else {
        return;
    };
    let limits = Limits {
        max_line: 1 + usize::from(head[2] % 128),
        max_total: usize::from(head[3]) * 4,
        bodies: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
    };
    let split = usize::from(u16::from_le_bytes([head[0], head[1]])) % (data.len() + 1);

    let whole = decode(&[data], limits);
    let (steps, end) = &whole;
    for step in steps {
        check_step(step, limits);
    }
    if let End::Error(error) = end {
        check_error(Some(error.clone()));
    }

    let (first, second) = data.split_at(split);
    assert_eq!(
        decode(&[first, second], limits),
        whole,
        "split at {split} decodes differently"
    );
    if data.len() <= 256 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(
            decode(&bytes, limits),
            whole,
            "byte by byte decodes differently"
        );
    }
});
