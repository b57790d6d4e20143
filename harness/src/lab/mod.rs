//! Brings a plan to life, runs the scenario, and takes everything down again.
//!
//! Teardown is RAII: every part of a running lab (namespaces, servers, the MTA's process tree,
//! the work directory) is released when it is dropped, so an error, a panic or a cancelled run
//! (Ctrl-C) leaves nothing behind. Namespaces are anonymous and the MTA dies with the harness,
//! so even a killed harness leaks no namespace or process.

mod finish;
mod mutant;
mod schedule;
mod selfcheck;
mod world;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::clock::{ClockRate, ScenarioClock};
use crate::dns::DnsError;
use crate::events::{Event, EventKind, EventLog};
use crate::faults::FaultError;
use crate::plan::Plan;
use crate::scenario::{Outcome, Scenario};
use crate::sut::clockcheck::ProcessWatch;
use crate::sut::{RunningSut, SutError, SutKind, Timeouts};
use crate::verdict::{self, Verdict};
pub use mutant::{judge as judge_mutant, mutant_sut_name, run_mutant, MutantRun, MutantStatus};
use schedule::FaultTimeline;
use world::Lab;

/// Why a lab could not be brought up or run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The namespaces could not be built.
    #[error("cannot build the topology: {0}")]
    Topology(#[from] netns::Error),
    /// The DNS server could not be configured or started.
    #[error("cannot start the scenario DNS server: {0}")]
    Dns(#[from] DnsError),
    /// A server socket could not be bound inside its namespace.
    #[error("cannot listen on {address} in the {host} namespace: {source}")]
    Bind {
        /// The host.
        host: String,
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The system under test failed.
    #[error(transparent)]
    Sut(#[from] SutError),
    /// The SUT cannot run on the accelerated clock that was asked for.
    #[error(
        "{sut} cannot run on an accelerated clock ({rate} was asked for): its driver file has no \
         `clock = \"faketime\"`. Run it with --clock real (and --timeouts fast if its timers are \
         too long for the real clock), or add `clock = \"faketime\"` to the driver if the MTA \
         honours LD_PRELOAD"
    )]
    Clock {
        /// The SUT.
        sut: String,
        /// The rate asked for.
        rate: ClockRate,
    },
    /// A network fault could not be installed or healed.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A fake MX server could not start.
    #[error("cannot start a fake MX server: {0}")]
    Mx(#[from] crate::mx::MxError),
    /// The run's certificate authority could not be made.
    #[error("cannot make the run's certificate authority: {0}")]
    Tls(crate::mx::TlsError),
    /// The SYN capture on the router could not start.
    #[error("cannot watch connection attempts on the router: {0}")]
    Capture(#[from] crate::capture::CaptureError),
    /// The work directory could not be created or written.
    #[error("cannot prepare the work directory: {0}")]
    WorkDir(std::io::Error),
}

/// Everything a finished run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// The system under test's name.
    pub sut: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The whole event log.
    pub events: Vec<Event>,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Time to bring the topology up (namespaces, links, addresses, routes).
    pub topology_up: Duration,
    /// Time to take everything down (SUT, servers, namespaces, work directory).
    pub teardown: Duration,
    /// The world clock's rate the run used.
    pub clock: ClockRate,
    /// The SUT's timers.
    pub timeouts: Timeouts,
    /// For the run of a `[[mutant]]`: which one, and whether the scenario killed it (the
    /// verdict then passes for a kill and fails for a survivor).
    pub mutant: Option<MutantRun>,
}

/// Builds the scenario's world, starts the SUT, puts the faults that start at once in force,
/// and runs an interactive shell in the SUT's network namespace (with the scenario's
/// resolv.conf), for reproducing a problem by hand. Everything is torn down when the shell
/// exits; returns the shell's exit code.
pub async fn explore(
    scenario: &Scenario,
    sut: &SutKind,
    shell: &str,
    options: &RunOptions,
) -> Result<i32, LabError> {
    sut.check_installed()?;
    let plan = Plan::with_clock(scenario, options.clock_for(scenario, sut)?);
    let prefix = format!("mxlab-{}", run_id());
    let log = EventLog::new();
    let clock = ScenarioClock::new();
    let lab = Lab::up(
        &plan,
        &prefix,
        &clock,
        log.clone(),
        sut,
        None,
        options.timeouts,
    )
    .await?;
    let mut faults = FaultTimeline::new(&plan.net_faults, log.clone());
    faults.catch_up(&lab.topology, &clock).await?;
    clock.start();
    println!("{}", world::describe(&plan, sut));
    let namespace = world::namespace(&lab.topology, &plan.sut.name);
    let mut shell = netns::spawn(
        namespace,
        std::process::Command::new(shell),
        netns::SpawnOptions {
            resolv_conf: Some(lab.resolv_conf.clone()),
            own_pid_namespace: false,
            ..Default::default()
        },
    )?;
    // Ctrl-C belongs to the shell; the harness must outlive it to tear everything down.
    let _ignore_interrupts =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let code = loop {
        if let Some(status) = shell.try_exit_status()? {
            break status.code().unwrap_or(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(shell);
    lab.down(&log).await?;
    println!("lab {prefix} torn down");
    Ok(code)
}

impl RunReport {
    /// The report of a run the harness could not complete: status error, the reason as summary.
    pub fn harness_error(
        scenario: &Scenario,
        sut: &SutKind,
        options: &RunOptions,
        error: &LabError,
    ) -> RunReport {
        RunReport {
            clock: options.clock_for(scenario, sut).unwrap_or(ClockRate::REAL),
            timeouts: options.timeouts,
            scenario: scenario.name.clone(),
            sut: sut.name().to_string(),
            verdict: Verdict::error(error.to_string()),
            events: Vec::new(),
            wall: Duration::ZERO,
            topology_up: Duration::ZERO,
            teardown: Duration::ZERO,
            mutant: None,
        }
    }
}

/// How long to keep watching after `within`, so a late delivery is reported with its time.
const LATE_GRACE: Duration = Duration::from_secs(5);

/// How long a run watches the SUT at most, in wall time, once mail is injected: delivered
/// and bounced messages are final, so a run stops as soon as every message is (and watches
/// [`LATE_GRACE`] past `within` to time a late one); a deferral is only known at the end of
/// the observation window.
fn watch_limit(scenario: &Scenario, clock: ClockRate) -> Duration {
    let within = clock.to_wall(scenario.expect.within.0);
    match scenario.expect.outcome {
        Outcome::Delivered | Outcome::Bounced => within + LATE_GRACE,
        Outcome::Deferred => within,
    }
}

/// Runs one scenario against one SUT and judges it.
pub async fn run(scenario: &Scenario, sut: &SutKind) -> Result<RunReport, LabError> {
    run_with(scenario, sut, &RunOptions::default()).await
}

/// Extras for a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write a pcap file of every packet on the router's links into this directory, named
    /// after the scenario and the SUT (`smtp_v6-greeting-421.postfix.pcap`).
    pub pcap_dir: Option<std::path::PathBuf>,
    /// The world clock's rate (`--clock`); when absent, the scenario's `clock`, else
    /// [`ClockRate::DEFAULT`] with stock timers and the real clock with retuned ones.
    pub clock: Option<ClockRate>,
    /// Stock or retuned SUT timers (`--timeouts`).
    pub timeouts: Timeouts,
}

impl RunOptions {
    /// The longest a run of `scenario` against `sut` can watch the SUT, in wall time: an
    /// upper bound of its duration (setup and teardown aside), by which a batch of runs is
    /// scheduled longest first. Zero for a run that will fail to start.
    pub fn watch_limit(&self, scenario: &Scenario, sut: &SutKind) -> Duration {
        self.clock_for(scenario, sut)
            .map_or(Duration::ZERO, |clock| watch_limit(scenario, clock))
    }

    /// The clock rate of a run whose scenario names none: `--clock`, else
    /// [`ClockRate::DEFAULT`] with stock timers and the real clock with retuned ones.
    pub fn unscripted_clock(&self) -> ClockRate {
        self.clock.unwrap_or(match self.timeouts {
            Timeouts::Stock => ClockRate::DEFAULT,
            Timeouts::Fast => ClockRate::REAL,
        })
    }

    /// The clock rate a run of `scenario` against `sut` uses. A SUT that cannot run on an
    /// accelerated clock (a driver file without `clock = "faketime"`) runs on the real clock
    /// unless an accelerated rate was asked for explicitly, which is an error naming the fix.
    pub fn clock_for(&self, scenario: &Scenario, sut: &SutKind) -> Result<ClockRate, LabError> {
        let asked = self.clock.or(scenario.clock);
        let rate = asked.unwrap_or_else(|| self.unscripted_clock());
        if !rate.is_accelerated() || sut.can_accelerate() {
            return Ok(rate);
        }
        match asked {
            None => Ok(ClockRate::REAL),
            Some(rate) => Err(LabError::Clock {
                sut: sut.name().to_string(),
                rate,
            }),
        }
    }
}

/// Like [`run`], with extras.
pub async fn run_with(
    scenario: &Scenario,
    sut: &SutKind,
    options: &RunOptions,
) -> Result<RunReport, LabError> {
    let started = Instant::now();
    sut.check_installed()?;
    let plan = Plan::with_clock(scenario, options.clock_for(scenario, sut)?);
    let prefix = format!("mxlab-{}", run_id());
    let log = EventLog::new();
    let log_start = std::time::SystemTime::now();

    let topology_started = Instant::now();
    let clock = ScenarioClock::new();
    let pcap = options.pcap_dir.as_ref().map(|dir| {
        dir.join(format!(
            "{}.{}.pcap",
            scenario.name.replace('/', "_"),
            sut.name().replace(['/', ':'], "_")
        ))
    });
    let lab = match Lab::up(
        &plan,
        &prefix,
        &clock,
        log.clone(),
        sut,
        pcap.as_deref(),
        options.timeouts,
    )
    .await
    {
        Ok(lab) => lab,
        // The SUT did not start: an error verdict that keeps what it logged (its own reason,
        // often only in its syslog lines) and how long the attempt took.
        Err(error @ LabError::Sut(_)) => {
            return Ok(RunReport {
                events: log.snapshot(),
                wall: started.elapsed(),
                ..RunReport::harness_error(scenario, sut, options, &error)
            })
        }
        Err(error) => return Err(error),
    };
    let topology_up = lab.topology_up;
    log.record(EventKind::Harness {
        message: format!(
            "lab {prefix} up (topology {:.0} ms, total {:.0} ms)",
            topology_up.as_secs_f64() * 1e3,
            topology_started.elapsed().as_secs_f64() * 1e3
        ),
    });

    // A harness problem once the lab is up (a fault that cannot be installed, an injection the
    // SUT refuses) is an ERROR that keeps the timeline so far and the time it took; the lab is
    // torn down when it goes out of scope, as after any run.
    let failed_run = |error: LabError| RunReport {
        events: log.snapshot(),
        wall: started.elapsed(),
        topology_up,
        ..RunReport::harness_error(scenario, sut, options, &error)
    };
    let mut faults = FaultTimeline::new(&plan.net_faults, log.clone());
    if let Err(error) = faults.catch_up(&lab.topology, &clock).await {
        return Ok(failed_run(error));
    }
    clock.start();
    for planned in &plan.messages {
        if let Err(error) = lab.sut.inject(&planned.message).await {
            return Ok(failed_run(error.into()));
        }
    }
    let expect = &scenario.expect;
    let deadline = watch_limit(scenario, plan.clock);
    // With retuned timers a healed fault makes the harness tell the SUT to retry at once; an
    // MTA with stock timers retries on its own schedule, as deployed.
    let kick_on_heal = options.timeouts == Timeouts::Fast;
    let pid_namespace = lab
        .sut
        .pid_namespace()
        .filter(|_| plan.clock.is_accelerated());
    let mut processes = ProcessWatch::default();
    let (running_sut, log) = (&lab.sut, &log);
    let finished = tokio::select! {
        () = selfcheck::watch_processes(pid_namespace.as_deref(), &mut processes) => unreachable!("it stays pending"),
        finished = log.wait_for(deadline, |events, now| finish::all_settled(events, &plan, now)) => finished,
        () = ask_queue_once_accepted(running_sut.as_ref(), log, &plan, deadline) => unreachable!("it stays pending"),
        failed = faults.drive(&lab.topology, &clock, || async {
            if !kick_on_heal {
                return;
            }
            // A healed fault: have the SUT retry now rather than on its own schedule.
            if let Err(err) = running_sut.kick().await {
                log.record(EventKind::Harness { message: format!("kick failed: {err}") });
            }
        }) => match failed {
            Err(error) => return Ok(failed_run(error)),
            Ok(()) => unreachable!("the fault timeline stays pending once it is done"),
        }
    };
    if !finished && expect.outcome != Outcome::Deferred {
        log.record(EventKind::Harness {
            message: format!("gave up waiting after {:.1}s", deadline.as_secs_f64()),
        });
    }
    // A failed last look at the queue makes the run an ERROR that keeps its timeline, after
    // the lab is down like any other run.
    let final_queue = lab.sut.queue().await;
    if let Some(namespace) = &pid_namespace {
        processes.sample(namespace);
    }
    let sut_spawned = lab.sut_spawned;

    let teardown_started = Instant::now();
    lab.down(log).await?;
    let teardown = teardown_started.elapsed();
    log.record(EventKind::Harness {
        message: format!("lab down in {:.0} ms", teardown.as_secs_f64() * 1e3),
    });

    let clock_escaped = plan
        .clock
        .is_accelerated()
        .then(|| selfcheck::conclude(log, plan.clock, &processes, log_start, sut_spawned));
    let events = log.snapshot();
    let verdict = match (final_queue, clock_escaped.flatten()) {
        (Err(err), _) => {
            Verdict::error(format!("reading the SUT's queue at the end failed: {err}"))
        }
        (Ok(_), Some(reason)) => Verdict::error(reason),
        (Ok(_), None) => verdict::judge(
            &sut.expectations(&scenario.name, expect),
            &plan.messages,
            &events,
            sut.name(),
            plan.clock,
        ),
    };
    Ok(RunReport {
        clock: plan.clock,
        timeouts: options.timeouts,
        scenario: scenario.name.clone(),
        sut: sut.name().to_string(),
        verdict,
        events,
        wall: started.elapsed(),
        topology_up,
        teardown,
        mutant: None,
    })
}

/// A short id that keeps concurrent runs' names apart.
/// How often the SUT's queue is asked for once every message is accepted.
const QUEUE_RECHECK: Duration = Duration::from_millis(200);

/// Once every message is accepted, asks the SUT for its queue every [`QUEUE_RECHECK`], so that
/// a run whose MTA keeps its session open for reuse ends as soon as the queue is empty rather
/// than after the session grace of [`finish::all_settled`]. Never completes.
async fn ask_queue_once_accepted(
    sut: &dyn RunningSut,
    log: &EventLog,
    plan: &Plan,
    timeout: Duration,
) {
    if log
        .wait_for(timeout, |events, _| finish::all_accepted(events, plan))
        .await
    {
        loop {
            if let Err(err) = sut.queue().await {
                log.record(EventKind::Harness {
                    message: format!("reading the queue failed: {err}"),
                });
                break;
            }
            tokio::time::sleep(QUEUE_RECHECK).await;
        }
    }
    std::future::pending().await
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:05x}", std::process::id() & 0xfff, nanos & 0xfffff)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::parse;

    fn scenario(outcome: &str, within: &str) -> Scenario {
        let text = format!(
            "description = \"d\"\n[[mx]]\nname = \"mx1\"\ndomain = \"example.test\"\n\
             [[message]]\nto = [\"bob@example.test\"]\n\
             [expect]\noutcome = \"{outcome}\"\nwithin = \"{within}\"\n"
        );
        parse(Path::new("scenarios/x/y.toml"), &text).unwrap()
    }

    #[test]
    fn a_run_watches_for_its_world_time_limit_divided_by_the_rate() {
        let options = RunOptions::default();
        let postfix = SutKind::Postfix;
        // x100 by default: 1 h of world time is 36 s of wall time; a deferral is only known
        // at the end of it, a delivery is watched a little longer to time a late one.
        assert_eq!(
            options.watch_limit(&scenario("deferred", "1h"), &postfix),
            Duration::from_secs(36)
        );
        assert_eq!(
            options.watch_limit(&scenario("delivered", "1h"), &postfix),
            Duration::from_secs(36) + LATE_GRACE
        );
        let real = RunOptions {
            clock: Some(ClockRate::REAL),
            ..RunOptions::default()
        };
        assert_eq!(
            real.watch_limit(&scenario("deferred", "1m"), &postfix),
            Duration::from_secs(60)
        );
    }
}
