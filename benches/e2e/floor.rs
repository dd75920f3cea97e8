//! The floor pophook is measured against: the least any client can do to empty the
//! mailbox — log in, pipeline RETR and DELE for every message, QUIT — without parsing,
//! posting or remembering anything. For idle cycles (scenario 5), the least any client
//! can do to learn there is nothing new: log in, UIDL, LIST, QUIT.
//!
//! Unlike a client that writes every command before reading (as `pop3-raw.py` does),
//! it keeps a bounded window of commands in flight: with thousands of messages, both
//! sides would otherwise block on full socket buffers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// RETR+DELE pairs in flight; enough to hide the round trip, small enough that the
/// commands always fit in the socket buffer.
const WINDOW: usize = 64;

pub enum Transport<'a> {
    Plain,
    /// Implicit TLS, the server certificate checked against this CA (PEM).
    Tls {
        ca_pem: &'a [u8],
    },
}

pub struct Drained {
    pub messages: usize,
    /// Message bytes received, without status lines and terminators.
    pub bytes: u64,
    /// From connect to QUIT's `+OK` (after which the server has expunged).
    pub wall: Duration,
}

pub fn drain(
    addr: SocketAddr,
    user: &str,
    password: &str,
    transport: Transport<'_>,
    timeout: Duration,
) -> io::Result<Drained> {
    let start = Instant::now();
    let tcp = connect(addr, timeout)?;
    let (messages, bytes) = match transport {
        Transport::Plain => session(tcp, user, password)?,
        Transport::Tls { ca_pem } => {
            let ca = native_tls::Certificate::from_pem(ca_pem).map_err(io::Error::other)?;
            let connector = native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .build()
                .map_err(io::Error::other)?;
            let tls = connector
                .connect("localhost", tcp)
                .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
            session(tls, user, password)?
        }
    };
    Ok(Drained {
        messages,
        bytes,
        wall: start.elapsed(),
    })
}

/// What an idle cycle's floor listed.
pub struct Listed {
    /// Lines of the UIDL answer.
    pub messages: usize,
    /// From connect to QUIT's `+OK`.
    pub wall: Duration,
}

/// Logs in, reads UIDL and LIST of the whole mailbox (pipelined) and QUITs: what
/// pophook's idle cycle asks of the server, without deciding anything. Plain only.
pub fn list(addr: SocketAddr, user: &str, password: &str, timeout: Duration) -> io::Result<Listed> {
    let start = Instant::now();
    let mut conn = Conn::login(connect(addr, timeout)?, user, password)?;
    conn.write(b"UIDL\r\nLIST\r\n")?;
    conn.ok("UIDL")?;
    let (messages, _) = conn.skip_body()?;
    conn.ok("LIST")?;
    conn.skip_body()?;
    conn.command(b"QUIT\r\n", "QUIT")?;
    Ok(Listed {
        messages,
        wall: start.elapsed(),
    })
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn session<S: Read + Write>(stream: S, user: &str, password: &str) -> io::Result<(usize, u64)> {
    let mut conn = Conn::login(stream, user, password)?;
    let stat = conn.command(b"STAT\r\n", "STAT")?;
    let count: usize = String::from_utf8_lossy(&stat)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable STAT reply"))?;

    let mut bytes = 0u64;
    let (mut sent, mut done) = (0usize, 0usize);
    let mut batch = Vec::with_capacity(WINDOW * 32);
    while done < count {
        // Top the window up once half of it has been answered: one write, not one each.
        if sent < count && sent - done <= WINDOW / 2 {
            batch.clear();
            let until = (done + WINDOW).min(count);
            for n in sent + 1..=until {
                batch.extend_from_slice(format!("RETR {n}\r\nDELE {n}\r\n").as_bytes());
            }
            conn.write(&batch)?;
            sent = until;
        }
        conn.ok("RETR")?;
        bytes += conn.skip_body()?.1;
        conn.ok("DELE")?;
        done += 1;
    }
    conn.command(b"QUIT\r\n", "QUIT")?;
    Ok((count, bytes))
}

struct Conn<S> {
    reader: BufReader<S>,
    line: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// Reads the greeting and logs in with USER/PASS.
    fn login(stream: S, user: &str, password: &str) -> io::Result<Conn<S>> {
        let mut conn = Conn {
            reader: BufReader::with_capacity(256 * 1024, stream),
            line: Vec::with_capacity(1024),
        };
        conn.ok("greeting")?;
        conn.command(format!("USER {user}\r\n").as_bytes(), "USER")?;
        conn.command(format!("PASS {password}\r\n").as_bytes(), "PASS")?;
        Ok(conn)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    fn command(&mut self, wire: &[u8], during: &str) -> io::Result<Vec<u8>> {
        self.write(wire)?;
        self.ok(during)
    }

    /// Reads one status line; anything but `+OK` is an error.
    fn ok(&mut self, during: &str) -> io::Result<Vec<u8>> {
        self.read_line()?;
        if !self.line.starts_with(b"+OK") {
            return Err(io::Error::other(format!(
                "{during}: {:?}",
                String::from_utf8_lossy(&self.line)
            )));
        }
        Ok(self.line.clone())
    }

    /// Reads a multi-line answer up to its `.` line; returns how many lines it had
    /// and their size.
    fn skip_body(&mut self) -> io::Result<(usize, u64)> {
        let (mut lines, mut size) = (0, 0);
        loop {
            self.read_line()?;
            if self.line == b".\r\n" || self.line == b".\n" {
                return Ok((lines, size));
            }
            lines += 1;
            size += self.line.len() as u64;
        }
    }

    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}
