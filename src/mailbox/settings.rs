//! What a mailbox runs with: its server, its schedule and its webhook.

use std::time::Duration;

use crate::delivery::WebhookConfig;
use crate::pop3::ServerConfig;

/// One mailbox and the webhook its messages go to.
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Unique; part of state keys, event ids, logs and payloads.
    pub name: String,
    pub server: ServerConfig,
    pub poll_interval: Duration,
    /// `false`: leave mail on the server and deliver each message once.
    pub delete: bool,
    /// QUIT (which commits deletions) once a session has lasted this long, and continue
    /// in a new one, so a dropped connection late in a large backlog undoes little.
    pub commit_interval: Duration,
    /// Deprecated extra cap: also QUIT after this many DELEs. Unset by default.
    pub commit_every: Option<usize>,
    pub webhook: WebhookConfig,
    /// How its events are built (from the same `webhook` section).
    pub event: crate::event::Options,
}

impl Mailbox {
    /// Identifies everything about the mailbox, secrets included (hashed, never
    /// stored): a reload restarts the mailboxes whose fingerprint changed.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        // Debug shows every setting but prints secrets as [redacted]; they follow.
        hash.update(format!("{self:?}").as_bytes());
        hash.update([0]);
        hash.update(self.server.password.expose().as_bytes());
        hash.update([0]);
        self.webhook.identity(&mut |bytes| hash.update(bytes));
        if let Some(tokens) = &self.server.oauth2 {
            hash.update(tokens.fingerprint());
        }
        if let Some(storage) = &self.event.storage {
            hash.update(storage.fingerprint().as_bytes());
        }
        hash.finalize().into()
    }
}
