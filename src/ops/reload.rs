//! Asking a running service to read its configuration again (SIGHUP,
//! `POST /api/reload`): the request channel and what a reload changed.

use tokio::sync::{mpsc, oneshot};

use crate::ops::http::HttpConfig;

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
    /// Changed keys that only a restart applies (`state_dir`, `http.listen`, …), by
    /// name: the reload applied everything else.
    pub need_restart: Vec<String>,
}

/// The `http` keys that differ between the running endpoint and a new configuration's
/// (`http` itself when one of them has none); the endpoint is bound and configured once,
/// at start.
pub fn http_changes(running: Option<&HttpConfig>, new: Option<&HttpConfig>) -> Vec<String> {
    let (Some(running), Some(new)) = (running, new) else {
        return if running.is_some() == new.is_some() {
            Vec::new()
        } else {
            vec!["http".into()]
        };
    };
    // Field by field, so a new `http` setting cannot compile without being compared.
    let HttpConfig {
        listen,
        token,
        protect_metrics,
        allowed_hosts,
        max_connections,
    } = new;
    [
        ("http.listen", *listen != running.listen),
        // `token_file` and `token_env` resolve to the token: a new secret in the file
        // counts, the same one under another source does not.
        ("http.token", *token != running.token),
        (
            "http.protect_metrics",
            *protect_metrics != running.protect_metrics,
        ),
        (
            "http.allowed_hosts",
            *allowed_hosts != running.allowed_hosts,
        ),
        (
            "http.max_connections",
            *max_connections != running.max_connections,
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .collect()
}

#[cfg(test)]
mod tests;
