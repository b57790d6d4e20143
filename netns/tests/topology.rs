//! Topology tests: real sockets through the router, no DAD delay, root namespace untouched.
//! They need root; without it each is listed as ignored with the reason (and fails under
//! `MXLAB_REQUIRE_ALL=1`, set by `.ci/run`).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{ip, ns_inode, spec};
use netns::{Namespace, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Binds a listener inside `ns` and hands it to tokio.
fn listen(ns: &Namespace, addr: SocketAddr) -> tokio::net::TcpListener {
    let std_listener = ns
        .run(|| std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.label()));
    std_listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(std_listener).unwrap()
}

/// Connects from inside `ns` (socket made in the namespace, connect done by tokio).
async fn connect(ns: &Namespace, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = ns
        .run(|| match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        })
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect to {addr} from {} timed out", ns.label()))
        .unwrap_or_else(|e| panic!("connect to {addr} from {}: {e}", ns.label()))
}

async fn round_trip(
    topology: &Topology,
    from: &str,
    to: &str,
    to_addr: IpAddr,
    from_addr: IpAddr,
) -> Duration {
    // An ephemeral port: a second round trip to the same address must not meet the first
    // one's closing connection (the kernel refused a fixed port with EADDRINUSE in CI).
    let listener = listen(topology.host(to).unwrap(), SocketAddr::new(to_addr, 0));
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let (client, accepted) = tokio::join!(
        connect(topology.host(from).unwrap(), SocketAddr::new(to_addr, port)),
        listener.accept()
    );
    let elapsed = started.elapsed();
    let (mut server, peer) = accepted.unwrap();
    assert_eq!(
        peer.ip(),
        from_addr,
        "routed without NAT, source is the host's own address"
    );
    let mut client = client;
    client.write_all(b"EHLO sut\r\n").await.unwrap();
    let mut buf = [0u8; 10];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"EHLO sut\r\n");
    server.write_all(b"250 ok\r\n").await.unwrap();
    let mut reply = [0u8; 8];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"250 ok\r\n");
    elapsed
}

async fn tcp_through_router_both_families_without_dad_delay() {
    let spec = spec("tcp", 3);
    let t0 = Instant::now();
    let topology = Topology::build(&spec).await.unwrap();
    let built = t0.elapsed();

    let mx1 = &spec.hosts[2];
    let sut = &spec.hosts[0];
    let v6 = mx1.ipv6.unwrap().host;

    // Binding the IPv6 address must work at once: no tentative (DAD) phase.
    let t1 = Instant::now();
    let bound = topology
        .host("mx1")
        .unwrap()
        .run(|| std::net::TcpListener::bind((v6, 0)))
        .unwrap();
    let bind_after = t1.elapsed();
    assert!(bound.is_ok(), "bind [{v6}] right after build: {bound:?}");
    drop(bound);

    // Every link is operational at once: before the kernel's link watch runs, a new veth
    // drops what is sent on it.
    for name in ["sut", "dns", "mx1"] {
        let out = netns::output(topology.host(name).unwrap(), {
            let mut c = std::process::Command::new("ip");
            c.args(["-o", "link", "show", "mxlab0"]);
            c
        })
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("state UP"),
            "{name} right after build: {text}"
        );
        // And the router is a permanent neighbour on both families: no ARP or NDP to lose.
        let out = netns::output(topology.host(name).unwrap(), {
            let mut c = std::process::Command::new("ip");
            c.args(["neigh", "show", "dev", "mxlab0", "nud", "permanent"]);
            c
        })
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().count(),
            3,
            "{name}: permanent neighbours {text}"
        );
    }

    let rtt4 = round_trip(
        &topology,
        "sut",
        "mx1",
        IpAddr::V4(mx1.ipv4.unwrap().host),
        IpAddr::V4(sut.ipv4.unwrap().host),
    )
    .await;
    let rtt6 = round_trip(
        &topology,
        "sut",
        "mx1",
        IpAddr::V6(v6),
        IpAddr::V6(sut.ipv6.unwrap().host),
    )
    .await;
    eprintln!(
        "3-host build {built:?}; IPv6 bind {bind_after:?} after build; connect IPv4 {rtt4:?}, IPv6 {rtt6:?}"
    );
    // With DAD or an ignored first neighbour solicitation these take ≥ 1 s.
    assert!(
        rtt4 < Duration::from_millis(500),
        "IPv4 connect took {rtt4:?}"
    );
    assert!(
        rtt6 < Duration::from_millis(500),
        "IPv6 connect took {rtt6:?}"
    );

    // And the dns host reaches mx1 too; no address is tentative anywhere.
    round_trip(
        &topology,
        "dns",
        "mx1",
        IpAddr::V6(v6),
        IpAddr::V6(spec.hosts[1].ipv6.unwrap().host),
    )
    .await;
    for name in ["sut", "dns", "mx1"] {
        let out = netns::output(topology.host(name).unwrap(), {
            let mut c = std::process::Command::new("ip");
            c.args(["-6", "-o", "addr"]);
            c
        })
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("tentative"), "{name}: {text}");
        assert!(text.contains("mxlab0"), "{name}: {text}");
    }
}

async fn interfaces_routes_and_forwarding() {
    let spec = spec("ifs", 3);
    let topology = Topology::build(&spec).await.unwrap();
    assert_eq!(topology.router_interface("mx1"), Some("mxlab-mx1"));
    assert_eq!(topology.router_interface("nope"), None);
    assert!(topology.host("nope").is_none());
    assert_eq!(
        topology.host("sut").unwrap().label(),
        format!("{}-sut", spec.prefix)
    );
    assert_eq!(topology.router().label(), format!("{}-router", spec.prefix));

    let run = |ns: &Namespace, args: &[&str]| {
        let mut c = std::process::Command::new("ip");
        c.args(args);
        let out = netns::output(ns, c).unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let router_links = run(topology.router(), &["-o", "link"]);
    for name in ["lo", "mxlab-sut", "mxlab-dns", "mxlab-mx1"] {
        assert!(
            router_links.contains(&format!(": {name}@"))
                || router_links.contains(&format!(": {name}:")),
            "{router_links}"
        );
    }
    let host_links = run(topology.host("sut").unwrap(), &["-o", "link"]);
    assert_eq!(
        host_links.lines().count(),
        2,
        "lo + mxlab0 only: {host_links}"
    );
    assert!(host_links.contains("mxlab0@"), "{host_links}");
    let routes4 = run(topology.host("sut").unwrap(), &["route"]);
    assert!(
        routes4.contains("default via 192.0.2.1 dev mxlab0"),
        "{routes4}"
    );
    let routes6 = run(topology.host("sut").unwrap(), &["-6", "route"]);
    assert!(
        routes6.contains("default via 2001:db8:1::1 dev mxlab0"),
        "{routes6}"
    );

    let read = |ns: &Namespace, key: &str| {
        ns.run(|| {
            std::fs::read_to_string(format!("/proc/sys/{key}"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .unwrap()
    };
    assert_eq!(read(topology.router(), "net/ipv4/ip_forward"), "1");
    assert_eq!(read(topology.router(), "net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(
        read(
            topology.host("dns").unwrap(),
            "net/ipv6/conf/default/accept_dad"
        ),
        "0"
    );
    assert_eq!(
        read(
            topology.host("dns").unwrap(),
            "net/ipv6/conf/mxlab0/accept_dad"
        ),
        "0"
    );
    assert_eq!(
        read(topology.host("dns").unwrap(), "net/ipv4/ip_forward"),
        "0"
    );
    assert_ne!(
        ns_inode(topology.router()),
        ns_inode(topology.host("sut").unwrap())
    );
}

/// `ip` views of the root namespace that must not change.
fn root_view() -> Vec<String> {
    vec![
        ip(&["-o", "link"]),
        ip(&["-o", "addr"]),
        ip(&["route"]),
        ip(&["-6", "route"]),
        ip(&["netns", "list"]),
    ]
}

async fn root_namespace_unchanged_by_build_and_drop() {
    let resolv_before = std::fs::read("/etc/resolv.conf").unwrap();
    let before = root_view();
    let topology = Topology::build(&spec("root", 3)).await.unwrap();
    let during = root_view();
    drop(topology);
    let after = root_view();
    assert_eq!(
        before, during,
        "the root namespace changed while the topology existed"
    );
    assert_eq!(before, after, "the root namespace changed after drop");
    assert!(!after.concat().contains("mxlab"), "{after:?}");
    assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), resolv_before);
}

async fn build_and_drop_timing_six_hosts() {
    let mut builds = Vec::new();
    let mut drops = Vec::new();
    for round in 0..5 {
        let spec = spec(&format!("six{round}"), 6);
        let t0 = Instant::now();
        let topology = Topology::build(&spec).await.unwrap();
        builds.push(t0.elapsed());
        // Prove it works each time: sut → h5 over IPv6.
        let h5 = spec.hosts[5].ipv6.unwrap().host;
        let listener = topology
            .host("h5")
            .unwrap()
            .run(|| std::net::TcpListener::bind((h5, 25)))
            .unwrap()
            .unwrap();
        let mut client = topology
            .host("sut")
            .unwrap()
            .run(|| std::net::TcpStream::connect_timeout(&(h5, 25).into(), Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        client.write_all(b"x").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        drop((client, server, listener));
        let t1 = Instant::now();
        drop(topology);
        drops.push(t1.elapsed());
    }
    builds.sort();
    drops.sort();
    eprintln!("6-host Topology::build over 5 runs (sorted): {builds:?}");
    eprintln!("6-host Topology drop over 5 runs (sorted): {drops:?}");
    assert!(
        builds[2] < Duration::from_secs(2),
        "median build {:?}",
        builds[2]
    );
}

async fn invalid_spec_is_rejected_before_anything_is_created() {
    let mut spec = spec("bad", 2);
    spec.hosts[1].name = "sut".into();
    let err = Topology::build(&spec).await.unwrap_err();
    assert!(matches!(err, netns::Error::InvalidSpec(_)), "{err}");
    assert!(err.to_string().contains("appears twice"), "{err}");
}

/// Builds of many topologies at once (while others are dropped) must still hand back hosts
/// whose IPv6 addresses receive at once. The kernel makes a new IPv6 address local (its route
/// in table `local`) from a work queue that waits for the RTNL lock; under this load that can
/// come after the build, and a SYN sent then to the address is dropped without an answer
/// (`ip6_forward`, IP_INADDRERRORS) — seen as a lost first SYN. `Topology::build` waits for it.
fn ipv6_addresses_receive_right_after_concurrent_builds() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 6;
    // The kernel retransmits a lost SYN only after 1 s: a connect slower than this lost one.
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(900);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let mut failures = Vec::new();
                    for round in 0..ROUNDS {
                        let spec = spec(&format!("c{thread}r{round}"), 3);
                        let topology = runtime.block_on(Topology::build(&spec)).unwrap();
                        let sut = topology.host("sut").unwrap();
                        for to in &spec.hosts[1..] {
                            let addr = SocketAddr::new(IpAddr::V6(to.ipv6.unwrap().host), 2525);
                            let listener = topology
                                .host(&to.name)
                                .unwrap()
                                .run(|| std::net::TcpListener::bind(addr))
                                .unwrap()
                                .unwrap();
                            let connected = sut
                                .run(|| {
                                    std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                                })
                                .unwrap();
                            if let Err(e) = connected {
                                failures.push(format!("{}: sut → {addr}: {e}", spec.prefix));
                            }
                            drop(listener);
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} first IPv6 connects failed: {failures:#?}",
        failures.len(),
        THREADS * ROUNDS * 2
    );
}

fn main() {
    let root = common::needs_root();
    common::run(vec![
        common::trial(
            "tcp_through_router_both_families_without_dad_delay",
            root.clone(),
            || common::on_threads(tcp_through_router_both_families_without_dad_delay()),
        ),
        common::trial("interfaces_routes_and_forwarding", root.clone(), || {
            common::on_threads(interfaces_routes_and_forwarding())
        }),
        common::trial(
            "root_namespace_unchanged_by_build_and_drop",
            root.clone(),
            || common::on_current_thread(root_namespace_unchanged_by_build_and_drop()),
        ),
        common::trial("build_and_drop_timing_six_hosts", root.clone(), || {
            common::on_threads(build_and_drop_timing_six_hosts())
        }),
        common::trial(
            "invalid_spec_is_rejected_before_anything_is_created",
            None,
            || common::on_current_thread(invalid_spec_is_rejected_before_anything_is_created()),
        ),
        common::trial(
            "ipv6_addresses_receive_right_after_concurrent_builds",
            root.clone(),
            ipv6_addresses_receive_right_after_concurrent_builds,
        ),
    ])
}
