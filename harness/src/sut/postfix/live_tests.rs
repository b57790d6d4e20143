//! Tests against the real Postfix in a real namespace. Each skips, saying why, unless it runs
//! as root on a machine with Postfix installed (`.ci/install-deps.sh`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::sut::common::processes_in;
use crate::sut::live_bench::{
    assert_dropping_kills_every_process, assert_injection_and_queue_recorded,
    assert_stop_ends_every_process, log_lines, refusal, require_live, Bench,
};
use crate::sut::OutgoingMessage;

#[test_with::root()]
#[test_with::file(/usr/sbin/postfix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_fast_defers_without_dns_and_stops_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-postfix-live", "work");
    let settings = BTreeMap::from([("queue_run_delay".to_string(), "2s".to_string())]);
    let postfix = Postfix::start(bench.context(&settings))
        .await
        .expect("Postfix starts");
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

    assert_stop_ends_every_process("Postfix", postfix, &pid_namespace).await;
    for pid in members {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || !processes_in(&pid_namespace).contains(&pid)
        );
    }

    let events = assert_injection_and_queue_recorded(&bench.log, &reply);
    let lines = log_lines(&events);
    assert!(
        lines.iter().any(|l| l.contains("daemon started")),
        "{lines:#?}"
    );
    drop(bench.dir);
}

#[test_with::root()]
#[test_with::file(/usr/sbin/postfix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_quotes_postfix() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-postfix-bad", "work");
    let settings = BTreeMap::from([("inet_protocols".to_string(), "bogus".to_string())]);
    let text = refusal(
        Postfix::start(bench.context(&settings)),
        "Postfix started with inet_protocols = bogus",
    )
    .await;
    assert!(text.starts_with("Postfix"), "{text}");
    assert!(
        text.contains("bogus"),
        "the error quotes Postfix's complaint: {text}"
    );
}

#[test_with::root()]
#[test_with::file(/usr/sbin/postfix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_every_process() {
    require_live(SUT, check_installed());
    let bench = Bench::new("mxlab-test-postfix-drop", "work");
    let postfix = Postfix::start(bench.context(&BTreeMap::new()))
        .await
        .expect("Postfix starts");
    assert_dropping_kills_every_process("Postfix", postfix);
}
