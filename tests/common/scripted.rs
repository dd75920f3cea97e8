//! A scripted in-process POP3 server (RFC 1939, with CAPA, STLS, SASL PLAIN and XOAUTH2) over one
//! shared in-memory mailbox, with knobs to misbehave in ways Dovecot won't on demand.
//!
//! The protocol logic is [`Session::respond`], which turns one command line into an
//! [`Action`] and does no I/O; the connection code only moves bytes and upgrades to TLS.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use async_native_tls::TlsAcceptor;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A command line longer than this closes the connection (RFC 1939 allows 255 octets;
/// this leaves room for long AUTH PLAIN lines).
const MAX_LINE: usize = 64 * 1024;

/// How the server treats STLS (RFC 2595).
#[derive(Clone, Debug)]
pub enum Stls {
    /// Not in CAPA; STLS answers -ERR.
    NotOffered,
    /// In CAPA; STLS upgrades the connection.
    Offered,
    /// In CAPA, but STLS answers -ERR.
    Refused,
    /// After "+OK" to STLS, also writes "+OK injected\r\n" in the same packet before the
    /// handshake: a client must not read that as a reply sent over TLS.
    Inject,
}

/// What the server serves and how it misbehaves.
#[derive(Clone)]
pub struct Script {
    /// Message bytes (CRLF line endings); served dot-stuffed.
    pub messages: Vec<Vec<u8>>,
    /// UIDs for `messages` (same length); default "uid-1", "uid-2", …. Not validated, so
    /// duplicates and malformed values can be served on purpose.
    pub uids: Option<Vec<String>>,
    /// false: UIDL answers "-ERR unknown command" and CAPA omits UIDL.
    pub uidl: bool,
    pub stls: Stls,
    /// Needed for `Stls::Offered`, `Stls::Inject` and `implicit_tls`.
    pub tls: Option<native_tls::Identity>,
    /// TLS from the first byte (pop3s).
    pub implicit_tls: bool,
    /// false: CAPA answers -ERR.
    pub capa: bool,
    /// CAPA lists "SASL PLAIN" and AUTH PLAIN works, with or without an initial response.
    pub sasl_plain: bool,
    /// `Some(tokens)`: CAPA lists XOAUTH2 and `AUTH XOAUTH2` logs in `user` with exactly
    /// `user=<user>^Aauth=Bearer <token>^A^A` for one of these tokens (change them with
    /// [`Scripted::set_xoauth2_tokens`], e.g. to expire one), two-step or on one line.
    /// Other responses get a Gmail-style error challenge, then -ERR.
    pub xoauth2: Option<Vec<String>>,
    /// `AUTH XOAUTH2` without the response on the same line answers -ERR.
    pub xoauth2_one_line_only: bool,
    /// A rejected XOAUTH2 response gets -ERR at once instead of an error challenge.
    pub xoauth2_plain_reject: bool,
    pub user: String,
    pub password: String,
    /// Sent instead of "+OK" when PASS or AUTH would succeed, e.g. "-ERR [IN-USE] locked".
    pub login_error: Option<String>,
    /// On RETR of this message number: "+OK", half the message, then close the socket.
    pub drop_during_retr: Option<u32>,
    /// RETR and TOP of a message with one of these UIDs answer
    /// "-ERR [SYS/TEMP] cannot read message" (a corrupt item, a broken index).
    pub retr_error_uids: Vec<String>,
    /// RETR of the message with this UID: "+OK", half the message, then close.
    pub drop_during_retr_uid: Option<String>,
    /// false: CAPA omits TOP and TOP answers -ERR (RFC 1939 makes TOP optional).
    pub top: bool,
    /// DELE answers -ERR (a read-only maildrop).
    pub dele_error: bool,
    /// A command verb (e.g. "RETR", "PASS") that gets no reply; the server then stays
    /// silent for the rest of that connection but keeps the socket open.
    pub stall_on: Option<String>,
    /// QUIT answers "-ERR" and commits no deletions.
    pub quit_error: bool,
    /// Raw greeting; default "+OK scripted POP3 ready\r\n". Empty means no greeting.
    pub greeting: Option<Vec<u8>>,
    /// CAPA lists PIPELINING (commands are always processed in order from the buffer).
    pub pipelining: bool,
    /// Per-verb override (case-insensitive): the command is logged but not processed, and
    /// these bytes are written instead. For hostile-server tests.
    pub raw_replies: Vec<(String, Vec<u8>)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            messages: Vec::new(),
            uids: None,
            uidl: true,
            stls: Stls::NotOffered,
            tls: None,
            implicit_tls: false,
            capa: true,
            sasl_plain: true,
            xoauth2: None,
            xoauth2_one_line_only: false,
            xoauth2_plain_reject: false,
            user: "user".to_string(),
            password: "secret".to_string(),
            login_error: None,
            drop_during_retr: None,
            retr_error_uids: Vec::new(),
            drop_during_retr_uid: None,
            top: true,
            dele_error: false,
            stall_on: None,
            quit_error: false,
            greeting: None,
            pipelining: false,
            raw_replies: Vec::new(),
        }
    }
}

// Hand-written because `native_tls::Identity` has no `Debug`.
impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("messages", &self.messages.len())
            .field("uids", &self.uids)
            .field("uidl", &self.uidl)
            .field("stls", &self.stls)
            .field("tls", &self.tls.as_ref().map(|_| "[identity]"))
            .field("implicit_tls", &self.implicit_tls)
            .field("capa", &self.capa)
            .field("sasl_plain", &self.sasl_plain)
            .field("xoauth2", &self.xoauth2.as_ref().map(|t| t.len()))
            .field("xoauth2_one_line_only", &self.xoauth2_one_line_only)
            .field("xoauth2_plain_reject", &self.xoauth2_plain_reject)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("login_error", &self.login_error)
            .field("drop_during_retr", &self.drop_during_retr)
            .field("stall_on", &self.stall_on)
            .field("quit_error", &self.quit_error)
            .field(
                "greeting",
                &self.greeting.as_ref().map(|g| String::from_utf8_lossy(g)),
            )
            .field("pipelining", &self.pipelining)
            .field(
                "raw_replies",
                &self
                    .raw_replies
                    .iter()
                    .map(|(verb, _)| verb)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A running server; dropping it aborts the accept loop and every open connection.
pub struct Scripted {
    port: u16,
    server: Arc<Server>,
    task: JoinHandle<()>,
}

impl Scripted {
    /// [`Scripted::start`] with the default script serving `messages`.
    pub async fn with_messages(messages: Vec<Vec<u8>>) -> Scripted {
        Scripted::start(Script {
            messages,
            ..Script::default()
        })
        .await
    }

    /// Binds 127.0.0.1:0 and serves any number of sequential and concurrent connections
    /// against one shared mailbox. Panics if the script needs TLS but has no identity.
    pub async fn start(script: Script) -> Scripted {
        let needs_tls = script.implicit_tls || matches!(script.stls, Stls::Offered | Stls::Inject);
        let acceptor = match &script.tls {
            Some(identity) => Some(TlsAcceptor::from(
                native_tls::TlsAcceptor::new(identity.clone()).expect("scripted TLS acceptor"),
            )),
            None if needs_tls => {
                panic!("Script needs `tls: Some(identity)` for STLS or implicit TLS")
            }
            None => None,
        };
        let uids = match &script.uids {
            Some(uids) => {
                assert_eq!(
                    uids.len(),
                    script.messages.len(),
                    "Script: one UID per message"
                );
                uids.clone()
            }
            None => (1..=script.messages.len())
                .map(|n| format!("uid-{n}"))
                .collect(),
        };
        let mailbox: Vec<Entry> = script
            .messages
            .iter()
            .zip(uids)
            .enumerate()
            .map(|(id, (data, uid))| Entry {
                id,
                uid,
                data: Arc::from(data.as_slice()),
            })
            .collect();
        let xoauth2_tokens = script.xoauth2.clone().unwrap_or_default();
        let server = Arc::new(Server {
            script,
            acceptor,
            shared: Mutex::new(Shared {
                next_id: mailbox.len(),
                mailbox,
                xoauth2_tokens,
                ..Shared::default()
            }),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&server)));
        Scripted { port, server, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every command line received, across all connections, in order of arrival, without
    /// its CRLF; includes lines sent after STLS or over implicit TLS, and AUTH continuations.
    pub fn commands(&self) -> Vec<String> {
        self.server.shared().commands.clone()
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.server.shared().sessions
    }

    /// Commands the client sent before it had the reply to the previous one: more than
    /// zero means it pipelined (which a server without PIPELINING need not accept).
    pub fn pipelined_commands(&self) -> usize {
        self.server.shared().pipelined
    }

    /// Messages still in the mailbox; deletions take effect only on a successful QUIT.
    pub fn remaining(&self) -> Vec<Vec<u8>> {
        self.server
            .shared()
            .mailbox
            .iter()
            .map(|e| e.data.to_vec())
            .collect()
    }

    /// Replaces the XOAUTH2 tokens accepted from now on.
    pub fn set_xoauth2_tokens(&self, tokens: &[&str]) {
        self.server.shared().xoauth2_tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Adds a message with this UID at the end of the mailbox (new mail arriving, or a
    /// server reusing a UID once its message is gone).
    pub fn push_message(&self, data: Vec<u8>, uid: &str) {
        let mut shared = self.server.shared();
        let id = shared.next_id;
        shared.next_id += 1;
        shared.mailbox.push(Entry {
            id,
            uid: uid.to_string(),
            data: Arc::from(data.as_slice()),
        });
    }

    /// Takes a message out of the mailbox (as another client would) and returns it.
    pub fn take_message(&self, uid: &str) -> Option<Vec<u8>> {
        let mut shared = self.server.shared();
        let at = shared.mailbox.iter().position(|e| e.uid == uid)?;
        Some(shared.mailbox.remove(at).data.to_vec())
    }

    /// The UIDs in the mailbox now, in order.
    pub fn uids(&self) -> Vec<String> {
        self.server
            .shared()
            .mailbox
            .iter()
            .map(|e| e.uid.clone())
            .collect()
    }

    /// UIDs removed by committed QUITs, in order of removal.
    pub fn deleted_uids(&self) -> Vec<String> {
        self.server.shared().deleted_uids.clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        // The accept loop owns the JoinSet of connections, so this ends them too.
        self.task.abort();
    }
}

struct Server {
    script: Script,
    acceptor: Option<TlsAcceptor>,
    shared: Mutex<Shared>,
}

impl Server {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panicking test must not hide its own message behind a poisoned lock.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct Shared {
    mailbox: Vec<Entry>,
    commands: Vec<String>,
    sessions: usize,
    deleted_uids: Vec<String>,
    /// Commands that arrived before the reply to the previous one was written.
    pipelined: usize,
    xoauth2_tokens: Vec<String>,
    /// The id of the next message added by [`Scripted::push_message`].
    next_id: usize,
}

#[derive(Clone)]
struct Entry {
    /// Stable identity, so a QUIT removes what this session saw even if another session
    /// committed deletions meanwhile.
    id: usize,
    uid: String,
    data: Arc<[u8]>,
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                server.shared().sessions += 1;
                // Errors just end that connection, as a dropped peer would.
                connections.spawn(connection(tcp, Arc::clone(&server)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(tcp: TcpStream, server: Arc<Server>) -> io::Result<()> {
    let greeting = server
        .script
        .greeting
        .clone()
        .unwrap_or_else(|| b"+OK scripted POP3 ready\r\n".to_vec());
    if server.script.implicit_tls {
        let mut session = Session::new(&server, true);
        let mut tls = Conn::new(accept_tls(&server, tcp).await?);
        tls.write(&greeting).await?;
        serve(&mut tls, &mut session).await?;
        return Ok(());
    }
    let mut session = Session::new(&server, false);
    let mut plain = Conn::new(tcp);
    plain.write(&greeting).await?;
    match serve(&mut plain, &mut session).await? {
        End::Closed => Ok(()),
        End::StartTls => {
            // Whatever the client pipelined after STLS is discarded (RFC 2595 §4 /
            // RFC 3207 §4.2), so nothing sent in clear is treated as sent over TLS.
            let mut tls = Conn::new(accept_tls(&server, plain.io).await?);
            session.tls = true;
            serve(&mut tls, &mut session).await?;
            Ok(())
        }
    }
}

async fn accept_tls(
    server: &Server,
    tcp: TcpStream,
) -> io::Result<async_native_tls::TlsStream<TcpStream>> {
    let acceptor = server
        .acceptor
        .as_ref()
        .expect("checked in Scripted::start");
    acceptor.accept(tcp).await.map_err(io::Error::other)
}

enum End {
    Closed,
    StartTls,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    session: &mut Session<'_>,
) -> io::Result<End> {
    while let Some(line) = conn.read_line().await? {
        if conn.buf.contains(&b'\n') {
            session.server.shared().pipelined += 1;
        }
        match session.respond(&line) {
            Action::Reply(bytes) => conn.write(&bytes).await?,
            Action::Stall => {
                // Keep the socket open and keep logging, but never answer again.
                while let Some(line) = conn.read_line().await? {
                    session.record(&line);
                }
                return Ok(End::Closed);
            }
            Action::Close(bytes) => {
                conn.write(&bytes).await?;
                let _ = conn.io.shutdown().await;
                return Ok(End::Closed);
            }
            Action::StartTls(bytes) => {
                conn.write(&bytes).await?;
                return Ok(End::StartTls);
            }
        }
    }
    Ok(End::Closed)
}

/// A byte stream with a read buffer, so pipelined commands are taken one line at a time.
struct Conn<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Conn {
            io,
            buf: Vec::new(),
        }
    }

    /// The next line without its line ending, or `None` at end of stream.
    async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "command line too long",
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }
}

/// What the connection does after a command line.
enum Action {
    Reply(Vec<u8>),
    /// Write nothing, now or later on this connection (`stall_on`).
    Stall,
    /// Write, then close the connection.
    Close(Vec<u8>),
    /// Write, then do the TLS handshake on the same socket.
    StartTls(Vec<u8>),
}

enum State {
    Authorization(Auth),
    Transaction(Maildrop),
}

enum Auth {
    Start,
    /// USER was accepted; PASS may follow.
    User(String),
    /// "AUTH PLAIN" without an initial response was answered "+ "; the next line is it.
    AwaitingPlain,
    /// "AUTH XOAUTH2" was answered "+ "; the next line is the response.
    AwaitingXOAuth2,
    /// An XOAUTH2 error challenge was sent; the client's (empty) line gets -ERR.
    AwaitingXOAuth2Ack,
}

/// The mailbox as one session sees it: a snapshot taken at login plus its DELE marks.
struct Maildrop {
    entries: Vec<Entry>,
    deleted: Vec<bool>,
}

impl Maildrop {
    /// The entry for a 1-based message number that exists and is not marked deleted.
    fn live(&self, arg: Option<&str>) -> Option<(usize, &Entry)> {
        let n: usize = arg?.parse().ok()?;
        let i = n.checked_sub(1)?;
        (i < self.entries.len() && !self.deleted[i]).then(|| (n, &self.entries[i]))
    }

    fn live_all(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, e)| (i + 1, e))
    }
}

struct Session<'a> {
    server: &'a Server,
    script: &'a Script,
    tls: bool,
    state: State,
}

impl<'a> Session<'a> {
    fn new(server: &'a Server, tls: bool) -> Self {
        Session {
            server,
            script: &server.script,
            tls,
            state: State::Authorization(Auth::Start),
        }
    }

    fn record(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        self.server.shared().commands.push(text);
    }

    fn respond(&mut self, line: &[u8]) -> Action {
        self.record(line);
        let text = String::from_utf8_lossy(line);
        match self.state {
            State::Authorization(Auth::AwaitingPlain) => return self.plain_response(&text),
            State::Authorization(Auth::AwaitingXOAuth2) => return self.xoauth2_response(&text),
            State::Authorization(Auth::AwaitingXOAuth2Ack) => {
                self.state = State::Authorization(Auth::Start);
                return err("[AUTH] Invalid credentials (Failure)");
            }
            _ => {}
        }
        let mut words = text.split(' ');
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.collect();

        if self
            .script
            .stall_on
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(&verb))
        {
            return Action::Stall;
        }
        if let Some((_, raw)) = self
            .script
            .raw_replies
            .iter()
            .find(|(v, _)| v.eq_ignore_ascii_case(&verb))
        {
            return Action::Reply(raw.clone());
        }
        if verb == "CAPA" {
            return Action::Reply(self.capa());
        }
        if verb == "QUIT" {
            return self.quit();
        }
        if verb == "NOOP" && matches!(self.state, State::Transaction(_)) {
            return ok("");
        }
        match &mut self.state {
            State::Authorization(auth) => match (verb.as_str(), args.as_slice()) {
                ("USER", [name]) => {
                    *auth = Auth::User(name.to_string());
                    ok("send PASS")
                }
                ("PASS", _) => {
                    // The rest of the line, so a password may contain spaces.
                    let password = text.split_once(' ').map_or("", |(_, p)| p);
                    match std::mem::replace(auth, Auth::Start) {
                        Auth::User(name) => self.login(&name, password),
                        _ => err("USER first"),
                    }
                }
                ("AUTH", [mech, rest @ ..])
                    if self.script.sasl_plain && mech.eq_ignore_ascii_case("PLAIN") =>
                {
                    match rest {
                        [] => {
                            *auth = Auth::AwaitingPlain;
                            Action::Reply(b"+ \r\n".to_vec())
                        }
                        [initial] => self.plain_response(initial),
                        _ => err("syntax error"),
                    }
                }
                ("AUTH", [mech, rest @ ..])
                    if self.script.xoauth2.is_some() && mech.eq_ignore_ascii_case("XOAUTH2") =>
                {
                    match rest {
                        [] if self.script.xoauth2_one_line_only => err("initial response required"),
                        [] => {
                            *auth = Auth::AwaitingXOAuth2;
                            Action::Reply(b"+ \r\n".to_vec())
                        }
                        [initial] => self.xoauth2_response(initial),
                        _ => err("syntax error"),
                    }
                }
                ("STLS", []) => self.stls(),
                _ => err("unknown command"),
            },
            State::Transaction(maildrop) => transaction(self.script, maildrop, &verb, &args),
        }
    }

    fn capa(&self) -> Vec<u8> {
        if !self.script.capa {
            return b"-ERR unknown command\r\n".to_vec();
        }
        let mut capa =
            String::from("+OK capability list follows\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n");
        if self.script.top {
            capa.push_str("TOP\r\n");
        }
        if self.script.uidl {
            capa.push_str("UIDL\r\n");
        }
        match (self.script.sasl_plain, self.script.xoauth2.is_some()) {
            (true, true) => capa.push_str("SASL PLAIN XOAUTH2\r\n"),
            (true, false) => capa.push_str("SASL PLAIN\r\n"),
            (false, true) => capa.push_str("SASL XOAUTH2\r\n"),
            (false, false) => {}
        }
        if !self.tls
            && matches!(
                self.script.stls,
                Stls::Offered | Stls::Refused | Stls::Inject
            )
        {
            capa.push_str("STLS\r\n");
        }
        if self.script.pipelining {
            capa.push_str("PIPELINING\r\n");
        }
        capa.push_str(".\r\n");
        capa.into_bytes()
    }

    fn stls(&mut self) -> Action {
        if self.tls {
            return err("already in TLS");
        }
        match self.script.stls {
            Stls::NotOffered => err("unknown command"),
            Stls::Refused => err("TLS not available"),
            Stls::Offered => Action::StartTls(b"+OK begin TLS negotiation\r\n".to_vec()),
            Stls::Inject => {
                Action::StartTls(b"+OK begin TLS negotiation\r\n+OK injected\r\n".to_vec())
            }
        }
    }

    /// The SASL PLAIN response (RFC 4616): `[authzid] NUL authcid NUL passwd`, base64.
    fn plain_response(&mut self, response: &str) -> Action {
        self.state = State::Authorization(Auth::Start);
        if response == "*" {
            return err("AUTH cancelled");
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(response) else {
            return err("invalid base64");
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        match parts.as_slice() {
            [authzid, authcid, passwd] if authzid.is_empty() || authzid == authcid => self.login(
                &String::from_utf8_lossy(authcid),
                &String::from_utf8_lossy(passwd),
            ),
            _ => err("malformed PLAIN response"),
        }
    }

    /// The XOAUTH2 response: base64 of `user=<user>^Aauth=Bearer <token>^A^A`, checked
    /// byte for byte against the accepted tokens.
    fn xoauth2_response(&mut self, response: &str) -> Action {
        self.state = State::Authorization(Auth::Start);
        if response == "*" {
            return err("AUTH cancelled");
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response)
            .unwrap_or_default();
        let accepted = self.server.shared().xoauth2_tokens.iter().any(|token| {
            decoded
                == format!("user={}\x01auth=Bearer {token}\x01\x01", self.script.user).as_bytes()
        });
        if accepted {
            return self.open_maildrop();
        }
        if self.script.xoauth2_plain_reject {
            return err("[AUTH] Invalid credentials");
        }
        self.state = State::Authorization(Auth::AwaitingXOAuth2Ack);
        let challenge = base64::engine::general_purpose::STANDARD
            .encode(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
        Action::Reply(format!("+ {challenge}\r\n").into_bytes())
    }

    fn login(&mut self, user: &str, password: &str) -> Action {
        if user != self.script.user || password != self.script.password {
            return err("[AUTH] invalid credentials");
        }
        self.open_maildrop()
    }

    /// A successful login: `login_error` if set, else the TRANSACTION state.
    fn open_maildrop(&mut self) -> Action {
        if let Some(reply) = &self.script.login_error {
            return Action::Reply(format!("{reply}\r\n").into_bytes());
        }
        // Like RFC 1939's maildrop lock, the session works on what was there at login.
        let entries = self.server.shared().mailbox.clone();
        let deleted = vec![false; entries.len()];
        self.state = State::Transaction(Maildrop { entries, deleted });
        ok("logged in")
    }

    /// UPDATE state: commit this session's DELE marks, then close.
    fn quit(&mut self) -> Action {
        let State::Transaction(maildrop) = &self.state else {
            return Action::Close(b"+OK bye\r\n".to_vec());
        };
        if self.script.quit_error {
            return Action::Close(b"-ERR some deleted messages not removed\r\n".to_vec());
        }
        let gone: Vec<usize> = maildrop
            .entries
            .iter()
            .zip(&maildrop.deleted)
            .filter(|(_, deleted)| **deleted)
            .map(|(e, _)| e.id)
            .collect();
        let mut shared = self.server.shared();
        let mut removed = Vec::new();
        shared.mailbox.retain(|e| {
            let keep = !gone.contains(&e.id);
            if !keep {
                removed.push(e.uid.clone());
            }
            keep
        });
        shared.deleted_uids.extend(removed);
        Action::Close(b"+OK bye\r\n".to_vec())
    }
}

fn transaction(script: &Script, maildrop: &mut Maildrop, verb: &str, args: &[&str]) -> Action {
    match (verb, args) {
        ("STAT", []) => {
            let (count, size) = maildrop
                .live_all()
                .fold((0, 0), |(c, s), (_, e)| (c + 1, s + e.data.len()));
            ok(&format!("{count} {size}"))
        }
        ("LIST", []) => {
            let lines = maildrop
                .live_all()
                .map(|(n, e)| format!("{n} {}", e.data.len()));
            multiline("scan listing follows", lines)
        }
        ("LIST", [arg]) => match maildrop.live(Some(arg)) {
            Some((n, e)) => ok(&format!("{n} {}", e.data.len())),
            None => err("no such message"),
        },
        ("UIDL", _) if !script.uidl => err("unknown command"),
        ("UIDL", []) => {
            let lines = maildrop.live_all().map(|(n, e)| format!("{n} {}", e.uid));
            multiline("unique-id listing follows", lines)
        }
        ("UIDL", [arg]) => match maildrop.live(Some(arg)) {
            Some((n, e)) => ok(&format!("{n} {}", e.uid)),
            None => err("no such message"),
        },
        ("RETR" | "TOP", [arg, ..])
            if maildrop
                .live(Some(arg))
                .is_some_and(|(_, e)| script.retr_error_uids.contains(&e.uid)) =>
        {
            err("[SYS/TEMP] cannot read message")
        }
        ("TOP", _) if !script.top => err("unknown command"),
        ("DELE", [_]) if script.dele_error => err("[SYS/PERM] mailbox is read-only"),
        ("RETR", [arg]) => match maildrop.live(Some(arg)) {
            Some((n, e))
                if script.drop_during_retr == u32::try_from(n).ok()
                    || script.drop_during_retr_uid.as_deref() == Some(e.uid.as_str()) =>
            {
                let mut reply = format!("+OK {} octets\r\n", e.data.len()).into_bytes();
                reply.extend_from_slice(&dot_stuff(&e.data[..e.data.len() / 2]));
                Action::Close(reply)
            }
            Some((_, e)) => {
                let mut reply = format!("+OK {} octets\r\n", e.data.len()).into_bytes();
                reply.extend_from_slice(&terminated(&e.data));
                Action::Reply(reply)
            }
            None => err("no such message"),
        },
        ("TOP", [arg, lines]) => match (maildrop.live(Some(arg)), lines.parse::<usize>()) {
            (Some((_, e)), Ok(k)) => {
                let mut reply = b"+OK top of message follows\r\n".to_vec();
                reply.extend_from_slice(&terminated(top(&e.data, k)));
                Action::Reply(reply)
            }
            _ => err("no such message"),
        },
        ("DELE", [arg]) => match maildrop.live(Some(arg)) {
            Some((n, _)) => {
                maildrop.deleted[n - 1] = true;
                ok(&format!("message {n} deleted"))
            }
            None => err("no such message"),
        },
        ("RSET", []) => {
            maildrop.deleted.iter_mut().for_each(|d| *d = false);
            ok("")
        }
        _ => err("unknown command"),
    }
}

/// The header, the empty line, and the first `k` body lines (RFC 1939 TOP).
fn top(message: &[u8], k: usize) -> &[u8] {
    let mut end = 0;
    let mut in_body = false;
    let mut body_lines = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if in_body {
            if body_lines == k {
                break;
            }
            body_lines += 1;
        } else if line == b"\r\n" || line == b"\n" {
            in_body = true;
        }
        end += line.len();
    }
    &message[..end]
}

/// `data` dot-stuffed, ending in CRLF, followed by the ".\r\n" terminator.
fn terminated(data: &[u8]) -> Vec<u8> {
    let mut out = dot_stuff(data);
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Doubles a '.' that starts a line (RFC 1939 §3).
fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 2);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

fn ok(text: &str) -> Action {
    Action::Reply(if text.is_empty() {
        b"+OK\r\n".to_vec()
    } else {
        format!("+OK {text}\r\n").into_bytes()
    })
}

fn err(text: &str) -> Action {
    Action::Reply(format!("-ERR {text}\r\n").into_bytes())
}

fn multiline(first: &str, lines: impl Iterator<Item = String>) -> Action {
    let mut reply = format!("+OK {first}\r\n");
    for line in lines {
        reply.push_str(&line);
        reply.push_str("\r\n");
    }
    reply.push_str(".\r\n");
    Action::Reply(reply.into_bytes())
}
