//! Asking a running service to read its configuration again (SIGHUP,
//! `POST /api/reload`): the request channel and what a reload changed.

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};

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

/// The service's side of [`ReloadHandle`]: the requests, and how to read the
/// configuration again.
pub struct Reloader {
    pub(crate) requests: mpsc::Receiver<oneshot::Sender<Result<ReloadSummary, String>>>,
    pub(crate) load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// A reload channel whose service reads its configuration with `load`.
pub fn reloader(
    load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) -> (ReloadHandle, Reloader) {
    let (tx, rx) = mpsc::channel(4);
    (
        ReloadHandle(tx),
        Reloader {
            requests: rx,
            load: Box::new(load),
        },
    )
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
