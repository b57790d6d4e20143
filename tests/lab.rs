//! Lab-level guarantees: parallel runs do not interfere, a killed run leaves nothing that
//! `mxlab gc` does not remove. These tests need root and Postfix; without them they are
//! reported as ignored with the reason (failed under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mxlab::lab;
use mxlab::scenario;
use mxlab::sut::SutKind;
use mxlab::verdict::{Failure, Status};

/// Why these tests cannot run here (not root, Postfix missing), if they cannot.
fn cannot_run() -> Option<String> {
    common::needs_root("network namespaces").or_else(|| {
        SutKind::Postfix
            .check_installed()
            .err()
            .map(|e| e.to_string())
    })
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// What must not differ between a run alone and a run among others.
fn essence(verdict: &mxlab::verdict::Verdict) -> (Status, Vec<String>) {
    let expectations = verdict
        .failures
        .iter()
        .map(|Failure { expectation, .. }| expectation.clone())
        .collect();
    (verdict.status, expectations)
}

async fn eight_scenarios_at_once_judge_as_one_at_a_time() {
    let files = scenario::find_scenarios(&[scenario_dir()]).unwrap();
    let scenarios: Vec<_> = files
        .iter()
        .map(|f| scenario::load(f).unwrap())
        .cycle()
        .take(8)
        .collect();
    let mut alone = Vec::new();
    for scenario in &scenarios[..files.len().min(8)] {
        let report = lab::run(scenario, &SutKind::Postfix).await.unwrap();
        alone.push((scenario.name.clone(), essence(&report.verdict)));
    }
    let started = Instant::now();
    let together = futures::future::join_all(
        scenarios
            .iter()
            .map(|scenario| lab::run(scenario, &SutKind::Postfix)),
    )
    .await;
    println!(
        "8 scenarios at once: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    for (scenario, report) in scenarios.iter().zip(together) {
        let report = report.unwrap_or_else(|e| panic!("{}: {e}", scenario.name));
        let expected = &alone
            .iter()
            .find(|(name, _)| *name == scenario.name)
            .unwrap()
            .1;
        assert_eq!(
            &essence(&report.verdict),
            expected,
            "{} judged differently when run among others:\n{}",
            scenario.name,
            mxlab::report::console::render(&report, true)
        );
    }
}

/// Inode numbers of every network namespace some process is in or holds open.
fn live_namespaces() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) {
            found.insert(link.to_string_lossy().into_owned());
        }
        if let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) {
            for fd in fds.flatten() {
                if let Ok(link) = std::fs::read_link(fd.path()) {
                    let link = link.to_string_lossy().into_owned();
                    if link.starts_with("net:[") {
                        found.insert(link);
                    }
                }
            }
        }
    }
    found
}

/// Live (not zombie) processes inside any of the given namespaces.
fn live_members(namespaces: &BTreeSet<String>) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if !namespaces.contains(link.to_string_lossy().as_ref()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next());
        if state != Some(Some('Z')) {
            members.push(stat.split(')').next().unwrap_or_default().to_string() + ")");
        }
    }
    members
}

/// A child process that is killed if the test fails before it does so itself.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `mxlab run` of a scenario whose message stays queued for a minute, once Postfix has met
/// the MX; with its work directory and the inodes of its network namespaces.
struct StuckRun {
    child: KillOnDrop,
    work_dir: PathBuf,
    namespaces: BTreeSet<String>,
    _scenario_dir: tempfile::TempDir,
}

impl StuckRun {
    fn start() -> StuckRun {
        let temp = tempfile::tempdir().unwrap();
        let scenario = temp.path().join("stuck.toml");
        std::fs::write(&scenario, common::STUCK_SCENARIO).unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_mxlab"))
                .args(["run", "--sut", "postfix", scenario.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let work_dir = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("the run ended ({status}) before it was caught mid-way");
            }
            assert!(
                Instant::now() < deadline,
                "the run did not come up within 20 s"
            );
            if let Some(dir) = common::stuck_run_work_dir(pid) {
                break dir;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let namespaces = common::run_namespaces(&work_dir);
        assert_eq!(namespaces.len(), 5, "router + sut, dns, bounces, mx1");
        assert!(
            !live_members(&namespaces).is_empty(),
            "Postfix runs in the SUT namespace"
        );
        StuckRun {
            child,
            work_dir,
            namespaces,
            _scenario_dir: temp,
        }
    }

    /// Sends `signal` and returns the exit code, if any.
    fn end_with(&mut self, signal: nix::sys::signal::Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.0.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        self.child.0.wait().unwrap().code()
    }

    /// Within a few seconds no process is left in the run's namespaces and the namespaces are
    /// gone.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let members = live_members(&self.namespaces);
            let still_there: Vec<_> = live_namespaces()
                .intersection(&self.namespaces)
                .cloned()
                .collect();
            if members.is_empty() && still_there.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: processes {members:?}, namespaces {still_there:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn a_run_killed_with_sigkill_leaves_nothing_after_gc() {
    let mut run = StuckRun::start();
    run.end_with(nix::sys::signal::Signal::SIGKILL);
    let output = Command::new(env!("CARGO_BIN_EXE_mxlab"))
        .arg("gc")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("removed {}", run.work_dir.display())),
        "{stdout}"
    );
    assert!(!run.work_dir.exists());
    run.assert_nothing_left();
}

fn sigint_and_sigterm_tear_the_run_down_by_themselves() {
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let mut run = StuckRun::start();
        assert_eq!(run.end_with(signal), Some(130), "{signal}");
        assert!(
            !run.work_dir.exists(),
            "{signal}: the work directory is removed"
        );
        run.assert_nothing_left();
    }
}

fn pcap_writes_a_readable_capture_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mxlab"))
        .args(["run", "--sut", "postfix", "--pcap"])
        .arg(dir.path())
        .arg(scenario_dir().join("smtp/v6-greeting-421.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let file = dir.path().join("smtp_v6-greeting-421.postfix.pcap");
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut packets = 0;
    let mut smtp_421 = false;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        packets += 1;
        smtp_421 |= packet.data.windows(4).any(|w| w == b"421 ");
    }
    assert!(packets > 20, "only {packets} packets");
    assert!(smtp_421, "the 421 greeting is on the wire");
}

fn explore_opens_a_shell_in_the_sut_namespace_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxlab"))
        .args(["explore", "--sut", "postfix", "--shell", "/bin/sh"])
        .arg(scenario_dir().join("baseline/dual-stack.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cat /etc/resolv.conf; ip -o addr show dev mxlab0; exit 7\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(7), "{stdout}");
    assert!(
        stdout.contains("nameserver 192.0.2.10"),
        "the scenario's resolver: {stdout}"
    );
    assert!(
        stdout.contains("inet 192.0.2.2/29"),
        "the SUT's own address: {stdout}"
    );
    assert!(stdout.contains("torn down"), "{stdout}");
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = cannot_run();
    let trials = vec![
        common::trial(
            "eight_scenarios_at_once_judge_as_one_at_a_time",
            reason.clone(),
            || {
                common::runtime().block_on(eight_scenarios_at_once_judge_as_one_at_a_time());
                Ok(())
            },
        ),
        common::trial(
            "a_run_killed_with_sigkill_leaves_nothing_after_gc",
            reason.clone(),
            || {
                a_run_killed_with_sigkill_leaves_nothing_after_gc();
                Ok(())
            },
        ),
        common::trial(
            "sigint_and_sigterm_tear_the_run_down_by_themselves",
            reason.clone(),
            || {
                sigint_and_sigterm_tear_the_run_down_by_themselves();
                Ok(())
            },
        ),
        common::trial(
            "pcap_writes_a_readable_capture_per_run",
            reason.clone(),
            || {
                pcap_writes_a_readable_capture_per_run();
                Ok(())
            },
        ),
        common::trial(
            "explore_opens_a_shell_in_the_sut_namespace_and_cleans_up",
            reason.clone(),
            || {
                explore_opens_a_shell_in_the_sut_namespace_and_cleans_up();
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
