//! Scenario → plan: every address, DNS record, listener behaviour and message, derived
//! deterministically. Pure data; nothing here touches the system.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netns::{HostSpec, LinkAddresses, TopologySpec};

use crate::activation::Activation;
use crate::clock::ClockRate;
use crate::dns::{reverse_name, DnsFault, DnsFaultAction, Record, RecordData, Zone};
use crate::family::Family;
use crate::mx::{
    Cut, GreylistKey, ListenerBehaviour, Policy, SmtpStage as MxStage, StageAction, StageRule,
    TlsMode,
};
use crate::scenario::{
    ClientKey, DnsAnswer, Extension, Fault, NetFault, PolicySpec, PtrFault, Scenario, SmtpAction,
    SmtpFault, SmtpStage, StartTls, SENDER_DOMAIN,
};
use crate::sut::{OutgoingMessage, SutRoute};

/// What part a host plays in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The system under test.
    Sut,
    /// The scenario's authoritative DNS server.
    Dns,
    /// The sender domain's MX, which receives bounces.
    Collector,
    /// A receiving MX from the scenario.
    Mx,
}

/// One host of the topology with its addresses.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// Short name, also used in events (`sut`, `dns`, `bounces`, `mx1`, ...).
    pub name: String,
    /// Fully qualified name in the scenario DNS.
    pub fqdn: String,
    /// What it does.
    pub role: Role,
    /// IPv4 link to the router, if the host has IPv4.
    pub ipv4: Option<LinkAddresses<Ipv4Addr>>,
    /// IPv6 link to the router, if the host has IPv6.
    pub ipv6: Option<LinkAddresses<Ipv6Addr>>,
    /// How its SMTP listeners behave per family (empty for hosts that run no SMTP server).
    pub smtp: BTreeMap<Family, ListenerBehaviour>,
    /// More addresses published in DNS for the host, which nothing answers on.
    pub extra_addresses: Vec<IpAddr>,
}

impl HostPlan {
    /// The host's own addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.as_ref().map(|link| IpAddr::V4(link.host));
        let v6 = self.ipv6.as_ref().map(|link| IpAddr::V6(link.host));
        v4.into_iter().chain(v6).collect()
    }

    /// The host's own address of `family`, if it has that family.
    pub fn address(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4 => self.ipv4.as_ref().map(|link| IpAddr::V4(link.host)),
            Family::Ipv6 => self.ipv6.as_ref().map(|link| IpAddr::V6(link.host)),
        }
    }
}

/// Everything needed to build and run a scenario's world.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How fast the world runs: the harness's timers in this plan are already wall time.
    pub clock: ClockRate,
    /// The system under test (`sut`, sut.sender.test).
    pub sut: HostPlan,
    /// Both addresses of the system under test.
    pub sut_addresses: DualStack,
    /// The scenario's authoritative DNS server (`dns`, ns.sender.test).
    pub dns: HostPlan,
    /// The sender domain's MX (`bounces`, mx.sender.test), which receives bounces.
    pub collector: HostPlan,
    /// The scenario's `[[mx]]` hosts, in the file's order.
    pub mxs: Vec<HostPlan>,
    /// The zones the scenario DNS serves.
    pub zones: Vec<Zone>,
    /// The resolv.conf the system under test sees.
    pub resolv_conf: String,
    /// Messages to inject, with their Message-IDs.
    pub messages: Vec<PlannedMessage>,
    /// Raw settings per system under test (`[sut.postfix]` ...), by SUT name.
    pub sut_settings: BTreeMap<String, BTreeMap<String, String>>,
    /// The SUT's routing configuration from `[route]`.
    pub route: SutRoute,
    /// Network faults, one per host and family.
    pub net_faults: Vec<NetFaultPlan>,
    /// Faults of the scenario DNS server.
    pub dns_faults: Vec<DnsFault>,
    /// Whether the receiving MX hosts authenticate every accepted message (SPF, DKIM, DMARC;
    /// the scenario has `expect.auth`).
    pub authenticate: bool,
}

/// A message to inject and the Message-ID that identifies it in events.
#[derive(Debug, Clone)]
pub struct PlannedMessage {
    /// The Message-ID header's value, e.g. `<1.mxlab@sender.test>`.
    pub message_id: String,
    /// The message.
    pub message: OutgoingMessage,
}

/// The SUT's fully qualified host name.
pub const SUT_HOSTNAME: &str = "sut.sender.test";

/// The addresses of a host that has both families (the SUT, the DNS server, the collector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualStack {
    /// Its IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address.
    pub ipv6: Ipv6Addr,
}

impl DualStack {
    /// The address of `family`.
    pub fn address(self, family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(self.ipv4),
            Family::Ipv6 => IpAddr::V6(self.ipv6),
        }
    }

    /// Both addresses, IPv4 first.
    pub fn addresses(self) -> [IpAddr; 2] {
        [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)]
    }
}

/// Link numbers of the fixed hosts; the n-th `[[mx]]` host gets link `FIRST_MX_LINK + n`.
const SUT_LINK: u16 = 0;
const DNS_LINK: u16 = 1;
const COLLECTOR_LINK: u16 = 2;
const FIRST_MX_LINK: u16 = 3;

impl Plan {
    /// Derives the plan of a validated scenario on the real clock.
    pub fn new(scenario: &Scenario) -> Plan {
        Plan::with_clock(scenario, ClockRate::REAL)
    }

    /// Derives the plan of a validated scenario for a world that runs at `clock`: every
    /// duration the scenario writes is world time, so the harness's own timers (fault windows,
    /// greylist and rate periods, DNS delays) become wall time divided by the rate, and a slow
    /// MX's byte rate is multiplied by it.
    pub fn with_clock(scenario: &Scenario, clock: ClockRate) -> Plan {
        let sut_addresses = DualStack {
            ipv4: ipv4_link(SUT_LINK).host,
            ipv6: ipv6_link(SUT_LINK).host,
        };
        let sut = fixed_host(SUT_LINK, "sut", SUT_HOSTNAME, Role::Sut);
        let dns = fixed_host(DNS_LINK, "dns", &format!("ns.{SENDER_DOMAIN}"), Role::Dns);
        let collector = fixed_host(
            COLLECTOR_LINK,
            crate::observe::COLLECTOR,
            &format!("mx.{SENDER_DOMAIN}"),
            Role::Collector,
        );
        let mut mxs = Vec::new();
        for (i, mx) in scenario.mxs.iter().enumerate() {
            let index = FIRST_MX_LINK + i as u16;
            let families = mx.families.get_ref();
            let fqdn = format!("{}.{}", mx.name.get_ref(), mx.domain.get_ref());
            let mut host = HostPlan {
                name: mx.name.get_ref().clone(),
                ipv4: families.contains(&Family::Ipv4).then(|| ipv4_link(index)),
                ipv6: families.contains(&Family::Ipv6).then(|| {
                    if mx.ula {
                        ula_link(index)
                    } else {
                        ipv6_link(index)
                    }
                }),
                smtp: families
                    .iter()
                    .map(|f| (*f, ListenerBehaviour::normal(&fqdn)))
                    .collect(),
                fqdn,
                role: Role::Mx,
                extra_addresses: mx.extra_addresses.iter().map(|a| *a.get_ref()).collect(),
            };
            apply_faults(scenario, sut_addresses, &mut host, clock);
            mxs.push(host);
        }
        let mut plan = Plan {
            clock,
            route: route(scenario, sut_addresses, &mxs),
            zones: Vec::new(),
            resolv_conf: resolv_conf(&dns),
            messages: messages(scenario),
            sut_settings: scenario.sut.clone(),
            net_faults: Vec::new(),
            dns_faults: Vec::new(),
            sut,
            sut_addresses,
            dns,
            collector,
            mxs,
            authenticate: scenario.expect.auth.is_some(),
        };
        plan.zones = zones(scenario, &plan);
        plan.net_faults = net_faults(scenario, &plan, clock);
        plan.dns_faults = dns_faults(scenario, &plan, clock);
        plan
    }

    /// Every host, in link order: the SUT, the DNS server, the collector, then the MX hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &HostPlan> {
        [&self.sut, &self.dns, &self.collector]
            .into_iter()
            .chain(&self.mxs)
    }

    /// The host with this short name (`sut`, `dns`, `bounces` or an `[[mx]]` name).
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts().find(|host| host.name == name)
    }

    /// The topology to build for this plan; `prefix` names its namespaces.
    pub fn topology(&self, prefix: &str) -> TopologySpec {
        TopologySpec {
            prefix: prefix.to_string(),
            hosts: self
                .hosts()
                .map(|host| HostSpec {
                    name: host.name.clone(),
                    ipv4: host.ipv4,
                    ipv6: host.ipv6,
                })
                .collect(),
        }
    }
}

fn fixed_host(index: u16, name: &str, fqdn: &str, role: Role) -> HostPlan {
    let smtp = match role {
        Role::Collector => Family::ALL
            .iter()
            .map(|f| (*f, ListenerBehaviour::normal(fqdn)))
            .collect(),
        _ => BTreeMap::new(),
    };
    HostPlan {
        name: name.to_string(),
        fqdn: fqdn.to_string(),
        role,
        ipv4: Some(ipv4_link(index)),
        ipv6: Some(ipv6_link(index)),
        smtp,
        extra_addresses: Vec::new(),
    }
}

/// Link `index` gets 192.0.2.(8·index)/29: the router is .1, the host .2 of it.
fn ipv4_link(index: u16) -> LinkAddresses<Ipv4Addr> {
    let base = (index * 8) as u8;
    LinkAddresses {
        host: Ipv4Addr::new(192, 0, 2, base + 2),
        router: Ipv4Addr::new(192, 0, 2, base + 1),
        prefix_len: 29,
    }
}

/// Link `index` gets 2001:db8:0:index::/64: the router is ::1, the host ::2.
fn ipv6_link(index: u16) -> LinkAddresses<Ipv6Addr> {
    LinkAddresses {
        host: Ipv6Addr::new(0x2001, 0xdb8, 0, index, 0, 0, 0, 2),
        router: Ipv6Addr::new(0x2001, 0xdb8, 0, index, 0, 0, 0, 1),
        prefix_len: 64,
    }
}

/// Link `index` of a host with a unique local address gets fd00:db8:0:index::/64 (RFC 4193;
/// global ID 00:0db8:0000).
fn ula_link(index: u16) -> LinkAddresses<Ipv6Addr> {
    LinkAddresses {
        host: Ipv6Addr::new(0xfd00, 0xdb8, 0, index, 0, 0, 0, 2),
        router: Ipv6Addr::new(0xfd00, 0xdb8, 0, index, 0, 0, 0, 1),
        prefix_len: 64,
    }
}

/// The SUT's routing configuration: the relay's name, the family restriction, the SUT's own
/// addresses to bind to.
fn route(scenario: &Scenario, sut: DualStack, mxs: &[HostPlan]) -> SutRoute {
    let spec = &scenario.route;
    let only = spec
        .families
        .as_ref()
        .and_then(|families| match families.get_ref().as_slice() {
            [family] => Some(*family),
            _ => None,
        });
    let bind = spec.bind.as_ref().map_or_else(Vec::new, |families| {
        families
            .get_ref()
            .iter()
            .map(|family| sut.address(*family))
            .collect()
    });
    // The relay is one of the [[mx]] hosts (validation refused any other name).
    let relay = spec.relay.as_ref().and_then(|relay| {
        mxs.iter()
            .find(|host| &host.name == relay.get_ref())
            .map(|host| host.fqdn.clone())
    });
    SutRoute { relay, only, bind }
}

fn apply_faults(scenario: &Scenario, sut: DualStack, host: &mut HostPlan, clock: ClockRate) {
    for fault in scenario
        .faults
        .iter()
        .filter(|f| f.on.get_ref() == &host.name)
    {
        for (family, behaviour) in host.smtp.iter_mut() {
            if fault.family.as_ref().is_some_and(|f| f.get_ref() != family) {
                continue;
            }
            if let Some(smtp) = &fault.smtp {
                apply_smtp_fault(
                    smtp.get_ref(),
                    activation_of(fault, clock),
                    behaviour,
                    clock,
                );
            }
            if let Some(policy) = &fault.policy {
                behaviour
                    .policies
                    .push(policy_of(policy.get_ref(), sut, clock));
            }
        }
    }
}

/// The fake MX's policy for a scenario's `policy = …`.
fn policy_of(spec: &PolicySpec, sut: DualStack, clock: ClockRate) -> Policy {
    let key = |key: &ClientKey| match key {
        ClientKey::Ip => GreylistKey::Ip,
        ClientKey::Prefix64 => GreylistKey::Prefix64,
    };
    let require_ptr = |ipv6_only| match Policy::require_ptr() {
        Policy::RequirePtr { stage, reply, .. } => Policy::RequirePtr {
            ipv6_only,
            stage,
            reply,
        },
        other => other,
    };
    match spec {
        PolicySpec::Greylist { key: k, period } => Policy::Greylist {
            key: key(k),
            period: clock.to_wall(period.0),
        },
        PolicySpec::RequirePtr => require_ptr(true),
        PolicySpec::RequirePtrAll => require_ptr(false),
        PolicySpec::RequireSpf => Policy::RequireSpf {
            reject_softfail: false,
        },
        PolicySpec::Rate { limit, per, key: k } => Policy::Rate {
            limit: *limit,
            per: clock.to_wall(per.0),
            key: key(k),
        },
        PolicySpec::Blocklist { ipv6_prefix } => {
            let listed = ipnet::Ipv6Net::new(sut.ipv6, *ipv6_prefix)
                .expect("validation checked the prefix length")
                .trunc();
            Policy::Blocklist {
                listed: vec![listed.into()],
                list: "bl.test".into(),
            }
        }
    }
}

/// Turns one scenario `smtp = {…}` fault into the fake MX's behaviour.
fn apply_smtp_fault(
    fault: &SmtpFault,
    when: Activation,
    behaviour: &mut ListenerBehaviour,
    clock: ClockRate,
) {
    let action = match (&fault.reply, fault.action) {
        (Some(reply), _) => Some(StageAction::Reply(reply.get_ref().clone())),
        (None, Some(SmtpAction::Stall)) => Some(StageAction::Stall),
        (None, Some(SmtpAction::Disconnect)) => Some(StageAction::Disconnect),
        (None, Some(SmtpAction::Reset)) => Some(StageAction::Reset),
        (None, Some(SmtpAction::AcceptThenReset)) => Some(StageAction::AcceptThen(Cut::Reset)),
        (None, Some(SmtpAction::AcceptThenDisconnect)) => {
            Some(StageAction::AcceptThen(Cut::Disconnect))
        }
        (None, Some(SmtpAction::AcceptThenStall)) => Some(StageAction::AcceptThen(Cut::Stall)),
        (None, Some(SmtpAction::Slow(rate))) => Some(StageAction::Slow {
            bytes_per_second: rate.saturating_mul(clock.times()),
        }),
        (None, None) => None,
    };
    if let (Some(stage), Some(action)) = (fault.stage, action) {
        let stage = match stage {
            SmtpStage::Greeting => MxStage::Greeting,
            SmtpStage::Ehlo => MxStage::Ehlo,
            SmtpStage::Helo => MxStage::Helo,
            SmtpStage::Starttls => MxStage::StartTls,
            SmtpStage::Mail => MxStage::Mail,
            SmtpStage::Rcpt => MxStage::Rcpt,
            SmtpStage::Data => MxStage::Data,
            SmtpStage::Content => MxStage::Content {
                after_bytes: fault.after.as_ref().map_or(0, |after| *after.get_ref()),
            },
            SmtpStage::EndOfData => MxStage::EndOfData,
            SmtpStage::Quit => MxStage::Quit,
        };
        behaviour.rules.push(StageRule {
            stage,
            action,
            recipient: fault.recipient.clone(),
            when,
        });
    }
    for extension in &fault.disable {
        let flag = match extension {
            Extension::Pipelining => &mut behaviour.extensions.pipelining,
            Extension::EightBitMime => &mut behaviour.extensions.eightbitmime,
            Extension::Size => &mut behaviour.extensions.size,
            Extension::Enhancedstatuscodes => &mut behaviour.extensions.enhancedstatuscodes,
            Extension::Smtputf8 => &mut behaviour.extensions.smtputf8,
        };
        *flag = false;
    }
    if let Some(size) = fault.ehlo_size {
        behaviour.ehlo_pad_to = Some(size);
    }
    if let Some(starttls) = fault.starttls {
        behaviour.extensions.starttls = true;
        behaviour.tls = match starttls {
            StartTls::Valid => TlsMode::Valid,
            StartTls::Broken => TlsMode::BrokenHandshake,
            StartTls::Stalled => TlsMode::StalledHandshake,
            StartTls::Alert => TlsMode::Alert,
            StartTls::Expired => TlsMode::Expired,
            StartTls::WrongName => TlsMode::WrongName,
            StartTls::OversizedChain => TlsMode::OversizedChain,
        };
    }
}

impl Plan {
    /// Whether any fake MX offers STARTTLS, so the run needs a certificate authority.
    pub fn needs_tls(&self) -> bool {
        self.hosts()
            .flat_map(|host| host.smtp.values())
            .any(|behaviour| behaviour.tls != TlsMode::Off)
    }
}

/// A network fault on one family of one host, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFaultPlan {
    /// The fault as the scenario names it, e.g. `blackhole on mx1 ipv6`.
    pub description: String,
    /// What kind of fault; a shape's delays and rate are in wall time (the description keeps
    /// the scenario's world-time figures).
    pub kind: NetFault,
    /// The host it is on (the SUT's own name for no-route).
    pub host: String,
    /// The SUT host's name in the topology: the other end of the path.
    pub sut_host: String,
    /// The family it breaks.
    pub family: Family,
    /// The host's address of that family.
    pub target: IpAddr,
    /// The SUT's address of that family.
    pub sut: IpAddr,
    /// When it is in force, and whether only the first N connections meet it.
    pub activation: Activation,
}

/// When `fault` applies, in wall time since the first injection: its window (world time in
/// the scenario) divided by the clock rate, and its `first`. The one place every fault's
/// [`Activation`] is made.
fn activation_of(fault: &Fault, clock: ClockRate) -> Activation {
    let (from, until) = fault
        .window
        .as_ref()
        .map_or((Duration::ZERO, None), |window| {
            let window = window.get_ref();
            (
                clock.to_wall(window.from.0),
                window.until.map(|until| clock.to_wall(until.0)),
            )
        });
    Activation {
        from,
        until,
        first: fault.first.as_ref().map(|first| *first.get_ref()),
    }
}

fn dns_faults(scenario: &Scenario, plan: &Plan, clock: ClockRate) -> Vec<DnsFault> {
    scenario
        .faults
        .iter()
        .filter_map(|fault| {
            let spec = fault.dns.as_ref()?.get_ref();
            // Without a name, the fault is about the queries for its host's name.
            let name = match &spec.name {
                Some(name) => name.get_ref().clone(),
                None => plan
                    .hosts()
                    .find(|h| &h.name == fault.on.get_ref())?
                    .fqdn
                    .clone(),
            };
            Some(DnsFault {
                name,
                record_type: spec.record_type.as_ref().map(|t| t.get_ref().record_type()),
                action: match *spec.answer.get_ref() {
                    DnsAnswer::Servfail => DnsFaultAction::ServFail,
                    DnsAnswer::Refused => DnsFaultAction::Refused,
                    DnsAnswer::Nxdomain => DnsFaultAction::NxDomain,
                    DnsAnswer::Nodata => DnsFaultAction::NoData,
                    DnsAnswer::Timeout => DnsFaultAction::Timeout,
                    DnsAnswer::Truncate => DnsFaultAction::Truncate,
                    DnsAnswer::Delay(delay) => DnsFaultAction::Delay(clock.to_wall(delay.0)),
                },
                when: activation_of(fault, clock),
            })
        })
        .collect()
}

fn net_faults(scenario: &Scenario, plan: &Plan, clock: ClockRate) -> Vec<NetFaultPlan> {
    let mut planned = Vec::new();
    for fault in &scenario.faults {
        let Some(kind) = fault.net.as_ref().map(|net| *net.get_ref()) else {
            continue;
        };
        // Validation refused a fault on a host the plan does not have.
        let Some(host) = plan.hosts().find(|h| &h.name == fault.on.get_ref()) else {
            continue;
        };
        let activation = activation_of(fault, clock);
        for target in host.addresses() {
            let family = Family::of(target);
            if fault
                .family
                .as_ref()
                .is_some_and(|f| *f.get_ref() != family)
            {
                continue;
            }
            planned.push(NetFaultPlan {
                description: format!("{kind} on {} {family}", host.name),
                kind: match kind {
                    NetFault::Shape(shape) => NetFault::Shape(shape.to_wall(clock)),
                    other => other,
                },
                host: host.name.clone(),
                sut_host: plan.sut.name.clone(),
                family,
                target,
                sut: plan.sut_addresses.address(family),
                activation,
            });
        }
    }
    planned
}

/// Records filed under the zone whose origin is the longest suffix of their name.
struct ZoneSet {
    zones: BTreeMap<String, Vec<Record>>,
}

impl ZoneSet {
    fn new(origins: impl IntoIterator<Item = String>) -> Self {
        Self {
            zones: origins
                .into_iter()
                .map(|origin| (origin, Vec::new()))
                .collect(),
        }
    }

    fn add(&mut self, name: &str, data: RecordData) {
        let (_, records) = self
            .zones
            .iter_mut()
            .filter(|(origin, _)| name == origin.as_str() || name.ends_with(&format!(".{origin}")))
            .max_by_key(|(origin, _)| origin.len())
            .expect("every planned name lies in a planned zone");
        records.push(Record {
            name: name.to_string(),
            data,
        });
    }

    fn into_zones(self) -> Vec<Zone> {
        self.zones
            .into_iter()
            .map(|(origin, records)| Zone { origin, records })
            .collect()
    }
}

/// The forward name a broken PTR points at: it exists, but not with the host's address.
fn mismatched_name(host: &HostPlan) -> String {
    let (label, domain) = host
        .fqdn
        .split_once('.')
        .unwrap_or((&host.fqdn, SENDER_DOMAIN));
    format!("{label}-unverified.{domain}")
}

/// Addresses no host has, for the forward records of mismatched PTR names.
const MISMATCH_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const MISMATCH_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0xfe);

fn address_record(addr: IpAddr) -> RecordData {
    match addr {
        IpAddr::V4(v4) => RecordData::A(v4),
        IpAddr::V6(v6) => RecordData::Aaaa(v6),
    }
}

fn zones(scenario: &Scenario, plan: &Plan) -> Vec<Zone> {
    let mut origins = crate::scenario::zone_origins(scenario);
    if scenario.expect.auth.is_some() {
        // DMARC's tree walk (RFC 9989 §4.10) asks up to `_dmarc.test`: an empty `test` zone
        // answers it with NXDOMAIN instead of REFUSED (which DMARC takes as a temperror).
        origins.push("test".to_string());
    }
    let mut zones = ZoneSet::new(origins);
    zones.add(
        SENDER_DOMAIN,
        RecordData::Mx {
            preference: 10,
            exchange: format!("mx.{SENDER_DOMAIN}"),
        },
    );
    let spf = plan
        .sut_addresses
        .addresses()
        .iter()
        .filter(|addr| {
            let family = if addr.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            scenario
                .sender_spf
                .as_ref()
                .is_none_or(|families| families.contains(&family))
        })
        .map(|addr| match addr {
            IpAddr::V4(v4) => format!("ip4:{v4}"),
            IpAddr::V6(v6) => format!("ip6:{v6}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    zones.add(SENDER_DOMAIN, RecordData::Txt(format!("v=spf1 {spf} -all")));
    if scenario.expect.auth.is_some() {
        // A monitoring DMARC policy, so that DMARC is evaluated.
        zones.add(
            &format!("_dmarc.{SENDER_DOMAIN}"),
            RecordData::Txt("v=DMARC1; p=none".into()),
        );
    }
    let relay = scenario.route.relay.as_ref().map(|relay| relay.get_ref());
    for mx in scenario
        .mxs
        .iter()
        .filter(|mx| Some(mx.name.get_ref()) != relay)
    {
        let fqdn = format!("{}.{}", mx.name.get_ref(), mx.domain.get_ref());
        let exchange = if mx.exchange_is_cname {
            let alias = format!("mail-{fqdn}");
            zones.add(&alias, RecordData::Cname(fqdn));
            alias
        } else {
            fqdn
        };
        zones.add(
            mx.domain.get_ref(),
            RecordData::Mx {
                preference: mx.preference,
                exchange,
            },
        );
    }
    for host in plan.hosts() {
        // The unusable extra addresses come first, as a round-robin DNS server answers half of
        // the time: a client that tries only the first address meets one of them.
        for addr in host.extra_addresses.iter().copied().chain(host.addresses()) {
            zones.add(&host.fqdn, address_record(addr));
        }
        for addr in host.addresses() {
            match ptr_fault(scenario, host, Family::of(addr)) {
                None => zones.add(&reverse_name(addr), RecordData::Ptr(host.fqdn.clone())),
                Some(PtrFault::Missing) => {}
                Some(PtrFault::Mismatch) => {
                    let name = mismatched_name(host);
                    zones.add(&reverse_name(addr), RecordData::Ptr(name.clone()));
                    let elsewhere = match addr {
                        IpAddr::V4(_) => IpAddr::V4(MISMATCH_V4),
                        IpAddr::V6(_) => IpAddr::V6(MISMATCH_V6),
                    };
                    zones.add(&name, address_record(elsewhere));
                }
            }
        }
    }
    zones.into_zones()
}

/// The PTR fault on this host's address of `family`, if the scenario has one.
fn ptr_fault(scenario: &Scenario, host: &HostPlan, family: Family) -> Option<PtrFault> {
    scenario
        .faults
        .iter()
        .filter(|fault| fault.on.get_ref() == &host.name)
        .filter(|fault| fault.family.as_ref().is_none_or(|f| *f.get_ref() == family))
        .find_map(|fault| fault.ptr.as_ref().map(|ptr| *ptr.get_ref()))
}

fn resolv_conf(dns: &HostPlan) -> String {
    let mut text = String::from("# written by mxlab: the scenario's DNS server\n");
    for addr in dns.addresses() {
        text.push_str(&format!("nameserver {addr}\n"));
    }
    text.push_str("options attempts:1 timeout:2\n");
    text
}

fn messages(scenario: &Scenario) -> Vec<PlannedMessage> {
    scenario
        .messages
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let message_id = format!("<{}.{}@{SENDER_DOMAIN}>", i + 1, scenario.name.replace('/', "."));
            let to: Vec<String> = spec.to.iter().map(|rcpt| rcpt.get_ref().clone()).collect();
            let mut content = format!(
                "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
                from = spec.from.get_ref(),
                to = to.join(", "),
                subject = spec.subject,
            )
            .into_bytes();
            content.extend(body(spec.size));
            PlannedMessage {
                message_id,
                message: OutgoingMessage {
                    from: spec.from.get_ref().clone(),
                    to,
                    content,
                },
            }
        })
        .collect()
}

/// A body of about `size` bytes: numbered lines, CRLF-terminated.
fn body(size: Option<usize>) -> Vec<u8> {
    let Some(size) = size else {
        return b"This message was sent by mxlab.\r\n".to_vec();
    };
    let mut body = Vec::with_capacity(size + 64);
    let mut line = 0;
    while body.len() < size {
        line += 1;
        body.extend(
            format!("mxlab body line {line:06} ........................................\r\n")
                .bytes(),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::parse;

    const SCENARIO: &str = r#"
description = "421 on IPv6"

[[mx]]
name = "mx1"
domain = "example.test"

[[mx]]
name = "mx2"
domain = "example.test"
preference = 20
families = ["ipv4"]

[[fault]]
on = "mx1"
family = "ipv6"
smtp = { stage = "greeting", reply = "421 4.3.2 Service not available" }

[[message]]
to = ["bob@example.test"]
size = 2000

[expect]
outcome = "delivered"
"#;

    fn plan() -> Plan {
        Plan::new(&parse(Path::new("scenarios/smtp/x.toml"), SCENARIO).unwrap())
    }

    #[test]
    fn addresses_are_deterministic_and_in_documentation_ranges() {
        let plan = plan();
        let names: Vec<&str> = plan.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["sut", "dns", "bounces", "mx1", "mx2"]);
        let mx1 = plan.host("mx1").unwrap();
        assert_eq!(
            mx1.ipv4.as_ref().unwrap().host,
            Ipv4Addr::new(192, 0, 2, 26)
        );
        assert_eq!(
            mx1.ipv6.as_ref().unwrap().host,
            "2001:db8:0:3::2".parse::<Ipv6Addr>().unwrap()
        );
        assert!(plan.host("mx2").unwrap().ipv6.is_none());
        for addr in plan.hosts().flat_map(HostPlan::addresses) {
            let text = addr.to_string();
            assert!(
                text.starts_with("192.0.2.") || text.starts_with("2001:db8:"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_greeting_fault_changes_only_its_family() {
        let plan = plan();
        let mx1 = plan.host("mx1").unwrap();
        assert_eq!(
            mx1.smtp[&Family::Ipv6].rules,
            [StageRule {
                stage: MxStage::Greeting,
                action: StageAction::Reply("421 4.3.2 Service not available".into()),
                recipient: None,
                when: Activation::ALWAYS,
            }]
        );
        assert!(mx1.smtp[&Family::Ipv4].rules.is_empty());
        assert!(!plan.needs_tls());
    }

    #[test]
    fn a_net_fault_without_family_breaks_both() {
        let text = SCENARIO.replace(
            "[[message]]",
            "[[fault]]\non = \"mx1\"\nnet = \"blackhole\"\nwindow = { until = \"20s\" }\nfirst = 2\n\n[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nnet = \"no-route\"\n\n[[message]]",
        );
        let plan = Plan::new(&parse(Path::new("x.toml"), &text).unwrap());
        let described: Vec<&str> = plan
            .net_faults
            .iter()
            .map(|f| f.description.as_str())
            .collect();
        assert_eq!(
            described,
            [
                "blackhole on mx1 ipv4",
                "blackhole on mx1 ipv6",
                "no-route on sut ipv6"
            ]
        );
        let v6 = &plan.net_faults[1];
        assert_eq!(v6.target, "2001:db8:0:3::2".parse::<IpAddr>().unwrap());
        assert_eq!(v6.sut, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            v6.activation,
            Activation {
                from: Duration::ZERO,
                until: Some(Duration::from_secs(20)),
                first: Some(2),
            }
        );
    }

    #[test]
    fn zones_hold_mx_address_and_ptr_records() {
        let plan = plan();
        let example = plan
            .zones
            .iter()
            .find(|z| z.origin == "example.test")
            .unwrap();
        let mx_records: Vec<_> = example
            .records
            .iter()
            .filter_map(|r| match &r.data {
                RecordData::Mx {
                    preference,
                    exchange,
                } => Some((*preference, exchange.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            mx_records,
            [(10, "mx1.example.test"), (20, "mx2.example.test")]
        );
        assert!(example.records.iter().any(|r| r.name == "mx1.example.test"
            && r.data == RecordData::Aaaa("2001:db8:0:3::2".parse().unwrap())));
        let ip6 = plan.zones.iter().find(|z| z.origin == "ip6.arpa").unwrap();
        assert!(ip6
            .records
            .iter()
            .any(|r| r.data == RecordData::Ptr(SUT_HOSTNAME.into())));
        let sender = plan
            .zones
            .iter()
            .find(|z| z.origin == SENDER_DOMAIN)
            .unwrap();
        assert!(sender.records.iter().any(|r| matches!(&r.data, RecordData::Txt(t) if t == "v=spf1 ip4:192.0.2.2 ip6:2001:db8::2 -all")));
    }

    #[test]
    fn sender_spf_limits_the_record_and_auth_publishes_dmarc() {
        let text = SCENARIO
            .replacen("[[mx]]", "sender_spf = [\"ipv4\"]\n\n[[mx]]", 1)
            .replace("[expect]", "[expect]\nauth = { spf = \"pass\" }");
        let planned = Plan::new(&parse(Path::new("x.toml"), &text).unwrap());
        assert!(planned.authenticate);
        let sender = planned
            .zones
            .iter()
            .find(|z| z.origin == SENDER_DOMAIN)
            .unwrap();
        let txt: Vec<(&str, &str)> = sender
            .records
            .iter()
            .filter_map(|r| match &r.data {
                RecordData::Txt(t) => Some((r.name.as_str(), t.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            txt,
            [
                (SENDER_DOMAIN, "v=spf1 ip4:192.0.2.2 -all"),
                ("_dmarc.sender.test", "v=DMARC1; p=none")
            ]
        );
        assert!(planned
            .zones
            .iter()
            .any(|z| z.origin == "test" && z.records.is_empty()));
        // Without `auth`: no DMARC record, no `test` zone, nothing authenticated.
        let plain = plan();
        assert!(!plain.authenticate);
        assert!(!plain.zones.iter().any(|z| z.origin == "test"));
    }

    fn plan_with(extra: &str) -> Plan {
        let text = SCENARIO.replace("[[message]]", &format!("{extra}\n\n[[message]]"));
        Plan::new(&parse(Path::new("x.toml"), &text).unwrap())
    }

    fn records_named<'p>(plan: &'p Plan, name: &str) -> Vec<&'p RecordData> {
        plan.zones
            .iter()
            .flat_map(|z| &z.records)
            .filter(|r| r.name == name)
            .map(|r| &r.data)
            .collect()
    }

    #[test]
    fn a_missing_ptr_removes_only_that_family() {
        let plan = plan_with("[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nptr = \"missing\"");
        let v6 = reverse_name("2001:db8::2".parse().unwrap());
        let v4 = reverse_name("192.0.2.2".parse().unwrap());
        assert!(records_named(&plan, &v6).is_empty());
        assert_eq!(
            records_named(&plan, &v4),
            [&RecordData::Ptr(SUT_HOSTNAME.into())]
        );
    }

    #[test]
    fn a_mismatched_ptr_names_a_host_with_other_addresses() {
        let plan = plan_with("[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nptr = \"mismatch\"");
        let v6 = reverse_name("2001:db8::2".parse().unwrap());
        assert_eq!(
            records_named(&plan, &v6),
            [&RecordData::Ptr("sut-unverified.sender.test".into())]
        );
        assert_eq!(
            records_named(&plan, "sut-unverified.sender.test"),
            [&RecordData::Aaaa(MISMATCH_V6)]
        );
    }

    #[test]
    fn extra_addresses_and_cname_exchanges_are_published() {
        let text = SCENARIO.replacen(
            "domain = \"example.test\"",
            "domain = \"example.test\"\nextra_addresses = [\"fe80::25\", \"2001:db8:dead::25\"]\nexchange_is_cname = true",
            1,
        );
        let plan = Plan::new(&parse(Path::new("x.toml"), &text).unwrap());
        let mx1 = records_named(&plan, "mx1.example.test");
        assert_eq!(mx1[0], &RecordData::Aaaa("fe80::25".parse().unwrap()));
        assert_eq!(
            mx1[1],
            &RecordData::Aaaa("2001:db8:dead::25".parse().unwrap())
        );
        assert_eq!(mx1.len(), 4, "{mx1:?}");
        assert_eq!(
            records_named(&plan, "mail-mx1.example.test"),
            [&RecordData::Cname("mx1.example.test".into())]
        );
        assert!(
            records_named(&plan, "example.test").contains(&&RecordData::Mx {
                preference: 10,
                exchange: "mail-mx1.example.test".into()
            })
        );
    }

    #[test]
    fn a_dns_fault_defaults_to_its_host_name() {
        let plan = plan_with("[[fault]]\non = \"mx1\"\ndns = { type = \"aaaa\", answer = { delay = \"3s\" } }\nwindow = { until = \"10s\" }\nfirst = 2");
        let fault = &plan.dns_faults[0];
        assert_eq!(fault.name, "mx1.example.test");
        assert_eq!(fault.record_type, Some(hickory_proto::rr::RecordType::AAAA));
        assert_eq!(fault.action, DnsFaultAction::Delay(Duration::from_secs(3)));
        assert_eq!(
            (fault.when.until, fault.when.first),
            (Some(Duration::from_secs(10)), Some(2))
        );
    }

    #[test]
    fn resolv_conf_points_only_at_the_scenario_dns() {
        let plan = plan();
        assert!(plan.resolv_conf.contains("nameserver 192.0.2.10\n"));
        assert!(plan.resolv_conf.contains("nameserver 2001:db8:0:1::2\n"));
        assert_eq!(plan.resolv_conf.matches("nameserver").count(), 2);
    }

    #[test]
    fn messages_carry_ids_and_the_requested_size() {
        let plan = plan();
        let planned = &plan.messages[0];
        assert_eq!(planned.message_id, "<1.smtp.x@sender.test>");
        let text = String::from_utf8(planned.message.content.clone()).unwrap();
        assert!(text.contains("Message-ID: <1.smtp.x@sender.test>\r\n"));
        assert!(planned.message.content.len() >= 2000);
        assert!(text.split("\r\n").all(|line| line.len() < 998));
    }

    #[test]
    fn a_relay_gets_no_mx_record_and_becomes_the_sut_route() {
        let plan = plan_with("[route]\nrelay = \"mx2\"\nfamilies = [\"ipv4\"]\nbind = [\"ipv6\"]");
        assert_eq!(
            plan.route,
            SutRoute {
                relay: Some("mx2.example.test".into()),
                only: Some(Family::Ipv4),
                bind: vec!["2001:db8::2".parse().unwrap()],
            }
        );
        let mx_targets: Vec<&RecordData> = records_named(&plan, "example.test");
        assert_eq!(
            mx_targets,
            [&RecordData::Mx {
                preference: 10,
                exchange: "mx1.example.test".into()
            }]
        );
        assert_eq!(
            records_named(&plan, "mx2.example.test"),
            [&RecordData::A(Ipv4Addr::new(192, 0, 2, 34))]
        );
        let both = plan_with("[route]\nfamilies = [\"ipv4\", \"ipv6\"]");
        assert_eq!(both.route, SutRoute::default());
    }

    #[test]
    fn a_ula_host_gets_a_unique_local_address_with_its_ptr() {
        let text = SCENARIO.replacen(
            "domain = \"example.test\"",
            "domain = \"example.test\"\nula = true",
            1,
        );
        let plan = Plan::new(&parse(Path::new("x.toml"), &text).unwrap());
        let ula: Ipv6Addr = "fd00:db8:0:3::2".parse().unwrap();
        assert_eq!(plan.host("mx1").unwrap().ipv6.unwrap().host, ula);
        assert!(records_named(&plan, "mx1.example.test").contains(&&RecordData::Aaaa(ula)));
        assert_eq!(
            records_named(&plan, &reverse_name(ula.into())),
            [&RecordData::Ptr("mx1.example.test".into())]
        );
    }

    #[test]
    fn a_blocklist_lists_the_network_around_the_sut_ipv6_address() {
        let plan =
            plan_with("[[fault]]\non = \"mx1\"\npolicy = { blocklist = { ipv6-prefix = 48 } }");
        let policies = &plan.host("mx1").unwrap().smtp[&Family::Ipv4].policies;
        assert_eq!(
            policies,
            &[Policy::Blocklist {
                listed: vec!["2001:db8::/48".parse().unwrap()],
                list: "bl.test".into(),
            }]
        );
    }
}
