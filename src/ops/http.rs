//! `http`: the settings of the health, metrics and management endpoint.

use std::net::SocketAddr;

use crate::secret::Secret;

/// `http`: where the health, metrics and management endpoints listen, and who may
/// use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The bearer token `/api/*` requires (and `/metrics` with `protect_metrics`).
    /// `None` only on a loopback address or with `allow_unauthenticated_api: true`.
    pub token: Option<Secret>,
    /// `/metrics` requires the token too.
    pub protect_metrics: bool,
    /// Host names (without port) the API answers besides loopback ones and the listen
    /// address: what a browser sends is refused otherwise (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more wait in the kernel's queue, so the API can never
    /// use the descriptors that delivery needs.
    pub max_connections: usize,
}

/// Connections the endpoint serves at once unless `http.max_connections` says otherwise.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 32;

impl HttpConfig {
    /// An endpoint on `listen` with the defaults: no token (as tests bind loopback).
    pub fn open(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            token: None,
            protect_metrics: false,
            allowed_hosts: Vec::new(),
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
        }
    }
}

impl HttpConfig {
    /// The address a local client connects to: a wildcard listen address (`0.0.0.0`,
    /// `[::]`) is reached on loopback.
    pub fn local_url(&self, path: &str) -> String {
        let ip = match self.listen.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        format!("http://{}{path}", SocketAddr::new(ip, self.listen.port()))
    }
}
