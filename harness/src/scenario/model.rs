//! The scenario file format, as serde types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::HumanDuration;
use crate::family::Family;

/// A validated scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name derived from the file path, e.g. `smtp/v6-greeting-421`; not part of the file.
    #[serde(skip)]
    pub name: String,
    /// One sentence: the world and what a correct MTA does in it.
    pub description: String,
    /// Where the bug was seen (issue tracker, mailing list, RFC).
    #[serde(default)]
    pub source: Option<String>,
    /// Free-form tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The world clock's rate for this scenario (`clock = "x100"`, or `"real"` where a timer
    /// that cannot be accelerated is the subject); `mxlab run --clock` overrides it.
    #[serde(default)]
    pub clock: Option<crate::clock::ClockRate>,
    /// The receiving MX hosts.
    #[serde(rename = "mx")]
    pub mxs: Vec<MxSpec>,
    /// What is broken.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// How the SUT is configured to route outgoing mail (`[route]`); by the recipient
    /// domain's MX records when absent.
    #[serde(default)]
    pub route: RouteSpec,
    /// Raw settings per system under test, e.g. `[sut.postfix]`, by SUT name.
    #[serde(default)]
    pub sut: BTreeMap<String, BTreeMap<String, String>>,
    /// Messages handed to the system under test.
    #[serde(rename = "message")]
    pub messages: Vec<MessageSpec>,
    /// The address families of the SUT that the sender domain's SPF record lists (both when
    /// absent): `["ipv4"]` publishes `v=spf1 ip4:192.0.2.2 -all`.
    #[serde(default)]
    pub sender_spf: Option<Vec<Family>>,
    /// What a correct MTA does.
    pub expect: Expect,
    /// Known-bad configurations that must make the scenario fail (`[[mutant]]`).
    #[serde(default, rename = "mutant")]
    pub mutants: Vec<Mutant>,
}

/// A known-bad configuration of one SUT that must make the scenario fail (`[[mutant]]`): a
/// scenario that such a mutant passes does not tell a correct MTA from a broken one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// Short name (lowercase letters, digits, `-`), e.g. `no-balance`; unique per scenario.
    pub name: Spanned<String>,
    /// The SUT it mutates: `postfix`, `exim`, `opensmtpd` or `reference:BUG`.
    pub sut: Spanned<MutantSut>,
    /// Raw settings merged over the scenario's `[sut.NAME]` for this run (MTAs only).
    #[serde(default = "no_settings")]
    pub settings: Spanned<BTreeMap<String, String>>,
    /// Why this configuration is wrong here: the field bug it produces.
    pub reason: Spanned<String>,
}

fn no_settings() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(0..0, BTreeMap::new())
}

impl Mutant {
    /// The mutated configuration in words: the settings as `key = "value"`, or the planted bug.
    pub fn change(&self) -> String {
        match self.sut.get_ref() {
            MutantSut::Reference(bug) => format!("bug {bug}"),
            _ => self
                .settings
                .get_ref()
                .iter()
                .map(|(key, value)| format!("{key} = {value:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The scenario the mutant runs: `scenario` with the mutant's settings merged over its
    /// `[sut.NAME]`. The mutated SUT is `SutKind::from(mutant.sut)`.
    pub fn apply(&self, scenario: &Scenario) -> Scenario {
        let mut mutated = scenario.clone();
        let sut = self.sut.get_ref();
        if !self.settings.get_ref().is_empty() {
            mutated
                .sut
                .entry(sut.name().to_string())
                .or_default()
                .extend(self.settings.get_ref().clone());
        }
        mutated
    }
}

/// The SUT a mutant mutates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MutantSut {
    /// Postfix with the mutant's settings.
    Postfix,
    /// Exim with the mutant's settings.
    Exim,
    /// OpenSMTPD with the mutant's settings.
    Opensmtpd,
    /// The reference sender with this bug planted (`reference:BUG`).
    Reference(crate::bugs::Bug),
}

impl MutantSut {
    /// The name as written in the scenario and in test names, e.g. `postfix`,
    /// `reference:never-ipv4`.
    pub fn name(self) -> &'static str {
        match self {
            MutantSut::Postfix => "postfix",
            MutantSut::Exim => "exim",
            MutantSut::Opensmtpd => "opensmtpd",
            MutantSut::Reference(bug) => bug.sut_name(),
        }
    }

    /// The correct SUT the mutant is told apart from, in words: `Postfix`, `reference sender`.
    pub fn correct(self) -> &'static str {
        match self {
            MutantSut::Postfix => "Postfix",
            MutantSut::Exim => "Exim",
            MutantSut::Opensmtpd => "OpenSMTPD",
            MutantSut::Reference(_) => "reference sender",
        }
    }
}

impl TryFrom<String> for MutantSut {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.as_str() {
            "postfix" => Ok(MutantSut::Postfix),
            "exim" => Ok(MutantSut::Exim),
            "opensmtpd" => Ok(MutantSut::Opensmtpd),
            other => other
                .strip_prefix("reference:")
                .and_then(|bug| bug.parse().ok())
                .map(MutantSut::Reference)
                .ok_or_else(|| {
                    format!(
                        "unknown mutant sut {other:?}; known: postfix, exim, opensmtpd, \
                         reference:BUG (BUG: {})",
                        crate::bugs::bug_names()
                    )
                }),
        }
    }
}

impl fmt::Display for MutantSut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One MX host: a name, the domain it serves and its MX preference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxSpec {
    /// Short host name (lowercase letters, digits, `-`; at most 8 characters), e.g. `mx1`.
    pub name: Spanned<String>,
    /// The mail domain it is an MX for, e.g. `example.test`.
    pub domain: Spanned<String>,
    /// MX preference (lower is tried first).
    #[serde(default = "default_preference")]
    pub preference: u16,
    /// Address families the host has; both by default.
    #[serde(default = "both_families")]
    pub families: Spanned<Vec<Family>>,
    /// More A/AAAA records for the host that nothing answers on, e.g. `"fe80::25"` or a ULA
    /// the network has no route for; published before the host's own addresses.
    #[serde(default)]
    pub extra_addresses: Vec<Spanned<std::net::IpAddr>>,
    /// Publish the MX record's target as a CNAME (`mail-NAME.DOMAIN`) pointing at the host.
    #[serde(default)]
    pub exchange_is_cname: bool,
    /// Give the host a unique local IPv6 address (`fd00:db8:…`, RFC 4193) instead of one from
    /// 2001:db8::/32, as an internal relay has.
    #[serde(default)]
    pub ula: bool,
}

/// The SUT's own routing configuration (`[route]`): what an operator writes into the MTA's
/// config rather than into DNS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `relay = "smarthost"`: the SUT sends every message to this `[[mx]]` host, found by its
    /// A/AAAA records (no MX lookup); the host gets no MX record of its own.
    #[serde(default)]
    pub relay: Option<Spanned<String>>,
    /// `families = ["ipv4"]`: the SUT's delivery transport is restricted to these families
    /// (Postfix: a transport with `-o inet_protocols=ipv4`).
    #[serde(default)]
    pub families: Option<Spanned<Vec<Family>>>,
    /// `bind = ["ipv4"]`: the SUT binds outgoing connections of these families to its own
    /// address explicitly (Postfix `smtp_bind_address`, OpenSMTPD `relay src`).
    #[serde(default)]
    pub bind: Option<Spanned<Vec<Family>>>,
}

fn default_preference() -> u16 {
    10
}

fn both_families() -> Spanned<Vec<Family>> {
    Spanned::new(0..0, vec![Family::Ipv4, Family::Ipv6])
}

/// Something broken on one host, optionally for one family only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The host it applies to: an MX name, or `sut` for `net = "no-route"` and `ptr`. A `dns`
    /// fault may name its query name instead.
    #[serde(default = "no_host")]
    pub on: Spanned<String>,
    /// Only this family; both when absent.
    #[serde(default)]
    pub family: Option<Spanned<Family>>,
    /// An SMTP-level misbehaviour of the fake MX.
    #[serde(default)]
    pub smtp: Option<Spanned<SmtpFault>>,
    /// A misbehaving answer of the scenario DNS.
    #[serde(default)]
    pub dns: Option<Spanned<DnsFaultSpec>>,
    /// Broken reverse DNS for the host's addresses.
    #[serde(default)]
    pub ptr: Option<Spanned<PtrFault>>,
    /// A receiving-side policy of the fake MX (greylisting, PTR or SPF checks, rate limits).
    #[serde(default)]
    pub policy: Option<Spanned<PolicySpec>>,
    /// A network-level fault on the path to the host.
    #[serde(default)]
    pub net: Option<Spanned<NetFault>>,
    /// When the fault is active, relative to the first message's injection; always when absent.
    #[serde(default)]
    pub window: Option<Spanned<Window>>,
    /// Only the first N connections to the host (per family) meet the fault.
    #[serde(default)]
    pub first: Option<Spanned<u32>>,
}

fn no_host() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

/// A DNS answer replaced by a fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFaultSpec {
    /// The query name; defaults to the fault's host (`on`).
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// The record type, e.g. `AAAA`; every type when absent.
    #[serde(default, rename = "type")]
    pub record_type: Option<Spanned<super::QueryType>>,
    /// What the server does instead.
    pub answer: Spanned<DnsAnswer>,
}

/// What the DNS server answers instead of the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DnsAnswer {
    /// SERVFAIL.
    Servfail,
    /// REFUSED.
    Refused,
    /// NXDOMAIN.
    Nxdomain,
    /// NOERROR with no records.
    Nodata,
    /// No answer at all.
    Timeout,
    /// TC over UDP, the full answer over TCP.
    Truncate,
    /// The right answer, late.
    Delay(HumanDuration),
}

/// A policy the fake MX enforces, as the scenario writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PolicySpec {
    /// `{ greylist = { key = "ip" | "prefix64", for = "5s" } }`: 451 for a new triplet until
    /// `for` has passed.
    Greylist {
        /// What identifies the client.
        #[serde(default)]
        key: ClientKey,
        /// How long a new triplet is refused.
        #[serde(rename = "for")]
        period: HumanDuration,
    },
    /// `"require-ptr"`: IPv6 clients without forward-confirmed reverse DNS get Gmail's
    /// 550 5.7.25 at RCPT. (`"require-ptr-all"`: IPv4 clients too.)
    RequirePtr,
    /// Like `require-ptr`, for both families.
    RequirePtrAll,
    /// `"require-spf"`: SPF fail gets 550 5.7.23 at MAIL.
    RequireSpf,
    /// `{ rate = { limit = 2, per = "10s", key = "prefix64" } }`: 421 above `limit`
    /// connections within `per` from one client key.
    Rate {
        /// Connections allowed within `per`.
        limit: u32,
        /// The window.
        per: HumanDuration,
        /// What identifies the client.
        #[serde(default)]
        key: ClientKey,
    },
    /// `{ blocklist = { ipv6-prefix = 64 } }`: the IPv6 network of this length around the
    /// SUT's address is on a DNS blocklist (its IPv4 address is clean); listed clients get
    /// `554 5.7.1` instead of the greeting.
    Blocklist {
        /// The listed network's prefix length, 1 to 128 (Spamhaus lists IPv6 by /64).
        #[serde(rename = "ipv6-prefix")]
        ipv6_prefix: u8,
    },
}

/// How a policy tells clients apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKey {
    /// The exact address.
    #[default]
    Ip,
    /// The IPv6 /64 (IPv4 /24) the address is in.
    Prefix64,
}

/// Broken reverse DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PtrFault {
    /// No PTR record: NXDOMAIN.
    Missing,
    /// A PTR name whose forward lookup gives other addresses.
    Mismatch,
}

/// The time a fault is active: from `from` until `until` (or the end of the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, relative to the first injection.
    #[serde(default = "zero")]
    pub from: HumanDuration,
    /// End (healing), relative to the first injection; the fault stays when absent.
    #[serde(default)]
    pub until: Option<HumanDuration>,
}

fn zero() -> HumanDuration {
    HumanDuration(std::time::Duration::ZERO)
}

/// Network faults, applied in the router (or, for `no-route`, in the SUT's namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// Packets to the host are dropped silently: connections time out.
    Blackhole,
    /// SYNs to port 25 of the host are dropped; other traffic passes.
    SynDrop,
    /// Connections to port 25 are refused with a TCP RST.
    Reset,
    /// The router answers with ICMP(v6) host/address unreachable.
    Unreachable,
    /// The router answers with ICMP(v6) administratively prohibited.
    Prohibit,
    /// The SUT has no route for the family at all ("Network is unreachable").
    NoRoute,
    /// The path MTU drops to 1280 and Packet Too Big / Fragmentation Needed is filtered.
    PmtuBlackhole,
    /// This percentage of packets to and from the host is lost.
    Loss {
        /// 1 to 100.
        percent: u8,
    },
    /// Delay with jitter, reordering, duplication and a rate limit on the path, by the
    /// userspace shaper in the router (`net = { delay = "200ms", ... }`).
    Shape(super::NetShape),
}

impl NetFault {
    /// The spellings allowed in scenario files.
    pub const ALLOWED: &'static str = "\"blackhole\", \"syn-drop\", \"reset\", \"unreachable\", \"prohibit\", \"no-route\", \"pmtu-blackhole\", { loss = PERCENT } or a shape { delay, jitter, reorder, duplicate, rate, direction, seed }";
}

impl std::fmt::Display for NetFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetFault::Blackhole => f.write_str("blackhole"),
            NetFault::SynDrop => f.write_str("syn-drop"),
            NetFault::Reset => f.write_str("reset"),
            NetFault::Unreachable => f.write_str("unreachable"),
            NetFault::Prohibit => f.write_str("prohibit"),
            NetFault::NoRoute => f.write_str("no-route"),
            NetFault::PmtuBlackhole => f.write_str("pmtu-blackhole"),
            NetFault::Loss { percent } => write!(f, "loss {percent}%"),
            NetFault::Shape(shape) => shape.fmt(f),
        }
    }
}

/// The scenario file's spelling: a string, or `{ loss = PERCENT }`.
impl Serialize for NetFault {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            NetFault::Loss { percent } => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("loss", percent)?;
                map.end()
            }
            NetFault::Shape(shape) => shape.serialize(serializer),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for NetFault {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NetFaultVisitor)
    }
}

struct NetFaultVisitor;

impl<'de> serde::de::Visitor<'de> for NetFaultVisitor {
    type Value = NetFault;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "one of {}", NetFault::ALLOWED)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<NetFault, E> {
        Ok(match value {
            "blackhole" => NetFault::Blackhole,
            "syn-drop" => NetFault::SynDrop,
            "reset" => NetFault::Reset,
            "unreachable" => NetFault::Unreachable,
            "prohibit" => NetFault::Prohibit,
            "no-route" => NetFault::NoRoute,
            "pmtu-blackhole" => NetFault::PmtuBlackhole,
            other => {
                return Err(E::custom(format!(
                    "unknown network fault {other:?}; allowed: {}",
                    NetFault::ALLOWED
                )))
            }
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NetFault, A::Error> {
        use serde::de::Error;
        let mut entries: Vec<(String, toml::Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<toml::Value>()?;
            if key != "loss" && !super::NetShape::is_key(&key) {
                return Err(A::Error::custom(format!(
                    "unknown network fault `{key}`; allowed: {}",
                    NetFault::ALLOWED
                )));
            }
            entries.push((key, value));
        }
        match entries.as_slice() {
            [] => Err(A::Error::custom(format!(
                "empty network fault; allowed: {}",
                NetFault::ALLOWED
            ))),
            [(key, value)] if key == "loss" => match value.as_integer() {
                Some(p @ 1..=100) => Ok(NetFault::Loss { percent: p as u8 }),
                _ => Err(A::Error::custom(format!(
                    "loss = {value} is out of range: give a percentage from 1 to 100"
                ))),
            },
            _ if entries.iter().any(|(key, _)| key == "loss") => Err(A::Error::custom(
                "`loss` stands alone: shape the path in a [[fault]] of its own",
            )),
            _ => super::NetShape::from_entries(&entries)
                .map(NetFault::Shape)
                .map_err(A::Error::custom),
        }
    }
}

/// An SMTP reply the fake MX gives instead of the normal one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFault {
    /// The stage at which it answers differently (with `reply` or `action`).
    #[serde(default)]
    pub stage: Option<SmtpStage>,
    /// The full reply, e.g. `421 4.3.2 Service not available`; `\n` separates lines.
    #[serde(default)]
    pub reply: Option<Spanned<String>>,
    /// Instead of a reply: `stall`, `disconnect`, `reset`, `{ slow = BYTES_PER_SECOND }`, or
    /// at `end-of-data` `accept-then-reset`, `accept-then-disconnect`, `accept-then-stall`.
    #[serde(default)]
    pub action: Option<SmtpAction>,
    /// At the `content` stage: how many bytes of message content pass before the action.
    #[serde(default)]
    pub after: Option<Spanned<usize>>,
    /// At the `rcpt` stage: only for this recipient.
    #[serde(default)]
    pub recipient: Option<String>,
    /// EHLO extensions the server does not offer, e.g. `["pipelining", "8bitmime"]`.
    #[serde(default)]
    pub disable: Vec<Extension>,
    /// Pad the EHLO reply to about this many bytes (for MTU scenarios).
    #[serde(default)]
    pub ehlo_size: Option<usize>,
    /// Offer STARTTLS with this kind of certificate.
    #[serde(default)]
    pub starttls: Option<StartTls>,
}

/// What the fake MX does at a stage instead of replying normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum SmtpAction {
    /// Say nothing until the client gives up.
    Stall,
    /// Close the connection without a reply.
    Disconnect,
    /// The normal reply, trickled at this many bytes per second.
    Slow(u32),
    /// Abort the connection with a TCP reset, without a reply.
    Reset,
    /// At `end-of-data`: store the message, then reset the connection instead of the `250`.
    AcceptThenReset,
    /// At `end-of-data`: store the message, then close the connection instead of the `250`.
    AcceptThenDisconnect,
    /// At `end-of-data`: store the message, then say nothing until the client gives up.
    AcceptThenStall,
}

impl SmtpAction {
    /// Whether the action stores the message and then loses the `250` (RFC 1047's window).
    pub fn accepts_first(self) -> bool {
        matches!(
            self,
            SmtpAction::AcceptThenReset
                | SmtpAction::AcceptThenDisconnect
                | SmtpAction::AcceptThenStall
        )
    }
}

/// EHLO extensions that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extension {
    /// PIPELINING.
    Pipelining,
    /// 8BITMIME.
    #[serde(rename = "8bitmime")]
    EightBitMime,
    /// SIZE.
    Size,
    /// ENHANCEDSTATUSCODES.
    Enhancedstatuscodes,
    /// SMTPUTF8.
    Smtputf8,
}

/// The certificate behind STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartTls {
    /// Signed by the run's CA for the host's name.
    Valid,
    /// The handshake breaks after `220 Ready to start TLS`.
    Broken,
    /// Expired.
    Expired,
    /// Issued for another name.
    WrongName,
    /// Four intermediates and a hundred names: a chain over 3 KB, for PMTU scenarios.
    OversizedChain,
    /// The ClientHello is never answered: the handshake stalls until the client gives up.
    Stalled,
    /// The ClientHello is answered with a fatal TLS alert (`handshake_failure`).
    Alert,
}

/// Stages of an SMTP session at which a fault can act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpStage {
    /// The server's first reply.
    Greeting,
    /// The reply to EHLO.
    Ehlo,
    /// The reply to HELO.
    Helo,
    /// The reply to STARTTLS.
    Starttls,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO.
    Rcpt,
    /// The reply to DATA.
    Data,
    /// In the middle of the message content, after `after` bytes of it.
    Content,
    /// The reply after the message content.
    EndOfData,
    /// The reply to QUIT.
    Quit,
}

/// A message to send through the system under test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    /// Envelope sender; must be in the sender domain `sender.test`.
    #[serde(default = "default_sender")]
    pub from: Spanned<String>,
    /// Envelope recipients; each domain must be served by an `[[mx]]`.
    pub to: Vec<Spanned<String>>,
    /// Subject header.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Approximate body size in bytes (default: a short line).
    #[serde(default)]
    pub size: Option<usize>,
}

fn default_sender() -> Spanned<String> {
    Spanned::new(0..0, "alice@sender.test".to_string())
}

fn default_subject() -> String {
    "mxlab test message".to_string()
}

/// The end state a correct MTA reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every message was accepted by an MX.
    Delivered,
    /// The sender got a delivery status notification (a bounce).
    Bounced,
    /// The message is still in the MTA's queue at the end.
    Deferred,
}

/// What the system under test must do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The end state.
    pub outcome: Outcome,
    /// Family of the session that accepted each message.
    #[serde(default)]
    pub via: Option<Family>,
    /// The MX host that accepted each message.
    #[serde(default)]
    pub mx: Option<Spanned<String>>,
    /// Families of the sessions opened before the accepting one, in the order first tried.
    #[serde(default)]
    pub tried: Option<Vec<Family>>,
    /// Time limit from injection to the outcome; for `deferred`, how long to observe.
    #[serde(default = "default_within")]
    pub within: HumanDuration,
    /// No message accepted twice (by Message-ID or identical content). Ignored when
    /// [`copies`](Self::copies) is given, which replaces it.
    #[serde(default = "yes")]
    pub exactly_once: bool,
    /// How many copies of each message the receiving MX hosts may accept in all, counted by
    /// Message-ID across sessions: `copies = 1` or `copies = "at most 2"` (a lost `250` after
    /// the final dot makes a second copy legitimate, RFC 1047).
    #[serde(default)]
    pub copies: Option<Copies>,
    /// Longest time, in world time, from the first connection attempt (on the first family
    /// tried) to the first SYN on the other family, e.g. `"45s"`. RFC 8305 (Happy Eyeballs
    /// v2) recommends 250 ms between connection attempts as the reference.
    #[serde(default)]
    pub fallback_within: Option<HumanDuration>,
    /// The receiving MX's authentication results for every accepted copy of each message,
    /// e.g. `{ spf = "pass" }` (RFC 8601 result words).
    #[serde(default)]
    pub auth: Option<AuthExpect>,
    /// DNS queries the MTA must have made, in this order (others may come between), each as
    /// `"NAME TYPE"`, e.g. `["mx1.example.test AAAA", "mx1.example.test A"]`.
    #[serde(default)]
    pub queried: Option<Vec<Spanned<super::ExpectedQuery>>>,
    /// Connection attempts to the receiving MX hosts per family, e.g. `{ ipv6 = 1, ipv4 = 1 }`.
    #[serde(default)]
    pub attempts: Option<BTreeMap<Family, u32>>,
    /// What the bounce (delivery status notification) must say.
    #[serde(default)]
    pub dsn: Option<DsnExpect>,
    /// Known deviations per SUT name: the expectations each excuses and why. A run whose only
    /// failed expectations are excused is reported as xfail; any other failed expectation keeps
    /// it a failure, and a pass is a failure too (so the entry gets removed).
    #[serde(default)]
    pub xfail: BTreeMap<String, Spanned<Xfail>>,
}

/// One expectation of `[expect]`, as an xfail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// `outcome`
    Outcome,
    /// `via`
    Via,
    /// `mx`
    Mx,
    /// `tried`
    Tried,
    /// `within`
    Within,
    /// `exactly_once`
    ExactlyOnce,
    /// `queried`
    Queried,
    /// `attempts`
    Attempts,
    /// `dsn`
    Dsn,
    /// `copies`
    Copies,
    /// `fallback_within`
    FallbackWithin,
    /// `auth`
    Auth,
}

impl Expectation {
    /// Every expectation, in `[expect]`'s order.
    pub const ALL: [Expectation; 12] = [
        Expectation::Outcome,
        Expectation::Via,
        Expectation::Mx,
        Expectation::Tried,
        Expectation::Within,
        Expectation::ExactlyOnce,
        Expectation::Queried,
        Expectation::Attempts,
        Expectation::Dsn,
        Expectation::Copies,
        Expectation::FallbackWithin,
        Expectation::Auth,
    ];

    /// Whether `expect` states this expectation (outcome, within and exactly_once always are).
    pub fn is_set_in(self, expect: &Expect) -> bool {
        match self {
            Expectation::Outcome | Expectation::Within => true,
            Expectation::ExactlyOnce => expect.copies.is_none(),
            Expectation::Copies => expect.copies.is_some(),
            Expectation::FallbackWithin => expect.fallback_within.is_some(),
            Expectation::Auth => expect.auth.is_some(),
            Expectation::Via => expect.via.is_some(),
            Expectation::Mx => expect.mx.is_some(),
            Expectation::Tried => expect.tried.is_some(),
            Expectation::Queried => expect.queried.is_some(),
            Expectation::Attempts => expect.attempts.is_some(),
            Expectation::Dsn => expect.dsn.is_some(),
        }
    }

    /// The key as written in `[expect]`.
    pub fn key(self) -> &'static str {
        match self {
            Expectation::Outcome => "outcome",
            Expectation::Via => "via",
            Expectation::Mx => "mx",
            Expectation::Tried => "tried",
            Expectation::Within => "within",
            Expectation::ExactlyOnce => "exactly_once",
            Expectation::Queried => "queried",
            Expectation::Attempts => "attempts",
            Expectation::Dsn => "dsn",
            Expectation::Copies => "copies",
            Expectation::FallbackWithin => "fallback_within",
            Expectation::Auth => "auth",
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A known deviation of one SUT: `postfix = { expects = ["outcome"], reason = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Xfail {
    /// The expectations this deviation excuses; never empty.
    pub expects: Vec<Expectation>,
    /// Why the SUT deviates, as read from what it really does.
    pub reason: String,
}

impl TryFrom<toml::Value> for Xfail {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        const FORM: &str = "{ expects = [\"outcome\"], reason = \"…\" }";
        let table = match value {
            toml::Value::Table(table) => table,
            toml::Value::String(reason) => {
                return Err(format!(
                    "an xfail names the expectations it excuses: write \
                     {{ expects = [\"outcome\"], reason = {reason:?} }} with the expectations that fail"
                ))
            }
            other => return Err(format!("an xfail is {FORM}, not a {}", other.type_str())),
        };
        if let Some(unknown) = table.keys().find(|k| *k != "expects" && *k != "reason") {
            return Err(format!("unknown key `{unknown}` in an xfail: it is {FORM}"));
        }
        let reason = match table.get("reason") {
            Some(toml::Value::String(reason)) if !reason.trim().is_empty() => reason.clone(),
            _ => return Err("an xfail needs a reason: what the MTA really does".into()),
        };
        let Some(toml::Value::Array(names)) = table.get("expects") else {
            return Err(format!(
                "an xfail needs `expects`, the expectations it excuses: {FORM}"
            ));
        };
        if names.is_empty() {
            return Err(
                "an xfail's `expects` is empty: name the expectations it excuses, e.g. [\"outcome\"]"
                    .into(),
            );
        }
        let expects = names
            .iter()
            .map(|name| {
                name.as_str()
                    .and_then(|name| Expectation::ALL.into_iter().find(|e| e.key() == name))
                    .ok_or_else(|| {
                        format!(
                            "an xfail's `expects` lists expectations of [expect]: one of {}; got {name}",
                            Expectation::ALL.map(Expectation::key).join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Xfail { expects, reason })
    }
}

/// How many copies of a message may arrive: `copies = 1` or `copies = "at most 2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// Exactly this many (at least 1).
    Exactly(u32),
    /// At least one and at most this many.
    AtMost(u32),
}

impl Copies {
    /// Whether `count` accepted copies meet the expectation.
    pub fn allows(self, count: usize) -> bool {
        match self {
            Copies::Exactly(n) => count == n as usize,
            Copies::AtMost(n) => (1..=n as usize).contains(&count),
        }
    }
}

impl fmt::Display for Copies {
    /// As written in a scenario: `1` or `"at most 2"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Copies::Exactly(n) => write!(f, "{n}"),
            Copies::AtMost(n) => write!(f, "\"at most {n}\""),
        }
    }
}

impl<'de> Deserialize<'de> for Copies {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const FORM: &str =
            "copies is a count (copies = 1) or \"at most N\" (copies = \"at most 2\")";
        let count = |n: i64| match u32::try_from(n) {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(D::Error::custom(format!(
                "{FORM}, with N at least 1; got {n}"
            ))),
        };
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Integer(n) => Ok(Copies::Exactly(count(n)?)),
            toml::Value::String(text) => {
                let n = text
                    .trim()
                    .strip_prefix("at most")
                    .and_then(|n| n.trim().parse::<i64>().ok())
                    .ok_or_else(|| D::Error::custom(format!("{FORM}; got {text:?}")))?;
                Ok(Copies::AtMost(count(n)?))
            }
            other => Err(D::Error::custom(format!(
                "{FORM}; got a {}",
                other.type_str()
            ))),
        }
    }
}

/// An authentication result (RFC 8601 §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthResult {
    /// `pass`
    Pass,
    /// `fail`
    Fail,
    /// `softfail` (SPF)
    Softfail,
    /// `neutral`
    Neutral,
    /// `none`
    None,
    /// `temperror`
    Temperror,
    /// `permerror`
    Permerror,
}

impl AuthResult {
    /// The result word.
    pub fn word(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::Softfail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::Temperror => "temperror",
            AuthResult::Permerror => "permerror",
        }
    }
}

/// Expected authentication results of every accepted copy of a message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthExpect {
    /// SPF of the MAIL FROM identity.
    #[serde(default)]
    pub spf: Option<AuthResult>,
    /// DKIM of the first signature.
    #[serde(default)]
    pub dkim: Option<AuthResult>,
    /// DMARC of the From domain.
    #[serde(default)]
    pub dmarc: Option<AuthResult>,
}

/// Expected fields of the bounce's delivery status notification.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsnExpect {
    /// The `Status:` field, e.g. `5.7.25` (a prefix such as `5.` also matches).
    #[serde(default)]
    pub status: Option<String>,
    /// Text the `Diagnostic-Code:` field must contain, e.g. the MX's reply `550 5.7.25`.
    #[serde(default)]
    pub diagnostic: Option<String>,
}

fn default_within() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn yes() -> bool {
    true
}
