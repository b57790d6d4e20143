//! Example: a scenario written in Rust with `ScenarioBuilder`, run against Postfix like any
//! scenario file. Needs root and Postfix; otherwise it prints why it is skipped.

use std::time::Duration;

use mxlab::family::Family;
use mxlab::lab;
use mxlab::report::console;
use mxlab::scenario::ScenarioBuilder;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_that_resets_ipv6_connections_makes_postfix_use_ipv4() {
    if !nix::unistd::geteuid().is_root() || SutKind::Postfix.check_installed().is_err() {
        eprintln!("skipping: needs root and Postfix (run .ci/install-deps.sh as root)");
        return;
    }
    let scenario = ScenarioBuilder::new("example/v6-reset", "IPv6 connections to mx1 are reset")
        .mx("mx1", "example.test", 10)
        .net_fault("mx1", Some(Family::Ipv6), "reset")
        .sut_setting("postfix", "smtp_address_preference", "ipv6")
        .message("alice@sender.test", &["bob@example.test"])
        .expect("delivered")
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
