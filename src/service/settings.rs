//! The validated configuration of the whole service, as the `config` module reads
//! and validates it from the file and the environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::mailbox::Mailbox;
use crate::ops::http::HttpConfig;
use crate::ops::shard::Shard;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    /// The mailboxes this instance polls: all of them, or with `shard` those that hash
    /// to its index.
    pub mailboxes: Vec<Mailbox>,
    /// How long `run` may take after SIGTERM to finish the message in hand and QUIT.
    pub shutdown_timeout: Duration,
    /// Message bytes in flight across all mailboxes (downloaded and not yet answered
    /// by the webhook); a download waits for room.
    pub max_memory: u64,
    /// The health, metrics and management endpoint; off unless configured.
    pub http: Option<HttpConfig>,
    pub shard: Option<Shard>,
    /// Mailboxes in the configuration that other shards poll: (name, owning index).
    pub other_shards: Vec<(String, u32)>,
    /// The object store (`storage`), when configured; the webhooks that store
    /// attachments or messages hold it too.
    pub storage: Option<std::sync::Arc<crate::storage::Storage>>,
}
