//! Queries per second of mxlab's DNS server, next to NSD serving the same zones.
//!
//! `cargo bench -p mxlab --bench dns [-- OPTIONS]` serves a scenario-like set of zones (MX, A,
//! AAAA, TXT and PTR records) with [`DnsServer`] on 127.0.0.1, runs `dnsperf` against it, then
//! starts NSD (`nsd -d`) with the same zones on another loopback port (response rate limiting
//! off, as mxlab has none), runs the same `dnsperf` command against it, and prints both rates
//! and their ratio. It skips (successfully) if
//! `dnsperf` or `nsd` is not installed (`apt-get install -y dnsperf nsd`).
//!
//! Options (after `--`):
//!
//! * `--port P`: UDP/TCP port for mxlab's server (default: ephemeral)
//! * `--nsd-port P`: port for NSD (default: a free ephemeral port)
//! * `--seconds N`: dnsperf `-l` (default 10)
//! * `--clients N`: dnsperf `-c` (default 4)
//! * `--outstanding N`: dnsperf `-q` (default 100)
//! * `--qps N`: dnsperf `-Q` (default unlimited)
//! * `--threads N`: tokio worker threads for mxlab and NSD's `server-count` (default 1)

mod common;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use mxlab::dns::{reverse_name, DnsServer, Record, RecordData, Zone, NEGATIVE_TTL, RECORD_TTL};
use mxlab::events::EventLog;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Command-line settings.
#[derive(clap::Parser)]
#[command(about = "mxlab's DNS server against NSD, measured by dnsperf")]
struct Options {
    /// mxlab's UDP port (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// NSD's port (default: any free one).
    #[arg(long)]
    nsd_port: Option<u16>,
    /// How long each dnsperf run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// dnsperf clients.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Queries outstanding per client.
    #[arg(long, default_value_t = 100)]
    outstanding: u32,
    /// Queries per second to send (default: as many as answered).
    #[arg(long)]
    qps: Option<u32>,
    /// Worker threads of each server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    #[command(flatten)]
    cargo_bench: common::CargoBenchArgs,
}

impl Options {
    /// The dnsperf arguments shared by both runs.
    fn dnsperf_args(&self) -> Vec<String> {
        let mut args = vec![
            "-l".to_string(),
            self.seconds.to_string(),
            "-c".to_string(),
            self.clients.to_string(),
            "-T".to_string(),
            "1".to_string(),
            "-q".to_string(),
            self.outstanding.to_string(),
            "-t".to_string(),
            "2".to_string(),
        ];
        if let Some(qps) = self.qps {
            args.extend(["-Q".to_string(), qps.to_string()]);
        }
        args
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dns bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let options = Options::parse();
    let (Some(dnsperf), Some(nsd)) = (find_program("dnsperf"), find_program("nsd")) else {
        println!("dns bench skipped: dnsperf and nsd are needed (apt-get install -y dnsperf nsd)");
        return Ok(());
    };
    let dir = tempfile::Builder::new()
        .prefix("mxlab-dns-bench")
        .tempdir()?;
    let zones = zones();
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, query_file())?;
    let mut settings = options.dnsperf_args();
    settings.extend(["-d".to_string(), queries.display().to_string()]);
    println!(
        "dnsperf {} (same settings for both servers; {} worker thread(s) each)",
        settings.join(" "),
        options.threads
    );

    // mxlab, on a runtime of its own in this process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(options.threads))
        .enable_all()
        .build()?;
    let log = EventLog::new();
    let udp = UdpSocket::bind((LOCALHOST, options.port)).context("binding mxlab's UDP port")?;
    let port = udp.local_addr()?.port();
    let tcp = TcpListener::bind((LOCALHOST, port)).context("binding mxlab's TCP port")?;
    let server = DnsServer::new(&zones, log.clone())?;
    let running = runtime.block_on(async { server.serve(vec![udp], vec![tcp]) })?;
    let mxlab_addr = SocketAddr::new(LOCALHOST, port);
    wait_for_answers(mxlab_addr)?;
    println!("\n== mxlab DnsServer on {mxlab_addr}");
    let mxlab = run_dnsperf(&dnsperf, mxlab_addr, &settings)?;
    let events = log.snapshot().len();
    drop(running);
    runtime.shutdown_timeout(Duration::from_secs(2));

    // NSD, as a child process.
    let nsd_port = match options.nsd_port {
        Some(port) => port,
        None => free_port()?,
    };
    let nsd_addr = SocketAddr::new(LOCALHOST, nsd_port);
    let nsd_dir = dir.path().join("nsd");
    let config = write_nsd_config(&nsd_dir, &zones, nsd_addr, usize::from(options.threads))?;
    // NSD's main process may exit before its forked server process; as a subreaper this
    // process inherits such orphans and can reap them.
    nix::sys::prctl::set_child_subreaper(true)?;
    let child = Command::new(&nsd)
        .args(["-d", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", nsd.display()))?;
    let nsd_child = ChildGuard(child);
    if let Err(error) = wait_for_answers(nsd_addr) {
        let log = std::fs::read_to_string(nsd_dir.join("nsd.log")).unwrap_or_default();
        bail!("{error:#}; nsd.log:\n{log}");
    }
    println!("\n== NSD ({}) on {nsd_addr}", nsd_version(&nsd));
    let nsd_result = run_dnsperf(&dnsperf, nsd_addr, &settings);
    nsd_child.stop();
    let nsd = nsd_result?;

    println!("\n== Summary");
    println!(
        "mxlab DnsServer: {:>10.0} queries/s ({} completed, {} lost; {events} events logged)",
        mxlab.qps, mxlab.completed, mxlab.lost
    );
    println!(
        "NSD:             {:>10.0} queries/s ({} completed, {} lost)",
        nsd.qps, nsd.completed, nsd.lost
    );
    println!(
        "ratio mxlab/NSD: {:.3} (NSD is {:.1}x faster)",
        mxlab.qps / nsd.qps,
        nsd.qps / mxlab.qps
    );
    Ok(())
}

/// A zone set like a scenario's: the sender domain with MX, SPF and host addresses, a
/// recipient domain with two MX hosts, and the reverse zones.
fn zones() -> Vec<Zone> {
    let record = |name: &str, data| Record::new(name, data);
    let host = |name: &str, v4: &str, v6: &str| {
        [
            record(name, RecordData::A(v4.parse().unwrap())),
            record(name, RecordData::Aaaa(v6.parse().unwrap())),
        ]
    };
    let hosts = [
        ("sut.sender.test", "10.77.0.2", "fd77::2"),
        ("ns.sender.test", "10.77.0.3", "fd77::3"),
        ("bounces.sender.test", "10.77.0.4", "fd77::4"),
        ("mx1.example.test", "10.77.1.2", "fd77:1::2"),
        ("mx2.example.test", "10.77.2.2", "fd77:2::2"),
    ];
    let mut sender = vec![
        record(
            "sender.test",
            RecordData::Mx {
                preference: 10,
                exchange: "bounces.sender.test".into(),
            },
        ),
        record(
            "sender.test",
            RecordData::Txt("v=spf1 ip4:10.77.0.2 ip6:fd77::2 -all".into()),
        ),
    ];
    let mut example = vec![
        record(
            "example.test",
            RecordData::Mx {
                preference: 10,
                exchange: "mx1.example.test".into(),
            },
        ),
        record(
            "example.test",
            RecordData::Mx {
                preference: 20,
                exchange: "mx2.example.test".into(),
            },
        ),
    ];
    let (mut reverse_v4, mut reverse_v6) = (Vec::new(), Vec::new());
    for (name, v4, v6) in hosts {
        let target = if name.ends_with(".sender.test") {
            &mut sender
        } else {
            &mut example
        };
        target.extend(host(name, v4, v6));
        reverse_v4.push(record(
            &reverse_name(v4.parse().unwrap()),
            RecordData::Ptr(name.into()),
        ));
        reverse_v6.push(record(
            &reverse_name(v6.parse().unwrap()),
            RecordData::Ptr(name.into()),
        ));
    }
    vec![
        Zone::new("sender.test", sender),
        Zone::new("example.test", example),
        Zone::new("in-addr.arpa", reverse_v4),
        Zone::new("ip6.arpa", reverse_v6),
    ]
}

/// What an MTA asks: MX, then A and AAAA of the exchanges, PTRs, the SPF TXT, and a few names
/// that do not exist or lack the type.
fn query_file() -> String {
    let mut lines = vec![
        "example.test MX".to_string(),
        "mx1.example.test A".to_string(),
        "mx1.example.test AAAA".to_string(),
        "mx2.example.test A".to_string(),
        "mx2.example.test AAAA".to_string(),
        "sender.test MX".to_string(),
        "sender.test TXT".to_string(),
        "bounces.sender.test AAAA".to_string(),
        "nosuch.example.test A".to_string(),
        "mx1.example.test TXT".to_string(),
    ];
    for addr in ["10.77.0.2", "fd77::2", "10.77.1.2", "fd77:1::2"] {
        lines.push(format!("{} PTR", reverse_name(addr.parse().unwrap())));
    }
    lines.join("\n") + "\n"
}

/// Writes an NSD configuration and one zone file per zone into `dir`; returns the config path.
fn write_nsd_config(
    dir: &Path,
    zones: &[Zone],
    addr: SocketAddr,
    threads: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let mut config = format!(
        "server:\n\
         \x20 ip-address: {ip}\n\
         \x20 port: {port}\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 zonesdir: \"{d}\"\n\
         \x20 database: \"\"\n\
         \x20 zonelistfile: \"{d}/zone.list\"\n\
         \x20 xfrdfile: \"{d}/xfrd.state\"\n\
         \x20 xfrdir: \"{d}\"\n\
         \x20 pidfile: \"{d}/nsd.pid\"\n\
         \x20 logfile: \"{d}/nsd.log\"\n\
         \x20 server-count: {threads}\n\
         \x20 reuseport: yes\n\
         \x20 verbosity: 0\n\
         \x20 hide-version: yes\n\
         \x20 do-ip6: no\n\
         \x20 rrl-ratelimit: 0\n\
         \x20 rrl-whitelist-ratelimit: 0\n\
         remote-control:\n\
         \x20 control-enable: no\n",
        ip = addr.ip(),
        port = addr.port(),
    );
    for zone in zones {
        let file = format!("{}.zone", zone.origin);
        std::fs::write(dir.join(&file), zone_file(zone))?;
        write!(
            config,
            "zone:\n  name: \"{}\"\n  zonefile: \"{file}\"\n",
            zone.origin
        )?;
    }
    let path = dir.join("nsd.conf");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// The zone in master-file format, with the SOA and NS records mxlab generates.
fn zone_file(zone: &Zone) -> String {
    let origin = absolute(&zone.origin);
    let mut text = format!(
        "$TTL {RECORD_TTL}\n\
         {origin} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 {NEGATIVE_TTL}\n\
         {origin} IN NS ns.{origin}\n"
    );
    for record in &zone.records {
        let data = match &record.data {
            RecordData::A(addr) => format!("A {addr}"),
            RecordData::Aaaa(addr) => format!("AAAA {addr}"),
            RecordData::Mx {
                preference,
                exchange,
            } => format!("MX {preference} {}", absolute(exchange)),
            RecordData::Cname(target) => format!("CNAME {}", absolute(target)),
            RecordData::Ptr(target) => format!("PTR {}", absolute(target)),
            RecordData::Txt(text) => format!("TXT {text:?}"),
        };
        let _ = writeln!(text, "{} IN {data}", absolute(&record.name));
    }
    text
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A program on `PATH` or in the sbin directories (NSD lives in `/usr/sbin`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn nsd_version(nsd: &Path) -> String {
    let output = Command::new(nsd).arg("-v").output();
    output
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "NSD".to_string())
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port for NSD")
}

/// Waits up to 10 s until `server` answers an MX query over UDP.
fn wait_for_answers(server: SocketAddr) -> Result<()> {
    let mut query = Message::query();
    query.metadata.id = 1;
    query.add_query(Query::query(
        Name::from_ascii("example.test.")?,
        RecordType::MX,
    ));
    let bytes = query.to_vec()?;
    let socket = UdpSocket::bind((LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0; 4096];
    while Instant::now() < deadline {
        socket.send_to(&bytes, server)?;
        if let Ok((len, _)) = socket.recv_from(&mut buffer) {
            let response = Message::from_vec(&buffer[..len])?;
            if response.answers.len() == 2 {
                return Ok(());
            }
            bail!("{server} answered MX example.test with {response:?}");
        }
    }
    bail!("{server} did not answer within 10 s")
}

/// The numbers dnsperf reports.
struct Measurement {
    qps: f64,
    completed: String,
    lost: String,
}

/// Runs dnsperf against `server`, echoing its report, and reads the rate from it.
fn run_dnsperf(dnsperf: &Path, server: SocketAddr, settings: &[String]) -> Result<Measurement> {
    let output = Command::new(dnsperf)
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args(settings)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", dnsperf.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.contains("Statistics:"))
        .filter(|line| !line.trim().is_empty())
        .collect();
    for line in &report {
        println!("  {line}");
    }
    if !output.status.success() {
        bail!(
            "dnsperf failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |label: &str| {
        report
            .iter()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_string())
    };
    let qps = field("Queries per second:")
        .context("dnsperf printed no \"Queries per second\"")?
        .parse::<f64>()?;
    Ok(Measurement {
        qps,
        completed: field("Queries completed:").unwrap_or_default(),
        lost: field("Queries lost:").unwrap_or_default(),
    })
}

/// The NSD child; stopped (SIGTERM, then SIGKILL) and reaped on [`stop`](Self::stop) or drop,
/// waiting also for the server and xfrd processes it forked.
struct ChildGuard(Child);

impl ChildGuard {
    fn stop(self) {}
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        use nix::unistd::Pid;
        let Ok(pid) = i32::try_from(self.0.id()) else {
            return;
        };
        let forked = descendants_of(pid);
        // NSD's main process stops its server and xfrd processes on SIGTERM.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        // The forked processes may outlive it; as orphans they become this process's children
        // (it is a subreaper), so reap them here until none is left.
        let exists = |pid: &i32| Path::new(&format!("/proc/{pid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                if status == WaitStatus::StillAlive {
                    break;
                }
            }
            let left: Vec<i32> = forked.iter().copied().filter(exists).collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for pid in left {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Every process below `pid`, from `/proc`.
fn descendants_of(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        let children = children_of(parent);
        parents.extend(&children);
        found.extend(children);
    }
    found
}

/// The processes whose parent is `pid`, from `/proc`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, 1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Field `index` of a `/proc/PID/stat` line after the command name: 1 is the parent's PID.
fn stat_field(stat: &str, index: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(index)
}
