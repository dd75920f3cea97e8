use super::*;

// ---- multi-line body: exhaustive comparison with a naive reference ----

/// Obviously correct and only for complete input: the unstuffed body and how many
/// input bytes the response used, or `None` if the terminator never comes.
fn reference(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(lf) = input[at..].iter().position(|&b| b == b'\n') {
        let line = &input[at..at + lf + 1];
        at += line.len();
        if line == b".\r\n" || line == b".\n" {
            return Some((body, at));
        }
        if line.starts_with(b"..") {
            body.extend_from_slice(&line[1..]);
        } else {
            body.extend_from_slice(line);
        }
    }
    None
}

/// Feeds `chunks` one after the other, decoding after each until a body comes out;
/// returns the body and what is left in the buffer after all chunks were appended.
fn decode_chunks(chunks: &[&[u8]]) -> (Option<Bytes>, Vec<u8>) {
    let mut decoder = MultiLineDecoder::new(DEFAULT_MAX_LINE, 1 << 20);
    let mut buf = BytesMut::new();
    let mut body = None;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if body.is_none() {
            body = decoder.decode(&mut buf).unwrap();
        }
    }
    (body, buf.to_vec())
}

/// Every string over `a . \r \n` up to `max_len` characters.
fn all_strings(max_len: usize) -> Vec<Vec<u8>> {
    let mut all = vec![Vec::new()];
    let mut previous = vec![Vec::new()];
    for _ in 0..max_len {
        let longer: Vec<Vec<u8>> = previous
            .iter()
            .flat_map(|s| {
                b"a.\r\n".iter().map(move |&c| {
                    let mut s: Vec<u8> = s.clone();
                    s.push(c);
                    s
                })
            })
            .collect();
        all.extend(longer.iter().cloned());
        previous = longer;
    }
    all
}

#[test]
fn every_short_body_split_anywhere_decodes_like_the_reference() {
    let strings = all_strings(7);
    assert_eq!(strings.len(), (0..=7).map(|k| 4usize.pow(k)).sum::<usize>());
    for s in &strings {
        for end in [&b"\r\n.\r\n"[..], b"\n.\n"] {
            // The next response is already buffered: it must be left alone.
            let input = [&s[..], end, b"+OK next\r\n"].concat();
            let (want_body, used) = reference(&input).unwrap();
            let want = (Some(Bytes::from(want_body)), input[used..].to_vec());

            for split in 0..=input.len() {
                let (head, tail) = input.split_at(split);
                assert_eq!(
                    decode_chunks(&[head, tail]),
                    want,
                    "{input:?} split at {split}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_chunks(&bytes), want, "{input:?} byte by byte");
        }
    }
}

#[test]
fn terminator_split_across_chunks_is_found_only_when_complete() {
    for end in [&b".\r\n"[..], b".\n"] {
        let input = [&b"a\r\n"[..], end].concat();
        for split in 0..input.len() {
            let mut decoder = MultiLineDecoder::new(DEFAULT_MAX_LINE, 1 << 20);
            let mut buf = BytesMut::from(&input[..split]);
            assert_eq!(
                decoder.decode(&mut buf),
                Ok(None),
                "{input:?} cut at {split}"
            );
            buf.extend_from_slice(&input[split..]);
            assert_eq!(decoder.decode(&mut buf), Ok(Some(Bytes::from("a\r\n"))));
            assert!(buf.is_empty());
        }
    }
    // ".\r" followed by something other than LF is a line of the body, not the end.
    let mut decoder = MultiLineDecoder::new(DEFAULT_MAX_LINE, 1 << 20);
    let mut buf = BytesMut::from(&b".\r"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"x\n.\r\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Bytes::from(".\rx\n"))));
}

// ---- a whole session, at many chunk sizes ----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Status(Status),
    Body(Bytes),
}

#[derive(Clone, Copy)]
enum Expect {
    Status,
    Body,
}

const SCRIPT: &[u8] = b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n\
        +OK Capability list follows\r\n\
        TOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\nPIPELINING\r\n.\r\n\
        +OK\r\n\
        1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\n.\r\n\
        +OK 120 octets\r\n\
        Subject: hi\r\n\r\n..leading dot\r\n..\r\n...\r\nbare lf line\nlast\r\n.\r\n\
        +OK 2 320\r\n\
        + \r\n\
        -ERR [SYS/TEMP] try later\n";

const STEPS: [Expect; 10] = [
    Expect::Status,
    Expect::Status,
    Expect::Body,
    Expect::Status,
    Expect::Body,
    Expect::Status,
    Expect::Body,
    Expect::Status,
    Expect::Status,
    Expect::Status,
];

fn run_script(chunk_size: usize) -> Vec<Event> {
    let mut status = StatusDecoder::new(DEFAULT_MAX_LINE);
    let mut multi = MultiLineDecoder::new(DEFAULT_MAX_LINE, 1 << 20);
    let mut chunks = SCRIPT.chunks(chunk_size);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for step in STEPS {
        loop {
            let event = match step {
                Expect::Status => status.decode(&mut buf).unwrap().map(Event::Status),
                Expect::Body => multi.decode(&mut buf).unwrap().map(Event::Body),
            };
            if let Some(event) = event {
                events.push(event);
                break;
            }
            let chunk = chunks
                .next()
                .expect("script ended in the middle of a response");
            buf.extend_from_slice(chunk);
        }
    }
    assert!(buf.is_empty() && chunks.next().is_none(), "bytes left over");
    events
}

#[test]
fn a_whole_session_decodes_the_same_at_every_chunk_size() {
    let ok = |text: &'static str| Event::Status(Status::Ok(Bytes::from(text)));
    let body = |text: &'static str| Event::Body(Bytes::from(text));
    let want = vec![
        ok("POP3 ready <1896.697170952@dbc.mtview.ca.us>"),
        ok("Capability list follows"),
        body("TOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nSTLS\r\nPIPELINING\r\n"),
        ok(""),
        body("1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\n"),
        ok("120 octets"),
        body("Subject: hi\r\n\r\n.leading dot\r\n.\r\n..\r\nbare lf line\nlast\r\n"),
        ok("2 320"),
        Event::Status(Status::Continue(Bytes::new())),
        Event::Status(Status::Err(ErrReply {
            code: Some(ResponseCode::SysTemp),
            text: "try later".into(),
        })),
    ];
    for size in [1, 2, 3, 4, 7, 8, 16, 32, 64, 128, 256, 512, SCRIPT.len()] {
        assert_eq!(run_script(size), want, "chunk size {size}");
    }
}

#[test]
fn decoded_listings_parse() {
    let events = run_script(SCRIPT.len());
    let [_, _, Event::Body(capa), _, Event::Body(uidl), _, _, Event::Status(Status::Ok(stat)), ..] =
        &events[..]
    else {
        panic!("unexpected events {events:?}");
    };
    assert_eq!(
        parse_capa(capa),
        ["TOP", "UIDL", "SASL PLAIN LOGIN", "STLS", "PIPELINING"]
    );
    let uids: Vec<_> = lines(uidl).map(|l| parse_uidl_line(l).unwrap()).collect();
    assert_eq!(
        uids,
        [
            (1, "whqtswO00WBw418f9t5JxYwZ".to_string()),
            (2, "QhdPYR:00WBw1Ph7x7".to_string())
        ]
    );
    assert_eq!(parse_stat(stat), Ok((2, 320)));
}

// ---- status lines ----

fn status(line: &str) -> Result<Option<Status>, CodecError> {
    StatusDecoder::new(DEFAULT_MAX_LINE).decode(&mut BytesMut::from(line))
}

fn err_reply(line: &str) -> ErrReply {
    match status(line) {
        Ok(Some(Status::Err(reply))) => reply,
        other => panic!("{line:?} gave {other:?}"),
    }
}

#[test]
fn response_codes_are_recognised() {
    let cases = [
        (
            "-ERR [IN-USE] mailbox locked\r\n",
            Some(ResponseCode::InUse),
        ),
        (
            "-ERR [LOGIN-DELAY] wait\r\n",
            Some(ResponseCode::LoginDelay),
        ),
        ("-ERR [SYS/TEMP] wait\r\n", Some(ResponseCode::SysTemp)),
        ("-ERR [SYS/PERM] gone\r\n", Some(ResponseCode::SysPerm)),
        ("-ERR [AUTH] wrong\r\n", Some(ResponseCode::Auth)),
        ("-ERR [in-use] locked\r\n", Some(ResponseCode::InUse)),
        ("-err [sys/temp] wait\n", Some(ResponseCode::SysTemp)),
        (
            "-ERR [X-QUOTA] full\r\n",
            Some(ResponseCode::Other("X-QUOTA".into())),
        ),
        ("-ERR plain failure\r\n", None),
        ("-ERR [unclosed bracket\r\n", None),
    ];
    for (line, code) in cases {
        assert_eq!(err_reply(line).code, code, "{line:?}");
    }
    assert_eq!(
        err_reply("-ERR [IN-USE]   mailbox locked  \r\n"),
        ErrReply {
            code: Some(ResponseCode::InUse),
            text: "mailbox locked".into()
        }
    );
    assert_eq!(err_reply("-ERR [unclosed\r\n").text, "[unclosed");
    assert_eq!(err_reply("-ERR\r\n").text, "");
    assert_eq!(ResponseCode::LoginDelay.to_string(), "LOGIN-DELAY");
    assert_eq!(ResponseCode::Other("X-Y".into()).to_string(), "X-Y");
}

#[test]
fn error_text_cannot_forge_log_lines_or_flood_them() {
    let reply = err_reply("-ERR bad\x1b[31m\rfake\r\n");
    assert_eq!(reply.text, "bad\u{FFFD}[31m\u{FFFD}fake");
    let reply = err_reply(&format!("-ERR {}\r\n", "x".repeat(10_000)));
    assert!(reply.text.chars().count() <= MAX_REPLY_TEXT + 1);
}

#[test]
fn ok_and_continue_lines() {
    let ok = |text: &'static str| Ok(Some(Status::Ok(Bytes::from(text))));
    let cont = |text: &'static str| Ok(Some(Status::Continue(Bytes::from(text))));
    assert_eq!(status("+OK\r\n"), ok(""));
    assert_eq!(status("+OK\n"), ok(""));
    assert_eq!(status("+OK  two spaces\r\n"), ok(" two spaces"));
    assert_eq!(status("+ok lower\r\n"), ok("lower"));
    assert_eq!(status("+\r\n"), cont(""));
    assert_eq!(status("+ \r\n"), cont(""));
    assert_eq!(status("+ dXNlcg==\r\n"), cont("dXNlcg=="));
    assert_eq!(status("+ dXNlcg==\n"), cont("dXNlcg=="));
}

#[test]
fn status_decoder_leaves_pipelined_responses_in_the_buffer() {
    let mut decoder = StatusDecoder::new(DEFAULT_MAX_LINE);
    let mut buf = BytesMut::from(&b"+OK 1\r\n+OK 2\n-ERR no\r\n+OK 4"[..]);
    let mut texts = Vec::new();
    while let Some(status) = decoder.decode(&mut buf).unwrap() {
        texts.push(status);
    }
    assert_eq!(texts.len(), 3);
    assert_eq!(&buf[..], b"+OK 4");
    buf.extend_from_slice(b"\r\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Status::Ok("4".into()))));
    assert!(buf.is_empty());
}

#[test]
fn malformed_status_lines_are_rejected_with_a_readable_quote() {
    for line in [
        "OK\r\n",
        "\r\n",
        "\n",
        "+NO\r\n",
        "* OK imap\r\n",
        "220 smtp\r\n",
    ] {
        assert!(
            matches!(status(line), Err(CodecError::Malformed(_))),
            "{line:?}"
        );
    }
    let Err(CodecError::Malformed(why)) = status("\x1b[2J\x00junk\r\n") else {
        panic!("accepted junk");
    };
    assert!(why.contains(r#""\x1b[2J\x00junk""#), "{why}");
    let Err(CodecError::Malformed(why)) = status(&format!("{}\n", "z".repeat(100_000))) else {
        panic!("accepted junk");
    };
    assert!(why.len() < 250, "{why}");
}

// ---- limits ----

#[test]
fn a_line_without_end_errors_once_max_line_bytes_are_buffered() {
    let chunk = [b'a'; 8 * 1024];
    let chunks_to_limit = DEFAULT_MAX_LINE / chunk.len();
    let too_long = CodecError::LineTooLong {
        limit: DEFAULT_MAX_LINE,
    };

    let mut status = StatusDecoder::new(DEFAULT_MAX_LINE);
    let mut buf = BytesMut::new();
    for _ in 1..chunks_to_limit {
        buf.extend_from_slice(&chunk);
        assert_eq!(status.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(&chunk);
    assert_eq!(status.decode(&mut buf), Err(too_long.clone()));

    // Inside a body, too, and also when the whole 1 MiB arrives at once.
    let mut multi = MultiLineDecoder::new(DEFAULT_MAX_LINE, usize::MAX);
    let mut buf = BytesMut::from(&b"short line\r\n"[..]);
    for _ in 1..chunks_to_limit {
        buf.extend_from_slice(&chunk);
        assert_eq!(multi.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(&chunk);
    assert_eq!(multi.decode(&mut buf), Err(too_long.clone()));

    let mut buf = BytesMut::from(&vec![b'a'; 1024 * 1024][..]);
    assert_eq!(
        StatusDecoder::new(DEFAULT_MAX_LINE).decode(&mut buf),
        Err(too_long)
    );
}

#[test]
fn max_line_counts_the_line_end() {
    // "+OK 12\r\n" is 8 bytes: exactly at the limit is fine, one more is not.
    let mut buf = BytesMut::from(&b"+OK 12\r\n"[..]);
    assert!(StatusDecoder::new(8).decode(&mut buf).unwrap().is_some());
    let mut buf = BytesMut::from(&b"+OK 123\r\n"[..]);
    assert_eq!(
        StatusDecoder::new(8).decode(&mut buf),
        Err(CodecError::LineTooLong { limit: 8 })
    );
    let mut buf = BytesMut::from(&b"1234567\n1234567\r\n.\r\n"[..]);
    assert_eq!(
        MultiLineDecoder::new(8, 100).decode(&mut buf),
        Err(CodecError::LineTooLong { limit: 8 })
    );
}

#[test]
fn a_body_over_max_total_is_refused_and_one_at_it_is_not() {
    // Ten body bytes after unstuffing ("..x" loses a dot).
    let input = b"ab\r\n..x\r\nz\n.\r\n";
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(
        MultiLineDecoder::new(DEFAULT_MAX_LINE, 10).decode(&mut buf),
        Ok(Some(Bytes::from("ab\r\n.x\r\nz\n")))
    );
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(
        MultiLineDecoder::new(DEFAULT_MAX_LINE, 9).decode(&mut buf),
        Err(CodecError::ResponseTooLarge { limit: 9 })
    );
}

#[test]
fn received_counts_the_body_so_far_and_restarts_for_the_next_response() {
    let mut decoder = MultiLineDecoder::new(DEFAULT_MAX_LINE, 1 << 20);
    let mut buf = BytesMut::from(&b"hello\r\n..dot\r\npart"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.received(), "hello\r\n.dot\r\n".len());
    buf.extend_from_slice(b"ial\r\n.\r\nnext\r\n.\n");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Bytes::from("hello\r\n.dot\r\npartial\r\n")))
    );
    assert_eq!(decoder.received(), 0);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Bytes::from("next\r\n"))));
    assert!(buf.is_empty());
}

// ---- listing helpers ----

#[test]
fn lines_split_at_lf_and_drop_cr() {
    let split = |body: &'static [u8]| lines(body).collect::<Vec<_>>();
    assert_eq!(split(b"a\r\nb\nc"), [&b"a"[..], b"b", b"c"]);
    assert_eq!(split(b"a\r\n"), [&b"a"[..]]);
    assert_eq!(split(b"\r\n\n"), [&b""[..], b""]);
    assert!(split(b"").is_empty());
}

#[test]
fn stat_and_list_parse_and_explain_failures() {
    assert_eq!(parse_stat(b"2 320"), Ok((2, 320)));
    assert_eq!(parse_stat(b"0 0"), Ok((0, 0)));
    assert_eq!(parse_stat(b"2 320 octets total"), Ok((2, 320)));
    assert_eq!(parse_list_line(b"1 1205"), Ok((1, 1205)));
    assert_eq!(
        parse_list_line(b"7  5000000000 extra"),
        Ok((7, 5_000_000_000))
    );

    let why = |result: Result<(u32, u64), CodecError>| match result {
        Err(CodecError::Malformed(why)) => why,
        other => panic!("accepted: {other:?}"),
    };
    assert!(why(parse_stat(b"")).contains("message count is missing"));
    assert!(why(parse_stat(b"2")).contains("mailbox size is missing"));
    assert!(why(parse_stat(b"two 320")).contains("not a decimal number"));
    assert!(why(parse_stat(b"-2 320")).contains("not a decimal number"));
    assert!(why(parse_stat(b"99999999999 1")).contains("out of range"));
    assert!(why(parse_list_line(b"0 100")).contains("numbers messages from 1"));
    assert!(why(parse_list_line(b"1 +100")).contains("not a decimal number"));
}

#[test]
fn uidl_lines_follow_rfc_1939() {
    assert_eq!(
        parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ"),
        Ok((1, "whqtswO00WBw418f9t5JxYwZ".to_string()))
    );
    let longest = "~".repeat(70);
    assert_eq!(
        parse_uidl_line(format!("42 {longest} ").as_bytes()),
        Ok((42, longest))
    );

    let why = |line: &[u8]| match parse_uidl_line(line) {
        Err(CodecError::Malformed(why)) => why,
        other => panic!("{line:?} accepted: {other:?}"),
    };
    assert!(why(format!("1 {}", "a".repeat(71)).as_bytes()).contains("71 bytes long"));
    assert!(why(b"1 abc\x01def").contains("byte 0x01 at position 3"));
    assert!(why(b"1 abc def").contains("byte 0x20 at position 3"));
    assert!(why(b"1 caf\xc3\xa9").contains("byte 0xC3"));
    assert!(why(b"1").contains("unique-id is missing"));
    assert!(why(b"1   ").contains("unique-id is missing"));
    assert!(why(b"one abc").contains("message number \"one\" is not a decimal number"));
    assert!(why(b"").contains("message number is missing"));
    assert!(why(b"0 abc").contains("numbers messages from 1"));
}

#[test]
fn capa_lists_one_capability_per_line() {
    assert_eq!(
        parse_capa(b"STLS\r\n  SASL PLAIN LOGIN \r\n\r\nPIPELINING\nUIDL\r\n"),
        ["STLS", "SASL PLAIN LOGIN", "PIPELINING", "UIDL"]
    );
    assert!(parse_capa(b"").is_empty());
}

#[test]
fn capa_lines_cannot_write_escape_sequences_to_the_terminal() {
    assert_eq!(
        parse_capa(b"X-\x1b[2J\x0bEVIL\rUIDL\r\n"),
        ["X-\u{FFFD}[2J\u{FFFD}EVIL\u{FFFD}UIDL"]
    );
}
