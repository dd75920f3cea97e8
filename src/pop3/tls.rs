//! TLS for POP3: one connector per mailbox, built once, and the handshake.

use std::sync::{Arc, OnceLock};

use tracing::warn;

use super::client::{Io, ServerConfig};
use super::error::Pop3Error;

/// The TLS settings of one mailbox, built into a connector once and shared by all its
/// sessions: building one loads the system's CA store, tens of milliseconds of CPU,
/// far more than a handshake, and a mailbox opens a session every cycle.
#[derive(Clone, Default)]
pub struct TlsConnectorCache(Arc<OnceLock<Result<tokio_native_tls::TlsConnector, String>>>);

impl std::fmt::Debug for TlsConnectorCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnectorCache")
    }
}

impl TlsConnectorCache {
    fn get(&self, cfg: &ServerConfig) -> Result<tokio_native_tls::TlsConnector, String> {
        self.0.get_or_init(|| build_connector(cfg)).clone()
    }
}

/// TLS 1.2 at least; the system's CAs plus `tls_ca_file`; certificate and host name
/// verified unless `tls_accept_invalid_certs`.
fn build_connector(cfg: &ServerConfig) -> Result<tokio_native_tls::TlsConnector, String> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(pem) = &cfg.ca_pem {
        let cert = native_tls::Certificate::from_pem(pem)
            .map_err(|e| format!("`tls_ca_file` is not a PEM certificate: {e}"))?;
        builder.add_root_certificate(cert);
    }
    if cfg.accept_invalid_certs {
        builder
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    let connector = builder.build().map_err(|e| e.to_string())?;
    Ok(tokio_native_tls::TlsConnector::from(connector))
}

pub(super) async fn tls_handshake<S: Io + 'static>(
    cfg: &ServerConfig,
    stream: S,
) -> Result<tokio_native_tls::TlsStream<S>, Pop3Error> {
    let tls_err = |reason: String| Pop3Error::Tls {
        host: cfg.host.clone(),
        reason,
    };
    if cfg.accept_invalid_certs {
        warn!(
            host = %cfg.host,
            "`tls_accept_invalid_certs: true`: the server's certificate is NOT verified; anyone on the path can read the password"
        );
    }
    let connector = cfg.tls_connector.get(cfg).map_err(tls_err)?;
    match tokio::time::timeout(cfg.timeout, connector.connect(&cfg.host, stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(tls_err(e.to_string())),
        Err(_) => Err(Pop3Error::Timeout {
            during: "TLS handshake",
            timeout: cfg.timeout,
        }),
    }
}
