//! mxlab inside an MTA's own repository: one `cargo test` test per scenario × SUT.
//!
//! An MTA project keeps its scenarios (`scenarios/**/*.toml`) and a driver file for its own
//! build in its repository, and adds a test target without libtest's harness:
//!
//! ```toml
//! # Cargo.toml of the MTA's test crate
//! [dev-dependencies]
//! mxlab = "0.1"
//!
//! [[test]]
//! name = "scenarios"
//! harness = false
//! ```
//!
//! ```no_run
//! // tests/scenarios.rs: the whole file.
//! mxlab::testing::main(
//!     concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"),
//!     &[concat!(env!("CARGO_MANIFEST_DIR"), "/mymta.toml")],
//! )
//! ```
//!
//! (inside `fn main() { … }`).
//!
//! `cargo test` then runs every scenario against every SUT, each test named like
//! `smtp::v6-greeting-421::mymta`; `cargo test -- --list`, `-- mymta` and `--exact` work as
//! usual. A test passes on PASS and XFAIL and fails with the run's story otherwise. Tests
//! that cannot run here (not root, the MTA not installed) are reported as ignored with the
//! reason, and fail under `MXLAB_REQUIRE_ALL=1`. `examples/sendmail-repo` is such a crate.

use std::path::Path;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::report::console;
use crate::scenario;
use crate::sut::SutKind;
use crate::verdict::Status;

/// Why [`trials`] cannot list the tests.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// A SUT name or driver file that cannot be used.
    #[error("SUT {given:?}: {source}")]
    Sut {
        /// As given.
        given: String,
        /// Why.
        #[source]
        source: crate::sut::UnknownSut,
    },
    /// The scenario directory or a scenario in it.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
}

/// Enters rootless mode when not root, then runs the tests of [`trials`] with the command
/// line's arguments and exits with libtest's
/// status; a bad SUT or scenario is reported and exits with status 2.
pub fn main(scenario_dir: impl AsRef<Path>, suts: &[&str]) -> ! {
    // Before libtest starts a thread: an ordinary user enters rootless mode (a user namespace
    // with its subordinate ids mapped); where that is impossible the tests are ignored.
    if let Err(err) = crate::rootless::enter() {
        eprintln!("rootless mode unavailable: {err}");
    }
    let args = Arguments::from_args();
    match trials(scenario_dir.as_ref(), suts) {
        Ok(trials) => libtest_mimic::run(&args, trials).exit(),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2)
        }
    }
}

/// One test per scenario under `scenario_dir` × SUT in `suts` (built-in names such as
/// `postfix`, or paths of driver files), named `DIR::SCENARIO::SUT`.
pub fn trials(scenario_dir: &Path, suts: &[&str]) -> Result<Vec<Trial>, TestingError> {
    let suts = suts
        .iter()
        .map(|given| {
            given
                .parse::<SutKind>()
                .map_err(|source| TestingError::Sut {
                    given: (*given).to_string(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let files = scenario::find_scenarios(&[scenario_dir.to_path_buf()])?;
    let scenarios = files
        .iter()
        .map(|file| scenario::load(file))
        .collect::<Result<Vec<_>, _>>()?;
    let mut trials = Vec::new();
    for sut in &suts {
        let cannot_run = cannot_run(sut);
        for scenario in &scenarios {
            let name = format!("{}::{}", scenario.name.replace('/', "::"), sut.name());
            let (scenario, sut) = (scenario.clone(), sut.clone());
            let test = move || run(&scenario, &sut);
            trials.push(match &cannot_run {
                None => Trial::test(name, test),
                Some(reason) if require_all() => {
                    let reason = reason.clone();
                    Trial::test(name, move || {
                        Err(format!("cannot run here, and MXLAB_REQUIRE_ALL=1: {reason}").into())
                    })
                }
                Some(_) => Trial::test(name, test).with_ignored_flag(true),
            });
        }
        if let Some(reason) = &cannot_run {
            eprintln!("ignoring the tests of {}: {reason}", sut.name());
        }
    }
    Ok(trials)
}

/// Whether every test must run: `MXLAB_REQUIRE_ALL=1`.
fn require_all() -> bool {
    std::env::var("MXLAB_REQUIRE_ALL").is_ok_and(|value| value == "1")
}

/// Why tests against `sut` cannot run on this machine, if they cannot.
fn cannot_run(sut: &SutKind) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    sut.check_installed().err().map(|err| err.to_string())
}

/// Runs one scenario: PASS and XFAIL pass, anything else fails with the run's story.
fn run(scenario: &scenario::Scenario, sut: &SutKind) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let report = runtime
        .block_on(crate::lab::run(scenario, sut))
        .map_err(|err| format!("harness error: {err}"))?;
    match report.verdict.status {
        Status::Pass => Ok(()),
        Status::Xfail => {
            println!("{}", console::verdict_line(&report));
            Ok(())
        }
        _ => Err(console::render(&report, true).into()),
    }
}
