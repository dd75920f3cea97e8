//! A real Rails application with Action Mailbox (`tests/rails/app.rb`), listening on a
//! loopback port with one ingress enabled (relay, Postmark or Mailgun), so pophook's
//! formats are judged by Action Mailbox's own ingress controllers.
//!
//! It needs Ruby with Rails, sqlite3 and WEBrick (Debian/Ubuntu: `ruby-rails
//! ruby-sqlite3 ruby-webrick`, which scripts/test.sh installs); without them the tests
//! fail saying so, never skip.

use std::process::Command;
use std::sync::OnceLock;

use super::webapp::{run, WebApp};

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rails/app.rb");

fn require_rails() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        run(
            Command::new("ruby").args([
                "-e",
                "require 'rails'; require 'action_mailbox/engine'; require 'sqlite3'; require 'webrick'",
            ]),
            "Ruby with Rails (Action Mailbox), sqlite3 and WEBrick is needed: \
             `apt-get install -y ruby-rails ruby-sqlite3 ruby-webrick`, or run \
             scripts/test.sh, which installs them",
        )
    });
}

/// Action Mailbox's ingresses that pophook speaks.
#[derive(Clone, Copy, Debug)]
pub enum Ingress {
    Relay,
    Postmark,
    Mailgun,
}

impl Ingress {
    fn name(self) -> &'static str {
        match self {
            Ingress::Relay => "relay",
            Ingress::Postmark => "postmark",
            Ingress::Mailgun => "mailgun",
        }
    }

    /// The ingress's path, as Action Mailbox routes it.
    pub fn path(self) -> &'static str {
        match self {
            Ingress::Relay => "/rails/action_mailbox/relay/inbound_emails",
            Ingress::Postmark => "/rails/action_mailbox/postmark/inbound_emails",
            Ingress::Mailgun => "/rails/action_mailbox/mailgun/inbound_emails/mime",
        }
    }
}

pub struct Rails {
    pub app: WebApp,
}

impl Rails {
    /// Starts the application accepting mail only through `ingress`, with the
    /// ingress password (user `actionmailbox`) and the Mailgun signing key.
    pub fn start(ingress: Ingress, password: &str, mailgun_key: &str) -> Rails {
        require_rails();
        let app = WebApp::start("Rails", |port, dir| {
            let mut command = Command::new("ruby");
            command
                .arg(APP)
                .env("INGRESS", ingress.name())
                .env("PORT", port.to_string())
                .env("TRIAL_DIR", dir)
                .env("RAILS_INBOUND_EMAIL_PASSWORD", password)
                .env("MAILGUN_INGRESS_SIGNING_KEY", mailgun_key)
                .env("RAILS_ENV", "production");
            command
        });
        Rails { app }
    }

    /// What the mailbox recorded, one JSON object per processed message, in order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.app.dir().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    pub fn log(&self) -> String {
        self.app.log()
    }
}
