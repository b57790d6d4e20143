//! One `cargo test` test per scenario × SUT, named like `smtp::v6-greeting-421::postfix`,
//! so `cargo test -- postfix`, `--list`, `--exact` and `cargo nextest run` work.
//!
//! Each test builds the scenario's world in fresh namespaces, runs a real MTA in it, and fails
//! with the failure story when the verdict is not a pass. Tests that cannot run here (not root,
//! MTA not installed) are reported as ignored, with the reason printed once (failed under
//! `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use mxlab::family::Family;
use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario::{self, Scenario};
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Why tests against `sut` cannot run on this machine, if they cannot.
fn cannot_run(sut: &SutKind) -> Option<String> {
    if let Some(reason) = common::needs_root("network namespaces") {
        return Some(reason);
    }
    sut.check_installed().err().map(|err| err.to_string())
}

/// Runs `scenario` and returns the report, or the harness error as a test failure.
fn run(scenario: &Scenario, sut: &SutKind) -> Result<lab::RunReport, Failed> {
    common::runtime()
        .block_on(lab::run(scenario, sut))
        .map_err(|err| Failed::from(format!("harness error: {err}")))
}

fn scenario_trial(scenario: Scenario, sut: SutKind, skip: Option<String>) -> Trial {
    let name = format!("{}::{}", scenario.name.replace('/', "::"), sut.name());
    common::trial(name, skip, move || {
        let report = run(&scenario, &sut)?;
        match report.verdict.status {
            Status::Pass => Ok(()),
            Status::Xfail => {
                println!("{}", console::verdict_line(&report));
                Ok(())
            }
            _ => Err(console::render(&report, true).into()),
        }
    })
}

/// The 421 scenario with an expectation that cannot hold must be reported as failed, with a
/// reason that names the expectation and what happened instead.
fn impossible_expectation_trial(sut: SutKind, skip: Option<String>) -> Trial {
    let name = format!("verdict::impossible-via-fails::{}", sut.name());
    common::trial(name, skip, move || {
        let path = scenario_dir().join("smtp/v6-greeting-421.toml");
        let mut scenario = scenario::load(&path).map_err(|e| e.to_string())?;
        scenario.expect.via = Some(Family::Ipv6);
        let report = run(&scenario, &sut)?;
        let story = console::render(&report, true);
        if report.verdict.status != Status::Fail {
            return Err(format!("expected a failed verdict, got:\n{story}").into());
        }
        let via = report
            .verdict
            .failures
            .iter()
            .find(|f| f.expectation == "via = \"ipv6\"")
            .ok_or_else(|| format!("no failure names via = \"ipv6\":\n{story}"))?;
        if !via.reason.contains("accepted over ipv4 by mx1") {
            return Err(format!("the reason does not say what happened: {:?}", via.reason).into());
        }
        if report.verdict.failures.len() != 1 {
            return Err(format!("only via should fail:\n{story}").into());
        }
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let files = scenario::find_scenarios(&[scenario_dir()]).expect("the scenarios directory");
    let mut trials = Vec::new();
    let suts: Vec<SutKind> = SutKind::BUILT_IN
        .iter()
        .map(|name| name.parse().expect("built-in SUT names parse"))
        .collect();
    for sut in suts {
        let reason = cannot_run(&sut);
        for file in &files {
            let scenario = scenario::load(file).unwrap_or_else(|err| panic!("{err}"));
            trials.push(scenario_trial(scenario, sut.clone(), reason.clone()));
        }
        // Proving that a verdict can fail needs one SUT that passes the scenario itself.
        if matches!(sut.name(), "postfix" | "reference") {
            trials.push(impossible_expectation_trial(sut.clone(), reason.clone()));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
