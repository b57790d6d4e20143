//! What became of each message: the one place that decides what counts as delivered, bounced
//! or deferred.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::events::{Event, EventKind, QueueEntry, SessionId};
use crate::family::Family;
use crate::scenario::Outcome;

use super::dsn::{self, DsnReport};

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

/// What a `MessageAccepted` event means for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// A receiving MX accepted the message itself (matched by its Message-ID).
    Delivered,
    /// The collector accepted a bounce to the message's sender (null sender, sender as
    /// recipient).
    Bounced,
}

/// What `kind` means for the message with `message_id` sent by `from`, if it is an
/// acceptance of that message or of a bounce to its sender.
pub fn landing(kind: &EventKind, message_id: &str, from: &str) -> Option<Landing> {
    let EventKind::MessageAccepted {
        host,
        from: envelope_from,
        to: envelope_to,
        message_id: id,
        ..
    } = kind
    else {
        return None;
    };
    if host == COLLECTOR {
        let bounce = envelope_from.is_empty() && envelope_to.iter().any(|rcpt| rcpt == from);
        bounce.then_some(Landing::Bounced)
    } else {
        (id.as_deref() == Some(message_id)).then_some(Landing::Delivered)
    }
}

/// Everything observed about one injected message.
#[derive(Debug, Clone, Default)]
pub struct MessageFate {
    /// When it was handed to the system under test (index and time of the event).
    pub injected: Option<(usize, Duration)>,
    /// Every acceptance by a receiving MX, in order.
    pub acceptances: Vec<Acceptance>,
    /// Bounces to its sender received by the collector (index and time).
    pub bounces: Vec<(usize, Duration)>,
    /// Its entry in the final queue listing, if it was still queued.
    pub queued: Option<QueueEntry>,
    /// DSN reports naming one of its recipients (index of the event and the report).
    pub reports: Vec<(usize, DsnReport)>,
}

impl MessageFate {
    /// Delivered once any receiving MX accepted it, else bounced once a bounce reached its
    /// sender, else deferred while it is still queued; `None` when it is nowhere.
    pub fn outcome(&self) -> Option<Outcome> {
        if !self.acceptances.is_empty() {
            Some(Outcome::Delivered)
        } else if !self.bounces.is_empty() {
            Some(Outcome::Bounced)
        } else if self.queued.is_some() {
            Some(Outcome::Deferred)
        } else {
            None
        }
    }

    /// From its injection to its first acceptance or, failing that, its first bounce.
    pub fn time_to_outcome(&self) -> Option<Duration> {
        let (_, injected) = self.injected?;
        let done = self
            .acceptances
            .first()
            .map(|a| a.at)
            .or_else(|| self.bounces.first().map(|(_, at)| *at))?;
        Some(done.saturating_sub(injected))
    }

    /// The bounce report that can be tied to this undelivered message: a DSN naming one of
    /// its recipients; when it is the run's `only_message`, the first DSN of `events`, or an
    /// empty report for a bounce whose DSN could not be read. Bounces are matched by sender,
    /// so with several messages only a DSN naming a recipient ties one to this message.
    pub fn bounce_report(&self, events: &[Event], only_message: bool) -> Option<DsnReport> {
        if !self.acceptances.is_empty() {
            return None;
        }
        let mine = self.reports.first().map(|(_, report)| report.clone());
        let any = || dsn::received(events).next().map(|(_, report)| report);
        mine.or_else(|| only_message.then(any).flatten())
            .or_else(|| (only_message && !self.bounces.is_empty()).then(DsnReport::default))
    }
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
                digest,
                ..
            } => match landing(&event.kind, message_id, from) {
                Some(Landing::Bounced) => fate.bounces.push((index, event.at)),
                Some(Landing::Delivered) => fate.acceptances.push(Acceptance {
                    event: index,
                    at: event.at,
                    host: host.clone(),
                    family: *family,
                    session: *session,
                    digest: digest.clone(),
                }),
                None => {}
            },
            EventKind::SutQueue { entries } => {
                fate.queued = entries
                    .iter()
                    .find(|entry| entry.recipients.iter().any(|rcpt| to.contains(rcpt)))
                    .cloned();
            }
            _ => {}
        }
    }
    fate.reports = dsn::received(events)
        .filter(|(_, report)| report.concerns(to))
        .collect();
    fate
}

/// The first acceptance by a receiving MX after the run's first injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Over which family.
    pub family: Family,
    /// How long after the first injection.
    pub took: Duration,
}

/// The family and time of the first acceptance of any message by a receiving MX, counted
/// from the first injection.
pub fn first_delivery(events: &[Event]) -> Option<Arrival> {
    let injected = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::MessageInjected { .. }))?
        .at;
    events.iter().find_map(|event| match &event.kind {
        EventKind::MessageAccepted { host, family, .. } if host != COLLECTOR => Some(Arrival {
            family: *family,
            took: event.at.saturating_sub(injected),
        }),
        _ => None,
    })
}

/// Digests accepted more than once by receiving MX hosts, with the events that accepted them.
pub fn repeated_digests(events: &[Event]) -> Vec<(String, Vec<usize>)> {
    let mut by_digest: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64, kind: EventKind) -> Event {
        Event {
            at: Duration::from_millis(millis),
            kind,
        }
    }

    fn dsn(recipient: &str, status: &str) -> EventKind {
        EventKind::DsnReceived {
            recipient: Some(recipient.into()),
            status: Some(status.into()),
            diagnostic: None,
        }
    }

    /// Two messages from alice, to bob and to carol; one bounce whose DSN names both.
    fn bounced_twice() -> Vec<Event> {
        let injected = |to: &str| EventKind::MessageInjected {
            from: "alice@sender.test".into(),
            to: vec![to.into()],
            reply: "250 ok".into(),
        };
        vec![
            at(0, injected("bob@example.test")),
            at(1, injected("carol@example.test")),
            at(
                50,
                EventKind::MessageAccepted {
                    host: COLLECTOR.into(),
                    session: 1,
                    family: Family::Ipv6,
                    from: String::new(),
                    to: vec!["alice@sender.test".into()],
                    size: 10,
                    digest: "d".into(),
                    message_id: None,
                },
            ),
            at(60, dsn("bob@example.test", "4.4.1")),
            at(60, dsn("carol@example.test", "5.1.1")),
        ]
    }

    #[test]
    fn the_second_recipient_of_a_dsn_gets_its_own_status() {
        let events = bounced_twice();
        let to = |rcpt: &str| vec![rcpt.to_string()];
        let carol = fate(
            &events,
            1,
            "<m2@x>",
            "alice@sender.test",
            &to("carol@example.test"),
        );
        assert_eq!(carol.outcome(), Some(Outcome::Bounced));
        assert_eq!(carol.time_to_outcome(), Some(Duration::from_millis(49)));
        let report = carol.bounce_report(&events, false).unwrap();
        assert_eq!(report.status.as_deref(), Some("5.1.1"));
        let bob = fate(
            &events,
            0,
            "<m1@x>",
            "alice@sender.test",
            &to("bob@example.test"),
        );
        let report = bob.bounce_report(&events, false).unwrap();
        assert_eq!(report.status.as_deref(), Some("4.4.1"));
        let dave = fate(
            &events,
            1,
            "<m3@x>",
            "alice@sender.test",
            &to("dave@example.test"),
        );
        assert_eq!(dave.bounce_report(&events, false), None);
        assert_eq!(
            dave.bounce_report(&events, true).unwrap().status.as_deref(),
            Some("4.4.1")
        );
    }

    #[test]
    fn delivery_wins_over_a_bounce_and_a_queue_entry_is_deferred() {
        let mut events = bounced_twice();
        let to = vec!["bob@example.test".to_string()];
        let queued = at(
            70,
            EventKind::SutQueue {
                entries: vec![QueueEntry {
                    id: "Q".into(),
                    recipients: to.clone(),
                    reason: None,
                }],
            },
        );
        let nowhere = fate(&events[..2], 0, "<m1@x>", "eve@sender.test", &to);
        assert_eq!(nowhere.outcome(), None);
        let deferred = fate(&[events[0].clone(), queued], 0, "<m1@x>", "a@x.test", &to);
        assert_eq!(deferred.outcome(), Some(Outcome::Deferred));
        events.push(at(
            80,
            EventKind::MessageAccepted {
                host: "mx1".into(),
                session: 2,
                family: Family::Ipv4,
                from: "alice@sender.test".into(),
                to: to.clone(),
                size: 10,
                digest: "d".into(),
                message_id: Some("<m1@x>".into()),
            },
        ));
        let delivered = fate(&events, 0, "<m1@x>", "alice@sender.test", &to);
        assert_eq!(delivered.outcome(), Some(Outcome::Delivered));
        assert_eq!(delivered.bounce_report(&events, true), None);
        assert_eq!(
            first_delivery(&events),
            Some(Arrival {
                family: Family::Ipv4,
                took: Duration::from_millis(80)
            })
        );
    }
}
