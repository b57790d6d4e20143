//! Forward-confirmed reverse DNS (FCrDNS) of the client: a PTR record for its address whose
//! name resolves (A for IPv4, AAAA for IPv6) back to that address.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

use super::super::stage::SmtpStage;

/// At most this many PTR names are resolved forward (as Postfix and most MTAs cap it).
const MAX_NAMES: usize = 10;

/// What the PTR check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PtrOutcome {
    /// This PTR name resolves back to the client.
    Confirmed(String),
    /// No PTR record (the detail says whether the name does not exist or has no PTR).
    NoPtr(String),
    /// PTR names exist but none resolves back to the client.
    Mismatch {
        /// The PTR names.
        names: Vec<String>,
        /// What each resolved to.
        detail: String,
    },
    /// A lookup failed temporarily (SERVFAIL, timeout, ...).
    TempError(String),
}

/// Whether a PTR policy checks `client`.
pub(super) fn applies(ipv6_only: bool, client: IpAddr) -> bool {
    !ipv6_only || client.is_ipv6()
}

impl PtrOutcome {
    /// The note and, if refused, the reply of a PTR policy acting at `stage` with `reply`.
    pub(super) fn decide(
        &self,
        client: IpAddr,
        stage: SmtpStage,
        reply: &str,
    ) -> (String, Option<String>) {
        let what = format!("require-ptr {client}");
        let refuse = || Some(reply.replace("{ip}", &client.to_string()));
        match self {
            PtrOutcome::Confirmed(name) => {
                (format!("{what}: PTR {name} resolves back, passed"), None)
            }
            PtrOutcome::NoPtr(detail) => (
                format!("{what}: no PTR ({detail}), {} at {stage}", code(reply)),
                refuse(),
            ),
            PtrOutcome::Mismatch { names, detail } => (
                format!(
                    "{what}: PTR {} does not resolve back ({detail}), {} at {stage}",
                    names.join(", "),
                    code(reply)
                ),
                refuse(),
            ),
            PtrOutcome::TempError(detail) => (
                format!("{what}: temporary DNS failure ({detail}), 451 at {stage}"),
                Some(format!(
                    "451 4.7.25 Temporary DNS failure checking the PTR record of {client} (mxlab)"
                )),
            ),
        }
    }
}

/// The reply code at the start of `reply`, for notes.
fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}

/// `name` without its final dot.
fn show(name: &Name) -> String {
    let text = name.to_string();
    text.strip_suffix('.').unwrap_or(&text).to_string()
}

/// Runs the check for `ip` with `resolver`.
pub(super) async fn check(resolver: &TokioResolver, ip: IpAddr) -> PtrOutcome {
    let names: Vec<Name> = match resolver.reverse_lookup(ip).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::PTR(ptr) => Some(ptr.0.clone()),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_nx_domain() => return PtrOutcome::NoPtr("NXDOMAIN".into()),
        Err(e) if e.is_no_records_found() => {
            return PtrOutcome::NoPtr("no PTR record".into());
        }
        Err(e) => return PtrOutcome::TempError(format!("PTR lookup: {e}")),
    };
    if names.is_empty() {
        return PtrOutcome::NoPtr("no PTR record".into());
    }
    let family = if ip.is_ipv4() { "A" } else { "AAAA" };
    let mut details = Vec::new();
    let mut temporary = None;
    for name in names.iter().take(MAX_NAMES) {
        let lookup = if ip.is_ipv4() {
            resolver.ipv4_lookup(name.clone()).await
        } else {
            resolver.ipv6_lookup(name.clone()).await
        };
        match lookup {
            Ok(lookup) => {
                let addresses: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect();
                if addresses.contains(&ip) {
                    return PtrOutcome::Confirmed(show(name));
                }
                let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
                details.push(format!("{} {family} {}", show(name), shown.join(" ")));
            }
            Err(e) if e.is_no_records_found() => {
                details.push(format!("{} has no {family}", show(name)));
            }
            Err(e) => {
                temporary.get_or_insert_with(|| format!("{family} lookup of {}: {e}", show(name)));
            }
        }
    }
    if let Some(detail) = temporary {
        return PtrOutcome::TempError(detail);
    }
    PtrOutcome::Mismatch {
        names: names.iter().map(show).collect(),
        detail: details.join("; "),
    }
}
