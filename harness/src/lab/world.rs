//! The running world: namespaces, DNS, fake MX servers, SYN capture and the SUT.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use super::LabError;
use crate::capture::{self, SynWatch};
use crate::clock::ScenarioClock;
use crate::dns::{DnsServer, RunningDns};
use crate::events::EventKind;
use crate::events::EventLog;
use crate::family::Family;
use crate::mx::{self, Listener, RunningMx, SessionIds};
use crate::observe::{self, COLLECTOR};
use crate::plan::{HostPlan, Plan, Role, SUT_HOSTNAME};
use crate::sut::{RunningSut, SutContext, SutKind, Timeouts};

/// A running world: namespaces, DNS, fake MX servers and the SUT. Dropping it tears it down.
pub struct Lab {
    // Field order is drop order: the SUT first, then the servers, then the namespaces they
    // live in, then the work directory.
    pub sut: Box<dyn RunningSut>,
    syn_watch: SynWatch,
    recorder: Option<capture::pcap::PcapRecorder>,
    mx_servers: Vec<RunningMx>,
    dns: RunningDns,
    pub topology: netns::Topology,
    _work_dir: tempfile::TempDir,
    pub topology_up: Duration,
    /// The resolv.conf the SUT sees.
    pub resolv_conf: std::path::PathBuf,
    /// When the SUT was started: on an accelerated clock, when its world clock started.
    pub sut_spawned: std::time::SystemTime,
}

impl Lab {
    pub async fn up(
        plan: &Plan,
        prefix: &str,
        clock: &ScenarioClock,
        log: EventLog,
        sut: &SutKind,
        pcap: Option<&std::path::Path>,
        timeouts: Timeouts,
    ) -> Result<Lab, LabError> {
        let work_dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(LabError::WorkDir)?;
        crate::gc::write_owner(work_dir.path()).map_err(LabError::WorkDir)?;
        let built = Instant::now();
        let topology = netns::Topology::build(&plan.topology(prefix)).await?;
        let topology_up = built.elapsed();
        let namespaces = plan
            .hosts()
            .map(|host| namespace(&topology, &host.name))
            .chain([topology.router()]);
        crate::gc::write_namespaces(work_dir.path(), namespaces).map_err(LabError::WorkDir)?;

        let dns = start_dns(plan, &plan.dns, &topology, clock.clone(), log.clone())?;

        let syn_watch = watch_syns(plan, &topology, log.clone())?;
        let recorder = match pcap {
            Some(path) => {
                let interfaces: Vec<String> = plan
                    .hosts()
                    .filter_map(|host| topology.router_interface(&host.name))
                    .map(str::to_string)
                    .collect();
                Some(capture::pcap::record(topology.router(), &interfaces, path)?)
            }
            None => None,
        };
        let ids = SessionIds::default();
        let ca_file = work_dir.path().join("ca.pem");
        let authority = if plan.needs_tls() {
            let authority = mx::Authority::new().map_err(LabError::Tls)?;
            std::fs::write(&ca_file, authority.ca_pem()).map_err(LabError::WorkDir)?;
            Some(authority)
        } else {
            None
        };
        let mut mx_servers = Vec::new();
        // Greylist triplets and connection counts are shared by every server of the run; the
        // policy DNS of a host asks the scenario DNS from inside that host's namespace.
        let policy_state = mx::PolicyState::new();
        let dns_servers: Vec<SocketAddr> = plan
            .dns
            .addresses()
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        for host in std::iter::once(&plan.collector).chain(&plan.mxs) {
            let listeners = bind_smtp(host, &topology)?;
            // Authentication results are recorded by the receiving MX hosts, not the collector.
            let authenticate = plan.authenticate && host.role == Role::Mx;
            let needs_dns = authenticate
                || host
                    .smtp
                    .values()
                    .any(|b| b.policies.iter().any(mx::Policy::needs_dns));
            let policy_dns = if needs_dns {
                let namespace = namespace(&topology, &host.name);
                Some(
                    mx::PolicyDns::in_namespace(namespace, dns_servers.clone()).map_err(
                        |source| mx::MxError::PolicyResolver {
                            host: host.name.clone(),
                            source,
                        },
                    )?,
                )
            } else {
                None
            };
            let context =
                mx::PolicyContext::new(policy_state.clone(), policy_dns).with_clock(clock.clone());
            let mut builder = mx::MxBuilder::new(&host.name, &host.fqdn, log.clone())
                .listeners(listeners)
                .session_ids(ids.clone())
                .policy(if authenticate {
                    context.authenticating()
                } else {
                    context
                });
            if let Some(authority) = &authority {
                builder = builder.tls(authority.clone());
            }
            mx_servers.push(builder.try_start()?);
        }

        let resolv_conf = work_dir.path().join("resolv.conf");
        std::fs::write(&resolv_conf, &plan.resolv_conf).map_err(LabError::WorkDir)?;
        let sut_dir = work_dir.path().join(sut.name());
        std::fs::create_dir(&sut_dir).map_err(LabError::WorkDir)?;
        let no_settings = Default::default();
        let sut_spawned = std::time::SystemTime::now();
        let sut = sut
            .start(SutContext {
                namespace: namespace(&topology, &plan.sut.name),
                ca_file: authority.as_ref().map(|_| ca_file.as_path()),
                resolv_conf: &resolv_conf,
                hostname: SUT_HOSTNAME,
                work_dir: &sut_dir,
                settings: plan
                    .sut_settings
                    .get(sut.settings_key())
                    .unwrap_or(&no_settings),
                route: &plan.route,
                log,
                timing: crate::sut::Timing {
                    clock: plan.clock,
                    timeouts,
                },
            })
            .await?;
        Ok(Lab {
            sut_spawned,
            resolv_conf,
            sut,
            syn_watch,
            recorder,
            mx_servers,
            dns,
            topology,
            _work_dir: work_dir,
            topology_up,
        })
    }

    /// Stops everything in order, the SUT first so its last log lines are recorded.
    pub async fn down(self, log: &EventLog) -> Result<(), LabError> {
        let Lab {
            sut,
            syn_watch,
            recorder,
            mx_servers,
            dns,
            topology,
            _work_dir,
            ..
        } = self;
        let stopped = sut.stop().await;
        syn_watch.stop().await;
        if let Some(recorder) = recorder {
            let path = recorder.path().to_path_buf();
            match recorder.stop() {
                Ok(stats) => log.record(EventKind::Harness {
                    message: format!("{} packets written to {}", stats.packets, path.display()),
                }),
                Err(err) => log.record(EventKind::Harness {
                    message: format!("pcap {}: {err}", path.display()),
                }),
            }
        }
        for server in mx_servers {
            if server.host() == COLLECTOR {
                for message in server.messages() {
                    for report in observe::read_dsn(&message.content) {
                        log.record(report.event());
                    }
                }
            }
            server.shutdown().await;
        }
        dns.shutdown().await;
        drop(topology);
        drop(_work_dir);
        Ok(stopped?)
    }
}

/// The namespace of `host`, a host of the plan the topology was built from.
pub(super) fn namespace<'t>(topology: &'t netns::Topology, host: &str) -> &'t netns::Namespace {
    topology
        .host(host)
        .unwrap_or_else(|| panic!("the topology was built from the plan, which has host {host}"))
}

/// The router's interface towards `host`, a host of the plan the topology was built from.
fn router_interface<'t>(topology: &'t netns::Topology, host: &str) -> &'t str {
    topology
        .router_interface(host)
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
    clock: ScenarioClock,
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
    Ok(
        DnsServer::with_faults(&plan.zones, plan.dns_faults.clone(), clock, log)?
            .serve(udp, tcp)?,
    )
}

fn bind_smtp(host: &HostPlan, topology: &netns::Topology) -> Result<Vec<Listener>, LabError> {
    let mut listeners = Vec::new();
    // The plan gives a host an SMTP behaviour only for the families it has an address of.
    let served = host
        .smtp
        .iter()
        .filter_map(|(family, behaviour)| Some((family, behaviour, host.address(*family)?)));
    for (family, behaviour, ip) in served {
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

/// Records every SYN the SUT sends to an SMTP port, as seen on the router.
fn watch_syns(
    plan: &Plan,
    topology: &netns::Topology,
    log: EventLog,
) -> Result<SynWatch, LabError> {
    let hosts: Vec<(IpAddr, String)> = plan
        .hosts()
        .flat_map(|host| {
            let all = host
                .addresses()
                .into_iter()
                .chain(host.extra_addresses.iter().copied());
            all.map(|ip| (ip, host.name.clone()))
        })
        .collect();
    let interface = router_interface(topology, &plan.sut.name);
    let watch = capture::watch_syns(topology.router(), interface, 25, move |syn| {
        let host = hosts
            .iter()
            .find(|(ip, _)| *ip == syn.server.ip())
            .map_or_else(|| syn.server.ip().to_string(), |(_, name)| name.clone());
        log.record(EventKind::TcpSyn {
            host,
            family: Family::of(syn.server.ip()),
            client: syn.client,
            server: syn.server,
            retransmission: syn.retransmission,
        });
    })?;
    Ok(watch)
}

/// What a person exploring the world needs to know: hosts, addresses, how to send mail.
pub fn describe(plan: &Plan, sut: &SutKind) -> String {
    let listener = match sut {
        SutKind::Reference(_) => "the built-in reference sender takes no SMTP".to_string(),
        _ => format!("{sut} listens on {}", crate::sut::LISTEN_ADDRESS),
    };
    let mut text = format!("mxlab explore: a shell in the SUT's namespace ({listener}).\n");
    for host in plan.hosts() {
        let addresses: Vec<String> = host.addresses().iter().map(ToString::to_string).collect();
        text.push_str(&format!(
            "  {:<9} {:<22} {}\n",
            host.name,
            host.fqdn,
            addresses.join(", ")
        ));
    }
    text.push_str(&format!(
        "try: dig MX example.test   |   swaks --server {} --from alice@sender.test --to bob@example.test\n\
         exit the shell to tear everything down.",
        crate::sut::LISTEN_ADDRESS
    ));
    text
}
