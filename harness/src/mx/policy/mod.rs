//! Receiving-side policies of the fake MX: greylisting, forward-confirmed reverse DNS (the
//! Gmail "550 5.7.25" PTR check), SPF of the envelope sender, and a connection rate limit.
//!
//! A listener's [`Policy`]s are in [`ListenerBehaviour::policies`](super::ListenerBehaviour);
//! what they share across a run (greylist triplets, connection counts) is a [`PolicyState`],
//! and the DNS they ask is a [`PolicyDns`]; both travel in a [`PolicyContext`] given to
//! [`MxBuilder::policy`](super::MxBuilder::policy).
//!
//! Where they act:
//! - [`Policy::Rate`] counts the connection when it is accepted and, over the limit, replaces
//!   the greeting with `421 4.7.0` (the server then closes, as for any 4xx greeting).
//! - [`Policy::RequirePtr`] acts at its stage (RCPT by default).
//! - [`Policy::RequireSpf`] acts at MAIL.
//! - [`Policy::Greylist`] acts at RCPT, per recipient.
//! - [`Policy::Blocklist`] replaces the greeting with `554 5.7.1` for a listed client.
//!
//! Scripted [`StageRule`](super::StageRule)s that reply, stall or disconnect take precedence:
//! at such a stage the policies are not consulted (a `Slow` rule still lets them act). At one
//! stage the policies are checked in the order listed; the first that refuses gives the reply.
//! Every decision, pass or refusal, is recorded as an [`EventKind::Policy`] event (just before
//! the reply it leads to), e.g. `greylist 2001:db8::/64 <alice@sender.test> <bob@example.test>:
//! first seen, 451 for 5s`.
//!
//! DNS lookups (PTR, A/AAAA, SPF's TXT and whatever its mechanisms need) are made by the
//! driver of the connection (`mx::conn`) while the session waits: the session hands out a
//! `Lookup`, the answer comes back through `Gate::store`, and the command is decided again.
//! Lookups run on the [`PolicyDns`] worker thread, which lives in the MX host's network
//! namespace, so every DNS packet leaves from there.
//!
//! [`EventKind::Policy`]: crate::events::EventKind::Policy

mod auth;
mod blocklist;
mod greylist;
mod ptr;
mod rate;
mod resolver;
mod spf;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use auth::AuthResults;
pub use resolver::PolicyDns;

pub(crate) use ptr::PtrOutcome;
pub(crate) use spf::SpfOutcome;

use super::stage::SmtpStage;

/// How a client is identified by [`Policy::Greylist`] and [`Policy::Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GreylistKey {
    /// The exact client address (a sender alternating families meets separate triplets).
    Ip,
    /// The client's network: its IPv6 /64 or IPv4 /24.
    Prefix64,
}

impl GreylistKey {
    /// The key of `ip`: `2001:db8::5`, `2001:db8::/64` or `192.0.2.0/24`.
    pub fn of(self, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        match (self, ip) {
            (GreylistKey::Ip, ip) => ip.to_string(),
            (GreylistKey::Prefix64, IpAddr::V6(v6)) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(network))
            }
            (GreylistKey::Prefix64, IpAddr::V4(v4)) => {
                let network = u32::from(v4) & 0xffff_ff00;
                format!("{}/24", std::net::Ipv4Addr::from(network))
            }
        }
    }
}

impl fmt::Display for GreylistKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GreylistKey::Ip => "ip",
            GreylistKey::Prefix64 => "prefix",
        })
    }
}

/// A receiving-side policy of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// `451 4.7.1` at RCPT for a triplet (client key, sender, recipient) until `period` has
    /// passed since the triplet was first seen; from then on the triplet passes. The triplets
    /// are shared by all listeners of the run (a sender alternating families meets separate
    /// triplets when keyed by [`GreylistKey::Ip`]). Senders and recipients are compared
    /// without regard to case; the null sender is the empty string.
    Greylist {
        /// What identifies the client.
        key: GreylistKey,
        /// How long a new triplet is refused.
        period: Duration,
    },
    /// Forward-confirmed reverse DNS: the client's address must have a PTR record whose name
    /// resolves (A for IPv4 clients, AAAA for IPv6) back to that address. Clients without it
    /// (IPv6 clients only when `ipv6_only`) get `reply` at `stage`. A temporary DNS failure
    /// gets `451 4.7.25` instead.
    RequirePtr {
        /// Check IPv6 clients only (IPv4 clients always pass).
        ipv6_only: bool,
        /// Where the refusal is given.
        stage: SmtpStage,
        /// The refusal, sent verbatim (`\n` separates the lines of a multi-line reply); `{ip}`
        /// is replaced by the client's address. See [`Policy::GMAIL_PTR_REPLY`].
        reply: String,
    },
    /// SPF (RFC 7208) of the envelope sender's domain for the client's address, evaluated with
    /// mail-auth over the scenario DNS. At MAIL: `fail` (and `softfail` if `reject_softfail`)
    /// gets `550 5.7.23` naming the result, `temperror` gets `451 4.7.24`; `pass`, `neutral`,
    /// `none` and `permerror` pass. The null sender is checked by its HELO name
    /// (`postmaster@<helo>`).
    RequireSpf {
        /// Refuse `softfail` (`~all`) as well as `fail`.
        reject_softfail: bool,
    },
    /// `421 4.7.0` instead of the greeting (then close) when more than `limit` connections
    /// arrived within `per` from the same key ([`GreylistKey::Prefix64`]: IPv6 /64 or IPv4
    /// /24; [`GreylistKey::Ip`]: the exact address). Refused connections count too. The
    /// counts are shared by all listeners of the run that have this policy.
    Rate {
        /// Connections allowed within `per`.
        limit: u32,
        /// The window.
        per: Duration,
        /// What identifies the client.
        key: GreylistKey,
    },
    /// `554 5.7.1` instead of the greeting (then close) for a client inside one of the
    /// `listed` networks, as a site checking a DNS blocklist at connect does (Spamhaus lists
    /// IPv6 by /64, so one listing covers every address of a sender's network).
    Blocklist {
        /// The listed networks.
        listed: Vec<ipnet::IpNet>,
        /// The blocklist's name for the reply, e.g. `bl.test`.
        list: String,
    },
}

impl Policy {
    /// Gmail's refusal of an IPv6 client without forward-confirmed reverse DNS (with `{ip}`
    /// for the client's address).
    pub const GMAIL_PTR_REPLY: &'static str =
        "550-5.7.25 [{ip}] The IP address sending this message does not have a\n\
         550-5.7.25 PTR record setup, or the corresponding forward DNS entry does not\n\
         550-5.7.25 point to the sending IP. As a policy, Gmail does not accept messages\n\
         550-5.7.25 from IPs with missing PTR records. For more information, go to\n\
         550 5.7.25  https://support.google.com/mail/answer/81126#ip-practices - mxlab";

    /// [`Policy::RequirePtr`] as Gmail does it: IPv6 clients only, at RCPT, with
    /// [`Policy::GMAIL_PTR_REPLY`].
    pub fn require_ptr() -> Self {
        Policy::RequirePtr {
            ipv6_only: true,
            stage: SmtpStage::Rcpt,
            reply: Self::GMAIL_PTR_REPLY.to_string(),
        }
    }

    /// Whether the policy needs DNS lookups (a [`PolicyDns`]).
    pub fn needs_dns(&self) -> bool {
        matches!(self, Policy::RequirePtr { .. } | Policy::RequireSpf { .. })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Greylist { key, period } => {
                write!(
                    f,
                    "greylist by {key} for {}",
                    humantime::format_duration(*period)
                )
            }
            Policy::RequirePtr {
                ipv6_only, stage, ..
            } => write!(
                f,
                "require-ptr ({}) at {stage}",
                if *ipv6_only {
                    "ipv6 only"
                } else {
                    "both families"
                }
            ),
            Policy::RequireSpf { reject_softfail } => write!(
                f,
                "require-spf ({})",
                if *reject_softfail {
                    "fail and softfail refused"
                } else {
                    "fail refused"
                }
            ),
            Policy::Rate { limit, per, key } => write!(
                f,
                "rate {limit} per {} by {key}",
                humantime::format_duration(*per)
            ),
            Policy::Blocklist { listed, list } => {
                let listed: Vec<String> = listed.iter().map(ToString::to_string).collect();
                write!(f, "blocklist {list} ({})", listed.join(", "))
            }
        }
    }
}

/// Policy state shared by every listener of a run: greylist triplets and connection counts.
/// Cheap to clone; clones share the state. Create one per run.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    greylist: Arc<Mutex<greylist::Triplets>>,
    rate: Arc<Mutex<rate::Windows>>,
}

impl PolicyState {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What a server's policies need from the run: the shared [`PolicyState`] and, for
/// [`Policy::RequirePtr`] and [`Policy::RequireSpf`], the DNS to ask. Cheap to clone.
/// `PolicyContext::default()` has fresh state and no DNS (enough for greylisting and rate
/// limits).
#[derive(Debug, Clone, Default)]
pub struct PolicyContext {
    /// Shared by every server of the run.
    pub state: PolicyState,
    /// The scenario DNS, asked from inside the server's network namespace.
    pub dns: Option<PolicyDns>,
    /// The scenario clock, for rules active in a time window only.
    pub clock: crate::clock::ScenarioClock,
    /// Authenticate every accepted message (SPF, DKIM, DMARC) with [`dns`](Self::dns) and
    /// record a `MessageAuth` event for it.
    pub authenticate: bool,
}

impl PolicyContext {
    /// A context with `state` and `dns`.
    pub fn new(state: PolicyState, dns: Option<PolicyDns>) -> Self {
        Self {
            state,
            dns,
            clock: crate::clock::ScenarioClock::new(),
            authenticate: false,
        }
    }

    /// The same context, authenticating every accepted message (it needs `dns`).
    pub fn authenticating(self) -> Self {
        Self {
            authenticate: true,
            ..self
        }
    }

    /// The same context with the run's scenario clock.
    pub fn with_clock(self, clock: crate::clock::ScenarioClock) -> Self {
        Self { clock, ..self }
    }

    /// Answers `lookup` (never fails: DNS trouble, a missing resolver or a timeout of
    /// [`LOOKUP_TIMEOUT`] become a temporary-error answer).
    pub(crate) async fn resolve(&self, lookup: Lookup) -> Answer {
        let Some(dns) = &self.dns else {
            return lookup.failed("no DNS resolver configured for policies");
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, dns.resolve(lookup.clone())).await {
            Ok(answer) => answer,
            Err(_) => lookup.failed(&format!(
                "no answer within {}",
                humantime::format_duration(LOOKUP_TIMEOUT)
            )),
        }
    }
}

/// The longest a session waits for one policy lookup (a PTR check with its forward lookups,
/// or an SPF evaluation) before treating it as a temporary DNS failure.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A lookup a policy needs before it can decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Forward-confirmed reverse DNS of this address.
    Ptr(IpAddr),
    /// SPF for a client address, HELO name and envelope sender (empty: the null sender).
    Spf {
        /// The client.
        ip: IpAddr,
        /// Its HELO/EHLO name.
        helo: String,
        /// The MAIL FROM address.
        sender: String,
        /// The receiving host's name (for SPF macros).
        host: String,
    },
    /// SPF, DKIM and DMARC of a received message.
    Auth {
        /// The client.
        ip: IpAddr,
        /// Its HELO/EHLO name.
        helo: String,
        /// The MAIL FROM address.
        sender: String,
        /// The receiving host's name.
        host: String,
        /// The message as received.
        message: Arc<Vec<u8>>,
    },
}

impl Lookup {
    /// The answer for a lookup that could not be made.
    pub(crate) fn failed(&self, why: &str) -> Answer {
        match self {
            Lookup::Ptr(ip) => Answer::Ptr(*ip, PtrOutcome::TempError(why.to_string())),
            Lookup::Spf {
                helo, sender, ip, ..
            } => Answer::Spf(SpfOutcome::temp_error(*ip, helo, sender, why)),
            Lookup::Auth { .. } => Answer::Auth(AuthResults::temp_error(why)),
        }
    }
}

/// The answer to a [`Lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// For [`Lookup::Ptr`].
    Ptr(IpAddr, PtrOutcome),
    /// For [`Lookup::Spf`].
    Spf(SpfOutcome),
    /// For [`Lookup::Auth`].
    Auth(AuthResults),
}

/// What the policies say about a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on normally.
    Pass,
    /// Send this reply instead (verbatim, `\n` between lines).
    Reply(String),
    /// Answer this lookup first, then ask again.
    Wait(Lookup),
}

/// The policies of one connection, with what they learnt about the client so far.
#[derive(Debug)]
pub(crate) struct Gate {
    policies: Vec<Policy>,
    client: IpAddr,
    hostname: String,
    state: PolicyState,
    /// Notes and refusal from the rate check at connect, given out at the greeting.
    rate: Option<(Vec<String>, Option<String>)>,
    /// The PTR check of the client, once made.
    ptr: Option<PtrOutcome>,
    /// The SPF evaluations made so far in this connection.
    spf: Vec<SpfOutcome>,
}

impl Gate {
    /// The gate for a connection from `client` to a listener with `policies`; `None` if there
    /// are none.
    pub(crate) fn open(
        policies: &[Policy],
        client: IpAddr,
        hostname: &str,
        state: &PolicyState,
    ) -> Option<Gate> {
        if policies.is_empty() {
            return None;
        }
        Some(Gate {
            policies: policies.to_vec(),
            client: client.to_canonical(),
            hostname: hostname.to_string(),
            state: state.clone(),
            rate: None,
            ptr: None,
            spf: Vec::new(),
        })
    }

    /// Counts the connection for the rate policies. Call once, when it is accepted.
    pub(crate) fn connect(&mut self) {
        let mut notes = Vec::new();
        let mut refusal = None;
        for policy in &self.policies {
            if let Policy::Rate { limit, per, key } = policy {
                let (note, refused) = rate::arrive(
                    &self.state.rate,
                    *key,
                    self.client,
                    *limit,
                    *per,
                    &self.hostname,
                );
                notes.push(note);
                if refusal.is_none() {
                    refusal = refused;
                }
            }
        }
        self.rate = Some((notes, refusal));
    }

    /// The lookup needed before the greeting can be decided, if any (a PTR check at the
    /// greeting stage). The driver answers it before the session starts.
    pub(crate) fn greeting_lookup(&self) -> Option<Lookup> {
        if self.ptr.is_some() {
            return None;
        }
        self.policies
            .iter()
            .any(|p| {
                matches!(p, Policy::RequirePtr { stage: SmtpStage::Greeting, ipv6_only, .. }
                if ptr::applies(*ipv6_only, self.client))
            })
            .then_some(Lookup::Ptr(self.client))
    }

    /// Keeps an answer for the next decisions.
    pub(crate) fn store(&mut self, answer: Answer) {
        match answer {
            Answer::Ptr(_, outcome) => self.ptr = Some(outcome),
            Answer::Spf(outcome) => self.spf.push(outcome),
            Answer::Auth(_) => {}
        }
    }

    /// Decides a command at `stage` (`helo`: the HELO/EHLO name so far; `sender`: the MAIL
    /// FROM address being decided at MAIL, the transaction's afterwards; `recipient`: at
    /// RCPT). Notes for the event log are appended to `notes` (none when waiting).
    pub(crate) fn decide(
        &mut self,
        stage: SmtpStage,
        helo: &str,
        sender: Option<&str>,
        recipient: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Verdict {
        let mark = notes.len();
        for index in 0..self.policies.len() {
            let verdict = self.decide_one(index, stage, helo, sender, recipient, notes);
            match verdict {
                Verdict::Pass => {}
                Verdict::Wait(_) => {
                    notes.truncate(mark);
                    return verdict;
                }
                Verdict::Reply(_) => return verdict,
            }
        }
        Verdict::Pass
    }

    fn decide_one(
        &mut self,
        index: usize,
        stage: SmtpStage,
        helo: &str,
        sender: Option<&str>,
        recipient: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Verdict {
        let client = self.client;
        match &self.policies[index] {
            Policy::Rate { .. } => {
                // All rate policies were decided together at connect; report them once.
                let first_rate = self.policies[..index]
                    .iter()
                    .all(|p| !matches!(p, Policy::Rate { .. }));
                if stage != SmtpStage::Greeting || !first_rate {
                    return Verdict::Pass;
                }
                match self.rate.take() {
                    Some((rate_notes, refusal)) => {
                        notes.extend(rate_notes);
                        refusal.map_or(Verdict::Pass, Verdict::Reply)
                    }
                    None => Verdict::Pass,
                }
            }
            Policy::Greylist { key, period } => match (stage, recipient) {
                (SmtpStage::Rcpt, Some(recipient)) => {
                    let (note, refusal) = greylist::check(
                        &self.state.greylist,
                        *key,
                        client,
                        sender.unwrap_or_default(),
                        recipient,
                        *period,
                    );
                    notes.push(note);
                    refusal.map_or(Verdict::Pass, Verdict::Reply)
                }
                _ => Verdict::Pass,
            },
            Policy::RequirePtr {
                ipv6_only,
                stage: at,
                reply,
            } => {
                if *at != stage {
                    return Verdict::Pass;
                }
                if !ptr::applies(*ipv6_only, client) {
                    notes.push(format!(
                        "require-ptr {client}: IPv4 client, not checked (ipv6 only)"
                    ));
                    return Verdict::Pass;
                }
                let Some(outcome) = &self.ptr else {
                    return Verdict::Wait(Lookup::Ptr(client));
                };
                let (note, refusal) = outcome.decide(client, stage, reply);
                notes.push(note);
                refusal.map_or(Verdict::Pass, Verdict::Reply)
            }
            Policy::RequireSpf { reject_softfail } => {
                if stage != SmtpStage::Mail {
                    return Verdict::Pass;
                }
                let sender = sender.unwrap_or_default();
                let Some(outcome) = self.spf.iter().find(|o| o.is_for(client, helo, sender)) else {
                    return Verdict::Wait(Lookup::Spf {
                        ip: client,
                        helo: helo.to_string(),
                        sender: sender.to_string(),
                        host: self.hostname.clone(),
                    });
                };
                let (note, refusal) = outcome.decide(*reject_softfail);
                notes.push(note);
                refusal.map_or(Verdict::Pass, Verdict::Reply)
            }
            Policy::Blocklist { listed, list } => {
                if stage != SmtpStage::Greeting {
                    return Verdict::Pass;
                }
                let (note, refusal) = blocklist::check(listed, list, client);
                notes.push(note);
                refusal.map_or(Verdict::Pass, Verdict::Reply)
            }
        }
    }
}

/// Renders a duration for notes and replies: `5s`, `1m 30s`, `250ms`.
fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
