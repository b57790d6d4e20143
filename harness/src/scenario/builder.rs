//! Writing a scenario in Rust instead of TOML.
//!
//! The builder writes the same TOML a user would and loads it through the same validation,
//! so a scenario built in code behaves exactly like its file.
//!
//! ```
//! use std::time::Duration;
//! use mxlab::family::Family;
//! use mxlab::scenario::{Outcome, ScenarioBuilder, SmtpStage};
//!
//! let scenario = ScenarioBuilder::new("smtp/v6-421", "421 on IPv6 only")
//!     .mx("mx1", "example.test", 10)
//!     .smtp_fault("mx1", Some(Family::Ipv6), SmtpStage::Greeting, "421 4.3.2 busy")
//!     .sut_setting("postfix", "smtp_address_preference", "ipv6")
//!     .message("alice@sender.test", &["bob@example.test"])
//!     .outcome(Outcome::Delivered)
//!     .via(Family::Ipv4)
//!     .tried(&[Family::Ipv6])
//!     .within(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! assert_eq!(scenario.name, "smtp/v6-421");
//! ```

use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::{parse, NetFault, Outcome, Scenario, ScenarioError, SmtpStage};
use crate::clock::ClockRate;
use crate::family::Family;

/// Builds a [`Scenario`] step by step.
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    name: String,
    root: Table,
    expect: Table,
}

impl ScenarioBuilder {
    /// A scenario called `name` (like a path below `scenarios/`, e.g. `smtp/my-case`).
    pub fn new(name: &str, description: &str) -> Self {
        let mut root = Table::new();
        root.insert("description".into(), description.into());
        Self {
            name: name.to_string(),
            root,
            expect: Table::new(),
        }
    }

    fn push(mut self, array: &str, entry: Table) -> Self {
        let list = self
            .root
            .entry(array)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(Value::Table(entry));
        }
        self
    }

    /// The world clock's rate (`clock = "x100"` or `"real"` in a file).
    pub fn clock(mut self, rate: ClockRate) -> Self {
        self.root.insert("clock".into(), rate.to_string().into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> Self {
        let tags = self
            .root
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = tags {
            items.push(tag.into());
        }
        self
    }

    /// Adds a dual-stack MX host `name` for `domain`.
    pub fn mx(self, name: &str, domain: &str, preference: u16) -> Self {
        let mut mx = Table::new();
        mx.insert("name".into(), name.into());
        mx.insert("domain".into(), domain.into());
        mx.insert("preference".into(), i64::from(preference).into());
        self.push("mx", mx)
    }

    fn fault(host: &str, family: Option<Family>) -> Table {
        let mut fault = Table::new();
        fault.insert("on".into(), host.into());
        if let Some(family) = family {
            fault.insert("family".into(), family.to_string().into());
        }
        fault
    }

    /// The fake MX answers `reply` at `stage`.
    pub fn smtp_fault(
        self,
        host: &str,
        family: Option<Family>,
        stage: SmtpStage,
        reply: &str,
    ) -> Self {
        let mut fault = Self::fault(host, family);
        let mut smtp = Table::new();
        smtp.insert("stage".into(), toml_value(&stage));
        smtp.insert("reply".into(), reply.into());
        fault.insert("smtp".into(), Value::Table(smtp));
        self.push("fault", fault)
    }

    /// A network fault such as [`NetFault::Blackhole`] on the path to `host`.
    pub fn net_fault(self, host: &str, family: Option<Family>, kind: NetFault) -> Self {
        let mut fault = Self::fault(host, family);
        fault.insert("net".into(), toml_value(&kind));
        self.push("fault", fault)
    }

    /// A raw setting for one SUT, e.g. `("postfix", "smtp_address_preference", "ipv6")`.
    pub fn sut_setting(mut self, sut: &str, key: &str, value: &str) -> Self {
        let suts = self
            .root
            .entry("sut")
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(suts) = suts {
            let settings = suts
                .entry(sut)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(settings) = settings {
                settings.insert(key.into(), value.into());
            }
        }
        self
    }

    /// A message from `from` to `to`.
    pub fn message(self, from: &str, to: &[&str]) -> Self {
        let mut message = Table::new();
        message.insert("from".into(), from.into());
        message.insert(
            "to".into(),
            Value::Array(to.iter().map(|rcpt| (*rcpt).into()).collect()),
        );
        self.push("message", message)
    }

    /// The expected outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.expect.insert("outcome".into(), toml_value(&outcome));
        self
    }

    /// The family of the accepting session.
    pub fn via(mut self, family: Family) -> Self {
        self.expect.insert("via".into(), family.to_string().into());
        self
    }

    /// The families tried before the accepting session, in order.
    pub fn tried(mut self, families: &[Family]) -> Self {
        let list = families
            .iter()
            .map(|f| Value::from(f.to_string()))
            .collect();
        self.expect.insert("tried".into(), Value::Array(list));
        self
    }

    /// The time limit from injection to the outcome.
    pub fn within(mut self, limit: Duration) -> Self {
        self.expect
            .insert("within".into(), format!("{}ms", limit.as_millis()).into());
        self
    }

    /// The TOML text of the scenario so far.
    pub fn to_toml(&self) -> String {
        let mut root = self.root.clone();
        root.insert("expect".into(), Value::Table(self.expect.clone()));
        toml::to_string(&root).expect("a TOML table serializes")
    }

    /// Validates and returns the scenario; errors are those a file would get.
    pub fn build(self) -> Result<Scenario, ScenarioError> {
        let path = PathBuf::from(format!("scenarios/{}.toml", self.name));
        parse(&path, &self.to_toml())
    }
}

/// A scenario value as the file spells it.
fn toml_value<T: serde::Serialize>(value: &T) -> Value {
    Value::try_from(value).expect("scenario enums serialize to TOML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{NetShape, Rate, ShapeDirection};

    #[test]
    fn a_built_scenario_is_validated_like_a_file() {
        let err = ScenarioBuilder::new("x", "d")
            .mx("mx1", "example.test", 10)
            .net_fault("mx9", None, NetFault::Blackhole)
            .message("alice@sender.test", &["bob@example.test"])
            .outcome(Outcome::Delivered)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("fault on unknown host \"mx9\""), "{err}");
    }

    #[test]
    fn every_fault_stage_and_outcome_reaches_the_scenario_as_given() {
        let kinds = [
            NetFault::Blackhole,
            NetFault::SynDrop,
            NetFault::Reset,
            NetFault::Unreachable,
            NetFault::Prohibit,
            NetFault::NoRoute,
            NetFault::PmtuBlackhole,
            NetFault::Loss { percent: 30 },
            NetFault::Shape(NetShape {
                delay: Duration::from_millis(200),
                jitter: Duration::from_millis(50),
                reorder: 10,
                duplicate: 20,
                rate: Some(Rate {
                    bytes_per_second: 1_250,
                }),
                direction: ShapeDirection::From,
                seed: 7,
            }),
        ];
        for kind in kinds {
            // `no-route` acts on the SUT's own routes, every other kind on the path to an MX.
            let host = if kind == NetFault::NoRoute {
                "sut"
            } else {
                "mx1"
            };
            let scenario = ScenarioBuilder::new("net/x", "d")
                .mx("mx1", "example.test", 10)
                .net_fault(host, Some(Family::Ipv6), kind)
                .message("alice@sender.test", &["bob@example.test"])
                .outcome(Outcome::Delivered)
                .build()
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                scenario.faults[0].net.as_ref().map(|n| *n.get_ref()),
                Some(kind)
            );
        }
        for outcome in [Outcome::Delivered, Outcome::Bounced, Outcome::Deferred] {
            let scenario = ScenarioBuilder::new("smtp/x", "d")
                .mx("mx1", "example.test", 10)
                .smtp_fault("mx1", None, SmtpStage::Rcpt, "550 5.1.1 no")
                .message("alice@sender.test", &["bob@example.test"])
                .outcome(outcome)
                .build()
                .unwrap();
            assert_eq!(scenario.expect.outcome, outcome);
            let smtp = scenario.faults[0].smtp.as_ref().unwrap().get_ref();
            assert_eq!(smtp.stage, Some(SmtpStage::Rcpt));
        }
    }

    #[test]
    fn settings_and_expectations_arrive() {
        let scenario = ScenarioBuilder::new("net/x", "d")
            .tag("net")
            .mx("mx1", "example.test", 20)
            .net_fault("mx1", Some(Family::Ipv6), NetFault::Reset)
            .sut_setting("postfix", "smtp_address_preference", "ipv6")
            .message("alice@sender.test", &["bob@example.test"])
            .outcome(Outcome::Delivered)
            .via(Family::Ipv4)
            .within(Duration::from_millis(2500))
            .build()
            .unwrap();
        assert_eq!(scenario.name, "net/x");
        assert_eq!(scenario.tags, ["net"]);
        assert_eq!(scenario.mxs[0].preference, 20);
        assert_eq!(scenario.sut["postfix"]["smtp_address_preference"], "ipv6");
        assert_eq!(scenario.expect.via, Some(Family::Ipv4));
        assert_eq!(scenario.expect.within.0, Duration::from_millis(2500));
    }

    #[test]
    fn the_clock_rate_reaches_the_scenario_as_given() {
        for rate in ["real", "x100", "x20"] {
            let scenario = ScenarioBuilder::new("net/x", "d")
                .clock(rate.parse().unwrap())
                .mx("mx1", "example.test", 10)
                .message("alice@sender.test", &["bob@example.test"])
                .outcome(Outcome::Delivered)
                .build()
                .unwrap_or_else(|e| panic!("{rate}: {e}"));
            assert_eq!(scenario.clock.map(|c| c.to_string()).as_deref(), Some(rate));
        }
    }
}
