//! Tests of the SYN watch: retransmission numbering, and (as root) real SYNs through a
//! topology's router.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{HostSpec, LinkAddresses, Namespace, Topology, TopologySpec};
use tokio::sync::mpsc;

use super::parse::{parse_syn, ParsedSyn};
use super::*;

#[test]
fn retransmissions_are_numbered_per_4_tuple_and_sequence() {
    let mut tracker = Tracker::default();
    let now = Instant::now();
    let a: SocketAddr = "192.0.2.2:40000".parse().unwrap();
    let b: SocketAddr = "[2001:db8::2]:40000".parse().unwrap();
    let server4: SocketAddr = "192.0.2.26:25".parse().unwrap();
    let server6: SocketAddr = "[2001:db8:0:3::2]:25".parse().unwrap();
    let syn = |client, server, sequence| ParsedSyn {
        client,
        server,
        sequence,
    };
    let mut numbers = |p: ParsedSyn| tracker.observe(p, now).retransmission;
    assert_eq!(numbers(syn(a, server4, 1)), 0);
    assert_eq!(numbers(syn(a, server4, 1)), 1);
    assert_eq!(numbers(syn(b, server6, 1)), 0, "other 4-tuple");
    assert_eq!(numbers(syn(a, server4, 1)), 2);
    assert_eq!(numbers(syn(b, server6, 1)), 1);
    // The same 4-tuple with a new initial sequence number is a new connection attempt.
    assert_eq!(numbers(syn(a, server4, 99)), 0);
    assert_eq!(numbers(syn(a, server4, 99)), 1);
    let syn = tracker.observe(syn(a, server4, 99), now);
    assert_eq!(
        syn,
        Syn {
            client: a,
            server: server4,
            retransmission: 2
        }
    );
}

#[test]
fn pruning_forgets_stale_4_tuples_only() {
    let mut tracker = Tracker::default();
    let start = Instant::now();
    let server: SocketAddr = "192.0.2.26:25".parse().unwrap();
    for port in 0..PRUNE_AT as u16 {
        let client = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 2).into(), 1024 + port);
        tracker.observe(
            ParsedSyn {
                client,
                server,
                sequence: 5,
            },
            start,
        );
    }
    let fresh: SocketAddr = "192.0.2.2:9".parse().unwrap();
    let later = start + FORGET_AFTER + Duration::from_secs(1);
    let p = ParsedSyn {
        client: fresh,
        server,
        sequence: 5,
    };
    assert_eq!(tracker.observe(p, later).retransmission, 0);
    assert_eq!(tracker.seen.len(), 1, "stale entries pruned");
    assert_eq!(tracker.observe(p, later).retransmission, 1);
}

const SUT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const MX4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 26);
const SUT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const MX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 3, 0, 0, 0, 2);

async fn topology(tag: &str) -> Topology {
    let spec = TopologySpec {
        prefix: format!("mxlab-t{}-{tag}", std::process::id()),
        hosts: vec![
            HostSpec {
                name: "sut".into(),
                ipv4: Some(LinkAddresses {
                    host: SUT4,
                    router: Ipv4Addr::new(192, 0, 2, 1),
                    prefix_len: 29,
                }),
                ipv6: Some(LinkAddresses {
                    host: SUT6,
                    router: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                    prefix_len: 64,
                }),
            },
            HostSpec {
                name: "mx1".into(),
                ipv4: Some(LinkAddresses {
                    host: MX4,
                    router: Ipv4Addr::new(192, 0, 2, 25),
                    prefix_len: 29,
                }),
                ipv6: Some(LinkAddresses {
                    host: MX6,
                    router: Ipv6Addr::new(0x2001, 0xdb8, 0, 3, 0, 0, 0, 1),
                    prefix_len: 64,
                }),
            },
        ],
    };
    Topology::build(&spec).await.expect("build topology")
}

/// A listener bound inside `ns`, kept open (the backlog completes handshakes).
fn listen(ns: &Namespace, addr: SocketAddr) -> std::net::TcpListener {
    ns.run(|| std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.label()))
}

/// Connects from a socket created inside `ns`, giving up after `limit`.
async fn connect(
    ns: &Namespace,
    addr: SocketAddr,
    limit: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = ns
        .run(|| match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        })
        .unwrap()
        .unwrap();
    match tokio::time::timeout(limit, socket.connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A watch whose SYNs arrive on a channel.
fn watch(ns: &Namespace, interface: &str, port: u16) -> (SynWatch, mpsc::UnboundedReceiver<Syn>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = watch_syns(ns, interface, port, move |syn| {
        let _ = tx.send(syn);
    })
    .unwrap_or_else(|e| panic!("watch {interface}: {e}"));
    (watch, rx)
}

/// Everything received within `settle`.
async fn drain(rx: &mut mpsc::UnboundedReceiver<Syn>, settle: Duration) -> Vec<Syn> {
    tokio::time::sleep(settle).await;
    let mut syns = Vec::new();
    while let Ok(syn) = rx.try_recv() {
        syns.push(syn);
    }
    syns
}

#[test_with::root()]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_syn_per_connection_for_both_families() {
    crate::test_support::require_root("network namespaces, packet sockets");
    let topology = topology("capsyn").await;
    let sut = topology.host("sut").unwrap();
    let mx1 = topology.host("mx1").unwrap();
    let sut_if = topology.router_interface("sut").unwrap();
    let mx1_if = topology.router_interface("mx1").unwrap();

    let targets = [
        SocketAddr::new(MX4.into(), 25),
        SocketAddr::new(MX6.into(), 25),
        SocketAddr::new(MX4.into(), 26),
        SocketAddr::new(MX6.into(), 26),
    ];
    let _listeners: Vec<_> = targets.iter().map(|a| listen(mx1, *a)).collect();

    // A bare socket with the same filter, read directly: shows what the kernel lets through.
    let name = std::ffi::CString::new(sut_if).unwrap();
    let bare = topology
        .router()
        .run(|| open_socket(&name, 25))
        .unwrap()
        .unwrap_or_else(|(action, e)| panic!("{action}: {e}"));
    let (on_sut, mut syns) = watch(topology.router(), sut_if, 25);
    // The router forwards the same SYNs out of its mx1 interface: outgoing, never reported.
    let (on_mx1, mut forwarded) = watch(topology.router(), mx1_if, 25);
    // And in the sut namespace its own SYNs leave through mxlab0: outgoing too.
    let (on_sut_host, mut sent) = watch(sut, "mxlab0", 25);

    let mut clients = Vec::new();
    for target in targets {
        let stream = connect(sut, target, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("connect {target}: {e}"));
        clients.push((stream.local_addr().unwrap(), stream));
    }
    let seen = drain(&mut syns, Duration::from_millis(300)).await;
    assert_eq!(
        seen,
        vec![
            Syn {
                client: clients[0].0,
                server: targets[0],
                retransmission: 0
            },
            Syn {
                client: clients[1].0,
                server: targets[1],
                retransmission: 0
            },
        ],
        "port 26 is not reported"
    );
    assert_eq!(clients[0].0.ip(), std::net::IpAddr::V4(SUT4));
    assert_eq!(clients[1].0.ip(), std::net::IpAddr::V6(SUT6));
    assert!(seen[0].server.is_ipv4() && seen[1].server.is_ipv6());
    assert_eq!(
        drain(&mut forwarded, Duration::ZERO).await,
        vec![],
        "outgoing on the router"
    );
    assert_eq!(
        drain(&mut sent, Duration::ZERO).await,
        vec![],
        "outgoing in the sut"
    );
    // The kernel filter passed exactly the two SYNs: no handshake ACKs, no SYN-ACKs going
    // back out, no port 26, no ARP or neighbour discovery.
    let mut buf = [0u8; 2048];
    let mut passed = Vec::new();
    loop {
        match receive(&bare, &mut buf) {
            Ok((len, pkttype)) => passed.push((pkttype, parse_syn(&buf[..len]))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("receive: {e}"),
        }
    }
    let expected: Vec<_> = seen
        .iter()
        .map(|s| (libc::PACKET_HOST, Some((s.client, s.server))))
        .collect();
    let passed: Vec<_> = passed
        .into_iter()
        .map(|(t, p)| (t, p.map(|p| (p.client, p.server))))
        .collect();
    assert_eq!(passed, expected);
    drop(on_mx1);
    drop(on_sut_host);

    // After stop() nothing more is reported.
    on_sut.stop().await;
    let _late = connect(sut, targets[0], Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(drain(&mut syns, Duration::from_millis(200)).await, vec![]);
}

#[test_with::root()]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmitted_syns_are_numbered() {
    crate::test_support::require_root("network namespaces, packet sockets");
    let topology = topology("capretx").await;
    let sut = topology.host("sut").unwrap();
    let mx1 = topology.host("mx1").unwrap();
    let mut nft = Command::new("nft");
    nft.arg(
        "add table inet mxlab; \
         add chain inet mxlab input { type filter hook input priority 0; policy accept; }; \
         add rule inet mxlab input tcp dport 25 drop",
    );
    let out = netns::output(mx1, nft).expect("run nft in mx1");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_watch, mut syns) = watch(
        topology.router(),
        topology.router_interface("sut").unwrap(),
        25,
    );
    let started = Instant::now();
    let limit = Duration::from_millis(3500);
    let (v4, v6) = tokio::join!(
        connect(sut, SocketAddr::new(MX4.into(), 25), limit),
        connect(sut, SocketAddr::new(MX6.into(), 25), limit),
    );
    assert!(
        v4.is_err() && v6.is_err(),
        "SYNs are dropped: {v4:?} {v6:?}"
    );
    let seen = drain(&mut syns, Duration::from_millis(100)).await;
    eprintln!("after {:?}: {seen:#?}", started.elapsed());

    let mut counted = 0;
    for server in [
        SocketAddr::new(MX4.into(), 25),
        SocketAddr::new(MX6.into(), 25),
    ] {
        let of_family: Vec<&Syn> = seen.iter().filter(|s| s.server == server).collect();
        counted += of_family.len();
        let numbers: Vec<u32> = of_family.iter().map(|s| s.retransmission).collect();
        // Linux retransmits an unanswered SYN after 1 s, then (tcp_syn_linear_timeouts, 6.5+)
        // every second or (older) after 2 s: 0, 1, 2 and maybe 3 within 3.5 s.
        assert!(
            numbers.len() >= 3 && numbers.iter().copied().eq(0..numbers.len() as u32),
            "SYNs to {server}: {seen:?}"
        );
        assert!(
            of_family.iter().all(|s| s.client == of_family[0].client),
            "one 4-tuple: {of_family:?}"
        );
        assert_eq!(of_family[0].client.is_ipv4(), server.is_ipv4());
    }
    assert_eq!(counted, seen.len(), "only these two 4-tuples: {seen:?}");
}

#[test_with::root()]
#[test]
fn errors_without_runtime_or_interface() {
    crate::test_support::require_root("network namespaces, packet sockets");
    let ns = Namespace::create(&format!("mxlab-t{}-caperr", std::process::id())).unwrap();
    let e = watch_syns(&ns, "lo", 25, |_| {}).unwrap_err();
    assert!(matches!(e, CaptureError::NoRuntime), "{e}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let e = watch_syns(&ns, "mxlab-nope", 25, |_| {}).unwrap_err();
        assert!(matches!(e, CaptureError::NoSuchInterface { .. }), "{e}");
        assert!(e.to_string().contains("mxlab-nope"), "{e}");
        for bad in ["", "a/b", "nul\0", "sixteen-chars-xx"] {
            let e = watch_syns(&ns, bad, 25, |_| {}).unwrap_err();
            assert!(
                matches!(e, CaptureError::InvalidInterface(_)),
                "{bad:?}: {e}"
            );
        }
        // The loopback interface exists in every namespace: watching it works.
        let watch = watch_syns(&ns, "lo", 25, |_| {}).unwrap();
        watch.stop().await;
    });
}
