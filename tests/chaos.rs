//! The scenarios `mxlab chaos` shrank from planted bugs of the reference sender, kept under
//! tests/chaos/: each must pass for the correct reference sender and kill its `[[mutant]]`
//! (the reference sender with the bug planted), named like
//! `never-ipv4::reference` and `never-ipv4::reference:never-ipv4` (one file per planted bug).
//! Tests that cannot run here (not root) are reported as ignored with the reason (failed under
//! `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Trial};
use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario::{self, Scenario};
use mxlab::sut::reference::Bugs;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

fn chaos_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/chaos")
}

/// Every run on the default clock (x100) and stock timers, as `mxlab run FILE` does.
fn options() -> lab::RunOptions {
    lab::RunOptions::default()
}

fn name(scenario: &Scenario, sut: &str) -> String {
    format!("{}::{sut}", scenario.name.replace('/', "::"))
}

/// The correct reference sender passes the kept scenario.
fn correct_trial(scenario: Scenario, skip: Option<String>) -> Trial {
    common::trial(name(&scenario, "reference"), skip, move || {
        let sut = SutKind::Reference(Bugs::NONE);
        let report = common::runtime()
            .block_on(lab::run_with(&scenario, &sut, &options()))
            .map_err(|err| format!("harness error: {err}"))?;
        match report.verdict.status {
            Status::Pass => Ok(()),
            _ => Err(console::render(&report, true).into()),
        }
    })
}

/// The buggy reference sender fails it: its mutant is killed.
fn buggy_trial(scenario: Scenario, mutant: scenario::Mutant, skip: Option<String>) -> Trial {
    let sut = mutant.sut.get_ref().name();
    common::trial(name(&scenario, sut), skip, move || {
        let report = common::runtime().block_on(lab::run_mutant(&scenario, &mutant, &options()));
        match report.mutant.as_ref().map(|run| run.status) {
            Some(lab::MutantStatus::Killed) => Ok(()),
            _ => Err(console::render(&report, true).into()),
        }
    })
}

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let files = scenario::find_scenarios(&[chaos_dir()]).expect("the tests/chaos directory");
    let skip = common::needs_root("network namespaces");
    let mut trials = Vec::new();
    for file in &files {
        let scenario = scenario::load(file).unwrap_or_else(|err| panic!("{err}"));
        assert!(
            !scenario.mutants.is_empty(),
            "{}: a kept chaos scenario names the planted bug it finds",
            file.display()
        );
        for mutant in &scenario.mutants {
            trials.push(buggy_trial(scenario.clone(), mutant.clone(), skip.clone()));
        }
        trials.push(correct_trial(scenario, skip.clone()));
    }
    libtest_mimic::run(&args, trials).exit();
}
