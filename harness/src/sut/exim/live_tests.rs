//! Tests against the real Exim in a real namespace. Each skips, saying why, unless it runs as
//! root on a machine where `.ci/install-deps.sh` unpacked Exim.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::sut::common::processes_in;
use crate::sut::live_bench::{
    assert_dropping_kills_every_process, assert_injection_and_queue_recorded,
    assert_stop_ends_every_process, log_lines, refusal, require_live, Bench,
};
use crate::sut::OutgoingMessage;

#[test_with::root()]
#[test_with::file(/opt/mxlab/exim/usr/sbin/exim4)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_defers_without_dns_kicks_and_stops_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-exim-live", "exim");
    let settings = BTreeMap::from([("remote_smtp.connect_timeout".to_string(), "3s".to_string())]);
    let exim = Exim::start(bench.context(&settings))
        .await
        .expect("Exim starts");
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

    assert_stop_ends_every_process("Exim", exim, &pid_namespace).await;

    let events = assert_injection_and_queue_recorded(&bench.log, &reply);
    let lines = log_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("daemon started")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("lost privilege")),
        "{lines:#?}"
    );
    drop(bench.dir);
}

#[test_with::root()]
#[test_with::file(/opt/mxlab/exim/usr/sbin/exim4)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_quotes_exim() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-exim-bad", "exim");
    let settings = BTreeMap::from([("no_such_option".to_string(), "1".to_string())]);
    let text = refusal(
        Exim::start(bench.context(&settings)),
        "Exim started with no_such_option",
    )
    .await;
    assert!(text.starts_with("Exim exited"), "{text}");
    assert!(
        text.contains("no_such_option"),
        "the error quotes Exim's complaint: {text}"
    );
}

#[test_with::root()]
#[test_with::file(/opt/mxlab/exim/usr/sbin/exim4)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-exim-drop", "exim");
    let exim = Exim::start(bench.context(&BTreeMap::new()))
        .await
        .expect("Exim starts");
    assert_dropping_kills_every_process("Exim", exim);
}
