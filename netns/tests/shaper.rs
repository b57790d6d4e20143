//! The path shaper in a real topology, measured with real sockets from the client's
//! namespace: delay and jitter in TCP connect round trips, duplicates and reordering in
//! numbered datagrams, the rate limit in the time 20000 bytes take; the unshaped family and
//! hosts show none of it, and removing (or dropping) the shaper leaves the router as it was.
//! They need root; without it each is listed as ignored with the reason (and fails under
//! `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::spec;
use netns::{Direction, Namespace, Shape, ShapedPath, Shaper, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An unshaped connect round trip on this machine takes well under this.
const UNSHAPED: Duration = Duration::from_millis(30);
/// Timer and scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(40);

fn addr(topology_spec: &netns::TopologySpec, host: &str, v6: bool) -> IpAddr {
    let host = topology_spec.hosts.iter().find(|h| h.name == host).unwrap();
    if v6 {
        IpAddr::V6(host.ipv6.unwrap().host)
    } else {
        IpAddr::V4(host.ipv4.unwrap().host)
    }
}

fn shape() -> Shape {
    Shape {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder: 0,
        duplicate: 0,
        rate: None,
        seed: 7,
    }
}

fn path(spec: &netns::TopologySpec, v6: bool, direction: Direction) -> ShapedPath {
    ShapedPath {
        client: "sut".into(),
        client_address: addr(spec, "sut", v6),
        server: "mx1".into(),
        server_address: addr(spec, "mx1", v6),
        direction,
    }
}

fn listen(ns: &Namespace, addr: IpAddr) -> tokio::net::TcpListener {
    let listener = ns
        .run(|| std::net::TcpListener::bind(SocketAddr::new(addr, 0)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).unwrap()
}

async fn connect(ns: &Namespace, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = ns
        .run(|| match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        })
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// `count` TCP connect() times from the SUT to `to` (one SYN, one SYN-ACK each).
async fn connect_times(topology: &Topology, to: IpAddr, count: usize) -> Vec<Duration> {
    let listener = listen(topology.host("mx1").unwrap(), to);
    let target = SocketAddr::new(to, listener.local_addr().unwrap().port());
    let accept = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            kept.push(stream);
        }
    });
    let mut times = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let stream = connect(topology.host("sut").unwrap(), target).await;
        times.push(started.elapsed());
        drop(stream);
    }
    accept.abort();
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(times: &[Duration]) -> (Duration, Duration, Duration) {
    let min = *times.iter().min().unwrap();
    let max = *times.iter().max().unwrap();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    (min, mean, max)
}

/// The router's `ip link` and `ip rule` listings, for before/after comparisons.
fn router_state(topology: &Topology) -> String {
    let mut state = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-4", "rule", "show"],
        &["-6", "rule", "show"],
    ] {
        let mut command = std::process::Command::new("ip");
        command.args(args);
        let out = netns::output(topology.router(), command).unwrap();
        state.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    state
}

async fn delay_and_jitter_show_in_connect_round_trips_of_the_shaped_family_only() {
    let spec = spec("shd", 3);
    let topology = Topology::build(&spec).await.unwrap();
    let before = router_state(&topology);
    let (mx1_v6, mx1_v4) = (addr(&spec, "mx1", true), addr(&spec, "mx1", false));

    let unshaped = connect_times(&topology, mx1_v6, 5).await;
    let delay = Duration::from_millis(200);
    let jitter = Duration::from_millis(50);
    let shaper = Shaper::install(
        &topology,
        &path(&spec, true, Direction::To),
        Shape {
            delay,
            jitter,
            ..shape()
        },
        0,
    )
    .await
    .unwrap();
    assert_eq!(shaper.interface(), "mxlab-sh0");
    // The TUN device lives in the router's namespace, never in the machine's own.
    assert!(router_state(&topology).contains("mxlab-sh0"));
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&root_links.stdout).contains("mxlab-sh0"),
        "a TUN device in the root namespace"
    );
    let shaped = connect_times(&topology, mx1_v6, 30).await;
    let v4 = connect_times(&topology, mx1_v4, 5).await;
    let stats = shaper.stats();

    let (min, mean, max) = summary(&shaped);
    eprintln!(
        "IPv6 sut->mx1 shaped to 200 ms ± 50 ms one way: connect RTT min {:.1} mean {:.1} max {:.1} ms (30 samples); unshaped before {:.2} ms max; IPv4 meanwhile {:.2} ms max; {stats:?}",
        ms(min),
        ms(mean),
        ms(max),
        ms(summary(&unshaped).2),
        ms(summary(&v4).2),
    );
    assert!(summary(&unshaped).2 < UNSHAPED, "{unshaped:?}");
    for t in &shaped {
        assert!(
            *t >= delay - jitter && *t <= delay + jitter + SLACK,
            "{t:?} outside 200 ms ± 50 ms"
        );
    }
    assert!(
        mean > Duration::from_millis(175) && mean < Duration::from_millis(235),
        "mean {mean:?}"
    );
    assert!(
        max - min > Duration::from_millis(40),
        "no jitter: {min:?}..{max:?}"
    );
    // The other family is untouched.
    assert!(summary(&v4).2 < UNSHAPED, "IPv4 delayed: {v4:?}");
    // The client's SYNs, ACKs and FINs went through the shaper (direction "to").
    assert!(stats.received >= 90, "{stats:?}");
    assert!(stats.sent <= stats.received, "{stats:?}");

    shaper.remove().await.unwrap();
    let healed = connect_times(&topology, mx1_v6, 5).await;
    assert!(summary(&healed).2 < UNSHAPED, "after removal: {healed:?}");
    assert_eq!(
        router_state(&topology),
        before,
        "removal leaves the router as it was"
    );

    // Both directions: a round trip meets the delay twice.
    let shaper = Shaper::install(
        &topology,
        &path(&spec, true, Direction::Both),
        Shape {
            delay,
            jitter,
            ..shape()
        },
        1,
    )
    .await
    .unwrap();
    let both = connect_times(&topology, mx1_v6, 10).await;
    let (min, mean, max) = summary(&both);
    eprintln!(
        "IPv6 shaped both ways: connect RTT min {:.1} mean {:.1} max {:.1} ms (10 samples)",
        ms(min),
        ms(mean),
        ms(max)
    );
    for t in &both {
        assert!(
            *t >= 2 * (delay - jitter) && *t <= 2 * (delay + jitter) + SLACK,
            "{t:?} outside 400 ms ± 100 ms"
        );
    }
    // Dropped without removal: the device and its routes go with the task.
    drop(shaper);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(summary(&connect_times(&topology, mx1_v6, 3).await).2 < UNSHAPED);
    assert!(!router_state(&topology).contains("mxlab-sh1:"));
}

/// Numbered datagrams from the SUT to mx1: the sequence numbers in arrival order.
async fn datagrams(topology: &Topology, to: IpAddr, count: u32) -> Vec<u32> {
    let bind = |ns: &Namespace, addr: IpAddr| {
        let socket = ns
            .run(|| std::net::UdpSocket::bind(SocketAddr::new(addr, 0)))
            .unwrap()
            .unwrap();
        socket.set_nonblocking(true).unwrap();
        tokio::net::UdpSocket::from_std(socket).unwrap()
    };
    let receiver = bind(topology.host("mx1").unwrap(), to);
    let target = receiver.local_addr().unwrap();
    let unspecified = if to.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    };
    let sender = bind(topology.host("sut").unwrap(), unspecified);
    for i in 0..count {
        sender.send_to(&i.to_be_bytes(), target).await.unwrap();
        // 1 ms apart: far less than the delay, so a packet sent at once overtakes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut arrived = Vec::new();
    let mut buf = [0u8; 16];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(1500), receiver.recv(&mut buf)).await
    {
        assert_eq!(n, 4);
        arrived.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
    }
    arrived
}

/// Datagrams that arrived before one sent earlier than them.
fn overtakers(arrived: &[u32]) -> usize {
    let mut lowest_later = u32::MAX;
    let mut count = 0;
    for &seq in arrived.iter().rev() {
        if seq > lowest_later {
            count += 1;
        }
        lowest_later = lowest_later.min(seq);
    }
    count
}

async fn duplicates_and_reordering_show_in_numbered_datagrams() {
    let spec = spec("shr", 3);
    let topology = Topology::build(&spec).await.unwrap();
    let mx1 = addr(&spec, "mx1", true);
    const SENT: u32 = 200;

    let plain = datagrams(&topology, mx1, SENT).await;
    assert_eq!(plain.len(), SENT as usize);
    assert_eq!(overtakers(&plain), 0, "unshaped path reorders");

    let shaper = Shaper::install(
        &topology,
        &path(&spec, true, Direction::To),
        Shape {
            delay: Duration::from_millis(100),
            reorder: 10,
            duplicate: 20,
            ..shape()
        },
        0,
    )
    .await
    .unwrap();
    let arrived = datagrams(&topology, mx1, SENT).await;
    let stats = shaper.stats();
    let extra = arrived.len() - SENT as usize;
    let mut distinct = arrived.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let overtook = overtakers(&arrived);
    eprintln!(
        "IPv6 reorder 10% duplicate 20% seed 7: {SENT} sent, {} arrived ({extra} duplicates, {} distinct), {overtook} arrived before an earlier one; shaper {stats:?}",
        arrived.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), SENT as usize, "every datagram arrived");
    // One extra copy per duplicated datagram (the shaper may also have duplicated one of the
    // few other packets of the path, e.g. a neighbour solicitation).
    let others = stats.received - u64::from(SENT);
    assert!(
        extra as u64 <= stats.duplicated && extra as u64 + others >= stats.duplicated,
        "{extra} extra, {stats:?}"
    );
    assert!(
        (20..=60).contains(&extra),
        "{extra} duplicates of {SENT} at 20%"
    );
    assert!((8..=45).contains(&overtook), "{overtook} overtakers at 10%");
    assert!(stats.reordered >= overtook as u64 / 2, "{stats:?}");
    shaper.remove().await.unwrap();
}

/// Sends `bytes` from the SUT to mx1 and returns how long until mx1 has read them all.
async fn transfer(topology: &Topology, to: IpAddr, bytes: usize) -> Duration {
    let listener = listen(topology.host("mx1").unwrap(), to);
    let target = SocketAddr::new(to, listener.local_addr().unwrap().port());
    let (client, accepted) = tokio::join!(
        connect(topology.host("sut").unwrap(), target),
        listener.accept()
    );
    let (mut server, _) = accepted.unwrap();
    let mut client = client;
    let started = Instant::now();
    let send = async {
        client.write_all(&vec![b'x'; bytes]).await.unwrap();
        client.shutdown().await.unwrap();
    };
    let receive = async {
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), bytes);
    };
    tokio::join!(send, receive);
    started.elapsed()
}

async fn a_rate_limit_shows_in_the_time_20000_bytes_take() {
    let spec = spec("shq", 3);
    let topology = Topology::build(&spec).await.unwrap();
    let mx1 = addr(&spec, "mx1", false);
    let unshaped = transfer(&topology, mx1, 20_000).await;
    let shaper = Shaper::install(
        &topology,
        &path(&spec, false, Direction::To),
        Shape {
            rate: Some(10_000),
            ..shape()
        },
        0,
    )
    .await
    .unwrap();
    let shaped = transfer(&topology, mx1, 20_000).await;
    let other_family = transfer(&topology, addr(&spec, "mx1", true), 20_000).await;
    eprintln!(
        "IPv4 sut->mx1 at 10 kB/s: 20000 bytes took {:.0} ms (unshaped {:.1} ms, IPv6 meanwhile {:.1} ms); {:?}",
        ms(shaped),
        ms(unshaped),
        ms(other_family),
        shaper.stats()
    );
    shaper.remove().await.unwrap();
    assert!(unshaped < Duration::from_millis(200), "{unshaped:?}");
    assert!(
        other_family < Duration::from_millis(200),
        "{other_family:?}"
    );
    // 20000 bytes of payload plus TCP/IP headers at 10000 bytes a second: just over 2 s.
    assert!(
        shaped > Duration::from_millis(1900) && shaped < Duration::from_millis(3000),
        "{shaped:?}"
    );
}

async fn impossible_shapes_and_unknown_hosts_are_refused_and_leave_nothing() {
    let spec = spec("shx", 3);
    let topology = Topology::build(&spec).await.unwrap();
    let before = router_state(&topology);
    let too_much_jitter = Shape {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(20),
        ..shape()
    };
    let e = Shaper::install(
        &topology,
        &path(&spec, true, Direction::To),
        too_much_jitter,
        0,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("larger than the delay"), "{e}");
    let mut unknown = path(&spec, true, Direction::To);
    unknown.server = "mx9".into();
    let e = Shaper::install(&topology, &unknown, shape(), 0)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no host \"mx9\""), "{e}");
    // The same index twice: the second TUN device cannot be made; the first stays intact.
    let first = Shaper::install(&topology, &path(&spec, true, Direction::To), shape(), 3)
        .await
        .unwrap();
    let with_first = router_state(&topology);
    let e = Shaper::install(&topology, &path(&spec, false, Direction::To), shape(), 3)
        .await
        .unwrap_err();
    eprintln!("index used twice: {e}");
    assert_eq!(router_state(&topology), with_first);
    first.remove().await.unwrap();
    assert_eq!(router_state(&topology), before);
}

fn main() {
    let root = common::needs_root();
    common::run(vec![
        common::trial(
            "delay_and_jitter_show_in_connect_round_trips_of_the_shaped_family_only",
            root.clone(),
            || {
                common::on_threads(
                    delay_and_jitter_show_in_connect_round_trips_of_the_shaped_family_only(),
                )
            },
        ),
        common::trial(
            "duplicates_and_reordering_show_in_numbered_datagrams",
            root.clone(),
            || common::on_threads(duplicates_and_reordering_show_in_numbered_datagrams()),
        ),
        common::trial(
            "a_rate_limit_shows_in_the_time_20000_bytes_take",
            root.clone(),
            || common::on_threads(a_rate_limit_shows_in_the_time_20000_bytes_take()),
        ),
        common::trial(
            "impossible_shapes_and_unknown_hosts_are_refused_and_leave_nothing",
            root.clone(),
            || {
                common::on_threads(
                    impossible_shapes_and_unknown_hosts_are_refused_and_leave_nothing(),
                )
            },
        ),
    ])
}
