//! Greylisting: a triplet (client key, sender, recipient) is refused with `451 4.7.1` until
//! its period has passed since it was first seen, then passes for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{human, GreylistKey};

/// The triplets seen in a run.
#[derive(Debug, Default)]
pub(super) struct Triplets {
    seen: HashMap<(String, String, String), Triplet>,
}

#[derive(Debug)]
struct Triplet {
    first_seen: Instant,
    /// Refusals so far.
    refused: u32,
    /// Whether the triplet has passed (it then always passes).
    passed: bool,
}

/// Checks (and records) a triplet. Returns the note for the event log and, if it is refused,
/// the reply.
pub(super) fn check(
    triplets: &Mutex<Triplets>,
    key: GreylistKey,
    client: IpAddr,
    sender: &str,
    recipient: &str,
    period: Duration,
) -> (String, Option<String>) {
    let client_key = key.of(client);
    let what = format!("greylist {client_key} <{sender}> <{recipient}>");
    let now = Instant::now();
    let mut triplets = triplets
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let id = (
        client_key,
        sender.to_ascii_lowercase(),
        recipient.to_ascii_lowercase(),
    );
    let triplet = triplets.seen.entry(id).or_insert_with(|| Triplet {
        first_seen: now,
        refused: 0,
        passed: false,
    });
    let age = now.saturating_duration_since(triplet.first_seen);
    if triplet.passed {
        return (format!("{what}: known, passed"), None);
    }
    if age >= period {
        triplet.passed = true;
        return (
            format!(
                "{what}: first seen {} ago (period {}), passed after {} refusal(s)",
                human(round(age)),
                human(period),
                triplet.refused
            ),
            None,
        );
    }
    triplet.refused += 1;
    let remaining = period - age;
    let note = if triplet.refused == 1 {
        format!("{what}: first seen, 451 for {}", human(period))
    } else {
        format!(
            "{what}: seen {} ago, 451 for another {}",
            human(round(age)),
            human(round(remaining))
        )
    };
    let reply = format!(
        "451 4.7.1 <{recipient}>: Recipient address rejected: Greylisted, try again in {} (mxlab)",
        human(round_up(remaining))
    );
    (note, Some(reply))
}

/// `d` to the millisecond, for notes.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// `d` up to the next whole second (at least one), for replies.
fn round_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}
