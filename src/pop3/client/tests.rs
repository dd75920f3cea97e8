use super::*;
use crate::pop3::auth::{mechanism_offered, sasl_plain};

#[test]
fn sasl_plain_is_nul_separated_base64() {
    let response = sasl_plain("user", &Secret::new("pass"));
    assert_eq!(response.expose(), "AHVzZXIAcGFzcw==");
}

#[test]
fn a_sasl_mechanism_missing_from_capa_is_named_with_the_alternatives() {
    let capa = |lines: &[&str]| Capabilities(lines.iter().map(|l| l.to_string()).collect());
    let offered = capa(&["USER", "SASL plain XOAUTH2"]);
    assert_eq!(offered.sasl_mechanisms(), ["PLAIN", "XOAUTH2"]);
    for auth in [AuthMethod::User, AuthMethod::Plain, AuthMethod::XOAuth2] {
        assert!(mechanism_offered(auth, &offered).is_ok());
    }
    // A server that did not answer CAPA is tried.
    assert!(mechanism_offered(AuthMethod::Plain, &capa(&[])).is_ok());
    let e = mechanism_offered(AuthMethod::XOAuth2, &capa(&["USER", "SASL PLAIN"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`auth: xoauth2` needs SASL XOAUTH2")
            && e.contains("it offers SASL PLAIN")
            && e.contains("`auth: plain`"),
        "{e}"
    );
    let e = mechanism_offered(AuthMethod::Plain, &capa(&["USER", "UIDL"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lists no SASL mechanism") && e.contains("`auth: user`"),
        "{e}"
    );
}

#[test]
fn capabilities_match_the_first_word_case_insensitively() {
    let capa = Capabilities(vec!["SASL PLAIN".into(), "stls".into(), "UIDL".into()]);
    assert!(capa.has("STLS"));
    assert!(capa.has("SASL"));
    assert!(!capa.has("PLAIN"));
    assert!(!capa.has("PIPELINING"));
    assert_eq!(capa.login_delay(), None);
    let capa = Capabilities(vec!["LOGIN-DELAY 900 USER".into()]);
    assert_eq!(capa.login_delay(), Some(Duration::from_secs(900)));
}
