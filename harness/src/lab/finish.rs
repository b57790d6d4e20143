//! When a run can stop early: every message has reached a final state.

use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::plan::{Plan, PlannedMessage};
use crate::verdict::COLLECTOR;

/// How long after an acceptance a session that stays open (an MTA keeping its connection for
/// reuse) still counts as unfinished.
const SESSION_GRACE: Duration = Duration::from_secs(1);

/// Every planned message was either accepted by a receiving MX or bounced to its sender, and
/// that session has ended or stayed quiet for a moment (so a duplicate sent in the same session
/// would have been seen).
pub fn all_settled(events: &[Event], plan: &Plan, now: Duration) -> bool {
    plan.messages.iter().all(|planned| {
        events
            .iter()
            .any(|event| settles(event, planned, events, now))
    })
}

fn settles(event: &Event, planned: &PlannedMessage, events: &[Event], now: Duration) -> bool {
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
    let quiet = now.saturating_sub(event.at) >= SESSION_GRACE;
    (delivered || bounced) && (quiet || session_closed(events, *session))
}

fn session_closed(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|event| matches!(&event.kind, EventKind::SmtpClosed { session, .. } if *session == id))
}
