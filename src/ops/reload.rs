//! Asking a running service to read its configuration again (SIGHUP,
//! `POST /api/reload`): the request channel and what a reload changed.

use tokio::sync::{mpsc, oneshot};

/// Asks a running service to read its configuration again (SIGHUP, `POST /api/reload`).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<Result<ReloadSummary, String>>>);

impl ReloadHandle {
    /// What the reload did, or why the new configuration was refused (the old one
    /// keeps running).
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| "the service is stopping".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the service is stopping".into()))
    }
}

/// The requests a [`ReloadHandle`] sends, each with where to send the outcome; the
/// service reads them.
pub type ReloadRequests = mpsc::Receiver<oneshot::Sender<Result<ReloadSummary, String>>>;

/// A handle and the requests it sends.
pub fn channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadHandle(tx), rx)
}

/// What a reload changed, by mailbox name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Settings that only a restart applies (state_dir, http, shutdown_timeout).
    pub need_restart: Vec<String>,
}
