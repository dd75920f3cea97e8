//! One POP3 session over TCP or TLS: connect, greeting, CAPA, STLS, authentication,
//! then the transaction commands. It never decides what to delete, and never QUITs
//! by itself: QUIT commits deletions, so only [`Session::quit`] sends it, on purpose.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::trace;

use super::codec::{self, MultiLineDecoder, Status, StatusDecoder};
use super::command::Command;
use super::error::Pop3Error;
use super::tls::{tls_handshake, TlsConnectorCache};
use crate::oauth2::TokenSource;
use crate::secret::Secret;

/// Where protocol traces go: `RUST_LOG=pophook::wire=trace` shows every command
/// (credentials redacted) and every status line.
pub(super) const WIRE: &str = "pophook::wire";

/// A UIDL or LIST answer larger than this is refused: 16 MiB is about 400,000 entries.
const MAX_LISTING: usize = 16 * 1024 * 1024;
/// CAPA, greeting-sized answers.
const MAX_SMALL_RESPONSE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (port 995).
    Implicit,
    /// Plain connection upgraded with STLS before any credential is sent (port 110).
    Starttls,
    /// No encryption; only with `allow_insecure: true`.
    None,
}

impl TlsMode {
    /// The word the configuration uses (`tls: starttls`), for what pophook prints.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::None => "none",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 995,
            TlsMode::Starttls | TlsMode::None => 110,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// USER / PASS (RFC 1939).
    User,
    /// SASL PLAIN (RFC 5034).
    Plain,
    /// SASL XOAUTH2 with an OAuth2 access token from [`ServerConfig::oauth2`]
    /// (Microsoft 365, Gmail).
    #[serde(rename = "xoauth2")]
    XOAuth2,
}

/// Everything needed to open an authenticated session; built and validated by `config`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub allow_insecure: bool,
    /// PEM of an extra CA to trust (`tls_ca_file`), read when the config was loaded.
    pub ca_pem: Option<Vec<u8>>,
    pub accept_invalid_certs: bool,
    pub username: String,
    /// For `user` and `plain`; empty with `xoauth2`.
    pub password: Secret,
    pub auth: AuthMethod,
    /// Where `xoauth2` gets its tokens; `config` sets it exactly when `auth` is `xoauth2`.
    /// Shared, so every session of a mailbox reuses one cached token.
    pub oauth2: Option<Arc<TokenSource>>,
    /// Bound on every network wait: connect, handshake, each read and write.
    pub timeout: Duration,
    pub max_line: usize,
    /// Largest message RETR will accept; larger ones are an error, not unbounded memory.
    pub max_message_size: usize,
    /// Built on the first TLS connect, then reused.
    pub tls_connector: TlsConnectorCache,
}

/// What the server said it can do (RFC 2449 CAPA). Empty when CAPA is not supported.
#[derive(Clone, Debug, Default)]
pub struct Capabilities(Vec<String>);

impl Capabilities {
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case(name))
        })
    }

    pub fn lines(&self) -> &[String] {
        &self.0
    }

    /// The mechanisms of the `SASL` line, upper-case; empty when there is none.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                let first = words.next()?;
                first
                    .eq_ignore_ascii_case("SASL")
                    .then(|| words.map(|w| w.to_ascii_uppercase()).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    }

    /// RFC 2449 `LOGIN-DELAY n`: the server allows a new login only every n seconds.
    pub fn login_delay(&self) -> Option<Duration> {
        self.0.iter().find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let name = words.next()?;
            if !name.eq_ignore_ascii_case("LOGIN-DELAY") {
                return None;
            }
            words.next()?.parse().ok().map(Duration::from_secs)
        })
    }
}

/// The answer to UIDL: entries with a valid unique id, and a description of each line
/// that had to be skipped (never fetched, never deleted).
#[derive(Debug, Default)]
pub struct UidlListing {
    pub entries: Vec<(u32, String)>,
    pub skipped: Vec<String>,
}

/// Any stream a session can run over: TCP, or TLS over TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Moves bytes: writes commands, reads until the codec has a whole reply.
pub(super) struct Connection<S> {
    stream: S,
    buf: BytesMut,
    /// Reads land here first. The TLS adapter zero-fills whatever buffer it is handed on
    /// every poll, so handing it `buf`'s (possibly large) spare capacity would cost a
    /// memset per read; this one is initialised once.
    scratch: Box<[u8]>,
    status: StatusDecoder,
    timeout: Duration,
    max_line: usize,
}

const READ_CHUNK: usize = 16 * 1024;

impl<S: Io> Connection<S> {
    fn new(stream: S, cfg: &ServerConfig) -> Self {
        Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            status: StatusDecoder::new(cfg.max_line),
            timeout: cfg.timeout,
            max_line: cfg.max_line,
        }
    }

    pub(super) async fn send(&mut self, cmd: &Command<'_>) -> Result<(), Pop3Error> {
        trace!(target: WIRE, "C: {cmd}");
        let during = cmd.verb();
        let wire = cmd.to_wire();
        match tokio::time::timeout(self.timeout, self.stream.write_all(&wire)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Pop3Error::Io { during, source }),
            Err(_) => Err(Pop3Error::Timeout {
                during,
                timeout: self.timeout,
            }),
        }
    }

    /// Reads more bytes into the buffer; end of stream here is always an error,
    /// because we only read when a reply is incomplete.
    async fn fill(&mut self, during: &'static str) -> Result<(), Pop3Error> {
        match tokio::time::timeout(self.timeout, self.stream.read(&mut self.scratch)).await {
            Ok(Ok(0)) => Err(Pop3Error::Closed { during }),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Ok(Err(source)) => Err(Pop3Error::Io { during, source }),
            Err(_) => Err(Pop3Error::Timeout {
                during,
                timeout: self.timeout,
            }),
        }
    }

    pub(super) async fn read_status(&mut self, during: &'static str) -> Result<Status, Pop3Error> {
        loop {
            if let Some(status) = self.status.decode(&mut self.buf)? {
                trace!(target: WIRE, "S: {}", status_for_log(&status));
                return Ok(status);
            }
            self.fill(during).await?;
        }
    }

    /// A listing or CAPA body: every line within `max_line`, the whole within `max_total`.
    async fn read_body(
        &mut self,
        during: &'static str,
        max_total: usize,
    ) -> Result<Bytes, Pop3Error> {
        let decoder = MultiLineDecoder::new(self.max_line, max_total);
        self.read_body_with(during, decoder).await
    }

    /// A message (RETR, TOP), with room for `expected` bytes reserved up front.
    ///
    /// RFC 5322's 998-octet lines are widely exceeded (unwrapped HTML, base64 without
    /// breaks) and `max_total` already bounds memory, so here a line may be as long as
    /// the message may be; a longer line means a message over `max_total`, and is
    /// reported as such, so the cycle treats it like any oversized message.
    async fn read_message_body(
        &mut self,
        during: &'static str,
        max_total: usize,
        expected: usize,
    ) -> Result<Bytes, Pop3Error> {
        let max_line = max_total.saturating_add(2).max(self.max_line);
        let decoder = MultiLineDecoder::with_capacity(max_line, max_total, expected);
        match self.read_body_with(during, decoder).await {
            Err(Pop3Error::Codec(codec::CodecError::LineTooLong { .. })) => {
                Err(Pop3Error::TooLarge {
                    command: during,
                    limit: max_total,
                })
            }
            other => other,
        }
    }

    async fn read_body_with(
        &mut self,
        during: &'static str,
        mut decoder: MultiLineDecoder,
    ) -> Result<Bytes, Pop3Error> {
        loop {
            let decoded = decoder.decode(&mut self.buf).map_err(|e| match e {
                codec::CodecError::ResponseTooLarge { limit } => Pop3Error::TooLarge {
                    command: during,
                    limit,
                },
                other => Pop3Error::Codec(other),
            })?;
            if let Some(body) = decoded {
                trace!(target: WIRE, "S: [{} bytes of {during} data]", body.len());
                return Ok(body);
            }
            self.fill(during).await?;
        }
    }

    /// Sends a command and expects `+OK`; returns the text after it.
    pub(super) async fn simple(&mut self, cmd: Command<'_>) -> Result<Bytes, Pop3Error> {
        self.send(&cmd).await?;
        self.expect_ok(cmd.verb()).await
    }

    pub(super) async fn expect_ok(&mut self, command: &'static str) -> Result<Bytes, Pop3Error> {
        match self.read_status(command).await? {
            Status::Ok(text) => Ok(text),
            Status::Err(reply) => Err(Pop3Error::Server { command, reply }),
            Status::Continue(_) => Err(Pop3Error::Protocol {
                command,
                detail: "a SASL continuation (`+`) where +OK or -ERR was expected".into(),
            }),
        }
    }

    /// Sends a command whose `+OK` is followed by a listing.
    async fn multi(&mut self, cmd: Command<'_>, max_total: usize) -> Result<Bytes, Pop3Error> {
        let verb = cmd.verb();
        self.simple(cmd).await?;
        self.read_body(verb, max_total).await
    }

    async fn greeting(&mut self) -> Result<(), Pop3Error> {
        self.expect_ok("greeting").await.map(drop)
    }

    /// CAPA; a server that predates RFC 2449 answers -ERR, which means "no capabilities".
    async fn capa(&mut self) -> Result<Capabilities, Pop3Error> {
        self.send(&Command::Capa).await?;
        match self.read_status("CAPA").await? {
            Status::Ok(_) => {
                let body = self.read_body("CAPA", MAX_SMALL_RESPONSE).await?;
                Ok(Capabilities(codec::parse_capa(&body)))
            }
            Status::Err(_) => Ok(Capabilities::default()),
            Status::Continue(_) => Err(Pop3Error::Protocol {
                command: "CAPA",
                detail: "a SASL continuation (`+`)".into(),
            }),
        }
    }

    fn boxed(self) -> Connection<Box<dyn Io>>
    where
        S: 'static,
    {
        Connection {
            stream: Box::new(self.stream),
            buf: self.buf,
            scratch: self.scratch,
            status: self.status,
            timeout: self.timeout,
            max_line: self.max_line,
        }
    }
}

fn status_for_log(status: &Status) -> String {
    let (prefix, text) = match status {
        Status::Ok(text) => ("+OK ", text),
        Status::Err(reply) => return reply.to_string(),
        Status::Continue(text) => ("+ ", text),
    };
    format!("{prefix}{}", crate::text::one_line(text, 200))
}

/// An authenticated session in the TRANSACTION state.
pub struct Session {
    conn: Connection<Box<dyn Io>>,
    capabilities: Capabilities,
    max_message: usize,
}

impl Session {
    /// Connects, secures the connection as `cfg.tls` says and logs in. Credentials are
    /// sent only over TLS, or in the clear when `allow_insecure` says so.
    pub async fn connect(cfg: &ServerConfig) -> Result<Session, Pop3Error> {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let tcp = match tokio::time::timeout(cfg.timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(Pop3Error::Connect { addr, source }),
            Err(_) => {
                return Err(Pop3Error::Timeout {
                    during: "connect",
                    timeout: cfg.timeout,
                })
            }
        };
        // Commands are small and we wait for each reply; Nagle would only add latency.
        let _ = tcp.set_nodelay(true);

        let mut conn = match cfg.tls {
            TlsMode::Implicit => {
                let tls = tls_handshake(cfg, tcp).await?;
                let mut conn = Connection::new(tls, cfg);
                conn.greeting().await?;
                conn.boxed()
            }
            TlsMode::Starttls => {
                let mut plain = Connection::new(tcp, cfg);
                plain.greeting().await?;
                let capabilities = plain.capa().await?;
                if !capabilities.has("STLS") {
                    return Err(Pop3Error::StlsNotOffered);
                }
                match plain.simple(Command::Stls).await {
                    Ok(_) => {}
                    Err(Pop3Error::Server { reply, .. }) => {
                        return Err(Pop3Error::StlsRefused(reply))
                    }
                    Err(other) => return Err(other),
                }
                // Anything the server sent after its +OK and before the handshake was
                // not protected by TLS and could be an attacker's injected reply
                // (CVE-2021-39272 class): abort rather than read it later.
                if !plain.buf.is_empty() {
                    return Err(Pop3Error::Protocol {
                        command: "STLS",
                        detail: format!(
                            "{} unexpected bytes after +OK, before the TLS handshake (possible injection); no credentials were sent",
                            plain.buf.len()
                        ),
                    });
                }
                let tls = tls_handshake(cfg, plain.stream).await?;
                Connection::new(tls, cfg).boxed()
            }
            TlsMode::None => {
                if !cfg.allow_insecure {
                    return Err(Pop3Error::InsecureRefused);
                }
                let mut conn = Connection::new(tcp, cfg);
                conn.greeting().await?;
                conn.boxed()
            }
        };
        // Ask again after STLS: capabilities before TLS are not to be trusted (RFC 2595).
        let capabilities = conn.capa().await?;
        conn.authenticate(cfg, &capabilities).await?;
        Ok(Session {
            conn,
            capabilities,
            max_message: cfg.max_message_size,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Message count and total size (STAT).
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        let text = self.conn.simple(Command::Stat).await?;
        Ok(codec::parse_stat(&text)?)
    }

    /// Unique ids of every message. Lines with a missing, overlong or invalid id are
    /// reported in `skipped` and left alone. An id listed twice is kept: the planner
    /// tells such messages apart by their content.
    pub async fn uidl(&mut self) -> Result<UidlListing, Pop3Error> {
        let body = match self.conn.multi(Command::Uidl, MAX_LISTING).await {
            Ok(body) => body,
            Err(Pop3Error::Server { .. }) => return Err(Pop3Error::NoUidl),
            Err(other) => return Err(other),
        };
        let mut listing = UidlListing::default();
        for line in codec::lines(&body) {
            match codec::parse_uidl_line(line) {
                Ok(entry) => listing.entries.push(entry),
                Err(e) => listing.skipped.push(e.to_string()),
            }
        }
        Ok(listing)
    }

    /// Size of every message by number (LIST).
    pub async fn list(&mut self) -> Result<std::collections::HashMap<u32, u64>, Pop3Error> {
        let body = self.conn.multi(Command::List, MAX_LISTING).await?;
        let mut sizes = std::collections::HashMap::new();
        for line in codec::lines(&body) {
            let (n, size) = codec::parse_list_line(line)?;
            sizes.insert(n, size);
        }
        Ok(sizes)
    }

    /// The server accepts several commands before their replies (RFC 2449 PIPELINING).
    pub fn pipelining(&self) -> bool {
        self.capabilities.has("PIPELINING")
    }

    /// Sends a command without reading its reply; for [`super::pipeline`].
    pub(super) async fn send(&mut self, cmd: Command<'_>) -> Result<(), Pop3Error> {
        self.conn.send(&cmd).await
    }

    /// Reads the `+OK`/`-ERR` of an earlier command; for [`super::pipeline`].
    pub(super) async fn read_reply(&mut self, verb: &'static str) -> Result<Bytes, Pop3Error> {
        self.conn.expect_ok(verb).await
    }

    /// Reads the status and body of an earlier RETR or TOP; `expected` is the size LIST
    /// gave, to allocate once. For [`super::pipeline`].
    pub(super) async fn read_message(
        &mut self,
        verb: &'static str,
        expected: usize,
    ) -> Result<Bytes, Pop3Error> {
        self.conn.expect_ok(verb).await?;
        self.conn
            .read_message_body(verb, self.max_message, expected)
            .await
    }

    /// Ends the session and commits the deletions. An error means the server may not
    /// have removed what was marked; the state still knows those messages were
    /// delivered, so the next cycle deletes them again instead of re-posting.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.conn.simple(Command::Quit).await.map(drop)
    }
}

#[cfg(test)]
mod tests;
