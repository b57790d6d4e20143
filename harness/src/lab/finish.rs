//! When a run can stop early: every message has reached a final state.

use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::observe::{landing, COLLECTOR};
use crate::plan::{Plan, PlannedMessage};

/// How long after an acceptance a session that stays open (an MTA keeping its connection for
/// reuse) still counts as unfinished.
const SESSION_GRACE: Duration = Duration::from_secs(1);

/// Every planned message was either accepted by a receiving MX or bounced to its sender, and
/// then no duplicate can follow: that session has ended, or stayed quiet for a moment (so a
/// duplicate sent in the same session would have been seen), or the SUT has since reported an
/// empty queue (an MTA that keeps its session open for reuse has nothing left to send).
///
/// An acceptance whose `250` never reached the MTA (the MX stored the message, then reset,
/// closed or fell silent: RFC 1047's window) settles nothing by itself: the MTA still holds
/// the message and may send it again, so only a later acceptance or an empty queue settles it.
/// When the plan authenticates messages, an acceptance settles only once its authentication
/// results are recorded.
pub fn all_settled(events: &[Event], plan: &Plan, now: Duration) -> bool {
    plan.messages.iter().all(|planned| {
        events
            .iter()
            .enumerate()
            .any(|(index, event)| settles(index, event, planned, events, now, plan.authenticate))
    })
}

/// Every planned message was accepted by a receiving MX or bounced to its sender, whether or
/// not its session has ended.
pub fn all_accepted(events: &[Event], plan: &Plan) -> bool {
    plan.messages
        .iter()
        .all(|planned| events.iter().any(|event| accepts(event, planned)))
}

fn settles(
    index: usize,
    event: &Event,
    planned: &PlannedMessage,
    events: &[Event],
    now: Duration,
    authenticate: bool,
) -> bool {
    let EventKind::MessageAccepted { session, host, .. } = &event.kind else {
        return false;
    };
    if !accepts(event, planned) {
        return false;
    }
    if authenticate && host != COLLECTOR && !authenticated(events, event) {
        // The receiving MX records its authentication results shortly after the acceptance.
        return false;
    }
    let quiet = now.saturating_sub(event.at) >= SESSION_GRACE;
    let closed = session_closed(events, *session);
    let replied = events[index..].iter().any(
        |later| matches!(&later.kind, EventKind::SmtpReply { session: s, .. } if s == session),
    );
    if (quiet || closed) && !replied {
        // The reply was lost: the MTA still has the message.
        return queue_empty_after(events, event.at);
    }
    quiet || closed || queue_empty_after(events, event.at)
}

/// Whether `event` is `planned`'s acceptance by a receiving MX or its bounce's acceptance by
/// the collector.
fn accepts(event: &Event, planned: &PlannedMessage) -> bool {
    landing(&event.kind, &planned.message_id, &planned.message.from).is_some()
}

fn authenticated(events: &[Event], acceptance: &Event) -> bool {
    let EventKind::MessageAccepted { host, session, .. } = &acceptance.kind else {
        return true;
    };
    events.iter().any(|e| {
        matches!(&e.kind, EventKind::MessageAuth { host: h, session: s, .. } if h == host && s == session)
    })
}

fn queue_empty_after(events: &[Event], at: Duration) -> bool {
    events.iter().any(|event| {
        event.at >= at
            && matches!(&event.kind, EventKind::SutQueue { entries } if entries.is_empty())
    })
}

fn session_closed(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|event| matches!(&event.kind, EventKind::SmtpClosed { session, .. } if *session == id))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::events::QueueEntry;
    use crate::family::Family;
    use crate::scenario::parse;
    use crate::test_support::MINIMAL_SCENARIO as SCENARIO;

    fn plan() -> Plan {
        Plan::new(&parse(Path::new("scenarios/x/y.toml"), SCENARIO).unwrap())
    }

    fn at(millis: u64, kind: EventKind) -> Event {
        Event {
            at: Duration::from_millis(millis),
            kind,
        }
    }

    /// mx1 accepts the planned message at 100 ms in session 1, which stays open.
    fn accepted(plan: &Plan) -> Vec<Event> {
        let mut events = stored(plan);
        events.push(at(
            101,
            EventKind::SmtpReply {
                host: "mx1".into(),
                session: 1,
                reply: "250 2.0.0 Ok: queued as mxlab-1-1".into(),
            },
        ));
        events
    }

    /// mx1 stores the planned message at 100 ms in session 1 and sends no reply.
    fn stored(plan: &Plan) -> Vec<Event> {
        vec![at(
            100,
            EventKind::MessageAccepted {
                host: "mx1".into(),
                session: 1,
                family: Family::Ipv6,
                from: "alice@sender.test".into(),
                to: vec!["bob@example.test".into()],
                size: 100,
                digest: "d".into(),
                message_id: Some(plan.messages[0].message_id.clone()),
            },
        )]
    }

    fn queue(millis: u64, entries: Vec<QueueEntry>) -> Event {
        at(millis, EventKind::SutQueue { entries })
    }

    #[test]
    fn an_open_session_settles_after_the_grace_only() {
        let plan = plan();
        let events = accepted(&plan);
        assert!(all_accepted(&events, &plan));
        assert!(!all_settled(&events, &plan, Duration::from_millis(500)));
        assert!(all_settled(&events, &plan, Duration::from_millis(1100)));
    }

    #[test]
    fn a_closed_session_settles_at_once() {
        let plan = plan();
        let mut events = accepted(&plan);
        events.push(at(
            120,
            EventKind::SmtpClosed {
                host: "mx1".into(),
                session: 1,
                reason: "quit".into(),
            },
        ));
        assert!(all_settled(&events, &plan, Duration::from_millis(130)));
    }

    #[test]
    fn an_empty_queue_after_the_acceptance_settles_an_open_session() {
        let plan = plan();
        let now = Duration::from_millis(400);
        let before = [queue(50, Vec::new())];
        let still_queued = [queue(
            300,
            vec![QueueEntry {
                id: "Q1".into(),
                recipients: vec!["bob@example.test".into()],
                reason: None,
            }],
        )];
        let emptied = [queue(300, Vec::new())];
        for (extra, settled) in [(&before, false), (&still_queued, false), (&emptied, true)] {
            let mut events = accepted(&plan);
            events.extend(extra.iter().cloned());
            assert_eq!(all_settled(&events, &plan, now), settled, "{extra:?}");
        }
    }

    #[test]
    fn a_lost_reply_settles_only_on_an_empty_queue() {
        let plan = plan();
        let mut events = stored(&plan);
        events.push(at(
            110,
            EventKind::SmtpClosed {
                host: "mx1".into(),
                session: 1,
                reason: "scripted reset after storing mxlab-1-1".into(),
            },
        ));
        // Neither the close nor a quiet second settles it: the MTA may send it again.
        assert!(!all_settled(&events, &plan, Duration::from_millis(130)));
        assert!(!all_settled(&events, &plan, Duration::from_secs(5)));
        events.push(queue(
            300,
            vec![QueueEntry {
                id: "Q1".into(),
                recipients: vec!["bob@example.test".into()],
                reason: Some("lost connection".into()),
            }],
        ));
        assert!(!all_settled(&events, &plan, Duration::from_secs(5)));
        events.push(queue(600, Vec::new()));
        assert!(all_settled(&events, &plan, Duration::from_secs(5)));
    }

    #[test]
    fn nothing_settles_before_an_acceptance() {
        let plan = plan();
        let events = [queue(300, Vec::new())];
        assert!(!all_accepted(&events, &plan));
        assert!(!all_settled(&events, &plan, Duration::from_secs(5)));
    }
}
