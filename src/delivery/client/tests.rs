use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

fn timeouts() -> Timeouts {
    Timeouts {
        total: S(30),
        connect: S(10),
        response: S(20),
    }
}

#[test]
fn each_phase_has_its_own_bound() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + S(s);
    let progress = |upload_started: Option<u64>, last: Option<u64>, sent: Option<u64>| Progress {
        started: t0,
        upload_started: upload_started.map(at),
        last_piece: last.map(at),
        sent: sent.map(at),
        ended: false,
    };
    let cases = [
        // Not uploading yet: the whole `timeout`.
        (
            progress(None, None, None),
            (at(30), TimedOut::Request(S(30))),
        ),
        // Uploading: a stall bound from the last piece, however long it has taken.
        (
            progress(Some(5), Some(500), None),
            (at(530), TimedOut::Upload(S(30))),
        ),
        // Sent after 2s of connecting: the answer gets `response_timeout`.
        (
            progress(Some(2), Some(900), Some(900)),
            (at(920), TimedOut::Answer(S(20))),
        ),
        // Sent after 25s of connecting: only what is left of `timeout`.
        (
            progress(Some(25), Some(900), Some(900)),
            (at(905), TimedOut::Answer(S(5))),
        ),
        // An empty body is sent at once.
        (
            progress(None, None, Some(0)),
            (at(20), TimedOut::Answer(S(20))),
        ),
    ];
    for (progress, want) in cases {
        assert_eq!(progress.deadline(&timeouts()), want, "{progress:?}");
    }
}

#[test]
fn endpoints_name_scheme_host_and_port_only() {
    let url = url::Url::parse("https://hooks.example.com/in?token=x").unwrap();
    assert_eq!(endpoint(&url), "https://hooks.example.com:443");
    let url = url::Url::parse("http://127.0.0.1:8080/a/b").unwrap();
    assert_eq!(endpoint(&url), "http://127.0.0.1:8080");
}
