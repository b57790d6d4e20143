//! One `cargo test` test per scenario × SUT, named like `smtp::v6-greeting-421::postfix`,
//! so `cargo test -- postfix`, `--list`, `--exact` and `cargo nextest run` work.
//!
//! Each test builds the scenario's world in fresh namespaces, runs a real MTA in it, and fails
//! with the failure story when the verdict is not a pass. Each `[[mutant]]` of a scenario is a
//! test too, named like `net::five-mx-v6-dead::postfix::mutant-no-balance`, that fails unless the
//! scenario fails for the mutant (KILLED). Tests that cannot run here (not root,
//! MTA not installed) are reported as ignored, with the reason printed once (failed under
//! `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use mxlab::family::Family;
use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario::{self, NetFault, Scenario};
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

/// The checkout's scenarios, or `MXLAB_SCENARIO_DIR` (for a copy of the prebuilt test binary
/// run by a user who cannot read the checkout, as `.ci/run`'s rootless pass does).
fn scenario_dir() -> PathBuf {
    std::env::var_os("MXLAB_SCENARIO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios"))
}

/// Why tests against `sut` cannot run on this machine, if they cannot.
fn cannot_run(sut: &SutKind) -> Option<String> {
    if let Some(reason) = common::needs_root("network namespaces") {
        return Some(reason);
    }
    sut.check_installed().err().map(|err| err.to_string())
}

/// Why `scenario` cannot run here although its SUT could: a shaped path needs TUN devices,
/// which an ordinary user (rootless mode) may not create everywhere.
fn scenario_cannot_run(scenario: &Scenario) -> Option<String> {
    let shapes_a_path = scenario.faults.iter().any(|fault| {
        matches!(
            fault.net.as_ref().map(|net| *net.get_ref()),
            Some(NetFault::Shape(_))
        )
    });
    shapes_a_path
        .then(netns::check_tun_access)
        .and_then(Result::err)
        .map(|err| err.to_string())
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

/// A test that `mutant` of `scenario` is killed.
fn mutant_trial(scenario: Scenario, mutant: scenario::Mutant, skip: Option<String>) -> Trial {
    let name = format!(
        "{}::{}",
        scenario.name.replace('/', "::"),
        lab::mutant_sut_name(&mutant)
    );
    common::trial(name, skip, move || {
        let report = common::runtime().block_on(lab::run_mutant(
            &scenario,
            &mutant,
            &lab::RunOptions::default(),
        ));
        match report.mutant.as_ref().map(|run| run.status) {
            Some(lab::MutantStatus::Killed) => Ok(()),
            _ => Err(console::render(&report, true).into()),
        }
    })
}

/// A mutant that changes nothing the dual-stack baseline looks at survives it, and its run
/// fails, saying the scenario does not tell the correct SUT from the mutant.
fn surviving_mutant_trial(sut: &SutKind, skip: Option<String>) -> Trial {
    let (mutant_sut, settings) = match sut.name() {
        // Postfix's default HELO timeout, written out: the same MTA.
        "postfix" => ("postfix", "settings = { smtp_helo_timeout = \"300s\" }\n"),
        // One MX host: nothing for a sender to order the wrong way round.
        _ => ("reference:ignore-preference", ""),
    };
    let name = format!("mutant::surviving-fails-the-run::{}", sut.name());
    common::trial(name, skip, move || {
        let path = scenario_dir().join("baseline/dual-stack.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let text = format!(
            "{text}\n[[mutant]]\nname = \"same\"\nsut = \"{mutant_sut}\"\n{settings}\
             reason = \"changes nothing\"\n"
        );
        let scenario = scenario::parse(&path, &text).map_err(|e| e.to_string())?;
        let mutant = scenario
            .mutants
            .iter()
            .find(|mutant| mutant.name.get_ref() == "same")
            .ok_or("the added mutant is missing")?;
        let report = common::runtime().block_on(lab::run_mutant(
            &scenario,
            mutant,
            &lab::RunOptions::default(),
        ));
        let story = console::render(&report, true);
        let status = report.mutant.as_ref().map(|run| run.status);
        if status != Some(lab::MutantStatus::Survived) || report.verdict.status != Status::Fail {
            return Err(format!("expected a surviving mutant and a failed run:\n{story}").into());
        }
        let correct = if mutant_sut == "postfix" {
            "Postfix from one with smtp_helo_timeout = \"300s\""
        } else {
            "reference sender from one with bug ignore-preference"
        };
        let expected = format!("the scenario does not tell a correct {correct} (changes nothing)");
        if report.verdict.failures.iter().all(|f| f.reason != expected) {
            return Err(format!("no failure says {expected:?}:\n{story}").into());
        }
        if !story.starts_with("SURVIVED baseline/dual-stack") {
            return Err(format!("the console line does not say SURVIVED:\n{story}").into());
        }
        Ok(())
    })
}

/// A Postfix setting Postfix no longer knows (`smtp_skip_4xx_greeting`, ignored since 2.0) is
/// refused with an error naming it, not silently replaced by the default.
fn unknown_postfix_setting_trial(skip: Option<String>) -> Trial {
    common::trial("sut::postfix-refuses-an-unknown-setting", skip, move || {
        let path = scenario_dir().join("baseline/dual-stack.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let text = text.replacen(
            "[sut.postfix]\n",
            "[sut.postfix]\nsmtp_skip_4xx_greeting = \"no\"\n",
            1,
        );
        let scenario = scenario::parse(&path, &text).map_err(|e| e.to_string())?;
        // A SUT that does not start is an ERROR verdict that keeps the MTA's own reason.
        let report = common::runtime()
            .block_on(lab::run(&scenario, &SutKind::Postfix))
            .map_err(|err| format!("a harness error instead of an ERROR verdict: {err}"))?;
        let message = &report.verdict.summary;
        if report.verdict.status != Status::Error {
            Err(format!(
                "the setting was not refused:\n{}",
                console::render(&report, true)
            )
            .into())
        } else if message.contains("bad setting \"smtp_skip_4xx_greeting\"")
            && message.contains("unused parameter")
        {
            Ok(())
        } else {
            Err(format!("the error does not name the setting: {message}").into())
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
    common::enter();
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
            let skip = reason.clone().or_else(|| scenario_cannot_run(&scenario));
            for mutant in &scenario.mutants {
                if sut.brings_along(*mutant.sut.get_ref()) {
                    trials.push(mutant_trial(scenario.clone(), mutant.clone(), skip.clone()));
                }
            }
            trials.push(scenario_trial(scenario, sut.clone(), skip));
        }
        // Proving that a verdict can fail needs one SUT that passes the scenario itself.
        if matches!(sut.name(), "postfix" | "reference") {
            trials.push(impossible_expectation_trial(sut.clone(), reason.clone()));
            trials.push(surviving_mutant_trial(&sut, reason.clone()));
        }
        if sut == SutKind::Postfix {
            trials.push(unknown_postfix_setting_trial(reason.clone()));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
