//! When a run has reached its expected end state and can stop early.

use crate::events::{Event, EventKind};
use crate::plan::Plan;
use crate::verdict::COLLECTOR;

/// Every planned message accepted by a receiving MX, in a session that has ended.
pub fn all_delivered(events: &[Event], plan: &Plan) -> bool {
    plan.messages.iter().all(|planned| {
        events.iter().any(|event| match &event.kind {
            EventKind::MessageAccepted {
                host,
                session,
                message_id,
                ..
            } => {
                host != COLLECTOR
                    && message_id.as_deref() == Some(planned.message_id.as_str())
                    && session_closed(events, *session)
            }
            _ => false,
        })
    })
}

/// Every planned message's sender got a bounce at the collector, in a session that has ended.
pub fn all_bounced(events: &[Event], plan: &Plan) -> bool {
    plan.messages.iter().all(|planned| {
        events.iter().any(|event| match &event.kind {
            EventKind::MessageAccepted {
                host,
                session,
                from,
                to,
                ..
            } => {
                host == COLLECTOR
                    && from.is_empty()
                    && to.contains(&planned.message.from)
                    && session_closed(events, *session)
            }
            _ => false,
        })
    })
}

fn session_closed(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|event| matches!(&event.kind, EventKind::SmtpClosed { session, .. } if *session == id))
}
