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
