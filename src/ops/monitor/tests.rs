use super::*;

#[test]
fn the_oldest_age_grows_on_the_monotonic_clock() {
    let t0 = Instant::now();
    let oldest = Oldest::observed("box", 1_000, 1_060, t0);
    assert_eq!(oldest.age_at(t0), Duration::from_secs(60));
    assert_eq!(
        oldest.age_at(t0 + Duration::from_secs(30)),
        Duration::from_secs(90)
    );
}

#[test]
fn a_wall_clock_behind_the_state_starts_the_age_at_zero_and_it_still_grows() {
    // The state says the message was first seen an hour after "now": the clock was
    // stepped back. The age is not negative, and grows from there.
    let t0 = Instant::now();
    let oldest = Oldest::observed("box", 4_600, 1_000, t0);
    assert_eq!(oldest.age_at(t0), Duration::ZERO);
    assert_eq!(
        oldest.age_at(t0 + Duration::from_secs(10)),
        Duration::from_secs(10)
    );
}

#[test]
fn a_wall_clock_behind_the_state_is_logged() {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        Oldest::observed("box", 1_000, 1_060, Instant::now());
        Oldest::observed("box", 4_600, 1_000, Instant::now());
    });
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("stepped back") && log.contains("behind_s=3600"),
        "{log}"
    );
}

#[test]
fn a_retired_mailbox_leaves_the_exposition_until_it_is_configured_again() {
    let exposition = "\
# HELP pophook_messages_retrying Messages waiting for a retry.
# TYPE pophook_messages_retrying gauge
pophook_messages_retrying{mailbox=\"gone\"} 1
pophook_messages_retrying{mailbox=\"gone2\"} 2
pophook_messages_retrying{mailbox=\"kept\"} 3

pophook_cycles_total{mailbox=\"gone\",result=\"ok\"} 4
pophook_cycle_duration_seconds_bucket{mailbox=\"gone\",le=\"0.05\"} 5
pophook_cycle_duration_seconds_sum{mailbox=\"gone\"} 6
pophook_webhook_connections_opened_total{endpoint=\"http://gone:80\"} 7
pophook_x{other=\"a,mailbox=\\\"gone\\\"\"} 8
pophook_x{other=\"a\",mailbox=\"gone\"} 9
pophook_build_info{version=\"1\"} 1
";
    let mut retired = Retired::default();
    assert_eq!(retired.filter(exposition.to_string()), exposition);
    retired.reloaded(["kept", "gone", "gone2"], &["kept", "gone2"]);
    // Every sample labelled mailbox="gone", wherever the label sits; not "gone2", not
    // an endpoint or another label's value that merely contains the text.
    let cut = [
        "pophook_messages_retrying{mailbox=\"gone\"} 1",
        "pophook_cycles_total{mailbox=\"gone\",result=\"ok\"} 4",
        "pophook_cycle_duration_seconds_bucket{mailbox=\"gone\",le=\"0.05\"} 5",
        "pophook_cycle_duration_seconds_sum{mailbox=\"gone\"} 6",
        "pophook_x{other=\"a\",mailbox=\"gone\"} 9",
    ];
    let kept: Vec<&str> = exposition.lines().filter(|l| !cut.contains(l)).collect();
    assert_eq!(kept.len(), exposition.lines().count() - cut.len());
    let filtered = retired.filter(exposition.to_string());
    assert_eq!(filtered.lines().collect::<Vec<_>>(), kept);
    retired.reloaded(["kept", "gone2"], &["kept", "gone", "gone2"]);
    assert_eq!(retired.filter(exposition.to_string()), exposition);
}
