//! The accelerated world clock, proven on a real Postfix with its stock timers: its 30 s
//! `smtp_connect_timeout` lasts 30 s of MTA time at every rate (so the clock scales, not a
//! retuned timer), the verdict's `within` is judged in MTA time, and an MTA process that
//! escapes the clock turns the run into an ERROR instead of a verdict.
//!
//! Tests that cannot run here (not root, Postfix or libfaketime missing) are reported as
//! ignored with the reason (failed under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::path::Path;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed};
use mxlab::clock::ClockRate;
use mxlab::events::EventKind;
use mxlab::family::Family;
use mxlab::lab::{self, RunOptions, RunReport};
use mxlab::report::console;
use mxlab::scenario::{self, Scenario};
use mxlab::sut::{SutKind, Timeouts};
use mxlab::verdict::Status;

/// An IPv6 black hole in front of the only MX: Postfix, preferring IPv6, waits out its
/// connect timeout before it tries IPv4.
const BLACKHOLE: &str = r#"
description = "IPv6 to the only MX is black-holed"
[[mx]]
name = "mx1"
domain = "example.test"
[[fault]]
on = "mx1"
family = "ipv6"
net = "blackhole"
[sut.postfix]
smtp_address_preference = "ipv6"
[[message]]
to = ["bob@example.test"]
[expect]
outcome = "delivered"
via = "ipv4"
tried = ["ipv6"]
within = "10m"
"#;

/// Postfix's stock `smtp_connect_timeout`.
const STOCK_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// [`BLACKHOLE`] with more `[sut.postfix]` settings.
fn scenario(postfix_settings: &str) -> Scenario {
    let text = BLACKHOLE.replace(
        "[sut.postfix]\n",
        &format!("[sut.postfix]\n{postfix_settings}"),
    );
    scenario::parse(Path::new("clock.toml"), &text).expect("the test scenario parses")
}

fn run(scenario: &Scenario, clock: ClockRate) -> Result<RunReport, Failed> {
    let options = RunOptions {
        clock: Some(clock),
        timeouts: Timeouts::Stock,
        ..RunOptions::default()
    };
    common::runtime()
        .block_on(lab::run_with(scenario, &SutKind::Postfix, &options))
        .map_err(|err| Failed::from(format!("harness error: {err}")))
}

/// Wall time from the first IPv6 SYN to the first IPv4 SYN: how long Postfix gave IPv6.
fn gave_ipv6(report: &RunReport) -> Result<Duration, Failed> {
    let first_syn = |wanted: Family| {
        report.events.iter().find_map(|event| match &event.kind {
            EventKind::TcpSyn { family, .. } if *family == wanted => Some(event.at),
            _ => None,
        })
    };
    match (first_syn(Family::Ipv6), first_syn(Family::Ipv4)) {
        (Some(v6), Some(v4)) if v4 > v6 => Ok(v4 - v6),
        _ => Err(format!(
            "no IPv6 SYN followed by an IPv4 SYN:\n{}",
            console::render(report, true)
        )
        .into()),
    }
}

/// The connect timeout lasts 30 s of MTA time at x10 and at x100, i.e. 3 s and 0.3 s of wall
/// time: the MTA's own stock timer runs on the scaled clock.
fn the_stock_connect_timeout_lasts_30s_of_mta_time_at_every_rate() -> Result<(), Failed> {
    let scenario = scenario("");
    let mut seen = Vec::new();
    for clock in [ClockRate::new(10)?, ClockRate::DEFAULT] {
        let report = run(&scenario, clock)?;
        if report.verdict.status != Status::Pass {
            return Err(console::render(&report, true).into());
        }
        let wall = gave_ipv6(&report)?;
        let world = clock.to_world(wall);
        seen.push(format!("{clock}: {wall:?} wall = {world:?} MTA time"));
        // 30 s, plus scheduling slack that the rate multiplies; never less than 30 s.
        let slack = Duration::from_secs(10);
        if world < STOCK_CONNECT_TIMEOUT || world > STOCK_CONNECT_TIMEOUT + slack {
            return Err(format!(
                "at {clock} Postfix gave IPv6 {wall:?} of wall time = {world:?} of MTA time, \
                 not its 30 s connect timeout"
            )
            .into());
        }
    }
    println!("IPv6 black hole, Postfix stock: {}", seen.join("; "));
    Ok(())
}

/// `within` is MTA time: the 30 s connect timeout fits "10m" but not "20s", although the
/// whole run takes well under a second of wall time at x100.
fn within_is_judged_in_mta_time() -> Result<(), Failed> {
    let tight = scenario::parse(
        Path::new("clock.toml"),
        &BLACKHOLE.replace("within = \"10m\"", "within = \"20s\""),
    )?;
    let report = run(&tight, ClockRate::DEFAULT)?;
    let failed: Vec<&str> = report
        .verdict
        .failures
        .iter()
        .map(|failure| failure.expectation.as_str())
        .collect();
    if report.verdict.status != Status::Fail || failed != ["within = \"20s\""] {
        return Err(format!(
            "expected only `within = \"20s\"` to fail, got {:?} ({failed:?}):\n{}",
            report.verdict.status,
            console::render(&report, true)
        )
        .into());
    }
    println!("{}", report.verdict.failures[0].reason);
    Ok(())
}

/// A Postfix whose daemons do not import libfaketime's variables runs on the wall clock: no
/// verdict, an ERROR that names an escaped Postfix process and the fix.
fn an_mta_process_off_the_clock_is_an_error_not_a_verdict() -> Result<(), Failed> {
    let scenario = scenario("import_environment = \"MAIL_CONFIG MAIL_DEBUG TZ\"\n");
    let report = run(&scenario, ClockRate::DEFAULT)?;
    let summary = &report.verdict.summary;
    if report.verdict.status != Status::Error
        || !summary.contains("did not run on the accelerated clock")
        || !summary.contains("postfix")
        || !summary.contains("Fix:")
    {
        return Err(format!(
            "expected an ERROR naming an escaped postfix process, got {:?}: {summary}",
            report.verdict.status
        )
        .into());
    }
    println!("{summary}");
    Ok(())
}

/// One of this file's tests.
type ClockTest = fn() -> Result<(), Failed>;

/// Why these tests cannot run on this machine, if they cannot.
fn cannot_run() -> Option<String> {
    if let Some(reason) = common::needs_root("network namespaces") {
        return Some(reason);
    }
    if let Err(err) = SutKind::Postfix.check_installed() {
        return Some(err.to_string());
    }
    mxlab::sut::faketime::check_installed("the world clock")
        .err()
        .map(|err| err.to_string())
}

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let skip = cannot_run();
    let tests: [(&str, ClockTest); 3] = [
        (
            "the_stock_connect_timeout_lasts_30s_of_mta_time_at_every_rate",
            the_stock_connect_timeout_lasts_30s_of_mta_time_at_every_rate,
        ),
        ("within_is_judged_in_mta_time", within_is_judged_in_mta_time),
        (
            "an_mta_process_off_the_clock_is_an_error_not_a_verdict",
            an_mta_process_off_the_clock_is_an_error_not_a_verdict,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| common::trial(name, skip.clone(), test))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
