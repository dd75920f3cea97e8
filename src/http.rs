//! Every HTTP client pophook builds (webhook pools, OAuth2 token endpoints, the
//! management commands) starts here, so they agree on what matters for safety.

/// A client builder that never follows a redirect (a request carrying a signature,
/// a token or a password would be resent to wherever the answer points) and names
/// pophook and its version as the user agent.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pophook/", env!("CARGO_PKG_VERSION")))
}
