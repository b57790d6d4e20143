//! The two oracles: invariants every correct MTA keeps (RFC 5321 §5 and the world's plan),
//! and the differential comparison of SUTs that ran the same world.
//!
//! Both read the run's typed observations ([`crate::observe::fate`],
//! [`crate::observe::attempts`] and [`crate::observe::SmtpReply`]), never re-parsed log text.

use std::collections::BTreeSet;
use std::fmt;

use crate::events::EventKind;
use crate::family::Family;
use crate::lab::RunReport;
use crate::observe::{self, SmtpReply, COLLECTOR};
use crate::plan::Plan;
use crate::scenario::Scenario;
use crate::verdict::Status;

use super::render::Expectation;
use super::world::World;

/// What became of one message in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by a receiving MX.
    Delivered {
        /// The first MX that accepted it.
        mx: String,
        /// Over which family.
        family: Family,
        /// How many copies the MX hosts accepted.
        copies: usize,
    },
    /// Bounced to its sender.
    Bounced {
        /// The DSN's `Status:` field, if the collector read one.
        status: Option<String>,
        /// The DSN's `Diagnostic-Code:` field.
        diagnostic: Option<String>,
    },
    /// Neither by the end of the watch time.
    Deferred,
}

impl Outcome {
    /// `delivered`, `bounced` or `deferred`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Bounced { .. } => "bounced",
            Outcome::Deferred => "deferred",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Delivered { mx, family, copies } if *copies > 1 => {
                write!(f, "delivered to {mx} over {family} ({copies} copies)")
            }
            Outcome::Delivered { mx, family, .. } => write!(f, "delivered to {mx} over {family}"),
            Outcome::Bounced { status, .. } => write!(
                f,
                "bounced (DSN status {})",
                status.as_deref().unwrap_or("unread")
            ),
            Outcome::Deferred => f.write_str("deferred"),
        }
    }
}

/// One SUT's run of a world, as the oracles read it.
#[derive(Debug, Clone)]
pub struct Story {
    /// The SUT's name.
    pub sut: String,
    /// The run's verdict status against the rendered expectation.
    pub status: Status,
    /// The harness error, for a run that could not be judged.
    pub error: Option<String>,
    /// Each message's outcome, in order.
    pub outcomes: Vec<Outcome>,
    /// Connection attempts, each as `mx1 ipv6: 451 4.3.0 …`.
    pub attempts: Vec<String>,
    /// The host of each connection attempt, in order.
    pub attempt_hosts: Vec<String>,
    /// The replies with a 5xx code that receiving MX hosts gave.
    pub permanent_replies: Vec<SmtpReply>,
    /// Hosts that accepted a message.
    pub accepting_hosts: BTreeSet<String>,
}

impl Story {
    /// Reads the story of `report`, a run of `scenario`.
    pub fn read(scenario: &Scenario, report: &RunReport) -> Story {
        let plan = Plan::new(scenario);
        let events = &report.events;
        let outcomes = plan
            .messages
            .iter()
            .enumerate()
            .map(|(ordinal, planned)| {
                let fate = observe::fate(
                    events,
                    ordinal,
                    &planned.message_id,
                    &planned.message.from,
                    &planned.message.to,
                );
                if let Some(first) = fate.acceptances.first() {
                    return Outcome::Delivered {
                        mx: first.host.clone(),
                        family: first.family,
                        copies: fate.acceptances.len(),
                    };
                }
                match fate.bounce_report(events, plan.messages.len() == 1) {
                    Some(report) => Outcome::Bounced {
                        status: report.status,
                        diagnostic: report.diagnostic,
                    },
                    None => Outcome::Deferred,
                }
            })
            .collect();
        let observed = observe::attempts(events);
        let attempts = observed
            .iter()
            .map(|attempt| format!("{} {}: {}", attempt.host, attempt.family, attempt.outcome()))
            .collect();
        let attempt_hosts = observed.into_iter().map(|attempt| attempt.host).collect();
        let mut permanent_replies = Vec::new();
        let mut accepting_hosts = BTreeSet::new();
        for event in events {
            match &event.kind {
                EventKind::SmtpReply { host, reply, .. } if host != COLLECTOR => {
                    if let Some(reply) =
                        SmtpReply::parse(reply).ok().filter(SmtpReply::is_permanent)
                    {
                        permanent_replies.push(reply);
                    }
                }
                EventKind::MessageAccepted { host, .. } if host != COLLECTOR => {
                    accepting_hosts.insert(host.clone());
                }
                _ => {}
            }
        }
        Story {
            sut: report.sut.clone(),
            status: report.verdict.status,
            error: (report.verdict.status == Status::Error).then(|| report.verdict.summary.clone()),
            outcomes,
            attempts,
            attempt_hosts,
            permanent_replies,
            accepting_hosts,
        }
    }

    /// The story in a few lines: each message's outcome, then the attempts.
    pub fn tell(&self) -> String {
        if let Some(error) = &self.error {
            return format!("{}: harness error: {error}", self.sut);
        }
        let outcomes = self
            .outcomes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let mut attempts = self.attempts.clone();
        if attempts.len() > 8 {
            let more = attempts.len() - 8;
            attempts.truncate(8);
            attempts.push(format!("… {more} more"));
        }
        format!(
            "{}: {outcomes}; attempts: {}",
            self.sut,
            if attempts.is_empty() {
                "none".to_string()
            } else {
                attempts.join(", ")
            }
        )
    }
}

/// An invariant of a correct MTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// Never two accepted copies, unless a fault hit the ambiguous window after the final dot
    /// (RFC 5321 §6.1 and §4.5.4.1).
    ExactlyOnce,
    /// Never delivered to a host outside the MX set (RFC 5321 §5.1).
    InsideMxSet,
    /// Delivered when some address works for the whole run (RFC 5321 §5.1: try every
    /// address; §4.5.4.1: retry).
    DeliveredWhenReachable,
    /// Never bounced while every refusal was 4xx and some address worked within the watch
    /// time (RFC 5321 §4.2.1: 4yz is transient).
    NoBounceOnTransient,
    /// A bounce carries the MX's status (RFC 3464 `Status:` from the 5xx reply).
    BounceCarriesStatus,
    /// MX hosts tried in preference order (RFC 5321 §5.1): the first connection goes to a
    /// most preferred host that has an address, and a message is not delivered to a less
    /// preferred host while a more preferred one works for the whole run.
    PreferenceOrder,
}

impl Invariant {
    /// A short name, e.g. `delivered-when-reachable`.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::ExactlyOnce => "exactly-once",
            Invariant::InsideMxSet => "inside-mx-set",
            Invariant::DeliveredWhenReachable => "delivered-when-reachable",
            Invariant::NoBounceOnTransient => "no-bounce-on-4xx",
            Invariant::BounceCarriesStatus => "bounce-carries-status",
            Invariant::PreferenceOrder => "preference-order",
        }
    }

    /// What the scenario file kept for a breach of this invariant in `world` expects.
    pub fn expectation(self, world: &World) -> Expectation {
        match self {
            Invariant::PreferenceOrder => Expectation::Delivered {
                mx: preferred_working_host(world),
                via: None,
            },
            Invariant::BounceCarriesStatus => Expectation::Bounced {
                status: Some(super::world::PERMANENT_STATUS.to_string()),
            },
            _ => Expectation::Delivered {
                mx: None,
                via: None,
            },
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An invariant one SUT broke in one world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// The SUT.
    pub sut: String,
    /// The invariant.
    pub invariant: Invariant,
    /// What was seen, in words.
    pub detail: String,
}

/// The single MX host at the lowest preference among hosts with an address that works for the
/// whole run, if exactly one host has that preference.
fn preferred_working_host(world: &World) -> Option<String> {
    let best = world
        .addresses()
        .into_iter()
        .filter(|(host, family)| world.works_always(*host, *family))
        .map(|(host, _)| world.hosts[host].preference())
        .min()?;
    let mut at_best = (0..world.hosts.len()).filter(|h| world.hosts[*h].preference() == best);
    match (at_best.next(), at_best.next()) {
        (Some(host), None) => Some(World::host_name(host)),
        _ => None,
    }
}

/// The invariants `story` breaks in `world`.
pub fn breaches(world: &World, story: &Story) -> Vec<Breach> {
    if story.error.is_some() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut breach = |invariant, detail: String| {
        if !found.iter().any(|b: &Breach| b.invariant == invariant) {
            found.push(Breach {
                sut: story.sut.clone(),
                invariant,
                detail,
            });
        }
    };
    let addresses = world.addresses();
    let always: Vec<&(usize, Family)> = addresses
        .iter()
        .filter(|(h, f)| world.works_always(*h, *f))
        .collect();
    let eventually = addresses
        .iter()
        .any(|(h, f)| world.works_eventually(*h, *f));
    let names: Vec<String> = (0..world.hosts.len()).map(World::host_name).collect();
    if let Some(first) = story.attempt_hosts.first() {
        let preference = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .map(|h| world.hosts[h].preference())
        };
        let best = addresses
            .iter()
            .filter(|(h, f)| world.published(*h, *f))
            .map(|(h, _)| (world.hosts[*h].preference(), *h))
            .min();
        if let (Some(tried), Some((best, host))) = (preference(first), best) {
            if tried > best {
                breach(
                    Invariant::PreferenceOrder,
                    format!(
                        "first connection to {first} (preference {tried}) though {} (preference {best}) has an address",
                        World::host_name(host)
                    ),
                );
            }
        }
    }
    for host in &story.accepting_hosts {
        if !names.contains(host) {
            breach(
                Invariant::InsideMxSet,
                format!("accepted by {host}, not an MX of {}", super::world::DOMAIN),
            );
        }
    }
    for (index, outcome) in story.outcomes.iter().enumerate() {
        let message = index + 1;
        match outcome {
            Outcome::Delivered { copies, mx, .. } => {
                if *copies > 1 && !world.ambiguous_after_dot() {
                    breach(
                        Invariant::ExactlyOnce,
                        format!("message {message} accepted {copies} times with no fault after the final dot"),
                    );
                }
                let preference = names
                    .iter()
                    .position(|name| name == mx)
                    .map(|host| world.hosts[host].preference());
                let better = always
                    .iter()
                    .find(|(h, _)| Some(world.hosts[*h].preference()) < preference);
                if let Some((host, family)) = better {
                    breach(
                        Invariant::PreferenceOrder,
                        format!(
                            "message {message} delivered to {mx} (preference {}) while {} over {family} (preference {}) worked throughout",
                            preference.unwrap_or_default(),
                            World::host_name(*host),
                            world.hosts[*host].preference()
                        ),
                    );
                }
            }
            Outcome::Bounced { status, diagnostic } => {
                if story.permanent_replies.is_empty() && eventually {
                    breach(
                        Invariant::NoBounceOnTransient,
                        format!(
                            "message {message} bounced ({}) though no MX gave a 5xx and some address works within the watch time",
                            diagnostic.as_deref().or(status.as_deref()).unwrap_or("no DSN read")
                        ),
                    );
                }
                if let Some(expected) = carried_status(&story.permanent_replies) {
                    let carried = status.as_deref() == Some(expected.as_str())
                        || diagnostic.as_deref().is_some_and(|d| {
                            story
                                .permanent_replies
                                .iter()
                                .any(|r| d.contains(&r.code.to_string()))
                        });
                    if !carried && (status.is_some() || diagnostic.is_some()) {
                        breach(
                            Invariant::BounceCarriesStatus,
                            format!(
                                "message {message}'s bounce says status {} / {}, the MX said {}",
                                status.as_deref().unwrap_or("-"),
                                diagnostic.as_deref().unwrap_or("-"),
                                story
                                    .permanent_replies
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(" | ")
                            ),
                        );
                    }
                }
                // A 5xx may end delivery (RFC 5321 §4.2.1): then a bounce is no breach.
                if let Some((host, family)) = always
                    .first()
                    .filter(|_| story.permanent_replies.is_empty())
                {
                    breach(
                        Invariant::DeliveredWhenReachable,
                        format!(
                            "message {message} bounced while {} over {family} worked throughout",
                            World::host_name(*host)
                        ),
                    );
                }
            }
            Outcome::Deferred => {
                if let Some((host, family)) = always.first() {
                    breach(
                        Invariant::DeliveredWhenReachable,
                        format!(
                            "message {message} still queued after {}m while {} over {family} worked throughout",
                            super::world::WATCH.as_secs() / 60,
                            World::host_name(*host)
                        ),
                    );
                }
            }
        }
    }
    found
}

/// The enhanced status code of the first 5xx reply, e.g. `5.7.1`.
fn carried_status(replies: &[SmtpReply]) -> Option<String> {
    replies.first().and_then(|reply| reply.enhanced.clone())
}

/// What SUTs can disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aspect {
    /// Delivered, bounced or deferred.
    Outcome,
    /// The MX that accepted the message.
    Mx,
    /// The family it was accepted over.
    Family,
}

impl Aspect {
    /// `outcome`, `mx` or `family`.
    pub fn name(self) -> &'static str {
        match self {
            Aspect::Outcome => "outcome",
            Aspect::Mx => "mx",
            Aspect::Family => "family",
        }
    }

    fn of(self, outcome: &Outcome) -> Option<String> {
        match (self, outcome) {
            (Aspect::Outcome, outcome) => Some(outcome.word().to_string()),
            (Aspect::Mx, Outcome::Delivered { mx, .. }) => Some(mx.clone()),
            (Aspect::Family, Outcome::Delivered { family, .. }) => Some(family.to_string()),
            _ => None,
        }
    }
}

/// SUTs that ran the same world and did different things with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// What they disagree on.
    pub aspect: Aspect,
    /// Which message (0-based).
    pub message: usize,
    /// Each SUT with its value, in the order the SUTs were given.
    pub values: Vec<(String, String)>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of message {}: {}",
            self.aspect.name(),
            self.message + 1,
            self.values
                .iter()
                .map(|(sut, value)| format!("{sut} {value}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Where the SUTs' stories disagree: outcome first, then, among SUTs that delivered, MX and
/// family. Harness errors take no part.
pub fn disagreements(stories: &[Story]) -> Vec<Disagreement> {
    let judged: Vec<&Story> = stories.iter().filter(|s| s.error.is_none()).collect();
    let messages = judged.iter().map(|s| s.outcomes.len()).min().unwrap_or(0);
    let mut found = Vec::new();
    for message in 0..messages {
        for aspect in [Aspect::Outcome, Aspect::Mx, Aspect::Family] {
            let values: Vec<(String, String)> = judged
                .iter()
                .filter_map(|s| {
                    aspect
                        .of(&s.outcomes[message])
                        .map(|value| (s.sut.clone(), value))
                })
                .collect();
            let distinct: BTreeSet<&String> = values.iter().map(|(_, v)| v).collect();
            if distinct.len() > 1 {
                found.push(Disagreement {
                    aspect,
                    message,
                    values,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::world::{Families, FaultGene, FaultKind, Host, NetKind, Timing};

    fn story(outcomes: Vec<Outcome>) -> Story {
        Story {
            sut: "s".into(),
            status: Status::Pass,
            error: None,
            outcomes,
            attempts: vec![],
            attempt_hosts: vec![],
            permanent_replies: vec![],
            accepting_hosts: BTreeSet::new(),
        }
    }

    fn world(ranks: &[u8]) -> World {
        World {
            hosts: ranks
                .iter()
                .map(|rank| Host {
                    rank: *rank,
                    families: Families::Both,
                    cname: false,
                    faults: vec![],
                    dns: None,
                })
                .collect(),
            messages: 1,
        }
    }

    #[test]
    fn a_deferral_with_a_working_address_breaks_delivery() {
        let found = breaches(&world(&[0]), &story(vec![Outcome::Deferred]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, Invariant::DeliveredWhenReachable);
        let mut dead = world(&[0]);
        dead.hosts[0].faults.push(FaultGene {
            family: None,
            kind: FaultKind::Net(NetKind::Blackhole),
            timing: Timing::Always,
        });
        assert!(breaches(&dead, &story(vec![Outcome::Deferred])).is_empty());
    }

    #[test]
    fn a_bounce_without_any_5xx_breaks_the_transient_rule() {
        let bounced = Outcome::Bounced {
            status: Some("4.3.0".into()),
            diagnostic: None,
        };
        let mut grey = world(&[0]);
        grey.hosts[0].faults.push(FaultGene {
            family: None,
            kind: FaultKind::Greylist(5),
            timing: Timing::Always,
        });
        let found = breaches(&grey, &story(vec![bounced]));
        assert_eq!(
            found.iter().map(|b| b.invariant).collect::<Vec<_>>(),
            vec![Invariant::NoBounceOnTransient]
        );
    }

    #[test]
    fn delivery_to_a_backup_while_the_primary_works_breaks_preference() {
        let delivered = Outcome::Delivered {
            mx: "mx2".into(),
            family: Family::Ipv6,
            copies: 1,
        };
        let found = breaches(&world(&[0, 1]), &story(vec![delivered.clone()]));
        assert_eq!(found[0].invariant, Invariant::PreferenceOrder);
        assert_eq!(
            Invariant::PreferenceOrder.expectation(&world(&[0, 1])),
            Expectation::Delivered {
                mx: Some("mx1".into()),
                via: None
            }
        );
        assert!(breaches(&world(&[1, 1]), &story(vec![delivered])).is_empty());
    }

    #[test]
    fn a_first_connection_to_a_backup_breaks_preference_and_a_5xx_excuses_a_bounce() {
        let delivered = Outcome::Delivered {
            mx: "mx1".into(),
            family: Family::Ipv6,
            copies: 1,
        };
        let mut backup_first = story(vec![delivered]);
        backup_first.attempt_hosts = vec!["mx2".into(), "mx1".into()];
        let found = breaches(&world(&[0, 1]), &backup_first);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, Invariant::PreferenceOrder);
        assert!(
            found[0].detail.starts_with("first connection to mx2"),
            "{}",
            found[0].detail
        );
        let mut refused = story(vec![Outcome::Bounced {
            status: Some("5.7.1".into()),
            diagnostic: Some("smtp; 550 5.7.1 Refused".into()),
        }]);
        refused.permanent_replies = vec![SmtpReply::parse("550 5.7.1 Refused").unwrap()];
        assert!(breaches(&world(&[0]), &refused).is_empty());
    }

    #[test]
    fn stories_that_differ_disagree_on_each_aspect() {
        let a = Outcome::Delivered {
            mx: "mx1".into(),
            family: Family::Ipv6,
            copies: 1,
        };
        let b = Outcome::Delivered {
            mx: "mx1".into(),
            family: Family::Ipv4,
            copies: 1,
        };
        let mut one = story(vec![a]);
        one.sut = "one".into();
        let mut two = story(vec![b]);
        two.sut = "two".into();
        let mut three = story(vec![Outcome::Deferred]);
        three.sut = "three".into();
        let found = disagreements(&[one, two, three]);
        assert_eq!(
            found.iter().map(|d| d.aspect).collect::<Vec<_>>(),
            vec![Aspect::Outcome, Aspect::Family]
        );
        assert_eq!(
            found[1].to_string(),
            "family of message 1: one ipv6, two ipv4"
        );
    }
}
