//! `pophook check`: logs in to every mailbox and reports what it found, changing
//! nothing.

use tokio::task::JoinSet;

use super::Config;
use crate::ledger::Ledger;
use crate::mailbox::Mailbox;
use crate::pop3::Session;
use crate::watchdog::Watchdog;

/// What `check` found for one mailbox.
#[derive(Debug)]
pub struct CheckReport {
    pub mailbox: String,
    pub address: String,
    pub result: Result<CheckDetails, String>,
}

#[derive(Debug)]
pub struct CheckDetails {
    pub capabilities: Vec<String>,
    pub messages: u32,
    pub octets: u64,
}

/// Logs in to every mailbox and reads its capabilities and size. Sends no DELE; the
/// QUIT at the end commits nothing because nothing was marked.
pub async fn check(config: &Config) -> Vec<CheckReport> {
    // A refresh token an OAuth2 endpoint rotated during an earlier run is in the state:
    // present that one (and keep the next), or the provider may revoke them all. While
    // a service holds the state it cannot be opened, and the configured token is used.
    let oauth2 = config.mailboxes.iter().any(|m| m.server.oauth2.is_some());
    let ledger = (oauth2 && config.state_dir.exists())
        .then(|| Ledger::open(&config.state_dir, Watchdog::default()).ok())
        .flatten();
    if let Some(ledger) = &ledger {
        for mailbox in &config.mailboxes {
            if let Some(tokens) = &mailbox.server.oauth2 {
                tokens.keep_in(crate::oauth2::Keeper {
                    ledger: ledger.clone(),
                    expiry: None,
                });
            }
        }
    }
    let reports = check_all(config).await;
    if let Some(ledger) = ledger {
        let _ = ledger.close().await;
    }
    reports
}

async fn check_all(config: &Config) -> Vec<CheckReport> {
    let mut tasks = JoinSet::new();
    for (index, mailbox) in config.mailboxes.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let result = check_one(&mailbox).await.map_err(|e| e.to_string());
            let report = CheckReport {
                address: format!(
                    "{}:{} (tls: {})",
                    mailbox.server.host,
                    mailbox.server.port,
                    mailbox.server.tls.name()
                ),
                mailbox: mailbox.name,
                result,
            };
            (index, report)
        });
    }
    let mut reports = tasks.join_all().await;
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}

async fn check_one(mailbox: &Mailbox) -> Result<CheckDetails, crate::pop3::Pop3Error> {
    let mut session = Session::connect(&mailbox.server).await?;
    let (messages, octets) = session.stat().await?;
    let capabilities = session.capabilities().lines().to_vec();
    session.quit().await?;
    Ok(CheckDetails {
        capabilities,
        messages,
        octets,
    })
}
