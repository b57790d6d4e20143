//! Per-query faults: which queries a [`DnsFault`] matches, and when it is active.
//!
//! [`FaultSet::new`] checks the scenario's faults against the zones; [`FaultSet::select`] is asked
//! once per query and returns the first matching fault (in list order) that is active, counting
//! it against the fault's `first` limit.

use std::fmt;
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name, Record as HickoryRecord, RecordType};
use hickory_server::net::xfer::Protocol;

use super::error::DnsError;
use super::records::Zone;
use super::zones::{parse_name, soa_record, NEGATIVE_TTL};
use crate::activation::{Activation, Uses};
use crate::clock::ScenarioClock;

/// What the server does instead of its normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFaultAction {
    /// SERVFAIL, no records, not authoritative.
    ServFail,
    /// REFUSED, no records, not authoritative.
    Refused,
    /// An authoritative NXDOMAIN with the zone's SOA in the authority section.
    NxDomain,
    /// An authoritative NOERROR without answers, with the zone's SOA in the authority section.
    NoData,
    /// No answer at all; the client's resolver times out.
    Timeout,
    /// The normal answer, sent this much later. Other queries, even on the same TCP
    /// connection, are not held up.
    Delay(Duration),
    /// Over UDP: the TC bit set and every section empty, so the client retries over TCP.
    /// The fault never matches TCP queries: they get the full answer (or the next fault's).
    Truncate,
}

/// `servfail`, `nodata`, `delay 3s`: the words used in [`EventKind::DnsQuery`] answers.
///
/// [`EventKind::DnsQuery`]: crate::events::EventKind::DnsQuery
impl fmt::Display for DnsFaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsFaultAction::ServFail => f.write_str("servfail"),
            DnsFaultAction::Refused => f.write_str("refused"),
            DnsFaultAction::NxDomain => f.write_str("nxdomain"),
            DnsFaultAction::NoData => f.write_str("nodata"),
            DnsFaultAction::Timeout => f.write_str("timeout"),
            DnsFaultAction::Delay(delay) => {
                write!(f, "delay {}", humantime::format_duration(*delay))
            }
            DnsFaultAction::Truncate => f.write_str("truncate"),
        }
    }
}

/// A fault applied to the queries for one name (and optionally one record type) while a window
/// on the [`ScenarioClock`] is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFault {
    /// The query name it matches: case-insensitive, trailing dot optional, at or below a zone's
    /// origin. It need not have records (a fault can turn NXDOMAIN into SERVFAIL).
    pub name: String,
    /// The query type it matches; `None` matches every type. `ANY` matches queries of type
    /// ANY only.
    pub record_type: Option<RecordType>,
    /// What the server does instead of its normal answer.
    pub action: DnsFaultAction,
    /// When it applies: its window on the scenario clock (which reads zero before it
    /// starts), and only to the first N queries it matches in the window (counted per fault).
    pub when: Activation,
}

impl DnsFault {
    /// A fault for every query of `name`, always active, without a limit.
    pub fn new(name: impl Into<String>, action: DnsFaultAction) -> Self {
        Self {
            name: name.into(),
            record_type: None,
            action,
            when: Activation::ALWAYS,
        }
    }
}

/// `delay 3s for mx1.example.test AAAA from 1s until 5s, first 2 queries`.
impl fmt::Display for DnsFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {}", self.action, self.name)?;
        if let Some(record_type) = &self.record_type {
            write!(f, " {record_type}")?;
        }
        if !self.when.from.is_zero() {
            write!(f, " from {}", humantime::format_duration(self.when.from))?;
        }
        if let Some(until) = self.when.until {
            write!(f, " until {}", humantime::format_duration(until))?;
        }
        if let Some(first) = self.when.first {
            write!(f, ", first {first} queries")?;
        }
        Ok(())
    }
}

/// A fault that has been chosen for one query.
#[derive(Debug, Clone)]
pub struct AppliedFault {
    /// What to do.
    pub action: DnsFaultAction,
    /// The SOA of the zone holding the fault's name, for negative answers.
    pub soa: HickoryRecord,
}

/// A checked fault with its counter.
#[derive(Debug)]
struct Armed {
    name: LowerName,
    record_type: Option<RecordType>,
    action: DnsFaultAction,
    when: Activation,
    uses: Uses,
    soa: HickoryRecord,
}

impl Armed {
    fn matches(&self, name: &LowerName, record_type: RecordType, protocol: Protocol) -> bool {
        *name == self.name
            && self.record_type.is_none_or(|wanted| wanted == record_type)
            && !(self.action == DnsFaultAction::Truncate && protocol != Protocol::Udp)
    }
}

/// The checked faults of one server, in list order.
#[derive(Debug, Default)]
pub struct FaultSet {
    faults: Vec<Armed>,
    clock: ScenarioClock,
}

impl FaultSet {
    /// Checks `faults` against `zones` (which must already have passed
    /// [`build_catalog`](super::zones::build_catalog)).
    pub fn new(
        zones: &[Zone],
        faults: Vec<DnsFault>,
        clock: ScenarioClock,
    ) -> Result<Self, DnsError> {
        let mut origins = Vec::with_capacity(zones.len());
        for zone in zones {
            let origin = parse_name(&zone.origin, false, || "zone origin".to_string())?;
            origins.push((origin, zone.origin.as_str()));
        }
        let faults = faults
            .into_iter()
            .map(|fault| arm(fault, &origins))
            .collect::<Result<_, _>>()?;
        Ok(Self { faults, clock })
    }

    /// The fault to apply to a query, if any: the first in list order that matches the name,
    /// the type and the transport, whose window is open and whose `first` limit is not used up.
    pub fn select(
        &self,
        name: &LowerName,
        record_type: RecordType,
        protocol: Protocol,
    ) -> Option<AppliedFault> {
        if self.faults.is_empty() {
            return None;
        }
        let now = self.clock.elapsed();
        self.faults
            .iter()
            .find(|fault| {
                fault.matches(name, record_type, protocol)
                    && fault.when.is_open(now)
                    && fault.uses.take(&fault.when)
            })
            .map(|fault| AppliedFault {
                action: fault.action,
                soa: fault.soa.clone(),
            })
    }
}

/// Checks one fault and finds the SOA of the most specific zone covering its name.
fn arm(fault: DnsFault, origins: &[(Name, &str)]) -> Result<Armed, DnsError> {
    let described = fault.to_string();
    let name = parse_name(&fault.name, false, || format!("DNS fault \"{described}\""))?;
    let useless = |reason: String| DnsError::UselessFault {
        fault: described.clone(),
        reason,
    };
    if let Some(until) = fault.when.until {
        if until <= fault.when.from {
            return Err(useless(format!(
                "its window ends ({}) before it starts ({})",
                humantime::format_duration(until),
                humantime::format_duration(fault.when.from)
            )));
        }
    }
    if fault.when.first == Some(0) {
        return Err(useless(
            "first = 0 applies it to no query; leave first out for no limit".to_string(),
        ));
    }
    let (origin, origin_text) = origins
        .iter()
        .filter(|(origin, _)| origin.zone_of(&name))
        .max_by_key(|(origin, _)| origin.num_labels())
        .ok_or_else(|| DnsError::FaultOutsideZones {
            fault: described.clone(),
            name: fault.name.clone(),
            zones: origins
                .iter()
                .map(|(_, text)| *text)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(Armed {
        name: LowerName::new(&name),
        record_type: fault.record_type,
        action: fault.action,
        when: fault.when,
        uses: Uses::default(),
        soa: soa_record(origin, origin_text, NEGATIVE_TTL)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::{Record, RecordData};

    fn zones() -> Vec<Zone> {
        vec![
            Zone::new(
                "example.test",
                vec![Record::new(
                    "mx1.example.test",
                    RecordData::A("192.0.2.10".parse().unwrap()),
                )],
            ),
            Zone::new("in-addr.arpa", vec![]),
        ]
    }

    fn check(fault: DnsFault) -> Result<FaultSet, DnsError> {
        FaultSet::new(&zones(), vec![fault], ScenarioClock::new())
    }

    fn lower(name: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(name).unwrap())
    }

    #[test]
    fn a_fault_outside_every_zone_names_the_name_and_the_zones() {
        let error = check(DnsFault::new("mx1.other.test", DnsFaultAction::ServFail))
            .err()
            .unwrap();
        assert!(
            matches!(error, DnsError::FaultOutsideZones { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("mx1.other.test"), "{message}");
        assert!(message.contains("example.test, in-addr.arpa"), "{message}");
    }

    #[test]
    fn names_are_case_insensitive_and_the_type_restricts_the_fault() {
        let mut fault = DnsFault::new("MX1.Example.Test.", DnsFaultAction::Refused);
        fault.record_type = Some(RecordType::AAAA);
        let faults = check(fault).unwrap();
        let name = lower("mx1.example.test.");
        assert!(faults
            .select(&name, RecordType::AAAA, Protocol::Udp)
            .is_some());
        assert!(faults.select(&name, RecordType::A, Protocol::Udp).is_none());
    }

    #[test]
    fn invalid_names_and_useless_faults_are_rejected() {
        let error = check(DnsFault::new(
            "bad name.example.test",
            DnsFaultAction::ServFail,
        ))
        .err()
        .unwrap();
        assert!(matches!(error, DnsError::InvalidName { .. }), "{error}");
        assert!(error.to_string().contains("DNS fault"), "{error}");

        let mut fault = DnsFault::new("mx1.example.test", DnsFaultAction::ServFail);
        fault.when.from = Duration::from_secs(2);
        fault.when.until = Some(Duration::from_secs(1));
        let error = check(fault).err().unwrap();
        assert!(matches!(error, DnsError::UselessFault { .. }), "{error}");

        let mut fault = DnsFault::new("mx1.example.test", DnsFaultAction::ServFail);
        fault.when.first = Some(0);
        let error = check(fault).err().unwrap();
        assert!(matches!(error, DnsError::UselessFault { .. }), "{error}");
    }

    #[test]
    fn the_first_active_fault_applies_and_first_counts_per_fault() {
        let name = "mx1.example.test";
        let mut once = DnsFault::new(name, DnsFaultAction::ServFail);
        once.when.first = Some(1);
        let mut later = DnsFault::new(name, DnsFaultAction::Refused);
        later.when.from = Duration::from_secs(3600);
        let always = DnsFault::new(name, DnsFaultAction::NxDomain);
        let faults =
            FaultSet::new(&zones(), vec![once, later, always], ScenarioClock::new()).unwrap();
        let name = lower("mx1.example.test.");
        let actions: Vec<_> = (0..3)
            .map(|_| {
                faults
                    .select(&name, RecordType::A, Protocol::Udp)
                    .map(|applied| applied.action)
            })
            .collect();
        assert_eq!(
            actions,
            [
                Some(DnsFaultAction::ServFail),
                Some(DnsFaultAction::NxDomain),
                Some(DnsFaultAction::NxDomain)
            ]
        );
    }

    #[test]
    fn truncate_never_matches_tcp() {
        let faults = check(DnsFault::new("mx1.example.test", DnsFaultAction::Truncate)).unwrap();
        let name = lower("mx1.example.test.");
        assert!(faults.select(&name, RecordType::A, Protocol::Tcp).is_none());
        assert!(faults.select(&name, RecordType::A, Protocol::Udp).is_some());
    }

    #[test]
    fn faults_describe_themselves() {
        let mut fault = DnsFault::new(
            "mx1.example.test",
            DnsFaultAction::Delay(Duration::from_millis(1500)),
        );
        fault.record_type = Some(RecordType::AAAA);
        fault.when.from = Duration::from_secs(1);
        fault.when.until = Some(Duration::from_secs(5));
        fault.when.first = Some(2);
        assert_eq!(
            fault.to_string(),
            "delay 1s 500ms for mx1.example.test AAAA from 1s until 5s, first 2 queries"
        );
    }
}
