//! Example: a scenario written in Rust with `ScenarioBuilder`, run against Postfix like any
//! scenario file. Needs root and Postfix; otherwise it is reported as ignored with the reason
//! (failed under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::time::Duration;

use mxlab::clock::ClockRate;
use mxlab::family::Family;
use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario::{NetFault, Outcome, ScenarioBuilder};
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

async fn an_mx_that_resets_ipv6_connections_makes_postfix_use_ipv4() {
    let scenario = ScenarioBuilder::new("example/v6-reset", "IPv6 connections to mx1 are reset")
        // The refusal is immediate: on the real clock `within` measures Postfix, not how far an
        // accelerated clock multiplies a loaded machine's scheduling delays.
        .clock(ClockRate::REAL)
        .mx("mx1", "example.test", 10)
        .net_fault("mx1", Some(Family::Ipv6), NetFault::Reset)
        .sut_setting("postfix", "smtp_address_preference", "ipv6")
        .message("alice@sender.test", &["bob@example.test"])
        .outcome(Outcome::Delivered)
        .via(Family::Ipv4)
        .tried(&[Family::Ipv6])
        .within(Duration::from_secs(5))
        .build()
        .expect("a valid scenario");
    let report = lab::run(&scenario, &SutKind::Postfix)
        .await
        .expect("the lab runs");
    assert_eq!(
        report.verdict.status,
        Status::Pass,
        "{}",
        console::render(&report, true)
    );
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = common::needs_root("network namespaces").or_else(|| {
        SutKind::Postfix
            .check_installed()
            .err()
            .map(|e| e.to_string())
    });
    let trials = vec![common::trial(
        "an_mx_that_resets_ipv6_connections_makes_postfix_use_ipv4",
        reason.clone(),
        || {
            common::runtime().block_on(an_mx_that_resets_ipv6_connections_makes_postfix_use_ipv4());
            Ok(())
        },
    )];
    libtest_mimic::run(&args, trials).exit();
}
