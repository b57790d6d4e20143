//! A world rendered as a scenario file, so that what chaos runs is exactly what `mxlab run`
//! loads.

use std::fmt::Write as _;
use std::path::Path;

use crate::family::Family;
use crate::scenario::{self, Scenario, ScenarioError};
use crate::sut::reference::Bug;

use super::world::{FaultKind, Timing, World, DOMAIN, RECIPIENTS, WATCH};

/// What the rendered scenario expects of the SUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Every message delivered within the watch time, to `mx` and over `via` when given.
    Delivered {
        /// The MX host that must accept each message.
        mx: Option<String>,
        /// The family each message must be accepted over.
        via: Option<Family>,
    },
    /// Every message bounced within the watch time, with this DSN status.
    Bounced {
        /// The `Status:` the bounce must carry.
        status: Option<String>,
    },
    /// Every message still queued at the end of the watch time.
    Deferred,
}

/// Extras written into a scenario file chaos keeps.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// Comment lines at the top (without `# `).
    pub header: Vec<String>,
    /// A planted bug of the reference sender the scenario must kill (`[[mutant]]`).
    pub mutant: Option<(Bug, String)>,
}

/// The scenario text of `world`.
pub fn render(world: &World, description: &str, expect: &Expectation, notes: &Notes) -> String {
    let mut out = String::new();
    for line in &notes.header {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "description = {description:?}");
    let _ = writeln!(out, "tags = [\"chaos\"]");
    for (index, host) in world.hosts.iter().enumerate() {
        let _ = writeln!(out, "\n[[mx]]");
        let _ = writeln!(out, "name = \"{}\"", World::host_name(index));
        let _ = writeln!(out, "domain = \"{DOMAIN}\"");
        let _ = writeln!(out, "preference = {}", host.preference());
        let families = host.families.list();
        if families.len() == 1 {
            let _ = writeln!(out, "families = [\"{}\"]", families[0]);
        }
        if host.cname {
            let _ = writeln!(out, "exchange_is_cname = true");
        }
    }
    for fault in world.applied() {
        let _ = writeln!(out, "\n[[fault]]");
        let _ = writeln!(out, "on = \"{}\"", World::host_name(fault.host));
        if let Some(family) = fault.family {
            let _ = writeln!(out, "family = \"{family}\"");
        }
        match fault.kind {
            FaultKind::Net(kind) => {
                let _ = writeln!(out, "net = \"{}\"", kind.name());
            }
            FaultKind::Smtp(stage, refusal) => match refusal.reply(stage) {
                Some(reply) => {
                    let _ = writeln!(
                        out,
                        "smtp = {{ stage = \"{}\", reply = \"{reply}\" }}",
                        stage.name()
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "smtp = {{ stage = \"{}\", action = \"disconnect\" }}",
                        stage.name()
                    );
                }
            },
            FaultKind::Greylist(minutes) => {
                let _ = writeln!(out, "policy = {{ greylist = {{ for = \"{minutes}m\" }} }}");
            }
        }
        match fault.timing {
            Timing::Always => {}
            Timing::Until(minutes) => {
                let _ = writeln!(out, "window = {{ until = \"{minutes}m\" }}");
            }
            Timing::First(count) => {
                let _ = writeln!(out, "first = {count}");
            }
        }
    }
    for (host, family, answer) in world.dns_applied() {
        let record = match family {
            Family::Ipv6 => "AAAA",
            Family::Ipv4 => "A",
        };
        let _ = writeln!(out, "\n[[fault]]");
        let _ = writeln!(out, "on = \"{}\"", World::host_name(host));
        let _ = writeln!(
            out,
            "dns = {{ type = \"{record}\", answer = \"{}\" }}",
            answer.name()
        );
    }
    for recipient in RECIPIENTS.iter().take(world.messages) {
        let _ = writeln!(out, "\n[[message]]\nto = [\"{recipient}\"]");
    }
    let _ = writeln!(out, "\n[expect]");
    match expect {
        Expectation::Delivered { mx, via } => {
            let _ = writeln!(out, "outcome = \"delivered\"");
            if let Some(mx) = mx {
                let _ = writeln!(out, "mx = \"{mx}\"");
            }
            if let Some(via) = via {
                let _ = writeln!(out, "via = \"{via}\"");
            }
        }
        Expectation::Bounced { status } => {
            let _ = writeln!(out, "outcome = \"bounced\"");
            if let Some(status) = status {
                let _ = writeln!(out, "dsn = {{ status = \"{status}\" }}");
            }
        }
        Expectation::Deferred => {
            let _ = writeln!(out, "outcome = \"deferred\"");
        }
    }
    let _ = writeln!(out, "within = \"{}m\"", WATCH.as_secs() / 60);
    if let Some((bug, reason)) = &notes.mutant {
        let _ = writeln!(out, "\n[[mutant]]");
        let _ = writeln!(out, "name = \"planted-{}\"", bug.name());
        let _ = writeln!(out, "sut = \"{}\"", bug.sut_name());
        let _ = writeln!(out, "reason = {reason:?}");
    }
    out
}

/// Renders `world` and loads the text through the scenario parser, as `mxlab run` would load
/// the file; `name` is the scenario's name (its path under `chaos/`).
pub fn load(
    world: &World,
    name: &str,
    expect: &Expectation,
    notes: &Notes,
) -> Result<(Scenario, String), ScenarioError> {
    let text = render(world, "chaos world", expect, notes);
    let path = Path::new("chaos").join(format!("{name}.toml"));
    scenario::parse(&path, &text).map(|scenario| (scenario, text))
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::chaos::world;

    #[test]
    fn every_generated_world_renders_to_a_valid_scenario() {
        let mut runner = TestRunner::deterministic();
        let expects = [
            Expectation::Delivered {
                mx: Some("mx1".into()),
                via: Some(Family::Ipv6),
            },
            Expectation::Bounced {
                status: Some("5.7.1".into()),
            },
            Expectation::Deferred,
        ];
        let notes = Notes {
            header: vec!["seed 1".into()],
            mutant: Some((Bug::TempfailAsPermanent, "why".into())),
        };
        for case in 0..300 {
            let mut tree = world::world().new_tree(&mut runner).unwrap();
            loop {
                let world = tree.current();
                let expect = &expects[case % expects.len()];
                if let Err(err) = load(&world, "w", expect, &notes) {
                    panic!("{err}\n{}", render(&world, "chaos world", expect, &notes));
                }
                if !tree.simplify() {
                    break;
                }
            }
        }
    }
}
