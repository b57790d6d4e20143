//! Tests against the real OpenSMTPD in a real namespace. Each skips, saying why, unless it
//! runs as root on a machine where `.ci/install-deps.sh` unpacked OpenSMTPD.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::events::Event;
use crate::sut::common::processes_in;
use crate::sut::live_bench::{
    assert_dropping_kills_every_process, assert_injection_and_queue_recorded,
    assert_stop_ends_every_process, log_lines, refusal, require_live, Bench,
};
use crate::sut::OutgoingMessage;

fn tempfails(events: &[Event]) -> usize {
    log_lines(events)
        .iter()
        .filter(|l| l.contains("to=<bob@example.test>") && l.contains("result=\"TempFail\""))
        .count()
}

#[test_with::root()]
#[test_with::file(/opt/mxlab/opensmtpd/usr/sbin/smtpd)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_defers_without_dns_kicks_and_stops_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-opensmtpd-live", "opensmtpd");
    let settings = BTreeMap::from([("queue".to_string(), "ttl 2h".to_string())]);
    let smtpd = Opensmtpd::start(bench.context(&settings))
        .await
        .expect("OpenSMTPD starts");
    println!(
        "OpenSMTPD answered 220 after {:.3} s",
        smtpd.startup_time().as_secs_f64()
    );
    assert!(smtpd.startup_time() < Duration::from_secs(3));
    let conf = std::fs::read_to_string(&smtpd.layout().config).unwrap();
    assert!(conf.contains("queue ttl 2h\n"), "{conf}");
    // The instance's spool is the private one, not the machine's.
    assert!(smtpd.layout().spool.join("queue").is_dir());

    let pid_namespace = smtpd.pid_namespace().expect("its PID namespace");
    let members = processes_in(&pid_namespace);
    println!("processes in OpenSMTPD's PID namespace {pid_namespace:?}: {members:?}");
    assert!(members.len() >= 6, "smtpd and its five helpers expected");

    let message = OutgoingMessage {
        from: "alice@sender.test".into(),
        to: vec!["bob@example.test".into()],
        content: b"From: alice@sender.test\r\nTo: bob@example.test\r\nSubject: test\r\n\r\n.leading dot\r\nbody\r\n".to_vec(),
    };
    let reply = smtpd.inject(&message).await.expect("injection");
    assert!(reply.starts_with("250 "), "{reply}");

    let deferred = bench
        .log
        .wait_until(Duration::from_secs(10), |events| tempfails(events) > 0)
        .await;
    assert!(
        deferred,
        "no deferral logged: {:#?}",
        log_lines(&bench.log.snapshot())
    );

    let queue = smtpd.queue().await.expect("smtpctl show queue");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].recipients, ["bob@example.test"]);
    let reason = queue[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("MX lookup"), "{reason}");
    println!("queued {}: {reason}", queue[0].id);

    // The next retry would come after 400 s; the kick makes it happen now.
    let before = tempfails(&bench.log.snapshot());
    let kicked = Instant::now();
    smtpd.kick().await.expect("smtpctl schedule all");
    let retried = bench
        .log
        .wait_until(Duration::from_secs(5), |events| tempfails(events) > before)
        .await;
    assert!(retried, "no retry after the kick");
    println!(
        "kick: retried within {:.3} s",
        kicked.elapsed().as_secs_f64()
    );

    assert_stop_ends_every_process("OpenSMTPD", smtpd, &pid_namespace).await;

    let events = assert_injection_and_queue_recorded(&bench.log, &reply);
    let lines = log_lines(&events);
    assert!(lines.iter().any(|l| l.contains("starting")), "{lines:#?}");
    drop(bench.dir);
}

#[test_with::root()]
#[test_with::file(/opt/mxlab/opensmtpd/usr/sbin/smtpd)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_quotes_opensmtpd() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-opensmtpd-bad", "opensmtpd");
    let settings = BTreeMap::from([("bogus".to_string(), "directive".to_string())]);
    let text = refusal(
        Opensmtpd::start(bench.context(&settings)),
        "OpenSMTPD started with a bogus directive",
    )
    .await;
    assert!(
        text.starts_with("OpenSMTPD: bad setting \"bogus\""),
        "the error names the setting that wrote the refused line: {text}"
    );
    assert!(
        text.contains("syntax error"),
        "the error quotes OpenSMTPD's complaint: {text}"
    );
}

#[test_with::root()]
#[test_with::file(/opt/mxlab/opensmtpd/usr/sbin/smtpd)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-opensmtpd-drop", "opensmtpd");
    let smtpd = Opensmtpd::start(bench.context(&BTreeMap::new()))
        .await
        .expect("OpenSMTPD starts");
    assert_dropping_kills_every_process("OpenSMTPD", smtpd);
}
