//! The built-in reference sender against the scenario library: the correct sender passes every
//! scenario, and every planted bug makes at least one scenario fail. Needs root (network
//! namespaces); without it every test prints why it is skipped and passes.
//!
//! Runs share one limit of concurrent labs (`MXLAB_TEST_JOBS`, default 6), so the whole file
//! takes about as long as its slowest few scenarios times the number of runs over the limit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mxlab::events::{EventKind, EventLog};
use mxlab::lab::{self, RunReport};
use mxlab::scenario::{self, Scenario};
use mxlab::sut::reference::{Bug, Bugs, NetnsId, Reference};
use mxlab::sut::{OutgoingMessage, SutContext, SutKind};
use mxlab::verdict::Status;
use tokio::sync::Semaphore;

/// Labs running at once across the tests of this file.
static LABS: Semaphore = Semaphore::const_new(0);
static LABS_INIT: std::sync::Once = std::sync::Once::new();

fn jobs() -> usize {
    std::env::var("MXLAB_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|j| *j > 0)
        .unwrap_or(6)
}

fn can_run(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        LABS_INIT.call_once(|| LABS.add_permits(jobs()));
        true
    } else {
        eprintln!("skipping {test}: needs root (network namespaces)");
        false
    }
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// The library's scenarios.
fn scenarios() -> Vec<Scenario> {
    let files = scenario::find_scenarios(&[scenario_dir()]).unwrap();
    files
        .iter()
        .map(|f| scenario::load(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Runs every (scenario, sut) pair, at most `jobs()` labs at once, and returns the reports in
/// the order given. A lab error panics with the scenario's name.
async fn run_all(pairs: Vec<(Scenario, SutKind)>) -> Vec<RunReport> {
    let mut reports: Vec<(usize, RunReport)> = futures::stream::iter(pairs.into_iter().enumerate())
        .map(|(i, (scenario, sut))| async move {
            let _permit = LABS.acquire().await.unwrap();
            let report = lab::run(&scenario, &sut)
                .await
                .unwrap_or_else(|e| panic!("{} on {sut}: {e}", scenario.name));
            (i, report)
        })
        .buffer_unordered(usize::MAX)
        .collect()
        .await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, report)| report).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_reference_sender_passes_every_scenario() {
    if !can_run("the_correct_reference_sender_passes_every_scenario") {
        return;
    }
    let started = Instant::now();
    let correct = SutKind::Reference(Bugs::NONE);
    let pairs = scenarios()
        .into_iter()
        .map(|s| (s, correct.clone()))
        .collect();
    let reports = run_all(pairs).await;
    println!("\nreference sender, every scenario:");
    let mut failed = Vec::new();
    for report in &reports {
        println!(
            "  {:<5} {:<34} {:>6.2}s  {}",
            report.verdict.status,
            report.scenario,
            report.wall.as_secs_f64(),
            report.verdict.summary
        );
        // A declared xfail (e.g. no STARTTLS in the reference sender) is not a failure.
        if !matches!(report.verdict.status, Status::Pass | Status::Xfail) {
            failed.push(report);
        }
    }
    println!(
        "{} runs in {:.1}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    for report in &failed {
        println!("{}", mxlab::report::console::render(report, true));
    }
    assert!(
        failed.is_empty(),
        "the correct reference sender failed: {}",
        failed
            .iter()
            .map(|r| r.scenario.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_bug_fails_at_least_one_scenario() {
    if !can_run("every_planted_bug_fails_at_least_one_scenario") {
        return;
    }
    let started = Instant::now();
    let scenarios = scenarios();
    let mut pairs = Vec::new();
    for bug in Bug::ALL {
        for scenario in &scenarios {
            pairs.push((scenario.clone(), SutKind::Reference(Bugs::only(bug))));
        }
    }
    let reports = run_all(pairs).await;
    let mut caught: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut slowest: BTreeMap<&str, f64> = BTreeMap::new();
    for (report, bug) in reports.iter().zip(
        Bug::ALL
            .iter()
            .flat_map(|b| std::iter::repeat_n(*b, scenarios.len())),
    ) {
        let entry = caught.entry(bug.name()).or_default();
        let wall = slowest.entry(bug.name()).or_default();
        *wall = wall.max(report.wall.as_secs_f64());
        if report.verdict.status == Status::Fail {
            entry.push(report.scenario.clone());
        }
        assert_ne!(
            report.verdict.status,
            Status::Error,
            "{} on {}: {}",
            report.scenario,
            report.sut,
            report.verdict.summary
        );
    }
    println!(
        "\nplanted bug -> scenarios that fail (of {}):",
        scenarios.len()
    );
    for bug in Bug::ALL {
        let failing = &caught[bug.name()];
        println!(
            "  {:<20} {:>2}  (slowest run {:>5.1}s)  {}",
            bug.name(),
            failing.len(),
            slowest[bug.name()],
            failing.join(", ")
        );
    }
    println!(
        "{} runs in {:.1}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    let uncaught: Vec<&str> = Bug::ALL
        .iter()
        .map(|b| b.name())
        .filter(|name| caught[name].is_empty())
        .collect();
    assert!(uncaught.is_empty(), "no scenario catches: {uncaught:?}");
}

/// The sender's DNS query reaches a socket bound *inside* the SUT namespace, on the
/// namespace's own loopback: its sockets are made in that namespace, not the harness's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_is_made_inside_the_sut_namespace() {
    if !can_run("every_socket_is_made_inside_the_sut_namespace") {
        return;
    }
    let namespace = netns::Namespace::create("mxlab-reference-test").unwrap();
    let inside = NetnsId::of_namespace_fd(namespace.fd()).unwrap();
    assert_ne!(inside, NetnsId::of_current_thread().unwrap());
    // A name server on 127.0.0.1:53 of the test namespace only.
    let server = namespace
        .run(|| UdpSocket::bind("127.0.0.1:53"))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let resolv_conf = work.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let log = EventLog::new();
    let settings = BTreeMap::new();
    let sender = Reference::start(
        SutContext {
            namespace: &namespace,
            resolv_conf: &resolv_conf,
            hostname: "sut.sender.test",
            work_dir: work.path(),
            settings: &settings,
            route: &Default::default(),
            log: log.clone(),
            ca_file: None,
            timing: mxlab::sut::Timing::FAST_REAL,
        },
        Bugs::NONE,
    )
    .await
    .unwrap();
    assert_eq!(sender.netns(), inside);
    let reply = sender.inject(&OutgoingMessage {
        from: "alice@sender.test".into(),
        to: vec!["bob@example.test".into()],
        content: b"Subject: x\r\n\r\nhi\r\n".to_vec(),
    });
    assert_eq!(reply, "250 2.0.0 queued as 1");
    let (query, client) = tokio::task::spawn_blocking(move || {
        let mut buffer = [0u8; 512];
        let (n, client) = server
            .recv_from(&mut buffer)
            .expect("the sender's DNS query reaches the namespace's own loopback");
        (buffer[..n].to_vec(), client)
    })
    .await
    .unwrap();
    assert!(client.ip().is_loopback());
    let message = hickory_proto::op::Message::from_vec(&query).unwrap();
    assert_eq!(message.queries[0].name().to_ascii(), "example.test.");
    assert_eq!(
        message.queries[0].query_type(),
        hickory_proto::rr::RecordType::MX
    );
    // Unanswered, the lookup fails and the message is deferred.
    let deferred = log
        .wait_until(Duration::from_secs(5), |events| {
            events.iter().any(|e| {
                matches!(&e.kind, EventKind::SutLog { line } if line.contains("deferred <bob@example.test>"))
            })
        })
        .await;
    assert!(deferred, "{:#?}", log.snapshot());
    let queue = sender.queue();
    assert_eq!(queue.len(), 1);
    assert!(queue[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("MX lookup for example.test failed"));
    sender.stop().await;
    let lines: BTreeSet<String> = log
        .snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::SutLog { line } => Some(line),
            _ => None,
        })
        .collect();
    assert!(lines.contains("reference: stopped with 1 message in the queue"));
}
