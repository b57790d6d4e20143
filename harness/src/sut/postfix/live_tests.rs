//! Tests against the real Postfix in a real namespace. Each skips, saying why, unless it runs
//! as root on a machine with Postfix installed (`.ci/install-deps.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::events::{Event, EventKind, EventLog};
use crate::sut::{OutgoingMessage, SutContext, SutError};

/// Why the live tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root (namespaces and Postfix need root)".into());
    }
    for path in [POSTFIX, POSTQUEUE, STOCK_MASTER_CF] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing: run .ci/install-deps.sh"));
        }
    }
    None
}

macro_rules! skip_unless_live {
    () => {
        if crate::test_support::cannot_run(module_path!(), skip_reason()) {
            return;
        }
    };
}

/// A namespace with only loopback, a resolv.conf pointing at 127.0.0.1 (nothing listens
/// there, so every lookup fails at once) and a work directory.
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
        let work_dir = dir.path().join("work");
        std::fs::create_dir(&work_dir).unwrap();
        Bench {
            namespace,
            dir,
            resolv_conf,
            work_dir,
            log: EventLog::new(),
        }
    }

    async fn start(&self, settings: &BTreeMap<String, String>) -> Result<RunningPostfix, SutError> {
        Postfix::start(SutContext {
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

/// Host PIDs of the processes in the PID namespace named by `ns` (a `pid:[inode]` link text).
fn processes_in(ns: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid"))
            .ok()
            .as_deref()
            == Some(ns)
        {
            pids.push(pid);
        }
    }
    pids
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
async fn starts_fast_defers_without_dns_and_stops_every_process() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-postfix-live");
    let settings = BTreeMap::from([("queue_run_delay".to_string(), "2s".to_string())]);
    let postfix = bench.start(&settings).await.expect("Postfix starts");
    println!(
        "Postfix answered 220 after {:.3} s",
        postfix.startup_time().as_secs_f64()
    );
    assert!(postfix.startup_time() < Duration::from_secs(3));

    // Postfix itself reads the generated configuration as intended.
    let conf = &postfix.layout().conf;
    let postconf = |args: &[&str]| {
        let out = std::process::Command::new("/usr/sbin/postconf")
            .arg("-c")
            .arg(conf)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(postconf(&["-h", "queue_run_delay"]).trim(), "2s");
    assert_eq!(postconf(&["-h", "mydomain"]).trim(), "sender.test");
    assert_eq!(postconf(&["-h", "disable_dns_lookups"]).trim(), "no");
    let services = postconf(&["-M"]);
    assert!(services.contains("127.0.0.1:2525 inet"), "{services}");
    assert!(!services.contains("\nsmtp       inet"), "{services}");
    assert!(
        services.lines().all(|l| l
            .split_whitespace()
            .nth(4)
            .is_none_or(|chroot| chroot == "n")),
        "{services}"
    );

    let pid_namespace = postfix.pid_namespace().expect("its PID namespace");
    let members = processes_in(&pid_namespace);
    println!("processes in Postfix's PID namespace {pid_namespace:?}: {members:?}");
    assert!(
        members.len() >= 3,
        "master, qmgr, pickup, postlogd expected"
    );

    let message = OutgoingMessage {
        from: "alice@sender.test".into(),
        to: vec!["bob@example.test".into()],
        content: b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: test\r\n\r\n.leading dot\r\nbody\r\n".to_vec(),
    };
    let reply = postfix.inject(&message).await.expect("injection");
    assert!(reply.starts_with("250 "), "{reply}");

    let deferred = bench
        .log
        .wait_until(Duration::from_secs(10), |events| {
            log_lines(events)
                .iter()
                .any(|l| l.contains("to=<bob@example.test>") && l.contains("status=deferred"))
        })
        .await;
    assert!(
        deferred,
        "no deferral logged: {:#?}",
        log_lines(&bench.log.snapshot())
    );

    let queue = postfix.queue().await.expect("postqueue -j");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].recipients, ["bob@example.test"]);
    let reason = queue[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("example.test"), "{reason}");
    println!("queued {}: {reason}", queue[0].id);
    postfix.kick().await.expect("postqueue -f");

    let begun = Instant::now();
    postfix.stop().await.expect("stop");
    println!("Postfix stopped in {:.3} s", begun.elapsed().as_secs_f64());
    let left = processes_in(&pid_namespace);
    assert!(left.is_empty(), "Postfix processes left behind: {left:?}");
    for pid in members {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || !processes_in(&pid_namespace).contains(&pid)
        );
    }

    let events = bench.log.snapshot();
    for event in &events {
        println!("{event}");
    }
    let lines = log_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("daemon started")),
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
async fn a_refused_start_quotes_postfix() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-postfix-bad");
    let settings = BTreeMap::from([("inet_protocols".to_string(), "bogus".to_string())]);
    let begun = Instant::now();
    let err = match bench.start(&settings).await {
        Ok(postfix) => {
            postfix.stop().await.unwrap();
            panic!("Postfix started with inet_protocols = bogus");
        }
        Err(err) => err,
    };
    println!(
        "refused after {:.3} s: {err}",
        begun.elapsed().as_secs_f64()
    );
    let text = err.to_string();
    assert!(text.starts_with("Postfix"), "{text}");
    assert!(
        text.contains("bogus"),
        "the error quotes Postfix's complaint: {text}"
    );
    assert!(begun.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_every_process() {
    skip_unless_live!();
    let bench = Bench::new("mxlab-test-postfix-drop");
    let postfix = bench.start(&BTreeMap::new()).await.expect("Postfix starts");
    let pid_namespace = postfix.pid_namespace().expect("its PID namespace");
    assert!(!processes_in(&pid_namespace).is_empty());
    let begun = Instant::now();
    drop(postfix);
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
    assert!(left.is_empty(), "Postfix processes left behind: {left:?}");
}
