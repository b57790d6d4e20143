//! The shipped driver file `drivers/haraka.toml`: Haraka (from npm) as the system under test,
//! through the generic driver-file SUT. Needs root (network namespaces) and Haraka installed
//! (`.ci/install-deps.sh`); without them it prints why it is skipped and passes.
//!
//! The baseline must pass. For the other scenarios the test reports what Haraka did (their
//! verdicts describe Haraka's behaviour, not the driver's correctness).

use std::path::{Path, PathBuf};

use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Haraka driver, or why the test cannot run here.
fn haraka() -> Result<SutKind, String> {
    let path = root().join("drivers/haraka.toml");
    let sut: SutKind = path
        .to_str()
        .expect("a UTF-8 path")
        .parse()
        .map_err(|e| format!("{e}"))?;
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces)".into());
    }
    sut.check_installed().map_err(|e| e.to_string())?;
    Ok(sut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haraka_delivers_the_baseline_and_reports_the_greeting_fault() {
    let sut = match haraka() {
        Ok(sut) => sut,
        Err(reason) => {
            eprintln!(
                "skipping haraka_delivers_the_baseline_and_reports_the_greeting_fault: {reason}"
            );
            return;
        }
    };
    assert_eq!(sut.name(), "haraka");
    for (file, must_pass) in [
        ("scenarios/baseline/dual-stack.toml", true),
        ("scenarios/smtp/v6-greeting-421.toml", false),
    ] {
        let scenario = scenario::load(&root().join(file)).expect("a valid scenario");
        let report = lab::run(&scenario, &sut).await.expect("the lab runs");
        let rendered = console::render(&report, !matches!(report.verdict.status, Status::Pass));
        println!("{file}: {:?}\n{rendered}", report.verdict.status);
        if must_pass {
            assert_eq!(report.verdict.status, Status::Pass, "{rendered}");
        }
    }
}
