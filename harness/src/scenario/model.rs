//! The scenario file format, as serde types.

use std::collections::BTreeMap;

use serde::Deserialize;
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
    /// The receiving MX hosts.
    #[serde(rename = "mx")]
    pub mxs: Vec<MxSpec>,
    /// What is broken.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Raw settings per system under test, e.g. `[sut.postfix]`.
    #[serde(default)]
    pub sut: SutSettings,
    /// Messages handed to the system under test.
    #[serde(rename = "message")]
    pub messages: Vec<MessageSpec>,
    /// What a correct MTA does.
    pub expect: Expect,
}

/// Raw configuration overrides per system under test.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SutSettings {
    /// Postfix `main.cf` parameters.
    #[serde(default)]
    pub postfix: BTreeMap<String, String>,
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
    /// The host it applies to (an MX name).
    pub on: Spanned<String>,
    /// Only this family; both when absent.
    #[serde(default)]
    pub family: Option<Spanned<Family>>,
    /// An SMTP-level misbehaviour of the fake MX.
    pub smtp: Spanned<SmtpFault>,
}

/// An SMTP reply the fake MX gives instead of the normal one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFault {
    /// The stage at which it answers differently.
    pub stage: SmtpStage,
    /// The full reply line, e.g. `421 4.3.2 Service not available`.
    pub reply: Spanned<String>,
}

/// Stages of an SMTP session at which a fault can act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpStage {
    /// The server's first reply.
    Greeting,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// No message accepted twice (by Message-ID or identical content).
    #[serde(default = "yes")]
    pub exactly_once: bool,
}

fn default_within() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn yes() -> bool {
    true
}
