//! The shutdown signal, passed into the service as a value (as mini-redis does) so
//! tests can trigger it without sending the process a signal.

use tokio::sync::watch;

/// Held by whoever decides to stop (main's signal handler, a test).
pub struct Trigger(watch::Sender<bool>);

/// Held by every task that must stop; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// A signal that never fires, for `once` and `check`.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Leaking the sender keeps the channel open; dropping it would look like a shutdown.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown was requested (or its trigger was dropped).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
