//! Connection rate limits: more than `limit` connections within `per` from one key get
//! `421 4.7.0` instead of the greeting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{human, GreylistKey};

/// Recent connection times per (client key, window).
#[derive(Debug, Default)]
pub(super) struct Windows {
    arrivals: HashMap<(String, Duration), VecDeque<Instant>>,
}

/// Counts a connection from `client`. Returns the note for the event log and, if it is over
/// the limit, the reply.
pub(super) fn arrive(
    windows: &Mutex<Windows>,
    key: GreylistKey,
    client: IpAddr,
    limit: u32,
    per: Duration,
    hostname: &str,
) -> (String, Option<String>) {
    let client_key = key.of(client);
    let now = Instant::now();
    let mut windows = windows
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let arrivals = windows
        .arrivals
        .entry((client_key.clone(), per))
        .or_default();
    while arrivals
        .front()
        .is_some_and(|&at| now.saturating_duration_since(at) >= per)
    {
        arrivals.pop_front();
    }
    arrivals.push_back(now);
    let count = arrivals.len();
    let what = format!(
        "rate {client_key}: connection {count} within {} (limit {limit})",
        human(per)
    );
    if count > limit as usize {
        let reply =
            format!("421 4.7.0 {hostname} Error: too many connections from {client_key} (mxlab)");
        (format!("{what}: over the limit, 421"), Some(reply))
    } else {
        (format!("{what}: accepted"), None)
    }
}
