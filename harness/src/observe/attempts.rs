//! Connection attempts to the receiving MX hosts: per address and family, with their SYNs,
//! sessions and the replies they met.

use std::net::SocketAddr;
use std::time::Duration;

use crate::events::{Event, EventKind, SessionId};
use crate::family::Family;

use super::fate::COLLECTOR;
use super::reply::SmtpReply;

/// A connection attempt to a receiving MX (not the collector): a SYN seen on the wire, or a
/// session the MX accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Index of the event that first showed it (`TcpSyn` or `SmtpConnected`).
    pub event: usize,
    /// Which host.
    pub host: String,
    /// Over which family.
    pub family: Family,
    /// The client's address and port, which tie SYNs to sessions.
    pub client: SocketAddr,
    /// SYNs seen for it (0 when no SYN capture ran).
    pub syns: u32,
    /// The session it opened, if the MX accepted the connection.
    pub session: Option<SessionId>,
    /// The session's first 4xx/5xx reply, or else its last reply, if any.
    pub reply: Option<String>,
    /// When it started: its first SYN, or the session's start without a capture.
    pub started: Duration,
    /// When its last SYN (retransmission) was seen, if any was captured.
    pub last_syn: Option<Duration>,
    /// When its session ended, if it had one that ended.
    pub ended: Option<Duration>,
}

/// The first switch of address family among the connection attempts: from the first attempt
/// (on the first family) to the first attempt on the other family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The family tried first.
    pub from: Family,
    /// The family fallen back to.
    pub to: Family,
    /// Index (into the attempts) of the first attempt on `to`; the ones before are on `from`.
    pub next: usize,
    /// Wall time from the first attempt's first SYN to the first SYN on `to`.
    pub took: Duration,
}

/// The first family switch among `attempts`, if the MTA made one.
pub fn fallback(attempts: &[Attempt]) -> Option<Fallback> {
    let first = attempts.first()?;
    let next = attempts.iter().position(|a| a.family != first.family)?;
    Some(Fallback {
        from: first.family,
        to: attempts[next].family,
        next,
        took: attempts[next].started.saturating_sub(first.started),
    })
}

impl Attempt {
    /// What the attempt met, e.g. `421 4.3.2 busy` or `no session, 3 SYNs`.
    pub fn outcome(&self) -> String {
        match (&self.reply, self.session) {
            // A reply by its first line, as `550 text …`; a cut session by its reason.
            (Some(reply), _) => SmtpReply::parse(reply).map_or(reply.clone(), |r| r.headline()),
            (None, Some(_)) => "no reply".to_string(),
            (None, None) if self.syns == 1 => "no session, 1 SYN".to_string(),
            (None, None) => format!("no session, {} SYNs", self.syns),
        }
    }
}

/// Connection attempts to receiving MX hosts, in the order they were made.
///
/// When SYNs were captured, each connection is one attempt from its first SYN (retransmissions
/// counted), and sessions are tied to it by the client's address and port, whatever order the
/// events were recorded in. Without a capture, each accepted session is an attempt.
pub fn attempts(events: &[Event]) -> Vec<Attempt> {
    let captured = events
        .iter()
        .any(|event| matches!(event.kind, EventKind::TcpSyn { .. }));
    let mut attempts: Vec<Attempt> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let (host, family, client, session) = match &event.kind {
            EventKind::TcpSyn {
                host,
                family,
                client,
                ..
            } if captured => (host, family, client, None),
            EventKind::SmtpConnected {
                host,
                family,
                client,
                session,
                ..
            } if !captured => (host, family, client, Some(*session)),
            _ => continue,
        };
        let syn = session.is_none();
        if host == COLLECTOR {
            continue;
        }
        let retransmitted = attempts
            .iter_mut()
            .rev()
            .find(|a| syn && a.client == *client);
        match retransmitted {
            Some(attempt) => {
                attempt.syns += 1;
                attempt.last_syn = Some(event.at);
            }
            None => attempts.push(Attempt {
                event: index,
                host: host.clone(),
                family: *family,
                client: *client,
                syns: u32::from(syn),
                session,
                reply: None,
                started: event.at,
                last_syn: syn.then_some(event.at),
                ended: None,
            }),
        }
    }
    for event in events {
        match &event.kind {
            EventKind::SmtpConnected {
                session, client, ..
            } if captured => {
                let attempt = attempts
                    .iter_mut()
                    .rev()
                    .find(|a| a.client == *client && a.session.is_none());
                if let Some(attempt) = attempt {
                    attempt.session = Some(*session);
                }
            }
            EventKind::SmtpReply { session, reply, .. } => {
                if let Some(attempt) = attempts.iter_mut().find(|a| a.session == Some(*session)) {
                    if !attempt
                        .reply
                        .as_deref()
                        .is_some_and(SmtpReply::is_error_text)
                    {
                        attempt.reply = Some(reply.clone());
                    }
                }
            }
            // A session the MX cut on purpose (a reset in DATA, a lost 250): that, rather than
            // the last reply before it, is what the attempt met.
            EventKind::SmtpClosed {
                session, reason, ..
            } => {
                if let Some(attempt) = attempts.iter_mut().find(|a| a.session == Some(*session)) {
                    attempt.ended = Some(event.at);
                    let cut =
                        reason.starts_with("scripted ") && !reason.starts_with("scripted 421");
                    if cut
                        && !attempt
                            .reply
                            .as_deref()
                            .is_some_and(SmtpReply::is_error_text)
                    {
                        attempt.reply = Some(reason.clone());
                    }
                }
            }
            _ => {}
        }
    }
    attempts
}
