//! The shipped driver files as systems under test, through the generic driver-file SUT:
//! `drivers/haraka.toml`, `drivers/sendmail.toml`, `drivers/chasquid.toml`, and what every
//! instance gets (its own host name, /etc/hosts, /dev/log), and a Postfix that listens on IPv6
//! only.
//!
//! Haraka:
//! Needs root (network namespaces) and Haraka installed (`.ci/install-deps.sh`, which needs
//! Node.js >= 20). Without root the test is reported as ignored (failed under
//! `MXLAB_REQUIRE_ALL=1`). Without Haraka it is reported as ignored even under
//! `MXLAB_REQUIRE_ALL=1`: Debian 12's Node.js 18 is too old for Haraka 3, so CI on a stock
//! Debian 12 does not run it.
//!
//! The baseline must pass; the IPv6 greeting fault must have the effect the scenario's Haraka
//! xfail describes: a 421 greeting met over IPv6, then no IPv4 attempt and no delivery.

mod common;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use mxlab::events::EventKind;
use mxlab::family::Family;
use mxlab::lab::{self, RunReport};
use mxlab::report::console;
use mxlab::scenario;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

const TEST: &str =
    "haraka_delivers_the_baseline_and_meets_the_ipv6_greeting_fault_as_its_xfail_says";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Haraka driver.
fn haraka() -> SutKind {
    let path = root().join("drivers/haraka.toml");
    path.to_str()
        .expect("a UTF-8 path")
        .parse()
        .unwrap_or_else(|e| panic!("drivers/haraka.toml: {e}"))
}

fn run(file: &str, sut: &SutKind) -> Result<RunReport, Failed> {
    let scenario = scenario::load(&root().join(file)).map_err(|e| e.to_string())?;
    let report = common::runtime()
        .block_on(lab::run(&scenario, sut))
        .map_err(|e| format!("harness error: {e}"))?;
    println!(
        "{file}: {}\n{}",
        report.verdict.status,
        console::render(&report, report.verdict.status != Status::Pass)
    );
    Ok(report)
}

fn the_test(sut: SutKind) -> Result<(), Failed> {
    if sut.name() != "haraka" {
        return Err(format!("the driver is named {:?}", sut.name()).into());
    }
    let baseline = run("scenarios/baseline/dual-stack.toml", &sut)?;
    if baseline.verdict.status != Status::Pass {
        return Err(format!("the baseline is {}", baseline.verdict.status).into());
    }

    let greeting = run("scenarios/smtp/v6-greeting-421.toml", &sut)?;
    let story = console::render(&greeting, true);
    if greeting.verdict.status != Status::Xfail {
        return Err(format!("expected the scenario's Haraka XFAIL, got:\n{story}").into());
    }
    // The fault was met: mx1 greeted an IPv6 session with the 421.
    let ipv6_sessions: Vec<_> = greeting
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SmtpConnected {
                host,
                session,
                family: Family::Ipv6,
                ..
            } if host == "mx1" => Some(*session),
            _ => None,
        })
        .collect();
    let greeted_421 = greeting.events.iter().any(|e| {
        matches!(&e.kind, EventKind::SmtpReply { host, session, reply }
            if host == "mx1" && ipv6_sessions.contains(session) && reply.starts_with("421"))
    });
    if !greeted_421 {
        return Err(format!("no 421 greeting over IPv6 to Haraka:\n{story}").into());
    }
    // Its effect, as the xfail says: no IPv4 attempt to mx1, nothing delivered to it (a bounce
    // to the sender's own MX is fine).
    let tried_ipv4 = greeting.events.iter().any(|e| match &e.kind {
        EventKind::TcpSyn { host, family, .. } | EventKind::SmtpConnected { host, family, .. } => {
            host == "mx1" && *family == Family::Ipv4
        }
        _ => false,
    });
    if tried_ipv4 {
        return Err(format!("Haraka tried IPv4, unlike its xfail says:\n{story}").into());
    }
    if greeting
        .events
        .iter()
        .any(|e| matches!(&e.kind, EventKind::MessageAccepted { host, .. } if host == "mx1"))
    {
        return Err(format!("the message was delivered, unlike its xfail says:\n{story}").into());
    }
    Ok(())
}

/// A shipped driver file.
fn driver(file: &str) -> SutKind {
    let path = root().join("drivers").join(file);
    path.to_str()
        .expect("a UTF-8 path")
        .parse()
        .unwrap_or_else(|e| panic!("drivers/{file}: {e}"))
}

/// The SUT's log lines of a run.
fn sut_lines(report: &RunReport) -> Vec<&str> {
    report
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SutLog { line } => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

/// Sendmail logs only to syslog: its lines arrive through the instance's /dev/log; it knows
/// itself as sut.sender.test; the scenario's [route] relay reaches it as SMART_HOST.
fn sendmail_relays_as_the_scenario_says_and_logs_through_dev_log() -> Result<(), Failed> {
    let sut = driver("sendmail.toml");
    let report = run("scenarios/relay/smarthost-ipv4-only.toml", &sut)?;
    if report.verdict.status != Status::Pass {
        return Err(format!("the relay scenario is {}", report.verdict.status).into());
    }
    let lines = sut_lines(&report);
    let from_syslog = lines
        .iter()
        .filter(|line| line.contains(" sendmail["))
        .count();
    if from_syslog < 5 {
        return Err(format!("only {from_syslog} Sendmail syslog lines: {lines:#?}").into());
    }
    if !lines
        .iter()
        .any(|line| line.contains("SMTP outgoing connect on sut.sender.test"))
    {
        return Err(format!("Sendmail does not know itself as sut.sender.test: {lines:#?}").into());
    }
    if lines
        .iter()
        .any(|line| line.contains("unqualified host name"))
    {
        return Err(format!("Sendmail complains about its host name: {lines:#?}").into());
    }
    Ok(())
}

/// Sendmail's own interval queue run (`-q15m`, its event timer) comes at the accelerated clock:
/// the first connection to mx1 is refused, Sendmail defers, and its next queue run delivers
/// within the scenario's 2 h of world time (72 s at x100) with no kick from the harness. Fails
/// when libfaketime is not loaded (a setgid sendmail) or the timer's wait is left unscaled
/// (no drivers/faketime-wait.c): the 15 minutes then pass in real time.
fn sendmail_retries_on_its_own_queue_interval_at_x100() -> Result<(), Failed> {
    let sut = driver("sendmail.toml");
    let report = run("scenarios/net/first-connection-refused.toml", &sut)?;
    if report.clock != mxlab::clock::ClockRate::DEFAULT {
        return Err(format!("Sendmail ran at {}, not the default x100", report.clock).into());
    }
    if report.verdict.status != Status::Pass {
        return Err(format!("the retry scenario is {}", report.verdict.status).into());
    }
    let lines = sut_lines(&report);
    let deferred = lines.iter().position(|line| line.contains("stat=Deferred"));
    let sent = lines.iter().rposition(|line| line.contains("stat=Sent"));
    match (deferred, sent) {
        (Some(d), Some(s)) if d < s => Ok(()),
        _ => {
            Err(format!("no deferral followed by a delivery in Sendmail's log: {lines:#?}").into())
        }
    }
}

/// `tls/starttls-verified` fails for an MTA that does not check the certificate's name:
/// Sendmail delivers to mx1, whose certificate names another host, and its log says why; the
/// driver's [xfail] turns that failure into the XFAIL it describes (never a PASS).
fn starttls_verified_fails_for_sendmail_which_does_not_check_the_name() -> Result<(), Failed> {
    let sut = driver("sendmail.toml");
    let report = run("scenarios/tls/starttls-verified.toml", &sut)?;
    if report.verdict.status != Status::Xfail {
        return Err(format!("expected the driver's XFAIL, got {}", report.verdict.status).into());
    }
    let failed_on_mx = report.verdict.failures.iter().any(|f| {
        f.key == Some(mxlab::scenario::Expectation::Mx) && f.reason.contains("accepted by mx1")
    });
    if !failed_on_mx {
        return Err(format!("the failure is not mx1's acceptance: {:?}", report.verdict).into());
    }
    if !sut_lines(&report)
        .iter()
        .any(|line| line.contains("verify=OK") || line.contains("cert-subject=/CN=wrong-name"))
    {
        return Err("Sendmail's log does not show what it verified".into());
    }
    Ok(())
}

/// chasquid (Go) runs on the real clock: the baseline passes, and an accelerated clock asked
/// for explicitly is refused before anything starts, naming the fix.
fn chasquid_runs_on_the_real_clock_and_refuses_an_accelerated_one() -> Result<(), Failed> {
    let sut = driver("chasquid.toml");
    let baseline = run("scenarios/baseline/dual-stack.toml", &sut)?;
    if baseline.verdict.status != Status::Pass {
        return Err(format!("the baseline is {}", baseline.verdict.status).into());
    }
    if baseline.clock != mxlab::clock::ClockRate::REAL {
        return Err(format!("chasquid ran at {}", baseline.clock).into());
    }
    let scenario = scenario::load(&root().join("scenarios/baseline/dual-stack.toml"))
        .map_err(|e| e.to_string())?;
    let options = lab::RunOptions {
        clock: Some("x100".parse().map_err(|e| format!("{e:?}"))?),
        ..lab::RunOptions::default()
    };
    match common::runtime().block_on(lab::run_with(&scenario, &sut, &options)) {
        Err(err) if err.to_string().contains("faketime") => Ok(()),
        Err(err) => Err(format!("refused without naming the fix: {err}").into()),
        Ok(report) => Err(format!("ran at x100: {}", report.verdict.status).into()),
    }
}

/// What every instance gets, seen from inside by a driver whose `start` only reports it
/// through syslog: its host name, an /etc/hosts naming it, a /dev/log, [env].
fn an_instance_has_its_host_name_hosts_file_and_dev_log() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("probe.toml");
    std::fs::write(
        &path,
        r#"name = "probe"
start = ["/bin/sh", "-c", 'logger -t probe "uname=$(uname -n) hosts=$(grep -c sut.sender.test /etc/hosts) env=$PROBE_ENV"; exec sleep 60']
ready = ["/bin/sh", "-c", "test -S /dev/log"]
inject = ["/bin/sh", "-c", "cat > /dev/null; logger -t probe injected"]
# A step that leaves a process behind: it must end with the instance.
queue = ["/bin/sh", "-c", "sleep 3013 > /dev/null 2>&1 & logger -t probe queue-listed"]

[env]
PROBE_ENV = "{{listen_port}}"
"#,
    )
    .map_err(|e| e.to_string())?;
    let sut: SutKind = path
        .to_str()
        .expect("a UTF-8 path")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let scenario = mxlab::scenario::ScenarioBuilder::new("probe/instance", "what an instance sees")
        .mx("mx1", "example.test", 10)
        .message("alice@sender.test", &["bob@example.test"])
        .outcome(mxlab::scenario::Outcome::Delivered)
        .within(std::time::Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let report = common::runtime()
        .block_on(lab::run(&scenario, &sut))
        .map_err(|e| format!("harness error: {e}"))?;
    let lines = sut_lines(&report);
    let probe = lines
        .iter()
        .find(|line| line.contains("probe: uname="))
        .ok_or_else(|| format!("no probe line: {lines:#?}"))?;
    // Both of the SUT's addresses name it; [env] is rendered.
    if !probe.ends_with("probe: uname=sut.sender.test hosts=2 env=2525") {
        return Err(format!("the instance saw: {probe}").into());
    }
    if !lines.iter().any(|line| line.ends_with("probe: injected")) {
        return Err(format!("the inject step's syslog line is missing: {lines:#?}").into());
    }
    if !lines
        .iter()
        .any(|line| line.ends_with("probe: queue-listed"))
    {
        return Err(format!("the queue step did not run: {lines:#?}").into());
    }
    // The queue step's backgrounded sleep ran in the instance's PID namespace and ended with it.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.trim() == "sleep 3013")
        .collect();
    if !left.is_empty() {
        return Err(format!("a step's background process outlived the instance: {left:?}").into());
    }
    Ok(())
}

/// A Postfix with `inet_protocols = ipv6` gets its injection listener on [::1]:2525 and runs
/// the scenario to a verdict.
fn an_ipv6_only_postfix_runs_to_a_verdict() -> Result<(), Failed> {
    let scenario = mxlab::scenario::ScenarioBuilder::new("baseline/ipv6-only-postfix", "IPv6 only")
        .mx("mx1", "example.test", 10)
        .sut_setting("postfix", "inet_protocols", "ipv6")
        .message("alice@sender.test", &["bob@example.test"])
        .outcome(mxlab::scenario::Outcome::Delivered)
        .via(Family::Ipv6)
        .within(std::time::Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let report = common::runtime()
        .block_on(lab::run(&scenario, &SutKind::Postfix))
        .map_err(|e| format!("harness error: {e}"))?;
    if report.verdict.status != Status::Pass {
        return Err(console::render(&report, true).into());
    }
    if !sut_lines(&report)
        .iter()
        .any(|line| line.contains("connect from localhost[::1]"))
    {
        return Err("the message was not injected over ::1".into());
    }
    Ok(())
}

/// A trial for `sut`, ignored (even under `MXLAB_REQUIRE_ALL=1`: CI installs only some of the
/// driver files' MTAs) when it is not installed.
fn driver_trial(
    name: &'static str,
    sut: &SutKind,
    test: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    match sut.check_installed() {
        Err(missing) => {
            eprintln!("ignoring {name}: {missing}");
            let reason = missing.to_string();
            Trial::test(name, move || Err(reason.into())).with_ignored_flag(true)
        }
        Ok(()) => common::trial(name, common::needs_root("network namespaces"), test),
    }
}

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let sut = haraka();
    let haraka_trial = driver_trial(TEST, &sut.clone(), move || the_test(sut));
    let sendmail = driver("sendmail.toml");
    let chasquid = driver("chasquid.toml");
    let root_reason = common::needs_root("network namespaces");
    let trials = vec![
        haraka_trial,
        driver_trial(
            "sendmail_relays_as_the_scenario_says_and_logs_through_dev_log",
            &sendmail,
            sendmail_relays_as_the_scenario_says_and_logs_through_dev_log,
        ),
        driver_trial(
            "sendmail_retries_on_its_own_queue_interval_at_x100",
            &sendmail,
            sendmail_retries_on_its_own_queue_interval_at_x100,
        ),
        driver_trial(
            "starttls_verified_fails_for_sendmail_which_does_not_check_the_name",
            &sendmail,
            starttls_verified_fails_for_sendmail_which_does_not_check_the_name,
        ),
        driver_trial(
            "chasquid_runs_on_the_real_clock_and_refuses_an_accelerated_one",
            &chasquid,
            chasquid_runs_on_the_real_clock_and_refuses_an_accelerated_one,
        ),
        common::trial(
            "an_instance_has_its_host_name_hosts_file_and_dev_log",
            root_reason.clone(),
            an_instance_has_its_host_name_hosts_file_and_dev_log,
        ),
        match SutKind::Postfix.check_installed() {
            Ok(()) => common::trial(
                "an_ipv6_only_postfix_runs_to_a_verdict",
                root_reason,
                an_ipv6_only_postfix_runs_to_a_verdict,
            ),
            Err(missing) => common::trial(
                "an_ipv6_only_postfix_runs_to_a_verdict",
                Some(missing.to_string()),
                an_ipv6_only_postfix_runs_to_a_verdict,
            ),
        },
    ];
    libtest_mimic::run(&args, trials).exit();
}
