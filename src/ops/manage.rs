//! The management commands (`status`, `parked list|replay|drop`, `healthcheck`) from
//! the command line. sled lets one process open the state: when the service is stopped
//! they open it directly; when it runs they go through its `http.listen` API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::path::Path;

use crate::ledger::{Ledger, StateError};
use crate::mailbox::Mailbox;
use crate::ops::api::{DropRequest, ReplayRequest, REPLAY_WAIT};
use crate::ops::http::HttpConfig;
use crate::ops::parked::{self, ParkedMessage, ReplayReport, SelectError};
use crate::ops::shard::Shard;
use crate::ops::status::{self, StatusReport};
use crate::watchdog::Watchdog;

/// How long a status, list or drop request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("pophook is running on this state_dir ({dir}) and sled lets only one process open it. To manage the running service, set `http.listen` (e.g. 127.0.0.1:9090, or POPHOOK_HTTP__LISTEN) in its configuration and restart it; or stop it and run this command again")]
    RunningWithoutApi { dir: String },
    #[error("the state is in use by a running pophook, but its API at {url} did not answer ({reason}); is `http.listen` the same in the service's configuration?")]
    Unreachable { url: String, reason: String },
    /// The running service refused or failed the request; its message.
    #[error("{0}")]
    Api(String),
    /// Replaying with the service stopped failed; why.
    #[error("{0}")]
    Replay(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Select(#[from] SelectError),
}

/// Where the state is read and changed.
pub enum Manager {
    /// The service is stopped: the state, opened here.
    Local(Ledger),
    /// The service runs: its API.
    Remote(HttpConfig),
    /// No state directory yet: nothing was ever recorded.
    Empty,
}

impl Manager {
    /// Opens the state, or falls back to the running service's API when it holds it.
    pub fn open(state_dir: &Path, http: Option<&HttpConfig>) -> Result<Manager, ManageError> {
        if !state_dir.exists() {
            return Ok(Manager::Empty);
        }
        match Ledger::open(state_dir, Watchdog::default()) {
            Ok(ledger) => Ok(Manager::Local(ledger)),
            Err(StateError::Locked { dir }) => match http {
                Some(http) => Ok(Manager::Remote(http.clone())),
                None => Err(ManageError::RunningWithoutApi {
                    dir: dir.display().to_string(),
                }),
            },
            Err(other) => Err(other.into()),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Manager::Remote(_))
    }

    /// The status of `mailboxes` (the configured ones; `shard` when sharded).
    pub async fn status(
        &self,
        mailboxes: &[Mailbox],
        shard: Option<Shard>,
    ) -> Result<StatusReport, ManageError> {
        let local = |ledger: Option<&Ledger>| -> Result<StatusReport, ManageError> {
            let mailboxes = match ledger {
                Some(ledger) => status::collect(ledger, mailboxes),
                None => status::collect_empty(mailboxes),
            };
            Ok(StatusReport {
                running: false,
                shard: shard.map(|s| s.to_string()),
                mailboxes,
            })
        };
        match self {
            Manager::Local(ledger) => local(Some(ledger)),
            Manager::Empty => local(None),
            Manager::Remote(http) => get(http, "/api/status").await,
        }
    }

    pub async fn parked(&self, mailbox: Option<&str>) -> Result<Vec<ParkedMessage>, ManageError> {
        match self {
            Manager::Local(ledger) => Ok(parked::list(ledger, mailbox)),
            Manager::Empty => Ok(Vec::new()),
            Manager::Remote(http) => {
                let path = match mailbox {
                    Some(m) => format!(
                        "/api/parked?mailbox={}",
                        url::form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>()
                    ),
                    None => "/api/parked".to_string(),
                };
                get(http, &path).await
            }
        }
    }

    /// Replays parked messages: with the service stopped, by `offline` on the state
    /// opened here (the service's replay, a cycle of each mailbox concerned, which this
    /// plane does not run itself); else by the running service, which cycles those
    /// mailboxes at once.
    pub async fn replay(
        self,
        mailbox: Option<&str>,
        ids: &[String],
        offline: impl AsyncFnOnce(Ledger) -> Result<ReplayReport, String>,
    ) -> Result<ReplayReport, ManageError> {
        match self {
            Manager::Local(ledger) => {
                let report = offline(ledger.clone()).await.map_err(ManageError::Replay)?;
                ledger.close().await?;
                Ok(report)
            }
            Manager::Empty => match ids.first() {
                Some(id) => Err(SelectError::NotParked(id.clone()).into()),
                None => Ok(ReplayReport::default()),
            },
            Manager::Remote(http) => {
                let request = ReplayRequest {
                    mailbox: mailbox.map(str::to_string),
                    ids: ids.to_vec(),
                };
                post(&http, "/api/parked/replay", &request, REPLAY_WAIT * 2).await
            }
        }
    }

    pub async fn drop(&self, ids: &[String]) -> Result<Vec<ParkedMessage>, ManageError> {
        match self {
            Manager::Local(ledger) => {
                let selected = parked::select(ledger, None, ids)?;
                parked::drop(ledger, &selected).await?;
                ledger.close().await?;
                Ok(selected)
            }
            Manager::Empty => match ids.first() {
                Some(id) => Err(SelectError::NotParked(id.clone()).into()),
                None => Ok(Vec::new()),
            },
            Manager::Remote(http) => {
                let request = DropRequest { ids: ids.to_vec() };
                post(http, "/api/parked/drop", &request, REQUEST_TIMEOUT).await
            }
        }
    }
}

/// GETs `url` (a `/healthz`): Ok with a short description on 200, Err otherwise.
pub async fn healthcheck(url: &str) -> Result<String, String> {
    let client = client(Duration::from_secs(3)).map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => {
            Ok(format!("healthy: {url} answered 200"))
        }
        Ok(response) => Err(format!("unhealthy: {url} answered {}", response.status())),
        Err(e) => Err(format!(
            "unhealthy: {url} did not answer ({})",
            crate::text::error_chain(&&e)
        )),
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::http::client_builder()
        .timeout(timeout)
        // The management API is local: a proxy from the environment would misroute it.
        .no_proxy()
        .build()
}

async fn get<T: DeserializeOwned>(http: &HttpConfig, path: &str) -> Result<T, ManageError> {
    let url = http.local_url(path);
    let request = client(REQUEST_TIMEOUT)
        .map_err(|e| unreachable(&url, &e))?
        .get(&url);
    answer(&url, authorized(http, request)).await
}

async fn post<T: DeserializeOwned>(
    http: &HttpConfig,
    path: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<T, ManageError> {
    let url = http.local_url(path);
    let request = client(timeout)
        .map_err(|e| unreachable(&url, &e))?
        .post(&url)
        .json(body);
    answer(&url, authorized(http, request)).await
}

/// With the configured `http.token`, as the API requires (reqwest marks the value
/// sensitive, so it stays out of debug output).
fn authorized(http: &HttpConfig, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &http.token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    }
}

async fn answer<T: DeserializeOwned>(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, ManageError> {
    let response = request.send().await.map_err(|e| unreachable(url, &e))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| unreachable(url, &e))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            ManageError::Api(format!(
                "unexpected answer from {url}: {e} (is it pophook's API?)"
            ))
        });
    }
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(ManageError::Api(format!(
            "{url} refused the request (401): give this command the same `http.token` (or `token_file`/`token_env`) as the running service"
        )));
    }
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{url} answered {status}"));
    Err(ManageError::Api(message))
}

fn unreachable(url: &str, error: &reqwest::Error) -> ManageError {
    ManageError::Unreachable {
        url: url.to_string(),
        reason: crate::text::error_chain(&error),
    }
}
