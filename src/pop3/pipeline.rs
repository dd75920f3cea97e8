//! Keeps a bounded window of RETR/TOP commands in flight on one session (when the
//! server advertises PIPELINING, RFC 2449) and hands replies back in order, with DELEs
//! queued behind them. Without PIPELINING every command waits for its reply.

use std::collections::VecDeque;

use bytes::Bytes;

use super::codec::ErrReply;
use super::command::Command;
use super::{Pop3Error, Session};

/// How many RETR/TOP replies may be outstanding. Their bodies wait in the server and
/// the socket buffers, not in our memory; eight hides the round trips on any link.
pub const WINDOW: usize = 8;

/// A message to download.
#[derive(Clone, Debug)]
pub struct Fetch {
    pub number: u32,
    pub uidl: String,
    /// `TOP n 0` (headers only) instead of RETR.
    pub headers_only: bool,
    /// LIST's size, to allocate the body once.
    pub expected_size: usize,
}

/// A DELE whose reply arrived.
#[derive(Debug)]
pub struct Deleted {
    pub uidl: String,
    /// `Err`: the server refused (the message stays; a later cycle tries again).
    pub result: Result<(), ErrReply>,
}

/// A failed download, with the message it concerned (`None` when the failure was
/// reading the reply to an earlier DELE).
#[derive(Debug)]
pub struct FetchError {
    pub fetch: Option<Fetch>,
    pub error: Pop3Error,
}

enum Sent {
    Fetch(Fetch),
    Dele(String),
}

pub struct Pipeline {
    session: Session,
    window: usize,
    queue: VecDeque<Fetch>,
    sent: VecDeque<Sent>,
    deleted: Vec<Deleted>,
}

impl Pipeline {
    pub fn new(session: Session) -> Pipeline {
        let window = if session.pipelining() { WINDOW } else { 1 };
        Pipeline {
            session,
            window,
            queue: VecDeque::new(),
            sent: VecDeque::new(),
            deleted: Vec::new(),
        }
    }

    /// Adds a message to download, after those already queued.
    pub fn queue(&mut self, fetch: Fetch) {
        self.queue.push_back(fetch);
    }

    /// Messages queued or requested but not yet handed out.
    pub fn remaining(&self) -> usize {
        self.queue.len()
            + self
                .sent
                .iter()
                .filter(|s| matches!(s, Sent::Fetch(_)))
                .count()
    }

    /// The message [`Pipeline::next_message`] reads next: the first one requested, or
    /// else the first queued.
    pub fn next_fetch(&self) -> Option<&Fetch> {
        self.sent
            .iter()
            .find_map(|s| match s {
                Sent::Fetch(fetch) => Some(fetch),
                Sent::Dele(_) => None,
            })
            .or_else(|| self.queue.front())
    }

    /// The next queued message, downloaded; `None` when the queue is empty. Requests
    /// for the following ones are sent first, up to the window.
    pub async fn next_message(&mut self) -> Result<Option<(Fetch, Bytes)>, FetchError> {
        let in_flight =
            |sent: &VecDeque<Sent>| sent.iter().filter(|s| matches!(s, Sent::Fetch(_))).count();
        while in_flight(&self.sent) < self.window {
            let Some(fetch) = self.queue.pop_front() else {
                break;
            };
            let cmd = if fetch.headers_only {
                Command::Top(fetch.number, 0)
            } else {
                Command::Retr(fetch.number)
            };
            if let Err(error) = self.session.send(cmd).await {
                return Err(FetchError {
                    fetch: Some(fetch),
                    error,
                });
            }
            self.sent.push_back(Sent::Fetch(fetch));
        }
        while let Some(sent) = self.sent.pop_front() {
            match sent {
                Sent::Dele(uidl) => self
                    .read_dele(uidl)
                    .await
                    .map_err(|error| FetchError { fetch: None, error })?,
                Sent::Fetch(fetch) => {
                    let verb = if fetch.headers_only { "TOP" } else { "RETR" };
                    return match self.session.read_message(verb, fetch.expected_size).await {
                        Ok(raw) => Ok(Some((fetch, raw))),
                        Err(error) => Err(FetchError {
                            fetch: Some(fetch),
                            error,
                        }),
                    };
                }
            }
        }
        Ok(None)
    }

    /// Marks a message deleted. With PIPELINING the reply is read later, in order;
    /// without it, now (no other command is outstanding then).
    pub async fn dele(&mut self, number: u32, uidl: String) -> Result<(), Pop3Error> {
        self.session.send(Command::Dele(number)).await?;
        if self.window == 1 {
            self.read_dele(uidl).await
        } else {
            self.sent.push_back(Sent::Dele(uidl));
            Ok(())
        }
    }

    /// DELE replies that arrived so far; each is returned once.
    pub fn take_deleted(&mut self) -> Vec<Deleted> {
        std::mem::take(&mut self.deleted)
    }

    /// Reads every outstanding reply (bodies requested ahead but not wanted any more
    /// are read and dropped, so the session is in step again) and returns the session,
    /// for QUIT. DELE replies stay available from [`Pipeline::take_deleted`].
    pub async fn drain(&mut self) -> Result<(), Pop3Error> {
        self.queue.clear();
        while let Some(sent) = self.sent.pop_front() {
            match sent {
                Sent::Dele(uidl) => self.read_dele(uidl).await?,
                Sent::Fetch(fetch) => {
                    let verb = if fetch.headers_only { "TOP" } else { "RETR" };
                    self.session.read_message(verb, 0).await?;
                }
            }
        }
        Ok(())
    }

    /// The session, once drained: for QUIT.
    pub fn into_session(self) -> Session {
        debug_assert!(self.sent.is_empty(), "drain before QUIT");
        self.session
    }

    async fn read_dele(&mut self, uidl: String) -> Result<(), Pop3Error> {
        let result = match self.session.read_reply("DELE").await {
            Ok(_) => Ok(()),
            Err(Pop3Error::Server { reply, .. }) => Err(reply),
            Err(other) => return Err(other),
        };
        self.deleted.push(Deleted { uidl, result });
        Ok(())
    }
}
