//! Brings a plan to life, runs the scenario, and takes everything down again.
//!
//! Teardown is RAII: every part of a running lab (namespaces, servers, the MTA's process tree,
//! the work directory) is released when it is dropped, so an error, a panic or a cancelled run
//! (Ctrl-C) leaves nothing behind. Namespaces are anonymous and the MTA dies with the harness,
//! so even a killed harness leaks no namespace or process.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use crate::dns::{DnsError, DnsServer, RunningDns};
use crate::events::{Event, EventKind, EventLog};
use crate::family::Family;
use crate::mx::{self, Listener, RunningMx, SessionIds};
use crate::plan::{HostPlan, Plan, Role, SUT_HOSTNAME};
use crate::scenario::{Outcome, Scenario};
use crate::sut::{Postfix, RunningPostfix, SutContext, SutError};
use crate::verdict::{self, Verdict, COLLECTOR};

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
    /// The work directory could not be created or written.
    #[error("cannot prepare the work directory: {0}")]
    WorkDir(std::io::Error),
}

/// The systems under test mxlab can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SutKind {
    /// Postfix, run as a private throwaway instance.
    Postfix,
}

impl SutKind {
    /// The name used in reports and test names.
    pub fn name(self) -> &'static str {
        match self {
            SutKind::Postfix => "postfix",
        }
    }

    /// Checks that the SUT is installed, before anything is built.
    pub fn check_installed(self) -> Result<(), SutError> {
        match self {
            SutKind::Postfix => crate::sut::postfix::check_installed(),
        }
    }
}

/// Everything a finished run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// The system under test.
    pub sut: SutKind,
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
}

/// Tells from the events whether the run has reached its expected end state.
type Finished = fn(&[Event], &Plan) -> bool;

/// How long to keep watching after `within`, so a late delivery is reported with its time.
const LATE_GRACE: Duration = Duration::from_secs(5);

/// Runs one scenario against one SUT and judges it.
pub async fn run(scenario: &Scenario, sut: SutKind) -> Result<RunReport, LabError> {
    let started = Instant::now();
    sut.check_installed()?;
    let plan = Plan::new(scenario);
    let prefix = format!("mxlab-{}", run_id());
    let log = EventLog::new();

    let topology_started = Instant::now();
    let lab = Lab::up(&plan, &prefix, log.clone(), sut).await?;
    let topology_up = lab.topology_up;
    log.record(EventKind::Harness {
        message: format!(
            "lab {prefix} up (topology {:.0} ms, total {:.0} ms)",
            topology_up.as_secs_f64() * 1e3,
            topology_started.elapsed().as_secs_f64() * 1e3
        ),
    });

    for planned in &plan.messages {
        lab.sut.inject(&planned.message).await?;
    }
    let expect = &scenario.expect;
    let (deadline, done): (Duration, Finished) = match expect.outcome {
        Outcome::Delivered => (expect.within.0 + LATE_GRACE, all_delivered),
        Outcome::Bounced => (expect.within.0 + LATE_GRACE, all_bounced),
        Outcome::Deferred => (expect.within.0, |_, _| false),
    };
    let finished = log.wait_until(deadline, |events| done(events, &plan)).await;
    if !finished && expect.outcome != Outcome::Deferred {
        log.record(EventKind::Harness {
            message: format!("gave up waiting after {:.1}s", deadline.as_secs_f64()),
        });
    }
    lab.sut.queue().await?;

    let teardown_started = Instant::now();
    lab.down().await?;
    let teardown = teardown_started.elapsed();
    log.record(EventKind::Harness {
        message: format!("lab down in {:.0} ms", teardown.as_secs_f64() * 1e3),
    });

    let events = log.snapshot();
    let verdict = verdict::judge(expect, &plan.messages, &events);
    Ok(RunReport {
        scenario: scenario.name.clone(),
        sut,
        verdict,
        events,
        wall: started.elapsed(),
        topology_up,
        teardown,
    })
}

/// A running world: namespaces, DNS, fake MX servers and the SUT. Dropping it tears it down.
struct Lab {
    // Field order is drop order: the SUT first, then the servers, then the namespaces they
    // live in, then the work directory.
    sut: RunningPostfix,
    mx_servers: Vec<RunningMx>,
    dns: RunningDns,
    topology: netns::Topology,
    _work_dir: tempfile::TempDir,
    topology_up: Duration,
}

impl Lab {
    async fn up(plan: &Plan, prefix: &str, log: EventLog, sut: SutKind) -> Result<Lab, LabError> {
        let work_dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(LabError::WorkDir)?;
        crate::gc::write_owner(work_dir.path()).map_err(LabError::WorkDir)?;
        let built = Instant::now();
        let topology = netns::Topology::build(&plan.topology(prefix)).await?;
        let topology_up = built.elapsed();

        let dns_host = plan.host("dns").expect("the plan always has a dns host");
        let dns = start_dns(plan, dns_host, &topology, log.clone())?;

        let ids = SessionIds::default();
        let mut mx_servers = Vec::new();
        for host in plan
            .hosts
            .iter()
            .filter(|h| matches!(h.role, Role::Mx | Role::Collector))
        {
            let listeners = bind_smtp(host, &topology)?;
            mx_servers.push(mx::start(
                &host.name,
                &host.fqdn,
                listeners,
                log.clone(),
                ids.clone(),
            ));
        }

        let resolv_conf = work_dir.path().join("resolv.conf");
        std::fs::write(&resolv_conf, &plan.resolv_conf).map_err(LabError::WorkDir)?;
        let sut_dir = work_dir.path().join(sut.name());
        std::fs::create_dir(&sut_dir).map_err(LabError::WorkDir)?;
        let sut = match sut {
            SutKind::Postfix => {
                Postfix::start(SutContext {
                    namespace: namespace(&topology, "sut"),
                    resolv_conf: &resolv_conf,
                    hostname: SUT_HOSTNAME,
                    work_dir: &sut_dir,
                    settings: &plan.postfix_settings,
                    log,
                })
                .await?
            }
        };
        Ok(Lab {
            sut,
            mx_servers,
            dns,
            topology,
            _work_dir: work_dir,
            topology_up,
        })
    }

    /// Stops everything in order, the SUT first so its last log lines are recorded.
    async fn down(self) -> Result<(), LabError> {
        let Lab {
            sut,
            mx_servers,
            dns,
            topology,
            _work_dir,
            ..
        } = self;
        let stopped = sut.stop().await;
        for server in mx_servers {
            server.shutdown().await;
        }
        dns.shutdown().await;
        drop(topology);
        drop(_work_dir);
        Ok(stopped?)
    }
}

fn namespace<'t>(topology: &'t netns::Topology, host: &str) -> &'t netns::Namespace {
    topology
        .host(host)
        .unwrap_or_else(|| panic!("the topology was built from the plan, which has host {host}"))
}

fn host_sockets(host: &HostPlan) -> Vec<(Family, IpAddr)> {
    host.addresses()
        .into_iter()
        .map(|addr| (Family::of(addr), addr))
        .collect()
}

fn start_dns(
    plan: &Plan,
    host: &HostPlan,
    topology: &netns::Topology,
    log: EventLog,
) -> Result<RunningDns, LabError> {
    let addresses: Vec<SocketAddr> = host_sockets(host)
        .into_iter()
        .map(|(_, ip)| SocketAddr::new(ip, 53))
        .collect();
    let bound = namespace(topology, &host.name).run(move || {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for address in addresses {
            let bind_error = |source| (address, source);
            udp.push(UdpSocket::bind(address).map_err(bind_error)?);
            tcp.push(TcpListener::bind(address).map_err(bind_error)?);
        }
        Ok::<_, (SocketAddr, std::io::Error)>((udp, tcp))
    })?;
    let (udp, tcp) = bound.map_err(|(address, source)| LabError::Bind {
        host: host.name.clone(),
        address,
        source,
    })?;
    Ok(DnsServer::new(&plan.zones, log)?.serve(udp, tcp)?)
}

fn bind_smtp(host: &HostPlan, topology: &netns::Topology) -> Result<Vec<Listener>, LabError> {
    let mut listeners = Vec::new();
    for (family, behaviour) in &host.smtp {
        let ip = host_sockets(host)
            .into_iter()
            .find(|(f, _)| f == family)
            .map(|(_, ip)| ip)
            .expect("a host has an SMTP behaviour only for families it has addresses of");
        let address = SocketAddr::new(ip, 25);
        let socket = namespace(topology, &host.name)
            .run(move || TcpListener::bind(address))?
            .map_err(|source| LabError::Bind {
                host: host.name.clone(),
                address,
                source,
            })?;
        listeners.push(Listener {
            socket,
            family: *family,
            behaviour: behaviour.clone(),
        });
    }
    Ok(listeners)
}

/// Every planned message accepted by a receiving MX, in a session that has ended.
fn all_delivered(events: &[Event], plan: &Plan) -> bool {
    plan.messages.iter().all(|planned| {
        events.iter().any(|event| match &event.kind {
            EventKind::MessageAccepted {
                host,
                session,
                message_id,
                ..
            } => {
                host != COLLECTOR
                    && message_id.as_deref() == Some(planned.message_id.as_str())
                    && session_closed(events, *session)
            }
            _ => false,
        })
    })
}

/// Every planned message's sender got a bounce at the collector, in a session that has ended.
fn all_bounced(events: &[Event], plan: &Plan) -> bool {
    plan.messages.iter().all(|planned| {
        events.iter().any(|event| match &event.kind {
            EventKind::MessageAccepted {
                host,
                session,
                from,
                to,
                ..
            } => {
                host == COLLECTOR
                    && from.is_empty()
                    && to.contains(&planned.message.from)
                    && session_closed(events, *session)
            }
            _ => false,
        })
    })
}

fn session_closed(events: &[Event], id: u64) -> bool {
    events
        .iter()
        .any(|event| matches!(&event.kind, EventKind::SmtpClosed { session, .. } if *session == id))
}

/// A short id that keeps concurrent runs' names apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:05x}", std::process::id() & 0xfff, nanos & 0xfffff)
}
