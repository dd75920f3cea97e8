//! The planner: pure decisions, no I/O. It turns a listing, the mailbox's records and
//! the time into what one session does (which leftovers to DELE, which messages to
//! fetch, which records to age or forget), and an outcome into the next record: a POST
//! answered, a download failed, DELEs and QUIT answered, an operator's replay or drop.
//! The session and the operator commands only execute these decisions; the ledger
//! applies each [`Transition`] only if its record is still the one it was decided on.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::delivery::retry::RetryPolicy;
use crate::ledger::{duplicate_key, Absence, Book, Entry, Record, Transition, DROPS_FORGIVEN};
use crate::pop3::pipeline::Deleted;

/// A record whose message is missing from listings is forgotten only after it was
/// missing for this long and from at least [`FORGET_LISTINGS`] listings: one odd
/// listing (a server mid-migration, an index rebuild) forgets nothing.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
pub const FORGET_LISTINGS: u32 = 3;

/// What the planner needs to know about the mailbox and the server.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub delete: bool,
    pub max_message_size: u64,
    /// The server offers TOP, so an oversized message can be announced by its headers.
    pub top: bool,
}

/// The time, once on each clock: the monotonic one for retry due times, the wall
/// clock for what is written to records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub instant: Instant,
    /// Unix milliseconds.
    pub unix_ms: i64,
}

impl Now {
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: crate::ledger::now_ms(),
        }
    }

    fn unix(&self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }
}

/// A message to download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub number: u32,
    pub uidl: String,
    /// The record key; `None` when several listed messages share the UIDL: the key is
    /// then the UIDL and the SHA-256 of what was downloaded ([`identify`]).
    pub key: Option<String>,
    /// `TOP n 0` (headers only) instead of RETR.
    pub headers_only: bool,
    /// LIST's size.
    pub size: u64,
}

/// What one session does, and what the cycle report counts.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Leftovers: delivered in an earlier session whose QUIT never came (number, key).
    pub deletes: Vec<(u32, String)>,
    pub fetches: Vec<Fetch>,
    /// Records whose message is absent (marked, or forgotten once absent for long
    /// enough), or listed again (the mark cleared).
    pub transitions: Vec<Transition>,
    /// Due messages that cannot be fetched at all: larger than `max_message_size` on a
    /// server without TOP. Each cycle counts an attempt against them.
    pub unfetchable: Vec<(String, u64)>,
    pub listed: usize,
    /// Listed messages waiting for a retry that is not due yet.
    pub waiting: usize,
    /// Listed messages that are parked.
    pub parked_listed: usize,
    /// Listed messages that share their UIDL with another.
    pub shared_uidl: usize,
    pub renumbered: bool,
}

/// Plans one session. `listing` is UIDL's (number, uidl) pairs, `sizes` LIST's.
pub fn plan(
    listing: &[(u32, String)],
    sizes: &HashMap<u32, u64>,
    book: &Book,
    now: Now,
    settings: &Settings,
) -> Plan {
    let mut plan = Plan {
        listed: listing.len(),
        ..Plan::default()
    };
    let mut count: HashMap<&str, usize> = HashMap::with_capacity(listing.len());
    for (_, uidl) in listing {
        *count.entry(uidl.as_str()).or_default() += 1;
    }
    let mut suspects = Vec::new();
    for (number, uidl) in listing {
        let size = sizes.get(number).copied().unwrap_or(0);
        let oversized_now = size > settings.max_message_size;
        if count[uidl.as_str()] > 1 {
            plan.shared_uidl += 1;
            // Before its content is known, a failure (a download that broke the
            // connection) is recorded under the UIDL and position: honour it, or such a
            // message would break every session.
            match book
                .get(&position_key(uidl, *number))
                .map(|s| (&s.entry.record, s.due))
            {
                Some((Record::Retrying { .. }, Some(due))) if due > now.instant => {
                    plan.waiting += 1;
                    continue;
                }
                Some((Record::Parked { .. }, _)) => {
                    plan.parked_listed += 1;
                    continue;
                }
                Some((Record::Dropped { .. }, _)) => continue,
                _ => {}
            }
            plan.fetches.push(Fetch {
                number: *number,
                uidl: uidl.clone(),
                key: None,
                // Without TOP an oversized one is downloaded until the limit and counted
                // as a failed attempt against the UIDL.
                headers_only: oversized_now && settings.top,
                size,
            });
            continue;
        }
        let slot = book.get(uidl);
        if let Some(slot) = slot.filter(|s| s.entry.absent.is_some()) {
            plan.transitions.push(listed_again(uidl, &slot.entry));
        }
        let oversized_record = match slot.map(|s| (&s.entry.record, s.due)) {
            Some((
                Record::Delivered {
                    size: Some(was), ..
                },
                _,
            )) if *was != size => {
                // The UIDL was reused for another message (the server renumbered after
                // the first was deleted): this one was never posted.
                false
            }
            Some((Record::Delivered { .. }, _)) => {
                if settings.delete {
                    plan.deletes.push((*number, uidl.clone()));
                }
                continue;
            }
            Some((Record::Parked { .. }, _)) => {
                plan.parked_listed += 1;
                continue;
            }
            Some((Record::Announced { .. } | Record::Dropped { .. }, _)) => continue,
            Some((Record::Retrying { .. }, Some(due))) if due > now.instant => {
                plan.waiting += 1;
                continue;
            }
            Some((Record::Retrying { oversized, .. }, _)) => *oversized,
            None => false,
        };
        let headers_only = oversized_record || oversized_now;
        if headers_only && !settings.top {
            plan.unfetchable.push((uidl.clone(), size));
            continue;
        }
        let fetch = Fetch {
            number: *number,
            uidl: uidl.clone(),
            key: Some(uidl.clone()),
            headers_only,
            size,
        };
        match slot.map(|s| &s.entry.record) {
            // It broke the connection last time: after everything else, so that if it
            // does so again the others have been delivered first.
            Some(Record::Retrying { drops, .. }) if *drops > 0 => suspects.push(fetch),
            _ => plan.fetches.push(fetch),
        }
    }
    plan.fetches.append(&mut suspects);

    // `count` doubles as the set of listed UIDLs: no second 100,000-entry set per cycle.
    plan.renumbered = looks_renumbered(book, &count, settings.delete);
    for (key, slot) in book.iter() {
        let uidl = key.split(' ').next().unwrap_or(key);
        if count.contains_key(uidl) {
            if slot.entry.absent.is_some() && key.as_str() != uidl {
                plan.transitions.push(listed_again(key, &slot.entry));
            }
            continue;
        }
        let absence = match slot.entry.absent {
            None => Absence {
                since: now.unix(),
                listings: 1,
            },
            Some(absence) => {
                let long_enough = now.unix() - absence.since >= FORGET_AFTER.as_secs() as i64;
                if long_enough && absence.listings + 1 >= FORGET_LISTINGS {
                    plan.transitions.push(Transition {
                        key: key.clone(),
                        from: Some(slot.entry.clone()),
                        to: None,
                    });
                    continue;
                }
                if absence.listings >= FORGET_LISTINGS {
                    // Counted up to the threshold only: an absent record is rewritten at
                    // most a few times, not once per poll for a day.
                    continue;
                }
                Absence {
                    since: absence.since,
                    listings: absence.listings + 1,
                }
            }
        };
        plan.transitions.push(Transition {
            key: key.clone(),
            from: Some(slot.entry.clone()),
            to: Some(Entry {
                record: slot.entry.record.clone(),
                absent: Some(absence),
            }),
        });
    }
    plan
}

/// A record whose message is listed again: its absence is over.
fn listed_again(key: &str, entry: &Entry) -> Transition {
    Transition {
        key: key.to_string(),
        from: Some(entry.clone()),
        to: Some(Entry::new(entry.record.clone())),
    }
}

/// The key of a message with a shared UIDL whose content is not known (its download
/// failed): the UIDL and its position in the listing, the best identity there is.
pub fn position_key(uidl: &str, number: u32) -> String {
    format!("{uidl} #{number}")
}

/// What to do with a downloaded message whose UIDL is shared with others.
#[derive(Debug, PartialEq, Eq)]
pub enum Identified {
    /// New or due: post it under this key.
    Post,
    /// Delivered before (by content): delete it without posting again.
    Delete,
    /// Waiting for a retry, parked, dropped or announced.
    Leave,
}

/// The key of a downloaded message whose UIDL other messages share, and what to do
/// with it.
pub fn identify(
    uidl: &str,
    sha256_hex: &str,
    book: &Book,
    now: Now,
    delete: bool,
) -> (String, Identified) {
    let key = duplicate_key(uidl, sha256_hex);
    let action = match book.get(&key).map(|s| (&s.entry.record, s.due)) {
        None => Identified::Post,
        Some((Record::Delivered { .. }, _)) if delete => Identified::Delete,
        Some((Record::Retrying { .. }, Some(due))) if due <= now.instant => Identified::Post,
        Some(_) => Identified::Leave,
    };
    (key, action)
}

/// Why an attempt failed, as the next record needs it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub reason: String,
    /// The endpoint refused the event (counts towards `max_rejections`).
    pub rejected: bool,
    pub retry_after: Option<Duration>,
    /// Only the headers can be posted from now on.
    pub oversized: bool,
    /// The connection broke while the message was downloading.
    pub dropped: bool,
}

/// The record after a 2xx.
pub fn delivered(headers_only: bool, size: u64, now: Now) -> Record {
    if headers_only {
        Record::Announced { at: now.unix() }
    } else {
        Record::Delivered {
            at: now.unix(),
            size: Some(size),
        }
    }
}

/// The record after a failed attempt: the next retry on the policy's schedule, or
/// parked when retries are exhausted.
pub fn failed(
    previous: Option<&Record>,
    failure: &Failure,
    now: Now,
    policy: &RetryPolicy,
    rng: &mut impl Rng,
) -> Record {
    let (attempts, rejections, drops, since, oversized) = match previous {
        Some(Record::Retrying {
            attempts,
            rejections,
            drops,
            since,
            oversized,
            ..
        }) => (*attempts, *rejections, *drops, *since, *oversized),
        _ => (0, 0, 0, now.unix(), false),
    };
    // Only a broken download continues a run of drops.
    let drops = if failure.dropped { drops + 1 } else { 0 };
    if failure.dropped && drops <= DROPS_FORGIVEN {
        // Likely the network, not the message: at once, and not an attempt yet.
        return Record::Retrying {
            attempts,
            rejections,
            drops,
            next_attempt_ms: now.unix_ms,
            delay_ms: Some(0),
            last_error: failure.reason.clone(),
            oversized,
            since,
        };
    }
    let attempts = attempts + 1;
    let rejections = rejections + u32::from(failure.rejected);
    let oversized = oversized || failure.oversized;
    match policy.next_delay(
        attempts,
        rejections,
        failure.rejected,
        failure.retry_after,
        rng,
    ) {
        Some(delay) => Record::Retrying {
            attempts,
            rejections,
            drops,
            next_attempt_ms: now.unix_ms + delay.as_millis() as i64,
            delay_ms: Some(delay.as_millis() as u64),
            last_error: failure.reason.clone(),
            oversized,
            since,
        },
        None => Record::Parked {
            attempts,
            last_error: failure.reason.clone(),
            at: now.unix(),
            oversized,
            since,
        },
    }
}

/// The record after the download outgrew `max_message_size` (LIST understated the
/// size): due again at once, as headers only. Not an attempt: nothing was posted.
pub fn grew_too_large(previous: Option<&Record>, limit: u64, now: Now) -> Record {
    let (attempts, rejections, since) = match previous {
        Some(Record::Retrying {
            attempts,
            rejections,
            since,
            ..
        }) => (*attempts, *rejections, *since),
        _ => (0, 0, now.unix()),
    };
    Record::Retrying {
        attempts,
        rejections,
        drops: 0,
        next_attempt_ms: now.unix_ms,
        delay_ms: Some(0),
        last_error: format!("larger than max_message_size ({limit} bytes)"),
        oversized: true,
        since,
    }
}

/// How a session ended, as far as its DELEs are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QUIT answered `+OK`: the server removed every message whose DELE it accepted.
    QuitAccepted,
    /// QUIT answered `-ERR`: RFC 1939 removes nothing then.
    QuitRefused,
    /// The connection broke before QUIT's reply (or before QUIT was sent): nothing is
    /// known to be removed.
    Broken,
}

/// The transitions once a session ended, from what the server answered to its DELEs
/// (each under the record key it was sent for). QUIT's `+OK` removed the messages whose
/// DELE was accepted: their `Delivered` records are forgotten, so that a new message
/// that reuses a UIDL (RFC 1939 allows it once the old one is gone) is a new message.
/// A refused DELE, and every DELE of a session that ended without QUIT's `+OK`, leave
/// the `Delivered` record with its LIST size: the next cycle finds the leftover, checks
/// that size and DELEs it again (a different size is another message reusing the UIDL,
/// posted instead).
pub fn committed(deleted: &[Deleted], ending: Ending, book: &Book) -> Vec<Transition> {
    if ending != Ending::QuitAccepted {
        return Vec::new();
    }
    deleted
        .iter()
        .filter(|d| d.result.is_ok())
        .filter_map(|d| {
            let slot = book.get(&d.uidl)?;
            matches!(slot.entry.record, Record::Delivered { .. }).then(|| Transition {
                key: d.uidl.clone(),
                from: Some(slot.entry.clone()),
                to: None,
            })
        })
        .collect()
}

/// An operator's replay: a parked message gets a fresh retry schedule, due at once.
/// `None` when it is not parked (any more): delivered, dropped or replayed since it was
/// listed, and a replay must not undo that. Its absence from listings, if any, stays:
/// a replay says nothing about the server.
pub fn replayed(current: &Entry, now: Now) -> Option<Entry> {
    let Record::Parked {
        last_error,
        oversized,
        ..
    } = &current.record
    else {
        return None;
    };
    Some(Entry {
        record: Record::Retrying {
            attempts: 0,
            rejections: 0,
            drops: 0,
            next_attempt_ms: 0,
            delay_ms: Some(0),
            last_error: last_error.clone(),
            oversized: *oversized,
            since: now.unix(),
        },
        absent: current.absent,
    })
}

/// An operator's drop: a parked message is never posted and stays on the server. `None`
/// when it is not parked (any more), as for [`replayed`].
pub fn dropped(current: &Entry, now: Now) -> Option<Entry> {
    matches!(current.record, Record::Parked { .. }).then(|| Entry {
        record: Record::Dropped { at: now.unix() },
        absent: current.absent,
    })
}

/// A listing where most remembered UIDLs vanished and most listed ones are new looks
/// like a server that renumbered its UIDLs (a migration): every message is about to be
/// delivered again. Only records of messages expected to still be on the server count.
fn looks_renumbered(book: &Book, present: &HashMap<&str, usize>, delete: bool) -> bool {
    // Counted in one pass: this runs every cycle over every record.
    let (mut expected, mut still_listed) = (0usize, 0usize);
    for (key, slot) in book.iter() {
        let delivered = matches!(slot.entry.record, Record::Delivered { .. });
        if (delete && delivered) || slot.entry.absent.is_some() {
            continue;
        }
        expected += 1;
        let uidl = key.split(' ').next().unwrap_or(key);
        still_listed += usize::from(present.contains_key(uidl));
    }
    if expected < 10 {
        return false;
    }
    let vanished = expected - still_listed;
    let new = present.len().saturating_sub(still_listed);
    vanished * 2 > expected && new * 2 >= expected
}

#[cfg(test)]
mod tests;
