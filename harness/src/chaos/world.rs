//! A chaos world: the genome proptest generates and shrinks, and what its plan promises.
//!
//! Every field is an index or a small choice, so that any value proptest produces (also while
//! shrinking) renders to a valid scenario: fault targets are taken modulo the number of hosts,
//! families a host lacks are dropped when the world is read.

use std::time::Duration;

use proptest::prelude::*;

use crate::family::Family;

/// The mail domain every generated MX host serves.
pub const DOMAIN: &str = "example.test";

/// Recipients, one per message, in order.
pub const RECIPIENTS: [&str; 2] = ["bob@example.test", "carol@example.test"];

/// How long each generated world is watched, in world time (`expect.within`).
pub const WATCH: Duration = Duration::from_secs(3600);

/// The enhanced status code of every permanent refusal chaos plants.
pub const PERMANENT_STATUS: &str = "5.7.1";

/// A generated world: MX hosts with their faults, and messages.
///
/// Faults belong to their host, so that shrinking a host away takes its faults along and
/// never moves a fault onto another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// One to four MX hosts, `mx1` … `mx4`.
    pub hosts: Vec<Host>,
    /// How many messages are sent (1 or 2), each to its own recipient.
    pub messages: usize,
}

/// One MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Preference rank 0–2: the MX preference is `10 * (rank + 1)`.
    pub rank: u8,
    /// The families it has addresses in.
    pub families: Families,
    /// Whether its MX record's exchange is a CNAME.
    pub cname: bool,
    /// Faults on it (network, SMTP, policy).
    pub faults: Vec<FaultGene>,
    /// A fault of the scenario DNS on one of its address records.
    pub dns: Option<DnsGene>,
}

impl Host {
    /// The MX preference.
    pub fn preference(&self) -> u16 {
        10 * (u16::from(self.rank) + 1)
    }
}

/// A host's address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    /// IPv4 and IPv6.
    Both,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

impl Families {
    /// The families, IPv6 first.
    pub fn list(self) -> &'static [Family] {
        match self {
            Families::Both => &Family::ALL,
            Families::Ipv4 => &[Family::Ipv4],
            Families::Ipv6 => &[Family::Ipv6],
        }
    }
}

/// A fault on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultGene {
    /// Only this family, when given (ignored on a single-family host: the fault then covers
    /// the host's only family).
    pub family: Option<Family>,
    /// What breaks.
    pub kind: FaultKind,
    /// When it is in force (policies are always in force).
    pub timing: Timing,
}

/// What a fault breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A network fault on the path to the host.
    Net(NetKind),
    /// A reply or action of the fake MX at one SMTP stage.
    Smtp(Stage, Refusal),
    /// Greylisting for this many minutes of world time.
    Greylist(u8),
}

/// Network faults chaos generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// Packets dropped.
    Blackhole,
    /// Connections refused with a RST.
    Reset,
    /// ICMP unreachable.
    Unreachable,
    /// SYNs to port 25 dropped.
    SynDrop,
}

impl NetKind {
    /// The spelling in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            NetKind::Blackhole => "blackhole",
            NetKind::Reset => "reset",
            NetKind::Unreachable => "unreachable",
            NetKind::SynDrop => "syn-drop",
        }
    }
}

/// SMTP stages chaos breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// After the final dot.
    EndOfData,
}

impl Stage {
    /// The spelling in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::EndOfData => "end-of-data",
        }
    }
}

/// How the fake MX refuses at a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A 4xx reply.
    Temporary,
    /// A 5xx reply.
    Permanent,
    /// The connection is closed without a reply.
    Disconnect,
}

impl Refusal {
    /// The reply at `stage`, or `None` for a disconnect.
    pub fn reply(self, stage: Stage) -> Option<&'static str> {
        match (self, stage) {
            (Refusal::Temporary, Stage::Greeting) => Some("421 4.3.2 Service not available"),
            (Refusal::Temporary, _) => Some("451 4.3.0 Temporary failure"),
            (Refusal::Permanent, Stage::Greeting) => Some("554 5.7.1 No service here"),
            (Refusal::Permanent, _) => Some("550 5.7.1 Refused by policy"),
            (Refusal::Disconnect, _) => None,
        }
    }
}

/// When a fault is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// For the whole run.
    Always,
    /// From the start until this many minutes of world time (`window = { until = … }`).
    Until(u8),
    /// For the first N connections per family (`first = N`).
    First(u8),
}

/// A DNS fault on its host's address records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsGene {
    /// `AAAA` when true, else `A`.
    pub aaaa: bool,
    /// What the server answers instead.
    pub answer: DnsKind,
}

/// DNS answers chaos generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsKind {
    /// SERVFAIL.
    Servfail,
    /// NOERROR without records.
    Nodata,
    /// No answer.
    Timeout,
}

impl DnsKind {
    /// The spelling in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            DnsKind::Servfail => "servfail",
            DnsKind::Nodata => "nodata",
            DnsKind::Timeout => "timeout",
        }
    }
}

/// The strategy chaos draws worlds from; its value trees shrink towards fewer hosts, faults
/// and messages and simpler timings (variants are listed simplest first).
pub fn world() -> impl Strategy<Value = World> {
    let family = proptest::option::of(prop_oneof![Just(Family::Ipv6), Just(Family::Ipv4)]);
    let stage = prop_oneof![
        Just(Stage::Greeting),
        Just(Stage::Ehlo),
        Just(Stage::Mail),
        Just(Stage::Rcpt),
        Just(Stage::Data),
        Just(Stage::EndOfData),
    ];
    let refusal = prop_oneof![
        3 => Just(Refusal::Temporary),
        1 => Just(Refusal::Permanent),
        1 => Just(Refusal::Disconnect),
    ];
    let kind = prop_oneof![
        3 => prop_oneof![
            Just(NetKind::Blackhole),
            Just(NetKind::Reset),
            Just(NetKind::Unreachable),
            Just(NetKind::SynDrop),
        ]
        .prop_map(FaultKind::Net),
        3 => (stage, refusal).prop_map(|(stage, refusal)| FaultKind::Smtp(stage, refusal)),
        1 => (1u8..20).prop_map(FaultKind::Greylist),
    ];
    let timing = prop_oneof![
        2 => Just(Timing::Always),
        1 => (1u8..25).prop_map(Timing::Until),
        1 => (1u8..3).prop_map(Timing::First),
    ];
    let fault = (family, kind, timing).prop_map(|(family, kind, timing)| FaultGene {
        family,
        kind,
        timing,
    });
    let dns = (
        any::<bool>(),
        prop_oneof![
            Just(DnsKind::Servfail),
            Just(DnsKind::Nodata),
            Just(DnsKind::Timeout)
        ],
    )
        .prop_map(|(aaaa, answer)| DnsGene { aaaa, answer });
    let host = (
        0u8..3,
        prop_oneof![
            3 => Just(Families::Both),
            1 => Just(Families::Ipv4),
            1 => Just(Families::Ipv6)
        ],
        proptest::bool::weighted(0.15),
        proptest::collection::vec(fault, 0..=2),
        proptest::option::weighted(0.2, dns),
    )
        .prop_map(|(rank, families, cname, faults, dns)| Host {
            rank,
            families,
            cname,
            faults,
            dns,
        });
    (proptest::collection::vec(host, 1..=4), 1usize..=2)
        .prop_map(|(hosts, messages)| World { hosts, messages })
}

/// A fault as it applies: host and families resolved against the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Index into the hosts.
    pub host: usize,
    /// The family it covers, or `None` for every family of the host.
    pub family: Option<Family>,
    /// What breaks.
    pub kind: FaultKind,
    /// When.
    pub timing: Timing,
}

impl Applied {
    /// Whether it covers `family`.
    pub fn covers(&self, family: Family) -> bool {
        self.family.is_none_or(|f| f == family)
    }
}

impl World {
    /// The name of host `index`: `mx1` …
    pub fn host_name(index: usize) -> String {
        format!("mx{}", index + 1)
    }

    /// Faults on hosts, in all.
    pub fn fault_count(&self) -> usize {
        self.hosts.iter().map(|host| host.faults.len()).sum()
    }

    /// The faults as they apply to this world's hosts.
    pub fn applied(&self) -> Vec<Applied> {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(index, host)| {
                let families = host.families.list();
                host.faults.iter().map(move |gene| {
                    let greylist = matches!(gene.kind, FaultKind::Greylist(_));
                    Applied {
                        host: index,
                        family: gene
                            .family
                            .filter(|f| !greylist && families.contains(f) && families.len() > 1),
                        kind: gene.kind,
                        timing: if greylist {
                            Timing::Always
                        } else {
                            gene.timing
                        },
                    }
                })
            })
            .collect()
    }

    /// The DNS faults as they apply: (host index, family whose record breaks, answer).
    pub fn dns_applied(&self) -> Vec<(usize, Family, DnsKind)> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(index, host)| {
                let gene = host.dns?;
                let family = if gene.aaaa {
                    Family::Ipv6
                } else {
                    Family::Ipv4
                };
                host.families
                    .list()
                    .contains(&family)
                    .then_some((index, family, gene.answer))
            })
            .collect()
    }

    /// Every address of the world as (host index, family), in preference order.
    pub fn addresses(&self) -> Vec<(usize, Family)> {
        let mut addresses: Vec<(usize, Family)> = self
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(index, host)| host.families.list().iter().map(move |f| (index, *f)))
            .collect();
        addresses.sort_by_key(|(index, _)| self.hosts[*index].rank);
        addresses
    }

    /// Whether the address of `host` in `family` is published in DNS for the whole run.
    pub fn published(&self, host: usize, family: Family) -> bool {
        !self
            .dns_applied()
            .iter()
            .any(|(h, f, _)| *h == host && *f == family)
    }

    /// Whether the address works for the whole run: published, and no fault of any kind ever
    /// touches it.
    pub fn works_always(&self, host: usize, family: Family) -> bool {
        self.published(host, family)
            && !self
                .applied()
                .iter()
                .any(|fault| fault.host == host && fault.covers(family))
    }

    /// Whether the address works within the watch time: published, and every fault on it ends
    /// (a window that heals, the first connections only, greylisting) without a permanent
    /// refusal.
    pub fn works_eventually(&self, host: usize, family: Family) -> bool {
        self.published(host, family)
            && self
                .applied()
                .iter()
                .filter(|fault| fault.host == host && fault.covers(family))
                .all(|fault| match (fault.kind, fault.timing) {
                    (FaultKind::Greylist(_), _) => true,
                    (FaultKind::Smtp(_, Refusal::Permanent), _) => false,
                    (_, Timing::Always) => false,
                    (_, Timing::Until(_) | Timing::First(_)) => true,
                })
    }

    /// Whether some fault closes or stalls the connection right after the final dot, where
    /// the sender cannot know whether the message was accepted (RFC 5321 §6.1).
    pub fn ambiguous_after_dot(&self) -> bool {
        self.applied().iter().any(|fault| {
            matches!(
                fault.kind,
                FaultKind::Smtp(Stage::EndOfData, Refusal::Disconnect)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    fn host(rank: u8, families: Families, faults: Vec<FaultGene>) -> Host {
        Host {
            rank,
            families,
            cname: false,
            faults,
            dns: None,
        }
    }

    #[test]
    fn faults_resolve_against_their_host() {
        let world = World {
            hosts: vec![
                // mx1 has no IPv6: a fault for IPv6 covers its IPv4.
                host(
                    0,
                    Families::Ipv4,
                    vec![FaultGene {
                        family: Some(Family::Ipv6),
                        kind: FaultKind::Net(NetKind::Blackhole),
                        timing: Timing::Always,
                    }],
                ),
                host(
                    1,
                    Families::Both,
                    vec![FaultGene {
                        family: Some(Family::Ipv6),
                        kind: FaultKind::Smtp(Stage::Rcpt, Refusal::Temporary),
                        timing: Timing::Until(5),
                    }],
                ),
            ],
            messages: 1,
        };
        assert!(!world.works_always(0, Family::Ipv4));
        assert!(!world.works_eventually(0, Family::Ipv4));
        assert!(!world.works_always(1, Family::Ipv6));
        assert!(world.works_eventually(1, Family::Ipv6));
        assert!(world.works_always(1, Family::Ipv4));
        assert_eq!(
            world.addresses(),
            vec![(0, Family::Ipv4), (1, Family::Ipv6), (1, Family::Ipv4)]
        );
    }

    #[test]
    fn a_dns_fault_unpublishes_only_its_family() {
        let mut only = host(0, Families::Both, vec![]);
        only.dns = Some(DnsGene {
            aaaa: true,
            answer: DnsKind::Servfail,
        });
        let world = World {
            hosts: vec![only],
            messages: 1,
        };
        assert!(!world.works_eventually(0, Family::Ipv6));
        assert!(world.works_always(0, Family::Ipv4));
    }

    #[test]
    fn generated_worlds_stay_within_bounds_while_shrinking() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..50 {
            let mut tree = world().new_tree(&mut runner).unwrap();
            for _ in 0..100 {
                let world = tree.current();
                assert!((1..=4).contains(&world.hosts.len()));
                assert!((1..=2).contains(&world.messages));
                assert!(world.hosts.iter().all(|host| host.faults.len() <= 2));
                if !tree.simplify() {
                    break;
                }
            }
        }
    }
}
