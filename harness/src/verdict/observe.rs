//! What happened to each message, read off the event log.

use std::net::SocketAddr;
use std::time::Duration;

use crate::events::{Event, EventKind, QueueEntry, SessionId};
use crate::family::Family;

/// The host name of the sender domain's MX, which receives bounces.
pub const COLLECTOR: &str = "bounces";

/// An MX accepting a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// Index of the `MessageAccepted` event.
    pub event: usize,
    /// When.
    pub at: Duration,
    /// Which host.
    pub host: String,
    /// Over which family.
    pub family: Family,
    /// In which session.
    pub session: SessionId,
    /// Content digest.
    pub digest: String,
}

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
            (Some(reply), _) => match reply.split_once('\n') {
                // A multi-line reply: its first line, as `550 text …`.
                Some((first, _)) => format!(
                    "{}{} …",
                    &first[..first.len().min(3)],
                    first.get(4..).map_or(String::new(), |t| format!(" {t}"))
                ),
                None => reply.clone(),
            },
            (None, Some(_)) => "no reply".to_string(),
            (None, None) if self.syns == 1 => "no session, 1 SYN".to_string(),
            (None, None) => format!("no session, {} SYNs", self.syns),
        }
    }
}

/// Everything observed about one injected message.
#[derive(Debug, Clone, Default)]
pub struct MessageFate {
    /// When it was handed to the system under test (index and time of the event).
    pub injected: Option<(usize, Duration)>,
    /// Every acceptance by a receiving MX, in order.
    pub acceptances: Vec<Acceptance>,
    /// Bounces for it received by the collector (index and time).
    pub bounces: Vec<(usize, Duration)>,
    /// Its entry in the final queue listing, if it was still queued.
    pub queued: Option<QueueEntry>,
}

/// Reads the fate of the message with `message_id` sent by `from` to `to`, the
/// `ordinal`-th injected message of the run.
pub fn fate(
    events: &[Event],
    ordinal: usize,
    message_id: &str,
    from: &str,
    to: &[String],
) -> MessageFate {
    let mut fate = MessageFate::default();
    let mut injections = 0;
    for (index, event) in events.iter().enumerate() {
        match &event.kind {
            EventKind::MessageInjected { .. } => {
                if injections == ordinal {
                    fate.injected = Some((index, event.at));
                }
                injections += 1;
            }
            EventKind::MessageAccepted {
                host,
                session,
                family,
                from: envelope_from,
                to: envelope_to,
                digest,
                message_id: id,
                ..
            } => {
                if host == COLLECTOR {
                    let is_bounce =
                        envelope_from.is_empty() && envelope_to.iter().any(|rcpt| rcpt == from);
                    if is_bounce {
                        fate.bounces.push((index, event.at));
                    }
                } else if id.as_deref() == Some(message_id) {
                    fate.acceptances.push(Acceptance {
                        event: index,
                        at: event.at,
                        host: host.clone(),
                        family: *family,
                        session: *session,
                        digest: digest.clone(),
                    });
                }
            }
            EventKind::SutQueue { entries } => {
                fate.queued = entries
                    .iter()
                    .find(|entry| entry.recipients.iter().any(|rcpt| to.contains(rcpt)))
                    .cloned();
            }
            _ => {}
        }
    }
    fate
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
                    let is_error = |text: &str| text.starts_with(['4', '5']);
                    if !attempt.reply.as_deref().is_some_and(is_error) {
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
                    let is_error = |text: &str| text.starts_with(['4', '5']);
                    if cut && !attempt.reply.as_deref().is_some_and(is_error) {
                        attempt.reply = Some(reason.clone());
                    }
                }
            }
            _ => {}
        }
    }
    attempts
}

/// Digests accepted more than once by receiving MX hosts, with the events that accepted them.
pub fn repeated_digests(events: &[Event]) -> Vec<(String, Vec<usize>)> {
    let mut by_digest: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (index, event) in events.iter().enumerate() {
        if let EventKind::MessageAccepted { host, digest, .. } = &event.kind {
            if host != COLLECTOR {
                by_digest.entry(digest).or_default().push(index);
            }
        }
    }
    by_digest
        .into_iter()
        .filter(|(_, indices)| indices.len() > 1)
        .map(|(digest, indices)| (digest.to_string(), indices))
        .collect()
}
