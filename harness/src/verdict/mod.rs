//! Verdicts: the scenario's expectations checked against the event log.
//!
//! Each expectation is a predicate over the events; a failed one says what was expected, what
//! was seen instead, and which events show it.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

pub use crate::observe::{
    attempts, fallback, fate, Acceptance, Attempt, Fallback, MessageFate, COLLECTOR,
};

use crate::clock::ClockRate;
use crate::events::{Event, EventKind};
use crate::family::Family;
use crate::plan::PlannedMessage;
use std::collections::BTreeMap;

use crate::scenario::{DsnExpect, Expect, Expectation, ExpectedQuery, Outcome, Xfail};
use toml::Spanned;

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every expectation held.
    Pass,
    /// At least one expectation did not hold.
    Fail,
    /// An expectation did not hold, as the scenario's `xfail` for this SUT says it will not.
    Xfail,
    /// The harness could not run the scenario; says nothing about the MTA.
    Error,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Xfail => "XFAIL",
            Status::Error => "ERROR",
        })
    }
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Which expectation failed; `None` for a stale xfail entry.
    pub key: Option<Expectation>,
    /// The expectation as written, e.g. `via = "ipv6"`.
    pub expectation: String,
    /// What was seen instead.
    pub reason: String,
    /// Indices of the events that show it.
    pub evidence: Vec<usize>,
}

/// The result of judging one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Pass, fail or error.
    pub status: Status,
    /// One line: what the system under test did.
    pub summary: String,
    /// The expectations that did not hold.
    pub failures: Vec<Failure>,
}

impl Verdict {
    /// A verdict for a run the harness could not complete.
    pub fn error(message: String) -> Verdict {
        Verdict {
            status: Status::Error,
            summary: message,
            failures: Vec::new(),
        }
    }
}

/// Checks every expectation against the events of a run of `sut` that injected `messages` in
/// order, then applies the scenario's `xfail` entry for `sut`. Event times are wall time; the
/// scenario's durations are world time at `clock`.
pub fn judge(
    expect: &Expect,
    messages: &[PlannedMessage],
    events: &[Event],
    sut: &str,
    clock: ClockRate,
) -> Verdict {
    let verdict = check(expect, messages, events, clock);
    match expect.xfail.get(sut) {
        Some(xfail) => excuse(verdict, sut, xfail.get_ref()),
        None => verdict,
    }
}

/// Applies a known deviation: a failure whose every failed expectation is excused becomes an
/// xfail; a failure of any other expectation stays a failure; a pass means the entry is stale.
fn excuse(verdict: Verdict, sut: &str, xfail: &Xfail) -> Verdict {
    let excused = |failure: &Failure| failure.key.is_some_and(|key| xfail.expects.contains(&key));
    let names = xfail
        .expects
        .iter()
        .map(|key| key.key())
        .collect::<Vec<_>>()
        .join(", ");
    match verdict.status {
        Status::Fail if verdict.failures.iter().all(excused) => Verdict {
            status: Status::Xfail,
            summary: format!("{} (known: {})", verdict.summary, xfail.reason),
            ..verdict
        },
        Status::Fail => Verdict {
            summary: format!(
                "{} (the xfail for {sut} excuses only {names})",
                verdict.summary
            ),
            ..verdict
        },
        Status::Pass => Verdict {
            status: Status::Fail,
            failures: vec![Failure {
                key: None,
                expectation: format!(
                    "xfail.{sut} = {{ expects = [{names}], reason = {:?} }}",
                    xfail.reason
                ),
                reason: format!("{sut} now meets every expectation: remove the xfail entry"),
                evidence: Vec::new(),
            }],
            ..verdict
        },
        Status::Xfail | Status::Error => verdict,
    }
}

fn check(
    expect: &Expect,
    messages: &[PlannedMessage],
    events: &[Event],
    clock: ClockRate,
) -> Verdict {
    let mut failures = Vec::new();
    let all_attempts = attempts(events);
    let mut summaries = Vec::new();
    for (ordinal, planned) in messages.iter().enumerate() {
        let message = &planned.message;
        let fate = fate(
            events,
            ordinal,
            &planned.message_id,
            &message.from,
            &message.to,
        );
        let accepted = fate.acceptances.first();
        let tried_before = accepted.map_or(all_attempts.len(), |acceptance| {
            all_attempts
                .iter()
                .position(|a| a.session == Some(acceptance.session))
                .unwrap_or(all_attempts.len())
        });
        let earlier = &all_attempts[..tried_before];
        let tried = first_seen_families(earlier);
        let outcome = fate.outcome();
        summaries.push(summary(&fate, &planned.message_id, outcome, earlier, clock));
        let id = &planned.message_id;

        if outcome != Some(expect.outcome) {
            failures.push(Failure {
                key: Some(Expectation::Outcome),
                expectation: format!("outcome = \"{}\"", outcome_name(expect.outcome)),
                reason: format!("message {id} was {}", describe(&fate, outcome)),
                evidence: evidence_of(&fate),
            });
        }
        if let (Some(via), Some(acceptance)) = (expect.via, accepted) {
            if acceptance.family != via {
                failures.push(Failure {
                    key: Some(Expectation::Via),
                    expectation: format!("via = \"{via}\""),
                    reason: format!(
                        "message {id} was accepted over {} by {}",
                        acceptance.family, acceptance.host
                    ),
                    evidence: vec![acceptance.event],
                });
            }
        }
        if let (Some(mx), Some(acceptance)) = (&expect.mx, accepted) {
            if &acceptance.host != mx.get_ref() {
                failures.push(Failure {
                    key: Some(Expectation::Mx),
                    expectation: format!("mx = \"{}\"", mx.get_ref()),
                    reason: format!("message {id} was accepted by {}", acceptance.host),
                    evidence: vec![acceptance.event],
                });
            }
        }
        if let Some(expected) = &expect.tried {
            if &tried != expected {
                failures.push(Failure {
                    key: Some(Expectation::Tried),
                    expectation: format!("tried = [{}]", quoted(expected)),
                    reason: format!(
                        "the sessions before the accepting one used [{}]",
                        quoted(&tried)
                    ),
                    evidence: all_attempts[..tried_before]
                        .iter()
                        .map(|a| a.event)
                        .collect(),
                });
            }
        }
        if let Some(took) = fate.time_to_outcome() {
            if clock.to_world(took) > expect.within.0 {
                failures.push(Failure {
                    key: Some(Expectation::Within),
                    expectation: format!("within = \"{}\"", expect.within),
                    reason: format!("message {id} took {}", elapsed(took, clock)),
                    evidence: evidence_of(&fate),
                });
            }
        }
        if let Some(auth) = &expect.auth {
            failures.extend(check_auth(auth, id, &fate, events));
        }
        let exactly_once = expect.exactly_once && expect.copies.is_none();
        if let Some(copies) = expect.copies {
            if !copies.allows(fate.acceptances.len()) {
                failures.push(Failure {
                    key: Some(Expectation::Copies),
                    expectation: format!("copies = {copies}"),
                    reason: match fate.acceptances.len() {
                        0 => format!("no copy of message {id} was accepted"),
                        n => format!(
                            "{n} copies of message {id} were accepted: {}",
                            copies_of(&fate)
                        ),
                    },
                    evidence: evidence_of(&fate),
                });
            }
        }
        if exactly_once && fate.acceptances.len() > 1 {
            failures.push(Failure {
                key: Some(Expectation::ExactlyOnce),
                expectation: "exactly_once = true".into(),
                reason: format!(
                    "message {id} was accepted {} times ({})",
                    fate.acceptances.len(),
                    fate.acceptances
                        .iter()
                        .map(|a| format!("{} over {}", a.host, a.family))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                evidence: fate.acceptances.iter().map(|a| a.event).collect(),
            });
        }
    }
    if let Some(limit) = &expect.fallback_within {
        let (failure, story) = check_fallback(limit, &all_attempts, clock);
        failures.extend(failure);
        if let Some(story) = story {
            summaries.push(story);
        }
    }
    if let Some(expected) = &expect.attempts {
        if let Some(failure) = check_attempts(expected, &all_attempts) {
            failures.push(failure);
        }
    }
    if let Some(dsn) = &expect.dsn {
        if let Some(failure) = check_dsn(dsn, events) {
            failures.push(failure);
        }
    }
    if let Some(queried) = &expect.queried {
        if let Some(failure) = check_queries(queried, events) {
            failures.push(failure);
        }
    }
    if expect.exactly_once && expect.copies.is_none() {
        for (digest, indices) in crate::observe::repeated_digests(events) {
            let already = failures
                .iter()
                .any(|f| f.key == Some(Expectation::ExactlyOnce) && f.evidence == indices);
            if !already {
                failures.push(Failure {
                    key: Some(Expectation::ExactlyOnce),
                    expectation: "exactly_once = true".into(),
                    reason: format!(
                        "the same content (sha256 {}…) was accepted {} times",
                        &digest[..digest.len().min(12)],
                        indices.len()
                    ),
                    evidence: indices,
                });
            }
        }
    }
    Verdict {
        status: if failures.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        },
        summary: summaries.join("; "),
        failures,
    }
}

/// A span of wall time as the MTA's world time, compactly: `30s`, `0.5s` (wall time on the
/// real clock).
fn world(wall: Duration, clock: ClockRate) -> String {
    let secs = clock.to_world(wall).as_secs_f64();
    if secs >= 10.0 {
        format!("{secs:.0}s")
    } else if secs >= 1.0 {
        format!("{secs:.1}s")
    } else {
        format!("{:.0}ms", secs * 1e3)
    }
}

/// The timing of the attempts up to the fall-back: for each, its first SYN, its SYN
/// retransmissions, when its session ended; then the first SYN on the other family. Times
/// are the MTA's world time from the first attempt.
pub fn fallback_story(attempts: &[Attempt], clock: ClockRate) -> String {
    let Some(t0) = attempts.first().map(|a| a.started) else {
        return "no connection attempt".to_string();
    };
    let at = |t: Duration| world(t.saturating_sub(t0), clock);
    let shown = fallback(attempts).map_or(attempts.len(), |fb| fb.next + 1);
    let mut parts = Vec::new();
    for attempt in &attempts[..shown] {
        let mut text = format!(
            "{} {} first SYN at {}",
            attempt.host,
            attempt.family,
            at(attempt.started)
        );
        if attempt.syns > 1 {
            if let Some(last) = attempt.last_syn {
                text.push_str(&format!(", {} SYNs (last at {})", attempt.syns, at(last)));
            }
        }
        match (attempt.session, attempt.ended) {
            (Some(_), Some(ended)) => text.push_str(&format!(
                ", session ended at {} ({})",
                at(ended),
                attempt.outcome()
            )),
            (Some(_), None) => text.push_str(&format!(" ({})", attempt.outcome())),
            (None, _) => text.push_str(", no session"),
        }
        parts.push(text);
    }
    format!(
        "{} (MTA time at {clock}; SYN retransmissions and ICMP-driven aborts are kernel timers on the real clock)",
        parts.join("; ")
    )
}

/// The fall-back to the other family must come within `limit` of world time.
fn check_fallback(
    limit: &crate::scenario::HumanDuration,
    attempts: &[Attempt],
    clock: ClockRate,
) -> (Option<Failure>, Option<String>) {
    let expectation = format!("fallback_within = \"{limit}\"");
    let story = fallback_story(attempts, clock);
    let Some(fb) = fallback(attempts) else {
        let families = first_seen_families(attempts);
        return (
            Some(Failure {
                key: Some(Expectation::FallbackWithin),
                expectation,
                reason: format!(
                    "the MTA never switched family: {} attempts, all over {}: {story}",
                    attempts.len(),
                    families
                        .first()
                        .map_or("nothing".to_string(), ToString::to_string)
                ),
                evidence: attempts.iter().map(|a| a.event).collect(),
            }),
            None,
        );
    };
    let took = format!(
        "fell back from {} to {} after {} of MTA time ({:.3}s wall)",
        fb.from,
        fb.to,
        world(fb.took, clock),
        fb.took.as_secs_f64()
    );
    let failure = (clock.to_world(fb.took) > limit.0).then(|| Failure {
        key: Some(Expectation::FallbackWithin),
        expectation,
        reason: format!("{took}: {story}"),
        evidence: attempts[..=fb.next].iter().map(|a| a.event).collect(),
    });
    (failure, Some(took))
}

/// Every accepted copy of message `id` must carry the expected authentication results.
fn check_auth(
    expected: &crate::scenario::AuthExpect,
    id: &str,
    fate: &MessageFate,
    events: &[Event],
) -> Option<Failure> {
    let wanted: Vec<(&str, crate::scenario::AuthResult)> = [
        ("spf", expected.spf),
        ("dkim", expected.dkim),
        ("dmarc", expected.dmarc),
    ]
    .into_iter()
    .filter_map(|(name, result)| result.map(|r| (name, r)))
    .collect();
    let expectation = format!(
        "auth = {{ {} }}",
        wanted
            .iter()
            .map(|(name, result)| format!("{name} = \"{}\"", result.word()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut wrong = Vec::new();
    let mut evidence = Vec::new();
    for acceptance in &fate.acceptances {
        let recorded = events
            .iter()
            .enumerate()
            .find_map(|(index, event)| match &event.kind {
                EventKind::MessageAuth {
                    host,
                    session,
                    spf,
                    dkim,
                    dmarc,
                    ..
                } if *host == acceptance.host && *session == acceptance.session => {
                    Some((index, [("spf", spf), ("dkim", dkim), ("dmarc", dmarc)]))
                }
                _ => None,
            });
        let copy = format!(
            "{} over {} (session {})",
            acceptance.host, acceptance.family, acceptance.session
        );
        let Some((index, results)) = recorded else {
            wrong.push(format!("{copy}: no authentication results were recorded"));
            evidence.push(acceptance.event);
            continue;
        };
        let mismatched: Vec<String> = wanted
            .iter()
            .filter_map(|(name, result)| {
                let (_, got) = results.iter().find(|(n, _)| n == name)?;
                let word = got.split_once(' ').map_or(got.as_str(), |(w, _)| w);
                (word != result.word()).then(|| format!("{name}={got}"))
            })
            .collect();
        if !mismatched.is_empty() {
            wrong.push(format!("{copy}: {}", mismatched.join(", ")));
            evidence.extend([acceptance.event, index]);
        }
    }
    (!wrong.is_empty()).then(|| Failure {
        key: Some(Expectation::Auth),
        expectation,
        reason: format!("message {id} accepted by {}", wrong.join("; ")),
        evidence,
    })
}

/// The number of connection attempts per family must be as expected.
fn check_attempts(expected: &BTreeMap<Family, u32>, attempts: &[Attempt]) -> Option<Failure> {
    let count = |family: Family| attempts.iter().filter(|a| a.family == family).count() as u32;
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(family, n)| count(**family) != **n)
        .map(|(family, _)| format!("{} over {family}", count(*family)))
        .collect();
    (!wrong.is_empty()).then(|| Failure {
        key: Some(Expectation::Attempts),
        expectation: format!(
            "attempts = {{ {} }}",
            expected
                .iter()
                .map(|(family, n)| format!("{family} = {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        reason: format!("the MTA made {} connection attempts", wrong.join(" and ")),
        evidence: attempts.iter().map(|a| a.event).collect(),
    })
}

/// The first DSN the collector received must carry the expected status and diagnostic.
fn check_dsn(expected: &DsnExpect, events: &[Event]) -> Option<Failure> {
    let expectation = format!(
        "dsn = {{ {} }}",
        [
            expected.status.as_ref().map(|s| format!("status = {s:?}")),
            expected
                .diagnostic
                .as_ref()
                .map(|d| format!("diagnostic = {d:?}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    );
    let received = crate::observe::dsn_reports(events)
        .next()
        .map(|(index, report)| (index, report.status, report.diagnostic));
    let Some((index, status, diagnostic)) = received else {
        return Some(Failure {
            key: Some(Expectation::Dsn),
            expectation,
            reason: "no delivery status notification reached the sender".into(),
            evidence: Vec::new(),
        });
    };
    let status_ok = expected.status.as_ref().is_none_or(|want| {
        status
            .as_deref()
            .is_some_and(|got| got.starts_with(want.as_str()))
    });
    let diagnostic_ok = expected.diagnostic.as_ref().is_none_or(|want| {
        diagnostic
            .as_deref()
            .is_some_and(|got| got.contains(want.as_str()))
    });
    (!(status_ok && diagnostic_ok)).then(|| Failure {
        key: Some(Expectation::Dsn),
        expectation,
        reason: format!(
            "the DSN says status {}, diagnostic {}",
            status.as_deref().unwrap_or("(none)"),
            diagnostic.as_deref().unwrap_or("(none)")
        ),
        evidence: vec![index],
    })
}

/// The queries must appear in this order among the DNS query events.
fn check_queries(queried: &[Spanned<ExpectedQuery>], events: &[Event]) -> Option<Failure> {
    let asked: Vec<(usize, &str, &str)> = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| match &event.kind {
            EventKind::DnsQuery {
                name, record_type, ..
            } => Some((index, name.as_str(), record_type.as_str())),
            _ => None,
        })
        .collect();
    let mut matched = Vec::new();
    let mut rest = asked.iter();
    for wanted in queried {
        let wanted = wanted.get_ref();
        match rest
            .by_ref()
            .find(|(_, name, record_type)| wanted.matches(name, record_type))
        {
            Some((index, ..)) => matched.push(*index),
            None => {
                let expectation = format!(
                    "queried = [{}]",
                    queried
                        .iter()
                        .map(|q| format!("{:?}", q.get_ref().to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let seen: Vec<String> = asked
                    .iter()
                    .map(|(_, name, record_type)| format!("{name} {record_type}"))
                    .collect();
                return Some(Failure {
                    key: Some(Expectation::Queried),
                    expectation,
                    reason: format!(
                        "no query {:?} after the ones before it; the MTA asked, in order: {}",
                        wanted.to_string(),
                        if seen.is_empty() {
                            "nothing".to_string()
                        } else {
                            seen.join(", ")
                        }
                    ),
                    evidence: asked.iter().map(|(i, ..)| *i).collect(),
                });
            }
        }
    }
    None
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Bounced => "bounced",
        Outcome::Deferred => "deferred",
    }
}

fn describe(fate: &MessageFate, outcome: Option<Outcome>) -> String {
    match (outcome, &fate.queued) {
        (Some(Outcome::Deferred), Some(entry)) => format!(
            "deferred: still queued ({})",
            entry.reason.as_deref().unwrap_or("no reason given")
        ),
        (Some(outcome), _) => outcome_name(outcome).to_string(),
        (None, _) if fate.injected.is_none() => "never injected".to_string(),
        (None, _) => "lost: not delivered, not bounced and not in the queue".to_string(),
    }
}

fn evidence_of(fate: &MessageFate) -> Vec<usize> {
    fate.injected
        .iter()
        .map(|(i, _)| *i)
        .chain(fate.acceptances.iter().map(|a| a.event))
        .chain(fate.bounces.iter().map(|(i, _)| *i))
        .collect()
}

/// The sessions that accepted copies of a message: `session 3 (mx1 over ipv6), session 7 (mx1
/// over ipv4)`.
fn copies_of(fate: &MessageFate) -> String {
    fate.acceptances
        .iter()
        .map(|a| format!("session {} ({} over {})", a.session, a.host, a.family))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(
    fate: &MessageFate,
    message_id: &str,
    outcome: Option<Outcome>,
    earlier: &[Attempt],
    clock: ClockRate,
) -> String {
    let mut text = match (fate.acceptances.as_slice(), outcome) {
        ([only], _) => format!("delivered once via {} by {}", only.family, only.host),
        ([first, ..], _) => format!(
            "delivered {} times, first via {} by {} (duplicates of {message_id}: {})",
            fate.acceptances.len(),
            first.family,
            first.host,
            copies_of(fate)
        ),
        ([], outcome) => describe(fate, outcome),
    };
    if !earlier.is_empty() {
        text.push_str(&format!(" after {}", describe_attempts(earlier)));
    }
    if let Some(took) = fate.time_to_outcome() {
        text.push_str(&format!(" in {}", elapsed(took, clock)));
    }
    text
}

/// A span of wall time, with the MTA's world time beside it on an accelerated clock:
/// `0.31s (≈31s MTA time at x100)`.
pub fn elapsed(wall: Duration, clock: ClockRate) -> String {
    let text = format!("{:.2}s", wall.as_secs_f64());
    if !clock.is_accelerated() {
        return text;
    }
    let world = clock.to_world(wall).as_secs_f64();
    let world = if world >= 10.0 {
        format!("{world:.0}s")
    } else {
        format!("{world:.1}s")
    };
    format!("{text} (≈{world} MTA time at {clock})")
}

/// `trying mx1 ipv6 (421 busy)` for a few attempts; counts per host and family for many.
fn describe_attempts(attempts: &[Attempt]) -> String {
    const LISTED: usize = 3;
    let one = |a: &Attempt| format!("{} {} ({})", a.host, a.family, a.outcome());
    if attempts.len() <= LISTED {
        return format!(
            "trying {}",
            attempts.iter().map(one).collect::<Vec<_>>().join(", ")
        );
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for attempt in attempts {
        let key = format!("{} {}", attempt.host, attempt.family);
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    let counted: Vec<String> = counts
        .iter()
        .map(|(key, n)| format!("{key} ×{n}"))
        .collect();
    let last = attempts.last().expect("more than LISTED attempts");
    format!(
        "{} attempts ({}; last: {})",
        attempts.len(),
        counted.join(", "),
        last.outcome()
    )
}

fn first_seen_families(attempts: &[Attempt]) -> Vec<Family> {
    let mut families = Vec::new();
    for attempt in attempts {
        if !families.contains(&attempt.family) {
            families.push(attempt.family);
        }
    }
    families
}

fn quoted(families: &[Family]) -> String {
    families
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
