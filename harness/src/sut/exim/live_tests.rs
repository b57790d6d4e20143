//! Tests against the real Exim in a real namespace. Each skips, saying why, unless it runs as
//! root on a machine where `.ci/install-deps.sh` unpacked Exim.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::events::{Event, EventKind, EventLog};
use crate::sut::common::processes_in;
use crate::sut::{OutgoingMessage, SutContext, SutError};

/// Why the live tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root (namespaces and Exim need root)".into());
    }
    check_installed().err().map(|e| e.to_string())
}

macro_rules! skip_unless_live {
    () => {
        if crate::test_support::cannot_run(module_path!(), skip_reason()) {
            return;
        }
    };
}

/// A namespace with only loopback, a resolv.conf pointing at 127.0.0.1 (nothing listens
/// there, so every lookup fails at once) and a work directory inside a private (0700) one, as
/// the lab makes it.
struct Bench {
    namespace: netns::Namespace,
    dir: tempfile::TempDir,
    resolv_conf: PathBuf,
    work_dir: PathBuf,
    log: EventLog,
}

impl Bench {
    fn new(label: &str) -> Bench {
        let namespace = netns::Namespace::create(label).expect("create a network namespace");
        let dir = tempfile::tempdir().unwrap();
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            "nameserver 127.0.0.1\noptions attempts:1 timeout:2\n",
        )
        .unwrap();
        let work_dir = dir.path().join("exim");
        std::fs::create_dir(&work_dir).unwrap();
        Bench {
            namespace,
            dir,
            resolv_conf,
            work_dir,
            log: EventLog::new(),
        }
    }

    async fn start(&self, settings: &BTreeMap<String, String>) -> Result<RunningExim, SutError> {
        Exim::start(SutContext {
            namespace: &self.namespace,
            resolv_conf: &self.resolv_conf,
            hostname: "sut.sender.test",
            work_dir: &self.work_dir,
            settings,
            route: &Default::default(),
            log: self.log.clone(),
            ca_file: None,
            timing: crate::sut::Timing::FAST_REAL,
        })
        .await
    }
}

fn log_lines(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SutLog { line } => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_defers_without_dns_kicks_and_stops_every_process() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-exim-live");
    let settings = BTreeMap::from([("remote_smtp.connect_timeout".to_string(), "3s".to_string())]);
    let exim = bench.start(&settings).await.expect("Exim starts");
    println!(
        "Exim answered 220 after {:.3} s",
        exim.startup_time().as_secs_f64()
    );
    assert!(exim.startup_time() < Duration::from_secs(3));
    let conf = std::fs::read_to_string(&exim.layout().config).unwrap();
    assert!(conf.contains("  connect_timeout = 3s\n"), "{conf}");

    let pid_namespace = exim.pid_namespace().expect("its PID namespace");
    let members = processes_in(&pid_namespace);
    println!("processes in Exim's PID namespace {pid_namespace:?}: {members:?}");
    assert!(!members.is_empty());

    let message = OutgoingMessage {
        from: "alice@sender.test".into(),
        to: vec!["bob@example.test".into()],
        content: b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: test\r\n\r\n.leading dot\r\nbody\r\n".to_vec(),
    };
    let reply = exim.inject(&message).await.expect("injection");
    assert!(reply.starts_with("250 "), "{reply}");

    let deferred = bench
        .log
        .wait_until(Duration::from_secs(10), |events| {
            log_lines(events)
                .iter()
                .any(|l| l.contains("== bob@example.test") && l.contains("defer"))
        })
        .await;
    assert!(
        deferred,
        "no deferral logged: {:#?}",
        log_lines(&bench.log.snapshot())
    );

    let queue = exim.queue().await.expect("exim -bp");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].recipients, ["bob@example.test"]);
    let reason = queue[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("host lookup"), "{reason}");
    println!("queued {}: {reason}", queue[0].id);

    // A forced queue run happens now, not at the next -q1s run.
    let before = log_lines(&bench.log.snapshot())
        .iter()
        .filter(|l| l.contains("== bob@example.test"))
        .count();
    let kicked = Instant::now();
    exim.kick().await.expect("exim -qff");
    let retried = bench
        .log
        .wait_until(Duration::from_secs(5), |events| {
            log_lines(events)
                .iter()
                .filter(|l| l.contains("== bob@example.test"))
                .count()
                > before
        })
        .await;
    assert!(retried, "no retry after the kick");
    println!(
        "kick returned and Exim retried within {:.3} s",
        kicked.elapsed().as_secs_f64()
    );

    let begun = Instant::now();
    exim.stop().await.expect("stop");
    println!("Exim stopped in {:.3} s", begun.elapsed().as_secs_f64());
    let left = processes_in(&pid_namespace);
    assert!(left.is_empty(), "Exim processes left behind: {left:?}");

    let events = bench.log.snapshot();
    for event in &events {
        println!("{event}");
    }
    let lines = log_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("daemon started")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("lost privilege")),
        "{lines:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::MessageInjected { reply: r, .. } if *r == reply)));
    assert!(events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::SutQueue { entries } if entries.len() == 1)));
    drop(bench.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_quotes_exim() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-exim-bad");
    let settings = BTreeMap::from([("no_such_option".to_string(), "1".to_string())]);
    let begun = Instant::now();
    let err = match bench.start(&settings).await {
        Ok(exim) => {
            exim.stop().await.unwrap();
            panic!("Exim started with no_such_option");
        }
        Err(err) => err,
    };
    println!(
        "refused after {:.3} s: {err}",
        begun.elapsed().as_secs_f64()
    );
    let text = err.to_string();
    assert!(text.starts_with("Exim exited"), "{text}");
    assert!(
        text.contains("no_such_option"),
        "the error quotes Exim's complaint: {text}"
    );
    assert!(begun.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_every_process() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-exim-drop");
    let exim = bench.start(&BTreeMap::new()).await.expect("Exim starts");
    let pid_namespace = exim.pid_namespace().expect("its PID namespace");
    let members = processes_in(&pid_namespace);
    assert!(!members.is_empty());
    let begun = Instant::now();
    drop(exim);
    let mut left = processes_in(&pid_namespace);
    while !left.is_empty() && begun.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
        left = processes_in(&pid_namespace);
    }
    assert!(left.is_empty(), "Exim processes left behind: {left:?}");
}
