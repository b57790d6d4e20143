//! What the live tests of the built-in drivers share: a bench to start the real MTA on, what
//! they need to run, and the checks every driver must pass (a refused start within 5 s, every process
//! gone when the handle is dropped).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::events::{Event, EventKind, EventLog};
use crate::sut::common::processes_in;
use crate::sut::{RunningSut, SutContext, SutError, SutRoute};

/// Fails the live test of `sut` unless it can run here: as root, with `installed` (the
/// driver's install check) passed. Each live test also carries `#[test_with::root()]` and
/// `#[test_with::file(BINARY)]`, so it is listed as ignored where it was compiled without them.
pub(crate) fn require_live(sut: &str, installed: Result<(), SutError>) {
    crate::test_support::require_root(&format!("namespaces and {sut}"));
    crate::test_support::require(installed.err().map(|e| e.to_string()));
}

/// A namespace with only loopback, a resolv.conf pointing at 127.0.0.1 (nothing listens
/// there, so every lookup fails at once) and a work directory inside a private (0700) one, as
/// the lab makes it.
pub(crate) struct Bench {
    namespace: netns::Namespace,
    /// The private directory; drop it last.
    pub(crate) dir: tempfile::TempDir,
    resolv_conf: PathBuf,
    work_dir: PathBuf,
    route: SutRoute,
    /// The run's event log.
    pub(crate) log: EventLog,
}

impl Bench {
    /// A bench whose network namespace is labelled `label`, with the work directory `work`.
    pub(crate) fn new(label: &str, work: &str) -> Bench {
        let namespace = netns::Namespace::create(label).expect("create a network namespace");
        let dir = tempfile::tempdir().unwrap();
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            "nameserver 127.0.0.1\noptions attempts:1 timeout:2\n",
        )
        .unwrap();
        let work_dir = dir.path().join(work);
        std::fs::create_dir(&work_dir).unwrap();
        Bench {
            namespace,
            dir,
            resolv_conf,
            work_dir,
            route: SutRoute::default(),
            log: EventLog::new(),
        }
    }

    /// What a driver needs to start here with `settings`, on the real clock with retuned
    /// timers, as `sut.sender.test`.
    pub(crate) fn context<'a>(&'a self, settings: &'a BTreeMap<String, String>) -> SutContext<'a> {
        SutContext {
            namespace: &self.namespace,
            resolv_conf: &self.resolv_conf,
            hostname: "sut.sender.test",
            work_dir: &self.work_dir,
            settings,
            route: &self.route,
            log: self.log.clone(),
            ca_file: None,
            timing: crate::sut::Timing::FAST_REAL,
        }
    }
}

/// The SUT log lines among `events`.
pub(crate) fn log_lines(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SutLog { line } => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

/// Awaits `start`, which must fail within 5 s (if it starts, it is stopped and the test fails
/// with `started`), and returns the error's text.
pub(crate) async fn refusal<R: RunningSut + 'static>(
    start: impl Future<Output = Result<R, SutError>>,
    started: &str,
) -> String {
    let begun = Instant::now();
    let err = match start.await {
        Ok(running) => {
            Box::new(running).stop().await.unwrap();
            panic!("{started}");
        }
        Err(err) => err,
    };
    println!(
        "refused after {:.3} s: {err}",
        begun.elapsed().as_secs_f64()
    );
    assert!(begun.elapsed() < Duration::from_secs(5));
    err.to_string()
}

/// Drops `running` and checks that every process of `sut` in its PID namespace is gone within
/// 2 s.
pub(crate) fn assert_dropping_kills_every_process(sut: &str, running: impl RunningSut) {
    let pid_namespace = running.pid_namespace().expect("its PID namespace");
    assert!(!processes_in(&pid_namespace).is_empty());
    let begun = Instant::now();
    drop(running);
    // Give the kernel a moment in case it is still tearing the PID namespace down.
    let mut left = processes_in(&pid_namespace);
    while !left.is_empty() && begun.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
        left = processes_in(&pid_namespace);
    }
    println!(
        "PID namespace empty {:.3} s after drop started",
        begun.elapsed().as_secs_f64()
    );
    assert!(left.is_empty(), "{sut} processes left behind: {left:?}");
}

/// Stops `running` and checks that no process of `sut` is left in `pid_namespace`.
pub(crate) async fn assert_stop_ends_every_process(
    sut: &str,
    running: impl RunningSut + 'static,
    pid_namespace: &Path,
) {
    let begun = Instant::now();
    Box::new(running).stop().await.expect("stop");
    println!("{sut} stopped in {:.3} s", begun.elapsed().as_secs_f64());
    let left = processes_in(pid_namespace);
    assert!(left.is_empty(), "{sut} processes left behind: {left:?}");
}

/// Prints the events of `log` and checks that they record the injection the SUT answered
/// with `reply` and a queue listing of one message; returns them.
pub(crate) fn assert_injection_and_queue_recorded(log: &EventLog, reply: &str) -> Vec<Event> {
    let events = log.snapshot();
    for event in &events {
        println!("{event}");
    }
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::MessageInjected { reply: r, .. } if r == reply)));
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::SutQueue { entries } if entries.len() == 1)));
    events
}
