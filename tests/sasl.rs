//! `auth: plain` against servers without SASL PLAIN (GNU Mailutils, popa3d, solid-pop3d
//! configurations): a configuration error naming the mechanism and what to set instead,
//! found before any credentials are sent, never "check username and password".

mod common;

use common::receiver::Receiver;
use common::scripted::{Script, Scripted};
use common::setup::{config, hook, message, scripted_mailbox};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_plain_without_sasl_plain_is_a_configuration_error_naming_the_alternative() {
    for capa in [true, false] {
        let server = Scripted::start(Script {
            messages: vec![message(1)],
            sasl_plain: false,
            capa,
            ..Script::default()
        })
        .await;
        let receiver = Receiver::start().await;
        let cfg = config(
            &hook(&receiver.url(), ""),
            &scripted_mailbox("box", server.port(), "    auth: plain\n"),
        );
        let out = tokio::task::block_in_place(|| cfg.pophook(&["once"]));
        let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "capa {capa}: {output}");
        assert!(
            output.contains("needs SASL PLAIN") && output.contains("`auth: user`"),
            "capa {capa}: {output}"
        );
        assert!(
            !output.contains("check username and password"),
            "capa {capa}: {output}"
        );
        // No credentials went out: no AUTH when CAPA said so, and never the password.
        let commands = server.commands();
        assert!(
            !commands.iter().any(|c| c.contains("AHVzZXIAc2VjcmV0")),
            "{commands:?}"
        );
        if capa {
            assert!(
                !commands.iter().any(|c| c.starts_with("AUTH")),
                "{commands:?}"
            );
        }
        assert_eq!(server.remaining().len(), 1);
        assert!(receiver.requests().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_the_tls_mode_and_the_missing_mechanism_in_the_configuration_s_words() {
    let server = Scripted::start(Script {
        sasl_plain: false,
        ..Script::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let cfg = config(
        &hook(&receiver.url(), ""),
        &format!(
            "{}{}",
            scripted_mailbox("plain", server.port(), "    auth: plain\n"),
            scripted_mailbox("user", server.port(), "")
        ),
    );
    let out = tokio::task::block_in_place(|| cfg.pophook(&["check"]));
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .to_string()
    };
    assert!(
        line("user").contains("(tls: none)") && line("user").contains(": ok"),
        "{stdout}"
    );
    let plain = line("plain");
    assert!(
        plain.contains("(tls: none)") && plain.contains("needs SASL PLAIN"),
        "{stdout}"
    );
}
