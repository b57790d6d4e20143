//! The shipped driver file `drivers/haraka.toml`: Haraka (from npm) as the system under test,
//! through the generic driver-file SUT.
//!
//! Needs root (network namespaces) and Haraka installed (`.ci/install-deps.sh`, which needs
//! Node.js >= 20). Without root the test is reported as ignored (failed under
//! `MXLAB_REQUIRE_ALL=1`). Without Haraka it is reported as ignored even under
//! `MXLAB_REQUIRE_ALL=1`: Debian 12's Node.js 18 is too old for Haraka 3, so CI on a stock
//! Debian 12 does not run it.
//!
//! The baseline must pass; the IPv6 greeting fault must have the effect the scenario's Haraka
//! xfail describes: a 421 greeting met over IPv6, then no IPv4 attempt and no delivery.

mod common;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use mxlab::events::EventKind;
use mxlab::family::Family;
use mxlab::lab::{self, RunReport};
use mxlab::report::console;
use mxlab::scenario;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

const TEST: &str =
    "haraka_delivers_the_baseline_and_meets_the_ipv6_greeting_fault_as_its_xfail_says";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Haraka driver.
fn haraka() -> SutKind {
    let path = root().join("drivers/haraka.toml");
    path.to_str()
        .expect("a UTF-8 path")
        .parse()
        .unwrap_or_else(|e| panic!("drivers/haraka.toml: {e}"))
}

fn run(file: &str, sut: &SutKind) -> Result<RunReport, Failed> {
    let scenario = scenario::load(&root().join(file)).map_err(|e| e.to_string())?;
    let report = common::runtime()
        .block_on(lab::run(&scenario, sut))
        .map_err(|e| format!("harness error: {e}"))?;
    println!(
        "{file}: {}\n{}",
        report.verdict.status,
        console::render(&report, report.verdict.status != Status::Pass)
    );
    Ok(report)
}

fn the_test(sut: SutKind) -> Result<(), Failed> {
    if sut.name() != "haraka" {
        return Err(format!("the driver is named {:?}", sut.name()).into());
    }
    let baseline = run("scenarios/baseline/dual-stack.toml", &sut)?;
    if baseline.verdict.status != Status::Pass {
        return Err(format!("the baseline is {}", baseline.verdict.status).into());
    }

    let greeting = run("scenarios/smtp/v6-greeting-421.toml", &sut)?;
    let story = console::render(&greeting, true);
    if greeting.verdict.status != Status::Xfail {
        return Err(format!("expected the scenario's Haraka XFAIL, got:\n{story}").into());
    }
    // The fault was met: mx1 greeted an IPv6 session with the 421.
    let ipv6_sessions: Vec<_> = greeting
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SmtpConnected {
                host,
                session,
                family: Family::Ipv6,
                ..
            } if host == "mx1" => Some(*session),
            _ => None,
        })
        .collect();
    let greeted_421 = greeting.events.iter().any(|e| {
        matches!(&e.kind, EventKind::SmtpReply { host, session, reply }
            if host == "mx1" && ipv6_sessions.contains(session) && reply.starts_with("421"))
    });
    if !greeted_421 {
        return Err(format!("no 421 greeting over IPv6 to Haraka:\n{story}").into());
    }
    // Its effect, as the xfail says: no IPv4 attempt to mx1, nothing delivered to it (a bounce
    // to the sender's own MX is fine).
    let tried_ipv4 = greeting.events.iter().any(|e| match &e.kind {
        EventKind::TcpSyn { host, family, .. } | EventKind::SmtpConnected { host, family, .. } => {
            host == "mx1" && *family == Family::Ipv4
        }
        _ => false,
    });
    if tried_ipv4 {
        return Err(format!("Haraka tried IPv4, unlike its xfail says:\n{story}").into());
    }
    if greeting
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::MessageAccepted { host, .. } if host == "mx1"))
    {
        return Err(format!("the message was delivered, unlike its xfail says:\n{story}").into());
    }
    Ok(())
}

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let sut = haraka();
    let trial = match sut.check_installed() {
        Err(missing) => {
            eprintln!("ignoring {TEST}: {missing}");
            let reason = missing.to_string();
            Trial::test(TEST, move || Err(reason.into())).with_ignored_flag(true)
        }
        Ok(()) => common::trial(TEST, common::needs_root("network namespaces"), move || {
            the_test(sut)
        }),
    };
    libtest_mimic::run(&args, vec![trial]).exit();
}
