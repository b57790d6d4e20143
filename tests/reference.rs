//! The built-in reference sender against the scenario library: the correct sender passes every
//! scenario, and every planted bug is caught *differentially*: some scenario that the correct
//! sender passes, the sender with that bug fails (FAIL, not XFAIL or ERROR). A scenario that
//! fails for the correct sender too (or is excused by an xfail) proves nothing about a bug.
//!
//! Needs root (network namespaces); without it the lab tests are reported as ignored with the
//! reason (failed under `MXLAB_REQUIRE_ALL=1`). The proof's own logic is tested without root.
//!
//! Runs share one limit of concurrent labs (`MXLAB_TEST_JOBS`, default the number of cores).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libtest_mimic::{Arguments, Failed};
use mxlab::events::{EventKind, EventLog};
use mxlab::lab::{self, RunReport};
use mxlab::scenario::{self, Scenario};
use mxlab::sut::reference::{Bug, Bugs, NetnsId, Reference};
use mxlab::sut::{OutgoingMessage, SutContext, SutKind};
use mxlab::verdict::Status;
use tokio::sync::Semaphore;

/// Labs running at once across the tests of this file.
static LABS: OnceLock<Semaphore> = OnceLock::new();

/// How many labs run at once: `MXLAB_TEST_JOBS`, or the number of cores.
fn jobs() -> usize {
    std::env::var("MXLAB_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|j| *j > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn labs() -> &'static Semaphore {
    LABS.get_or_init(|| Semaphore::new(jobs()))
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
            let _permit = labs().acquire().await.unwrap();
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

/// Each scenario's verdict status for one sender.
type Results = BTreeMap<String, Status>;

fn results(reports: &[RunReport]) -> Results {
    reports
        .iter()
        .map(|r| (r.scenario.clone(), r.verdict.status))
        .collect()
}

/// The scenarios that catch a bug: the correct sender PASSes them and the sender with the bug
/// FAILs them. XFAIL, ERROR, or a scenario the correct sender does not pass is no catch.
fn catches(correct: &Results, bug: &Results) -> Vec<String> {
    correct
        .iter()
        .filter(|(scenario, status)| {
            **status == Status::Pass && bug.get(*scenario) == Some(&Status::Fail)
        })
        .map(|(scenario, _)| scenario.clone())
        .collect()
}

/// The proof that the library catches every planted bug: each bug's catching scenarios, or
/// why the proof does not hold (no scenario at all, or a bug that nothing catches).
fn prove<'a>(
    correct: &Results,
    bugs: &'a BTreeMap<&'a str, Results>,
) -> Result<BTreeMap<&'a str, Vec<String>>, String> {
    if correct.is_empty() {
        return Err("no scenario ran: an empty library proves nothing".into());
    }
    let table: BTreeMap<&str, Vec<String>> = bugs
        .iter()
        .map(|(bug, results)| (*bug, catches(correct, results)))
        .collect();
    let uncaught: Vec<&str> = table
        .iter()
        .filter(|(_, caught)| caught.is_empty())
        .map(|(bug, _)| *bug)
        .collect();
    if uncaught.is_empty() {
        Ok(table)
    } else {
        Err(format!(
            "no scenario that the correct sender passes fails with: {}",
            uncaught.join(", ")
        ))
    }
}

/// The correct sender's reports on every scenario, run once and shared by the tests.
fn correct_reports() -> &'static [RunReport] {
    static REPORTS: OnceLock<Vec<RunReport>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        let correct = SutKind::Reference(Bugs::NONE);
        let pairs = scenarios()
            .into_iter()
            .map(|s| (s, correct.clone()))
            .collect();
        common::runtime().block_on(run_all(pairs))
    })
}

fn the_correct_reference_sender_passes_every_scenario() -> Result<(), Failed> {
    let started = Instant::now();
    let reports = correct_reports();
    println!("\nreference sender, every scenario:");
    let mut failed = Vec::new();
    for report in reports {
        println!(
            "  {:<5} {:<34} {:>6.2}s  {}",
            report.verdict.status,
            report.scenario,
            report.wall.as_secs_f64(),
            report.verdict.summary
        );
        // A declared xfail (a deviation the scenario names for the reference sender) is not a
        // failure.
        if !matches!(report.verdict.status, Status::Pass | Status::Xfail) {
            failed.push(report);
        }
    }
    println!(
        "{} runs in {:.1}s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    if reports.is_empty() {
        return Err("no scenario ran: an empty library proves nothing".into());
    }
    for report in &failed {
        println!("{}", mxlab::report::console::render(report, true));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the correct reference sender failed: {}",
            failed
                .iter()
                .map(|r| r.scenario.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into())
    }
}

/// What hunting one planted bug found: its results on the scenarios it ran, how many runs it
/// took, the slowest of them, and any run that ended in a harness error.
struct Hunt {
    results: Results,
    runs: usize,
    slowest: f64,
    errors: Vec<String>,
}

/// Runs the sender with `bug` on `passed` (scenarios the correct sender passes, in library
/// order) in waves of `jobs()` labs, and stops after the first wave with a catch: the proof
/// needs one catching scenario per bug, not the whole library. A wave always runs whole, so
/// every catch of that wave is listed.
async fn hunt(bug: Bug, passed: &[Scenario], correct: &Results) -> Hunt {
    let mut hunt = Hunt {
        results: Results::new(),
        runs: 0,
        slowest: 0.0,
        errors: Vec::new(),
    };
    for wave in passed.chunks(jobs()) {
        let sut = SutKind::Reference(Bugs::only(bug));
        let pairs = wave.iter().map(|s| (s.clone(), sut.clone())).collect();
        let reports = run_all(pairs).await;
        hunt.runs += reports.len();
        for report in &reports {
            hunt.slowest = hunt.slowest.max(report.wall.as_secs_f64());
            if report.verdict.status == Status::Error {
                hunt.errors.push(format!(
                    "{} on {}: {}",
                    report.scenario, report.sut, report.verdict.summary
                ));
            }
        }
        hunt.results.extend(results(&reports));
        if !catches(correct, &hunt.results).is_empty() {
            break;
        }
    }
    hunt
}

fn every_planted_bug_is_caught_by_a_scenario_the_correct_sender_passes() -> Result<(), Failed> {
    let correct_reports = correct_reports();
    let correct = results(correct_reports);
    let started = Instant::now();
    // Only a scenario the correct sender passes can catch a bug: hunt the bugs on those, all
    // bugs at once (the labs share one limit).
    let passed: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| correct.get(&s.name) == Some(&Status::Pass))
        .collect();
    let hunts: Vec<Hunt> = common::runtime().block_on(futures::future::join_all(
        Bug::ALL.iter().map(|bug| hunt(*bug, &passed, &correct)),
    ));
    let errors: Vec<&String> = hunts.iter().flat_map(|h| &h.errors).collect();
    if !errors.is_empty() {
        let errors: Vec<&str> = errors.iter().map(|e| e.as_str()).collect();
        return Err(format!("harness errors:\n{}", errors.join("\n")).into());
    }
    let per_bug: BTreeMap<&str, Results> = Bug::ALL
        .iter()
        .zip(&hunts)
        .map(|(bug, hunt)| (bug.name(), hunt.results.clone()))
        .collect();
    let proof = prove(&correct, &per_bug);
    println!(
        "\nplanted bug -> catching scenarios (correct sender PASS, bug FAIL; hunted in library \
         order over the {} scenarios the correct sender passes, stopping at the first catch):",
        passed.len(),
    );
    for (bug, hunt) in Bug::ALL.iter().zip(&hunts) {
        println!(
            "  {:<20} {:>3} runs  (slowest {:>5.1}s)  {}",
            bug.name(),
            hunt.runs,
            hunt.slowest,
            catches(&correct, &hunt.results).join(", ")
        );
    }
    println!(
        "{} runs in {:.1}s",
        hunts.iter().map(|h| h.runs).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    proof.map(|_| ()).map_err(Failed::from)
}

/// Results for scenarios `a`, `b`, `c` with these statuses.
fn abc(statuses: [Status; 3]) -> Results {
    ["a", "b", "c"]
        .into_iter()
        .map(String::from)
        .zip(statuses)
        .collect()
}

/// A bug switch that changes nothing gives the correct sender's results: no catch, and the
/// proof fails.
fn proof_fails_when_a_bug_switch_does_nothing() -> Result<(), Failed> {
    let correct = abc([Status::Pass, Status::Pass, Status::Xfail]);
    let mut bugs = BTreeMap::new();
    bugs.insert("does-nothing", correct.clone());
    bugs.insert("real", abc([Status::Fail, Status::Pass, Status::Xfail]));
    if !catches(&correct, &bugs["does-nothing"]).is_empty() {
        return Err("a bug that changes nothing was caught".into());
    }
    match prove(&correct, &bugs) {
        Err(reason) if reason.contains("does-nothing") && !reason.contains("real") => Ok(()),
        other => Err(format!("the proof should fail naming does-nothing: {other:?}").into()),
    }
}

/// A scenario that fails for the correct sender too, an XFAIL or an ERROR is no catch; a
/// scenario the correct sender passes and the bug fails is.
fn only_correct_pass_and_bug_fail_is_a_catch() -> Result<(), Failed> {
    // As for scenarios/tls/v6-oversized-chain-pmtu.toml: excused for the correct sender only.
    let correct = abc([Status::Xfail, Status::Pass, Status::Pass]);
    let bug = abc([Status::Fail, Status::Xfail, Status::Error]);
    if !catches(&correct, &bug).is_empty() {
        return Err(format!("no catch expected: {:?}", catches(&correct, &bug)).into());
    }
    let bug = abc([Status::Fail, Status::Fail, Status::Pass]);
    if catches(&correct, &bug) != ["b"] {
        return Err(format!("only b catches: {:?}", catches(&correct, &bug)).into());
    }
    let mut bugs = BTreeMap::new();
    bugs.insert("b-bug", bug);
    match prove(&correct, &bugs) {
        Ok(table) if table["b-bug"] == ["b"] => Ok(()),
        other => Err(format!("the proof should hold with b: {other:?}").into()),
    }
}

/// No scenario at all proves nothing.
fn proof_fails_on_an_empty_scenario_set() -> Result<(), Failed> {
    let bugs: BTreeMap<&str, Results> = BTreeMap::new();
    match prove(&Results::new(), &bugs) {
        Err(_) => Ok(()),
        Ok(table) => Err(format!("an empty library proved {table:?}").into()),
    }
}

/// The sender's DNS query reaches a socket bound *inside* the SUT namespace, on the
/// namespace's own loopback: its sockets are made in that namespace, not the harness's.
async fn every_socket_is_made_inside_the_sut_namespace() {
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

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let root = common::needs_root("network namespaces");
    let trials = vec![
        common::trial(
            "proof::fails_when_a_bug_switch_does_nothing",
            None,
            proof_fails_when_a_bug_switch_does_nothing,
        ),
        common::trial(
            "proof::only_correct_pass_and_bug_fail_is_a_catch",
            None,
            only_correct_pass_and_bug_fail_is_a_catch,
        ),
        common::trial(
            "proof::fails_on_an_empty_scenario_set",
            None,
            proof_fails_on_an_empty_scenario_set,
        ),
        common::trial(
            "the_correct_reference_sender_passes_every_scenario",
            root.clone(),
            the_correct_reference_sender_passes_every_scenario,
        ),
        common::trial(
            "every_planted_bug_is_caught_by_a_scenario_the_correct_sender_passes",
            root.clone(),
            every_planted_bug_is_caught_by_a_scenario_the_correct_sender_passes,
        ),
        common::trial(
            "every_socket_is_made_inside_the_sut_namespace",
            root,
            || {
                common::runtime().block_on(every_socket_is_made_inside_the_sut_namespace());
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
