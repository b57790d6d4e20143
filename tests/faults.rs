//! Network faults in a real topology: each kind, each family, measured with real sockets from
//! the SUT's namespace. Needs root; otherwise reported as ignored with the reason (failed
//! under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mxlab::activation::Activation;
use mxlab::family::Family;
use mxlab::faults::{self, FaultError};
use mxlab::plan::{NetFaultPlan, Plan};
use mxlab::scenario::{parse, NetFault};
use netns::{Namespace, Topology};

const SCENARIO: &str = r#"
description = "fault mechanics"

[[mx]]
name = "mx1"
domain = "example.test"

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#;

/// "Times out" means no answer within this.
const TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a connect() that must fail with an error (not time out) may wait for it.
const ERROR_TIMEOUT: Duration = Duration::from_secs(10);
/// A connect() failed by an ICMP error or a reset must fail within this: IPv6 ICMP errors
/// abort connect() only at the first SYN retransmission (~1.03 s), so 3.4x headroom.
const QUICK: Duration = Duration::from_millis(3500);
/// A connect() with no route must fail within this: the kernel answers at once (µs), and
/// this is still well below the ~1 s of a SYN retransmission.
const AT_ONCE: Duration = Duration::from_millis(500);
/// How long sent datagrams may take to be counted (they arrive in well under a millisecond).
const DATAGRAMS_SETTLE: Duration = Duration::from_secs(3);
const UDP_PORT: u16 = 9;
const BIG: usize = 4000;

/// A TCP server on port 25 and a UDP counter on port 9 inside one namespace, with threads that
/// stop (and close their sockets) on drop.
struct Server {
    stop: Arc<AtomicBool>,
    sunk: Arc<AtomicUsize>,
    datagrams: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Namespace) -> Server {
        let (listener, udp) = ns
            .run(|| {
                let listener = TcpListener::bind(("::", 25))?;
                let udp = UdpSocket::bind(("::", UDP_PORT))?;
                io::Result::Ok((listener, udp))
            })
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sunk = Arc::new(AtomicUsize::new(0));
        let datagrams = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let (stop, sunk) = (stop.clone(), sunk.clone());
            threads.push(std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (stop, sunk) = (stop.clone(), sunk.clone());
                            connections
                                .push(std::thread::spawn(move || serve(stream, &stop, &sunk)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for c in connections {
                    let _ = c.join();
                }
            }));
        }
        {
            let (stop, datagrams) = (stop.clone(), datagrams.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if udp.recv_from(&mut buf).is_ok() {
                        datagrams.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Server {
            stop,
            sunk,
            datagrams,
            threads,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// First byte: 'e' echo, 's' sink (count bytes), 'b' send BIG bytes then wait for EOF.
fn serve(mut stream: TcpStream, stop: &AtomicBool, sunk: &AtomicUsize) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut mode = None;
    let mut buf = [0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let data = match mode {
                    None => {
                        mode = Some(buf[0]);
                        if buf[0] == b'b' {
                            let _ = stream.write_all(&[b'x'; BIG]);
                        }
                        &buf[1..n]
                    }
                    Some(_) => &buf[..n],
                };
                match mode {
                    Some(b'e') => {
                        let _ = stream.write_all(data);
                    }
                    Some(b's') => {
                        sunk.fetch_add(data.len(), Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The kernel adds the IPv6 link-local addresses about 1 s after the veth links come up; until
/// then the router cannot send neighbour solicitations and forwarded IPv6 packets are lost.
fn wait_for_link_locals(topology: &Topology, hosts: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut command = std::process::Command::new("ip");
        command.args(["-6", "-o", "addr", "show", "scope", "link"]);
        let out = netns::output(topology.router(), command).unwrap();
        if String::from_utf8_lossy(&out.stdout).lines().count() >= hosts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "router link-local addresses never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Lab {
    // Drop order: servers (sockets) first, then the namespaces.
    mx1: Server,
    dns: Server,
    plan: Plan,
    topology: Topology,
}

impl Lab {
    async fn new(tag: &str) -> Lab {
        let scenario = parse(Path::new("scenarios/net/faults.toml"), SCENARIO).unwrap();
        let plan = Plan::new(&scenario);
        let topology =
            Topology::build(&plan.topology(&format!("mxlab-f{}-{tag}", std::process::id())))
                .await
                .unwrap();
        wait_for_link_locals(&topology, plan.hosts().count());
        let mx1 = Server::start(topology.host("mx1").unwrap());
        let dns = Server::start(topology.host("dns").unwrap());
        Lab {
            mx1,
            dns,
            plan,
            topology,
        }
    }

    fn sut(&self) -> &Namespace {
        self.topology.host("sut").unwrap()
    }

    fn address(&self, host: &str, family: Family) -> IpAddr {
        self.plan.host(host).unwrap().address(family).unwrap()
    }

    fn fault(&self, kind: NetFault, family: Family, first: Option<u32>) -> NetFaultPlan {
        let host = if kind == NetFault::NoRoute {
            "sut"
        } else {
            "mx1"
        };
        NetFaultPlan {
            description: format!("{kind} on {host} {family}"),
            kind,
            host: host.into(),
            sut_host: self.plan.sut.name.clone(),
            family,
            target: self.address(host, family),
            sut: self.plan.sut_addresses.address(family),
            activation: Activation {
                first,
                ..Activation::ALWAYS
            },
        }
    }

    /// connect() from the SUT to port 25 of `addr`, giving up after [`TIMEOUT`]: the outcome
    /// and how long it took.
    fn connect(&self, addr: IpAddr) -> (io::Result<TcpStream>, Duration) {
        self.connect_within(addr, TIMEOUT)
    }

    /// connect() from the SUT to port 25 of `addr`, giving up after `timeout`.
    fn connect_within(&self, addr: IpAddr, timeout: Duration) -> (io::Result<TcpStream>, Duration) {
        self.sut()
            .run(|| {
                let started = Instant::now();
                let result = TcpStream::connect_timeout(&SocketAddr::new(addr, 25), timeout);
                (result, started.elapsed())
            })
            .unwrap()
    }

    fn mx1_connects(&self, family: Family) -> bool {
        self.connect(self.address("mx1", family)).0.is_ok()
    }

    /// Sends `count` small datagrams from the SUT to `addr`; returns how many `server` got.
    fn datagrams(&self, server: &Server, addr: IpAddr, count: usize) -> usize {
        let before = server.datagrams.load(Ordering::Relaxed);
        let socket = self
            .sut()
            .run(|| {
                UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })
            })
            .unwrap()
            .unwrap();
        for i in 0..count {
            socket
                .send_to(
                    format!("datagram {i}").as_bytes(),
                    SocketAddr::new(addr, UDP_PORT),
                )
                .unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        settled_count(&server.datagrams, before, count)
    }
}

/// How many of `sent` datagrams `counter` (at `before` when sending began) has counted: polls
/// until all have arrived, or [`DATAGRAMS_SETTLE`] has passed (when some were lost).
fn settled_count(counter: &AtomicUsize, before: usize, sent: usize) -> usize {
    let deadline = Instant::now() + DATAGRAMS_SETTLE;
    loop {
        let got = counter.load(Ordering::Relaxed) - before;
        if got >= sent || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn describe(result: &io::Result<TcpStream>) -> String {
    match result {
        Ok(_) => "connected".into(),
        Err(e) => match e.raw_os_error() {
            Some(code) => format!("{} ({e})", errno_name(code)),
            None => format!("{:?} ({e})", e.kind()),
        },
    }
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "errno",
    }
}

fn other(family: Family) -> Family {
    match family {
        Family::Ipv4 => Family::Ipv6,
        Family::Ipv6 => Family::Ipv4,
    }
}

async fn each_kind_each_family_fails_connect_as_specified_and_heals() {
    let lab = Lab::new("kinds").await;
    let kinds = [
        NetFault::Blackhole,
        NetFault::SynDrop,
        NetFault::Reset,
        NetFault::Unreachable,
        NetFault::Prohibit,
        NetFault::NoRoute,
    ];
    let mut table = Vec::new();
    for (index, (kind, family)) in kinds
        .iter()
        .flat_map(|k| [Family::Ipv4, Family::Ipv6].map(|f| (*k, f)))
        .enumerate()
    {
        assert!(lab.mx1_connects(family), "{kind} {family}: connects before");
        let fault = lab.fault(kind, family, None);
        let installed = faults::install(&lab.topology, &fault, index).await.unwrap();
        assert_eq!(installed.description(), fault.description);
        let target = lab.address("mx1", family);
        let timeout = match kind {
            NetFault::Blackhole | NetFault::SynDrop => TIMEOUT,
            _ => ERROR_TIMEOUT,
        };
        let (result, elapsed) = lab.connect_within(target, timeout);
        table.push(format!(
            "{:<13} {family}: {:<60} after {:>7.1} ms",
            kind.to_string(),
            describe(&result),
            elapsed.as_secs_f64() * 1e3
        ));
        let errno = result.as_ref().err().and_then(|e| e.raw_os_error());
        let quick = elapsed < QUICK;
        match kind {
            NetFault::Blackhole | NetFault::SynDrop => {
                let e = result.as_ref().expect_err("must time out");
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{kind} {family}: {e}");
                assert!(elapsed >= TIMEOUT - Duration::from_millis(50));
            }
            NetFault::Reset => {
                assert_eq!(errno, Some(libc::ECONNREFUSED), "{kind} {family}");
                assert!(quick, "{kind} {family}: {elapsed:?}");
            }
            NetFault::Unreachable => {
                assert_eq!(errno, Some(libc::EHOSTUNREACH), "{kind} {family}");
                assert!(quick, "{kind} {family}: {elapsed:?}");
            }
            NetFault::Prohibit => {
                let expected = match family {
                    Family::Ipv4 => libc::EHOSTUNREACH,
                    Family::Ipv6 => libc::EACCES,
                };
                assert_eq!(errno, Some(expected), "{kind} {family}");
                assert!(quick, "{kind} {family}: {elapsed:?}");
            }
            NetFault::NoRoute => {
                assert_eq!(errno, Some(libc::ENETUNREACH), "{kind} {family}");
                assert!(elapsed < AT_ONCE, "{elapsed:?}");
            }
            _ => unreachable!(),
        }
        // The other family, and the DNS server, are untouched.
        assert!(
            lab.mx1_connects(other(family)),
            "{kind} {family}: other family"
        );
        if kind != NetFault::NoRoute {
            let dns = lab.address("dns", family);
            assert_eq!(
                lab.datagrams(&lab.dns, dns, 20),
                20,
                "{kind} {family}: DNS host"
            );
        }
        // syn-drop and reset are about TCP to port 25 only: UDP to the host passes.
        if matches!(kind, NetFault::SynDrop | NetFault::Reset) {
            assert_eq!(
                lab.datagrams(&lab.mx1, target, 20),
                20,
                "{kind} {family}: UDP"
            );
        }
        installed.heal().await.unwrap();
        assert!(
            lab.mx1_connects(family),
            "{kind} {family}: connects after heal"
        );
    }
    eprintln!("connect() from the SUT to port 25 of mx1 under each fault:");
    for line in &table {
        eprintln!("  {line}");
    }
}

/// Reads from `stream` until `want` bytes or `within` passes; returns how many arrived.
fn read_for(stream: &mut TcpStream, want: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut got = 0;
    let mut buf = [0u8; 8192];
    while got < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    got
}

/// Small echo, SUT→MX 4000 bytes, MX→SUT 4000 bytes: (echoed, delivered to MX, delivered to SUT).
fn pmtu_probe(lab: &Lab, family: Family) -> (bool, usize, usize) {
    let target = lab.address("mx1", family);
    let wait = Duration::from_secs(2);
    let mut echo = lab.connect(target).0.expect("connect for echo");
    echo.write_all(b"e0123456789").unwrap();
    let echoed = read_for(&mut echo, 10, Duration::from_secs(1)) == 10;

    let before = lab.mx1.sunk.load(Ordering::Relaxed);
    let mut sink = lab.connect(target).0.expect("connect for sink");
    sink.write_all(b"s").unwrap();
    sink.write_all(&[b'y'; BIG]).unwrap();
    let deadline = Instant::now() + wait;
    while lab.mx1.sunk.load(Ordering::Relaxed) - before < BIG && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let to_mx = lab.mx1.sunk.load(Ordering::Relaxed) - before;

    let mut big = lab.connect(target).0.expect("connect for big reply");
    big.write_all(b"b").unwrap();
    let to_sut = read_for(&mut big, BIG, wait);
    (echoed, to_mx, to_sut)
}

async fn pmtu_blackhole_stalls_big_packets_both_ways_and_heals() {
    let lab = Lab::new("pmtu").await;
    for (index, family) in [Family::Ipv4, Family::Ipv6].into_iter().enumerate() {
        assert_eq!(
            pmtu_probe(&lab, family),
            (true, BIG, BIG),
            "{family} before"
        );
        let installed = faults::install(
            &lab.topology,
            &lab.fault(NetFault::PmtuBlackhole, family, None),
            index,
        )
        .await
        .unwrap();
        let (echoed, to_mx, to_sut) = pmtu_probe(&lab, family);
        eprintln!("pmtu-blackhole {family}: small echo {echoed}, SUT→MX {to_mx}/{BIG} bytes, MX→SUT {to_sut}/{BIG} bytes in 2 s");
        assert!(echoed, "{family}: small packets pass");
        assert!(to_mx < BIG, "{family}: SUT→MX big write stalls");
        assert!(to_sut < BIG, "{family}: MX→SUT big write stalls");
        assert_eq!(
            pmtu_probe(&lab, other(family)),
            (true, BIG, BIG),
            "{family}: other family"
        );
        installed.heal().await.unwrap();
        assert_eq!(
            pmtu_probe(&lab, family),
            (true, BIG, BIG),
            "{family} after heal"
        );
    }
}

async fn loss_drops_about_its_percentage_both_ways() {
    let lab = Lab::new("loss").await;
    let mut index = 0;
    for family in [Family::Ipv4, Family::Ipv6] {
        let target = lab.address("mx1", family);
        let dns = lab.address("dns", family);
        for (percent, band) in [(100u8, 0..=0), (50, 60..=140)] {
            let fault = lab.fault(NetFault::Loss { percent }, family, None);
            let installed = faults::install(&lab.topology, &fault, index).await.unwrap();
            index += 1;
            let got = lab.datagrams(&lab.mx1, target, 200);
            eprintln!("loss {percent}% {family}: {got}/200 datagrams arrived");
            assert!(band.contains(&got), "loss {percent}% {family}: {got}/200");
            assert_eq!(lab.datagrams(&lab.dns, dns, 200), 200, "DNS host untouched");
            let other_target = lab.address("mx1", other(family));
            assert_eq!(
                lab.datagrams(&lab.mx1, other_target, 200),
                200,
                "other family untouched"
            );
            if percent == 100 {
                // Packets from the host are lost too: the SYN-ACK never comes back... and
                // neither does a SYN get through; connect times out.
                let (result, _) = lab.connect(target);
                assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
            }
            installed.heal().await.unwrap();
            assert_eq!(lab.datagrams(&lab.mx1, target, 200), 200, "after heal");
        }
    }
}

async fn loss_from_the_host_only_is_covered() {
    // Direction MX → SUT: datagrams sent from mx1 to the SUT are lost under loss 100.
    let lab = Lab::new("lossback").await;
    let sut_server = Server::start(lab.sut());
    for (index, family) in [Family::Ipv4, Family::Ipv6].into_iter().enumerate() {
        let sut = lab.address("sut", family);
        let send = |count: usize| {
            let before = sut_server.datagrams.load(Ordering::Relaxed);
            let socket = lab
                .topology
                .host("mx1")
                .unwrap()
                .run(|| UdpSocket::bind(if sut.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }))
                .unwrap()
                .unwrap();
            for i in 0..count {
                socket
                    .send_to(
                        format!("back {i}").as_bytes(),
                        SocketAddr::new(sut, UDP_PORT),
                    )
                    .unwrap();
            }
            settled_count(&sut_server.datagrams, before, count)
        };
        assert_eq!(send(50), 50, "{family}: MX→SUT before");
        let installed = faults::install(
            &lab.topology,
            &lab.fault(NetFault::Loss { percent: 100 }, family, None),
            index,
        )
        .await
        .unwrap();
        assert_eq!(send(50), 0, "{family}: MX→SUT lost");
        installed.heal().await.unwrap();
        assert_eq!(send(50), 50, "{family}: MX→SUT after heal");
    }
    drop(sut_server);
}

async fn first_n_connections_meet_the_fault_later_ones_pass() {
    let lab = Lab::new("first").await;
    let mut index = 0;
    for family in [Family::Ipv4, Family::Ipv6] {
        let target = lab.address("mx1", family);

        // blackhole, first = 1: the first connection's SYNs (incl. the retransmission after
        // 1 s) are dropped; the next connections pass.
        let installed = faults::install(
            &lab.topology,
            &lab.fault(NetFault::Blackhole, family, Some(1)),
            index,
        )
        .await
        .unwrap();
        index += 1;
        let (first, elapsed) = lab.connect(target);
        let e = first.expect_err("first connection times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{family}: {e}");
        assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
        for n in 2..=3 {
            let (result, elapsed) = lab.connect(target);
            assert!(
                result.is_ok(),
                "{family}: connection {n}: {}",
                describe(&result)
            );
            assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
        }
        installed.heal().await.unwrap();

        // syn-drop, first = 1, with a longer wait: the SYN retransmissions of the first
        // connection keep meeting the fault.
        let installed = faults::install(
            &lab.topology,
            &lab.fault(NetFault::SynDrop, family, Some(1)),
            index,
        )
        .await
        .unwrap();
        index += 1;
        let (first, elapsed) = lab
            .sut()
            .run(|| {
                let started = Instant::now();
                let r = TcpStream::connect_timeout(
                    &SocketAddr::new(target, 25),
                    Duration::from_millis(3500),
                );
                (r, started.elapsed())
            })
            .unwrap();
        assert_eq!(
            first.unwrap_err().kind(),
            io::ErrorKind::TimedOut,
            "{family}"
        );
        assert!(elapsed >= Duration::from_millis(3400));
        assert!(lab.connect(target).0.is_ok(), "{family}: second connection");
        installed.heal().await.unwrap();

        // reset, first = 2: refused, refused, then connected.
        let installed = faults::install(
            &lab.topology,
            &lab.fault(NetFault::Reset, family, Some(2)),
            index,
        )
        .await
        .unwrap();
        index += 1;
        let outcomes: Vec<String> = (0..4).map(|_| describe(&lab.connect(target).0)).collect();
        eprintln!("reset first=2 {family}: {outcomes:?}");
        assert!(outcomes[0].starts_with("ECONNREFUSED"), "{outcomes:?}");
        assert!(outcomes[1].starts_with("ECONNREFUSED"), "{outcomes:?}");
        assert_eq!(outcomes[2], "connected");
        assert_eq!(outcomes[3], "connected");
        installed.heal().await.unwrap();
    }

    for kind in [NetFault::NoRoute, NetFault::PmtuBlackhole] {
        let err = faults::install(&lab.topology, &lab.fault(kind, Family::Ipv6, Some(1)), 99)
            .await
            .unwrap_err();
        assert!(matches!(err, FaultError::Unsupported { .. }), "{err}");
        assert!(
            err.to_string().contains("`first = 1` is not supported"),
            "{err}"
        );
        assert!(!faults::supports_first(kind));
    }
}

/// State of a namespace that faults may touch (link-local lines left out: the kernel adds
/// them asynchronously after links come up).
fn state(ns: &Namespace) -> String {
    let mut text = String::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        let mut command = std::process::Command::new("ip");
        command.args(args);
        let out = netns::output(ns, command).unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.contains("fe80:") {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let mut command = std::process::Command::new("nft");
    command.args(["list", "ruleset"]);
    let out = netns::output(ns, command).unwrap();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text
}

fn root_state() -> String {
    let mut text = String::new();
    for args in [
        &["-o", "link"][..],
        &["-o", "addr"],
        &["route"],
        &["-6", "route"],
    ] {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let out = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text.push_str(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    text
}

async fn heal_removes_exactly_what_install_added_and_the_root_namespace_is_untouched() {
    let root_before = root_state();
    let lab = Lab::new("clean").await;
    let router_before = state(lab.topology.router());
    let sut_before = state(lab.sut());
    let kinds = [
        (NetFault::Blackhole, None),
        (NetFault::Blackhole, Some(3)),
        (NetFault::SynDrop, None),
        (NetFault::Reset, Some(1)),
        (NetFault::Unreachable, None),
        (NetFault::Prohibit, None),
        (NetFault::NoRoute, None),
        (NetFault::PmtuBlackhole, None),
        (NetFault::Loss { percent: 30 }, None),
        (NetFault::Loss { percent: 30 }, Some(2)),
    ];
    let mut index = 0;
    for (kind, first) in kinds {
        for family in [Family::Ipv4, Family::Ipv6] {
            let fault = lab.fault(kind, family, first);
            let installed = faults::install(&lab.topology, &fault, index).await.unwrap();
            index += 1;
            let changed =
                state(lab.topology.router()) != router_before || state(lab.sut()) != sut_before;
            assert!(changed, "{} changed nothing", fault.description);
            installed.heal().await.unwrap();
            assert_eq!(
                state(lab.topology.router()),
                router_before,
                "{}: router",
                fault.description
            );
            assert_eq!(state(lab.sut()), sut_before, "{}: sut", fault.description);
        }
    }
    // Several faults at once, healed in another order.
    let a = faults::install(
        &lab.topology,
        &lab.fault(NetFault::PmtuBlackhole, Family::Ipv6, None),
        100,
    )
    .await
    .unwrap();
    let b = faults::install(
        &lab.topology,
        &lab.fault(NetFault::PmtuBlackhole, Family::Ipv4, None),
        101,
    )
    .await
    .unwrap();
    let c = faults::install(
        &lab.topology,
        &lab.fault(NetFault::NoRoute, Family::Ipv4, None),
        102,
    )
    .await
    .unwrap();
    let d = faults::install(
        &lab.topology,
        &lab.fault(NetFault::Reset, Family::Ipv6, None),
        103,
    )
    .await
    .unwrap();
    a.heal().await.unwrap();
    d.heal().await.unwrap();
    c.heal().await.unwrap();
    b.heal().await.unwrap();
    assert_eq!(state(lab.topology.router()), router_before);
    assert_eq!(state(lab.sut()), sut_before);
    // A failing install leaves nothing behind: the same nft table index twice.
    let kept = faults::install(
        &lab.topology,
        &lab.fault(NetFault::Blackhole, Family::Ipv4, None),
        7,
    )
    .await
    .unwrap();
    let with_kept = state(lab.topology.router());
    let err = faults::install(
        &lab.topology,
        &lab.fault(NetFault::PmtuBlackhole, Family::Ipv4, None),
        7,
    )
    .await
    .unwrap_err();
    eprintln!("duplicate index: {err}");
    assert!(matches!(err, FaultError::System { .. }), "{err}");
    assert_eq!(state(lab.topology.router()), with_kept);
    kept.heal().await.unwrap();
    drop(lab);
    assert_eq!(root_state(), root_before, "root namespace changed");
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = common::needs_root("creates network namespaces and firewall rules");
    let trials = vec![
        common::trial(
            "each_kind_each_family_fails_connect_as_specified_and_heals",
            reason.clone(),
            || {
                common::runtime()
                    .block_on(each_kind_each_family_fails_connect_as_specified_and_heals());
                Ok(())
            },
        ),
        common::trial(
            "pmtu_blackhole_stalls_big_packets_both_ways_and_heals",
            reason.clone(),
            || {
                common::runtime().block_on(pmtu_blackhole_stalls_big_packets_both_ways_and_heals());
                Ok(())
            },
        ),
        common::trial(
            "loss_drops_about_its_percentage_both_ways",
            reason.clone(),
            || {
                common::runtime().block_on(loss_drops_about_its_percentage_both_ways());
                Ok(())
            },
        ),
        common::trial("loss_from_the_host_only_is_covered", reason.clone(), || {
            common::runtime().block_on(loss_from_the_host_only_is_covered());
            Ok(())
        }),
        common::trial(
            "first_n_connections_meet_the_fault_later_ones_pass",
            reason.clone(),
            || {
                common::runtime().block_on(first_n_connections_meet_the_fault_later_ones_pass());
                Ok(())
            },
        ),
        common::trial(
            "heal_removes_exactly_what_install_added_and_the_root_namespace_is_untouched",
            reason.clone(),
            || {
                common::runtime().block_on(
                    heal_removes_exactly_what_install_added_and_the_root_namespace_is_untouched(),
                );
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
