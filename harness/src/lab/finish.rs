//! When a run can stop early: every message has reached a final state.

use crate::events::{Event, EventKind};
use crate::plan::{Plan, PlannedMessage};
use crate::verdict::COLLECTOR;

/// Every planned message was either accepted by a receiving MX or bounced to its sender, in a
/// session that has ended (so a duplicate in the same session would have been seen).
pub fn all_settled(events: &[Event], plan: &Plan) -> bool {
    plan.messages
        .iter()
        .all(|planned| events.iter().any(|event| settles(event, planned, events)))
}

fn settles(event: &Event, planned: &PlannedMessage, events: &[Event]) -> bool {
    let EventKind::MessageAccepted {
        host,
        session,
        from,
        to,
        message_id,
        ..
    } = &event.kind
    else {
        return false;
    };
    let delivered = host != COLLECTOR && message_id.as_deref() == Some(planned.message_id.as_str());
    let bounced = host == COLLECTOR && from.is_empty() && to.contains(&planned.message.from);
    (delivered || bounced) && session_closed(events, *session)
}

fn session_closed(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|event| matches!(&event.kind, EventKind::SmtpClosed { session, .. } if *session == id))
}
