//! Every expectation, shown both holding and failing on hand-made event logs.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::events::{EventKind, QueueEntry};
use crate::plan::Plan;
use crate::scenario::parse;

fn scenario_with(expect: &str) -> (Expect, Vec<PlannedMessage>) {
    let text = format!(
        r#"
description = "test"
[[mx]]
name = "mx1"
domain = "example.test"
[[mx]]
name = "mx2"
domain = "example.test"
preference = 20
[[message]]
to = ["bob@example.test"]
[expect]
{expect}
"#
    );
    let scenario = parse(Path::new("scenarios/t.toml"), &text).unwrap();
    let plan = Plan::new(&scenario);
    (scenario.expect, plan.messages)
}

fn judge_as(expect: &Expect, messages: &[PlannedMessage], events: &[Event]) -> Verdict {
    judge(expect, messages, events, "postfix", ClockRate::REAL)
}

struct Log(Vec<Event>);

impl Log {
    fn new() -> Self {
        Log(Vec::new())
    }
    fn at(mut self, secs: f64, kind: EventKind) -> Self {
        self.0.push(Event {
            at: Duration::from_secs_f64(secs),
            kind,
        });
        self
    }
    fn injected(self, secs: f64) -> Self {
        self.at(
            secs,
            EventKind::MessageInjected {
                from: "alice@sender.test".into(),
                to: vec!["bob@example.test".into()],
                reply: "250 2.0.0 Ok".into(),
            },
        )
    }
    fn connect(self, secs: f64, host: &str, session: u64, family: Family) -> Self {
        let (client, server) = match family {
            Family::Ipv4 => ("192.0.2.2:40000", "192.0.2.26:25"),
            Family::Ipv6 => ("[2001:db8::2]:40000", "[2001:db8:0:3::2]:25"),
        };
        self.at(
            secs,
            EventKind::SmtpConnected {
                host: host.into(),
                session,
                family,
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
            },
        )
    }
    fn accepted(
        self,
        secs: f64,
        host: &str,
        session: u64,
        family: Family,
        id: &str,
        digest: &str,
    ) -> Self {
        let from = if host == COLLECTOR {
            ""
        } else {
            "alice@sender.test"
        };
        let to = if host == COLLECTOR {
            "alice@sender.test"
        } else {
            "bob@example.test"
        };
        self.at(
            secs,
            EventKind::MessageAccepted {
                host: host.into(),
                session,
                family,
                from: from.into(),
                to: vec![to.into()],
                size: 100,
                digest: digest.into(),
                message_id: Some(id.into()),
            },
        )
    }
    fn queue(self, secs: f64, entries: Vec<QueueEntry>) -> Self {
        self.at(secs, EventKind::SutQueue { entries })
    }
}

const ID: &str = "<1.t@sender.test>";

/// IPv6 session refused at the greeting, then IPv4 to mx1 accepts.
fn fallback_log() -> Vec<Event> {
    Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv6)
        .at(
            1.15,
            EventKind::SmtpReply {
                host: "mx1".into(),
                session: 1,
                reply: "421 4.3.2 busy".into(),
            },
        )
        .connect(1.2, "mx1", 2, Family::Ipv4)
        .accepted(1.3, "mx1", 2, Family::Ipv4, ID, "aa")
        .queue(2.0, vec![])
        .0
}

fn failed_expectations(verdict: &Verdict) -> Vec<&str> {
    verdict
        .failures
        .iter()
        .map(|f| f.expectation.as_str())
        .collect()
}

#[test]
fn a_fallback_meeting_every_expectation_passes() {
    let (expect, messages) = scenario_with(
        "outcome = \"delivered\"\nvia = \"ipv4\"\nmx = \"mx1\"\ntried = [\"ipv6\"]\nwithin = \"5s\"",
    );
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert_eq!(verdict.status, Status::Pass, "{verdict:?}");
    assert_eq!(
        verdict.summary,
        "delivered once via ipv4 by mx1 after trying mx1 ipv6 (421 4.3.2 busy) in 0.30s"
    );
}

#[test]
fn syns_that_met_no_server_count_as_tried() {
    let syn = |secs: f64, retransmission: u32| {
        (
            secs,
            EventKind::TcpSyn {
                host: "mx1".into(),
                family: Family::Ipv6,
                client: "[2001:db8::2]:40000".parse().unwrap(),
                server: "[2001:db8:0:3::2]:25".parse().unwrap(),
                retransmission,
            },
        )
    };
    let mut log = Log::new().injected(1.0);
    for (secs, kind) in [syn(1.1, 0), syn(2.1, 1), syn(4.1, 2)] {
        log = log.at(secs, kind);
    }
    let log = log
        .connect(6.0, "mx1", 1, Family::Ipv4)
        .accepted(6.1, "mx1", 1, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) =
        scenario_with("outcome = \"delivered\"\nvia = \"ipv4\"\ntried = [\"ipv6\"]");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Pass, "{verdict:?}");
    assert_eq!(
        verdict.summary,
        "delivered once via ipv4 by mx1 after trying mx1 ipv6 (no session, 3 SYNs) in 5.10s"
    );
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ntried = []");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Fail);
}

#[test]
fn a_syn_recorded_after_the_next_session_still_counts_as_tried_first() {
    let syn = |family: Family, client: &str, server: &str| EventKind::TcpSyn {
        host: "mx1".into(),
        family,
        client: client.parse().unwrap(),
        server: server.parse().unwrap(),
        retransmission: 0,
    };
    // The IPv6 SYN was refused by a reset; its capture event lands after the IPv4 session.
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .at(
            1.11,
            syn(Family::Ipv6, "[2001:db8::2]:40000", "[2001:db8:0:3::2]:25"),
        )
        .at(1.12, syn(Family::Ipv4, "192.0.2.2:40000", "192.0.2.26:25"))
        .accepted(1.2, "mx1", 1, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ntried = [\"ipv6\"]");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Pass, "{verdict:?}");
}

#[test]
fn the_wrong_family_fails_via_and_names_it() {
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nvia = \"ipv6\"");
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert_eq!(verdict.status, Status::Fail);
    assert_eq!(failed_expectations(&verdict), ["via = \"ipv6\""]);
    assert!(verdict.failures[0]
        .reason
        .contains("accepted over ipv4 by mx1"));
    assert_eq!(verdict.failures[0].evidence, vec![4]);
}

#[test]
fn the_wrong_mx_fails() {
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nmx = \"mx2\"");
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert_eq!(failed_expectations(&verdict), ["mx = \"mx2\""]);
}

#[test]
fn tried_checks_families_and_their_order() {
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ntried = []");
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert_eq!(failed_expectations(&verdict), ["tried = []"]);
    assert!(verdict.failures[0].reason.contains("[\"ipv6\"]"));

    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .connect(1.2, "mx1", 2, Family::Ipv6)
        .connect(1.3, "mx2", 3, Family::Ipv4)
        .accepted(1.4, "mx2", 3, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ntried = [\"ipv6\", \"ipv4\"]");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Fail);
    assert!(verdict.failures[0].reason.contains("[\"ipv4\", \"ipv6\"]"));
}

#[test]
fn a_slow_delivery_fails_within() {
    let log = Log::new()
        .injected(1.0)
        .connect(40.0, "mx1", 1, Family::Ipv4)
        .accepted(41.0, "mx1", 1, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nwithin = \"30s\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["within = \"30s\""]);
    assert!(verdict.failures[0].reason.contains("took 40.00s"));
}

#[test]
fn a_second_acceptance_fails_exactly_once() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv6)
        .accepted(1.2, "mx1", 1, Family::Ipv6, ID, "aa")
        .connect(3.0, "mx1", 2, Family::Ipv4)
        .accepted(3.1, "mx1", 2, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["exactly_once = true"]);
    assert!(verdict.failures[0].reason.contains("accepted 2 times"));

    let (expect, messages) = scenario_with("outcome = \"delivered\"\nexactly_once = false");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
}

/// The first session stores the message but loses its `250`; the retry stores a second copy.
fn duplicate_log() -> Vec<Event> {
    Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 3, Family::Ipv6)
        .accepted(1.2, "mx1", 3, Family::Ipv6, ID, "aa")
        .connect(4.0, "mx1", 7, Family::Ipv4)
        .accepted(4.1, "mx1", 7, Family::Ipv4, ID, "aa")
        .0
}

#[test]
fn copies_count_acceptances_by_message_id_and_name_the_sessions() {
    let log = duplicate_log();
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = 1");
    let verdict = judge_as(&expect, &messages, &log);
    // `copies` replaces exactly_once: one failure, naming the Message-ID and both sessions.
    assert_eq!(failed_expectations(&verdict), ["copies = 1"]);
    assert_eq!(
        verdict.failures[0].reason,
        "2 copies of message <1.t@sender.test> were accepted: session 3 (mx1 over ipv6), \
         session 7 (mx1 over ipv4)"
    );
    assert_eq!(verdict.failures[0].evidence, [0, 2, 4]);
    assert!(
        verdict.summary.contains(
            "duplicates of <1.t@sender.test>: session 3 (mx1 over ipv6), session 7 (mx1 over ipv4)"
        ),
        "{}",
        verdict.summary
    );

    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = \"at most 2\"");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = 2");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);

    // One copy meets `copies = 1` and "at most 2"; none meets neither.
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = \"at most 2\"");
    assert_eq!(
        judge_as(&expect, &messages, &fallback_log()).status,
        Status::Pass
    );
    let (expect, messages) = scenario_with("outcome = \"deferred\"\ncopies = \"at most 2\"");
    let nothing = Log::new().injected(1.0).0;
    let verdict = judge_as(&expect, &messages, &nothing);
    assert!(failed_expectations(&verdict).contains(&"copies = \"at most 2\""));
    // Three copies are too many for "at most 2".
    let third = Log(duplicate_log())
        .connect(9.0, "mx1", 9, Family::Ipv4)
        .accepted(9.1, "mx1", 9, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = \"at most 2\"");
    let verdict = judge_as(&expect, &messages, &third);
    assert_eq!(failed_expectations(&verdict), ["copies = \"at most 2\""]);
    assert!(verdict.failures[0].reason.starts_with("3 copies"));
}

#[test]
fn copies_are_written_as_a_count_or_at_most_n() {
    for bad in [
        "copies = 0",
        "copies = \"2\"",
        "copies = \"at most x\"",
        "copies = true",
    ] {
        let text = format!(
            "description = \"t\"\n[[mx]]\nname = \"mx1\"\ndomain = \"example.test\"\n\
             [[message]]\nto = [\"bob@example.test\"]\n[expect]\noutcome = \"delivered\"\n{bad}\n"
        );
        let error = parse(Path::new("scenarios/t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most N"), "{bad}: {error}");
    }
}

#[test]
fn the_same_content_under_another_id_fails_exactly_once() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .accepted(1.2, "mx1", 1, Family::Ipv4, ID, "same")
        .accepted(1.3, "mx1", 1, Family::Ipv4, "<other@sender.test>", "same")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["exactly_once = true"]);
    assert!(verdict.failures[0].reason.contains("same content"));
}

#[test]
fn a_queued_message_is_deferred_not_delivered() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv6)
        .queue(
            30.0,
            vec![QueueEntry {
                id: "ABC".into(),
                recipients: vec!["bob@example.test".into()],
                reason: Some("host mx1.example.test said: 421 busy".into()),
            }],
        )
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["outcome = \"delivered\""]);
    assert!(verdict.failures[0]
        .reason
        .contains("deferred: still queued (host mx1.example.test said: 421 busy)"));

    let (expect, messages) = scenario_with("outcome = \"deferred\"");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
}

#[test]
fn a_bounce_reaches_the_collector() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .connect(1.5, COLLECTOR, 2, Family::Ipv6)
        .accepted(
            1.6,
            COLLECTOR,
            2,
            Family::Ipv6,
            "<dsn@sut.sender.test>",
            "bb",
        )
        .queue(2.0, vec![])
        .0;
    let (expect, messages) = scenario_with("outcome = \"bounced\"");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
    let (expect, messages) = scenario_with("outcome = \"delivered\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(
        verdict.failures[0].reason,
        format!("message {ID} was bounced")
    );
}

#[test]
fn a_message_that_vanished_is_reported_lost() {
    let log = Log::new().injected(1.0).queue(5.0, vec![]).0;
    let (expect, messages) = scenario_with("outcome = \"deferred\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Fail);
    assert!(verdict.failures[0].reason.contains("lost"));
}

fn query(secs: f64, name: &str, record_type: &str) -> (f64, EventKind) {
    (
        secs,
        EventKind::DnsQuery {
            client: "192.0.2.2".parse().unwrap(),
            transport: "udp".into(),
            name: name.into(),
            record_type: record_type.into(),
            answer: "NOERROR".into(),
            latency: std::time::Duration::ZERO,
        },
    )
}

#[test]
fn queried_checks_the_order_of_dns_queries() {
    let mut log = Log::new().injected(1.0);
    for (secs, kind) in [
        query(1.01, "example.test", "MX"),
        query(1.02, "mx1.example.test", "A"),
        query(1.03, "mx1.example.test", "AAAA"),
    ] {
        log = log.at(secs, kind);
    }
    let log = log
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .accepted(1.2, "mx1", 1, Family::Ipv4, ID, "aa")
        .0;
    let (expect, messages) = scenario_with(
        "outcome = \"delivered\"\nqueried = [\"Example.Test. mx\", \"mx1.example.test AAAA\"]",
    );
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);

    let (expect, messages) = scenario_with(
        "outcome = \"delivered\"\nqueried = [\"mx1.example.test AAAA\", \"mx1.example.test A\"]",
    );
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(
        failed_expectations(&verdict),
        ["queried = [\"mx1.example.test AAAA\", \"mx1.example.test A\"]"]
    );
    assert!(verdict.failures[0].reason.contains(
        "no query \"mx1.example.test A\" after the ones before it; the MTA asked, in order: example.test MX, mx1.example.test A, mx1.example.test AAAA"
    ));
}

#[test]
fn attempts_counts_connections_per_family() {
    let (expect, messages) =
        scenario_with("outcome = \"delivered\"\nattempts = { ipv6 = 1, ipv4 = 1 }");
    assert_eq!(
        judge_as(&expect, &messages, &fallback_log()).status,
        Status::Pass
    );
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nattempts = { ipv6 = 2 }");
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert_eq!(failed_expectations(&verdict), ["attempts = { ipv6 = 2 }"]);
    assert_eq!(
        verdict.failures[0].reason,
        "the MTA made 1 over ipv6 connection attempts"
    );
}

fn bounce_log(status: &str, diagnostic: &str) -> Vec<Event> {
    Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv4)
        .connect(1.5, COLLECTOR, 2, Family::Ipv6)
        .accepted(
            1.6,
            COLLECTOR,
            2,
            Family::Ipv6,
            "<dsn@sut.sender.test>",
            "bb",
        )
        .at(
            2.0,
            EventKind::DsnReceived {
                recipient: Some("bob@example.test".into()),
                status: Some(status.into()),
                diagnostic: Some(diagnostic.into()),
            },
        )
        .0
}

#[test]
fn dsn_checks_status_and_diagnostic() {
    let log = bounce_log("5.7.25", "smtp; 550 5.7.25 no PTR for your IPv6 address");
    let (expect, messages) = scenario_with(
        "outcome = \"bounced\"\ndsn = { status = \"5.7\", diagnostic = \"550 5.7.25\" }",
    );
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
    let (expect, messages) = scenario_with("outcome = \"bounced\"\ndsn = { status = \"5.1.1\" }");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(
        failed_expectations(&verdict),
        ["dsn = { status = \"5.1.1\" }"]
    );
    assert!(verdict.failures[0].reason.contains("status 5.7.25"));
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert!(verdict
        .failures
        .iter()
        .any(|f| f.reason == "no delivery status notification reached the sender"));
}

#[test]
fn xfail_turns_a_known_failure_into_xfail_and_a_pass_into_a_failure() {
    let xfail = "\n[expect.xfail]\npostfix = { expects = [\"via\"], reason = \"known bug\" }";
    let (expect, messages) =
        scenario_with(&format!("outcome = \"delivered\"\nvia = \"ipv6\"{xfail}"));
    let verdict = judge(
        &expect,
        &messages,
        &fallback_log(),
        "postfix",
        ClockRate::REAL,
    );
    assert_eq!(verdict.status, Status::Xfail);
    assert!(verdict.summary.ends_with("(known: known bug)"));
    assert_eq!(
        judge(&expect, &messages, &fallback_log(), "exim", ClockRate::REAL).status,
        Status::Fail
    );

    let (expect, messages) =
        scenario_with(&format!("outcome = \"delivered\"\nvia = \"ipv4\"{xfail}"));
    let verdict = judge(
        &expect,
        &messages,
        &fallback_log(),
        "postfix",
        ClockRate::REAL,
    );
    assert_eq!(verdict.status, Status::Fail);
    assert_eq!(
        failed_expectations(&verdict),
        ["xfail.postfix = { expects = [via], reason = \"known bug\" }"]
    );
    assert!(verdict.failures[0]
        .reason
        .contains("remove the xfail entry"));
}

#[test]
fn an_xfail_does_not_excuse_a_failed_expectation_it_does_not_name() {
    let xfail = "\n[expect.xfail]\npostfix = { expects = [\"via\"], reason = \"known bug\" }";
    let (expect, messages) = scenario_with(&format!(
        "outcome = \"delivered\"\nvia = \"ipv6\"\nmx = \"mx2\"{xfail}"
    ));
    let verdict = judge(
        &expect,
        &messages,
        &fallback_log(),
        "postfix",
        ClockRate::REAL,
    );
    assert_eq!(verdict.status, Status::Fail);
    assert_eq!(
        failed_expectations(&verdict),
        ["via = \"ipv6\"", "mx = \"mx2\""]
    );
    assert!(verdict
        .summary
        .ends_with("(the xfail for postfix excuses only via)"));

    let both = "\n[expect.xfail]\npostfix = { expects = [\"via\", \"mx\"], reason = \"known\" }";
    let (expect, messages) = scenario_with(&format!(
        "outcome = \"delivered\"\nvia = \"ipv6\"\nmx = \"mx2\"{both}"
    ));
    let verdict = judge(
        &expect,
        &messages,
        &fallback_log(),
        "postfix",
        ClockRate::REAL,
    );
    assert_eq!(verdict.status, Status::Xfail);
}

#[test]
fn many_attempts_are_counted_and_errors_win_over_the_goodbye() {
    let mut log = Log::new().injected(1.0);
    for session in 1..=5 {
        let family = if session % 2 == 0 {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let reply = |text: &str| EventKind::SmtpReply {
            host: "mx1".into(),
            session,
            reply: text.into(),
        };
        log = log
            .connect(1.0 + session as f64, "mx1", session, family)
            .at(1.1 + session as f64, reply("554 5.7.1 go away"))
            .at(1.2 + session as f64, reply("221 2.0.0 Bye"));
    }
    let (expect, messages) = scenario_with("outcome = \"deferred\"");
    let verdict = judge_as(&expect, &messages, &log.0);
    assert!(
        verdict
            .summary
            .contains("after 5 attempts (mx1 ipv6 ×3, mx1 ipv4 ×2; last: 554 5.7.1 go away)"),
        "{}",
        verdict.summary
    );
}

#[test]
fn a_session_the_mx_cut_on_purpose_is_described_by_the_cut() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv6)
        .at(
            1.15,
            EventKind::SmtpReply {
                host: "mx1".into(),
                session: 1,
                reply: "354 End data with <CR><LF>.<CR><LF>".into(),
            },
        )
        .at(
            1.2,
            EventKind::SmtpClosed {
                host: "mx1".into(),
                session: 1,
                reason: "scripted reset at DATA content after 4000 bytes".into(),
            },
        )
        .connect(4.0, "mx1", 2, Family::Ipv4)
        .accepted(4.1, "mx1", 2, Family::Ipv4, ID, "aa")
        .0;
    let attempts = attempts(&log);
    assert_eq!(
        attempts[0].outcome(),
        "scripted reset at DATA content after 4000 bytes"
    );
    let (expect, messages) = scenario_with("outcome = \"delivered\"\ncopies = 1");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Pass);
    assert!(verdict
        .summary
        .contains("after trying mx1 ipv6 (scripted reset at DATA content after 4000 bytes)"));
}

#[test]
fn fallback_within_is_measured_in_world_time_from_the_first_attempt_to_the_other_family() {
    // IPv6 at 1.1 s (refused with 421), IPv4 at 1.2 s: 100 ms of wall time.
    let log = fallback_log();
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nfallback_within = \"1s\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(verdict.status, Status::Pass, "{verdict:?}");
    assert!(verdict
        .summary
        .contains("fell back from ipv6 to ipv4 after 100ms of MTA time (0.100s wall)"));

    let (expect, messages) = scenario_with("outcome = \"delivered\"\nfallback_within = \"50ms\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(
        failed_expectations(&verdict),
        ["fallback_within = \"50ms\""]
    );
    assert_eq!(
        verdict.failures[0].reason,
        "fell back from ipv6 to ipv4 after 100ms of MTA time (0.100s wall): mx1 ipv6 first SYN \
         at 0ms (421 4.3.2 busy); mx1 ipv4 first SYN at 100ms (no reply) (MTA time at real; SYN \
         retransmissions and ICMP-driven aborts are kernel timers on the real clock)"
    );

    // At x100 the same 100 ms of wall time are 10 s of the MTA's time.
    let x100 = ClockRate::DEFAULT;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nfallback_within = \"5s\"");
    let verdict = judge(&expect, &messages, &log, "postfix", x100);
    assert_eq!(failed_expectations(&verdict), ["fallback_within = \"5s\""]);
    assert!(verdict.failures[0].reason.contains("after 10s of MTA time"));
}

#[test]
fn fallback_within_fails_when_the_mta_never_switches_family() {
    let log = Log::new()
        .injected(1.0)
        .connect(1.1, "mx1", 1, Family::Ipv6)
        .accepted(1.2, "mx1", 1, Family::Ipv6, ID, "aa")
        .0;
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nfallback_within = \"30s\"");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["fallback_within = \"30s\""]);
    assert!(verdict.failures[0]
        .reason
        .starts_with("the MTA never switched family: 1 attempts, all over ipv6"));
}

#[test]
fn syn_retransmissions_show_in_the_fallback_story() {
    let syn = |secs: f64, family: Family, port: u16, retransmission: u32| {
        let (client, server) = match family {
            Family::Ipv4 => (format!("192.0.2.2:{port}"), "192.0.2.26:25".to_string()),
            Family::Ipv6 => (
                format!("[2001:db8::2]:{port}"),
                "[2001:db8:0:3::2]:25".to_string(),
            ),
        };
        Event {
            at: Duration::from_secs_f64(secs),
            kind: EventKind::TcpSyn {
                host: "mx1".into(),
                family,
                client: client.parse().unwrap(),
                server: server.parse().unwrap(),
                retransmission,
            },
        }
    };
    let mut log = Log::new().injected(1.0).0;
    log.push(syn(1.0, Family::Ipv6, 40000, 0));
    log.push(syn(2.0, Family::Ipv6, 40000, 1));
    log.push(syn(4.0, Family::Ipv6, 40000, 2));
    log.push(syn(4.5, Family::Ipv4, 40001, 0));
    let story = fallback_story(&attempts(&log), ClockRate::REAL);
    assert!(
        story.starts_with(
            "mx1 ipv6 first SYN at 0ms, 3 SYNs (last at 3.0s), no session; mx1 ipv4 first SYN at 3.5s, no session"
        ),
        "{story}"
    );
    assert_eq!(
        fallback(&attempts(&log)).unwrap().took,
        Duration::from_millis(3500)
    );
}

#[test]
fn auth_checks_every_accepted_copy_and_names_the_wrong_result() {
    let auth = |secs: f64, session: u64, spf: &str| Event {
        at: Duration::from_secs_f64(secs),
        kind: EventKind::MessageAuth {
            host: "mx1".into(),
            session,
            message_id: Some(ID.into()),
            spf: spf.into(),
            dkim: "none".into(),
            dmarc: "none".into(),
        },
    };
    let mut log = fallback_log();
    log.push(auth(1.31, 2, "pass"));
    let (expect, messages) =
        scenario_with("outcome = \"delivered\"\nauth = { spf = \"pass\", dkim = \"none\" }");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);

    let (expect, messages) = scenario_with("outcome = \"delivered\"\nauth = { spf = \"fail\" }");
    let verdict = judge_as(&expect, &messages, &log);
    assert_eq!(failed_expectations(&verdict), ["auth = { spf = \"fail\" }"]);
    assert_eq!(
        verdict.failures[0].reason,
        "message <1.t@sender.test> accepted by mx1 over ipv4 (session 2): spf=pass"
    );

    // A copy without recorded results fails too.
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nauth = { spf = \"pass\" }");
    let verdict = judge_as(&expect, &messages, &fallback_log());
    assert!(verdict.failures[0]
        .reason
        .ends_with("no authentication results were recorded"));
    // Detail after the word is ignored when comparing.
    let mut log = fallback_log();
    log.push(auth(1.31, 2, "fail (not allowed)"));
    let (expect, messages) = scenario_with("outcome = \"delivered\"\nauth = { spf = \"fail\" }");
    assert_eq!(judge_as(&expect, &messages, &log).status, Status::Pass);
}
