//! Tests of the pcap recorder (as root): real UDP and TCP traffic through a topology's router,
//! checked with pcap-file's reader and, where installed, tshark.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use netns::{HostSpec, LinkAddresses, Namespace, Topology, TopologySpec};
use pcap_file::pcap::PcapReader;

use super::*;

/// Host `n`: IPv4 10.77.n.2/30 behind 10.77.n.1, IPv6 fd00:77:n::2/64 behind ::1.
fn host(name: &str, n: u8) -> HostSpec {
    HostSpec {
        name: name.into(),
        ipv4: Some(LinkAddresses {
            host: Ipv4Addr::new(10, 77, n, 2),
            router: Ipv4Addr::new(10, 77, n, 1),
            prefix_len: 30,
        }),
        ipv6: Some(LinkAddresses {
            host: Ipv6Addr::new(0xfd00, 0x77, u16::from(n), 0, 0, 0, 0, 2),
            router: Ipv6Addr::new(0xfd00, 0x77, u16::from(n), 0, 0, 0, 0, 1),
            prefix_len: 64,
        }),
    }
}

fn v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, n, 2))
}

fn v6(n: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, u16::from(n), 0, 0, 0, 0, 2))
}

async fn topology(tag: &str) -> Topology {
    let spec = TopologySpec {
        prefix: format!("mxlab-t{}-{tag}", std::process::id()),
        hosts: vec![host("sut", 0), host("dns", 1), host("mx1", 2)],
    };
    Topology::build(&spec).await.expect("build topology")
}

fn router_interfaces(topology: &Topology) -> Vec<String> {
    ["sut", "dns", "mx1"]
        .iter()
        .map(|h| topology.router_interface(h).unwrap().to_owned())
        .collect()
}

/// Sends `payload` from `from` to `to` (port 5300) over UDP and waits until it arrives.
fn udp(from: &Namespace, to: &Namespace, to_addr: IpAddr, payload: &[u8]) {
    let target = SocketAddr::new(to_addr, 5300);
    let receiver = to
        .run(|| std::net::UdpSocket::bind(target))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let unspecified: IpAddr = match to_addr {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sender = from
        .run(|| std::net::UdpSocket::bind((unspecified, 0)))
        .unwrap()
        .unwrap();
    sender.send_to(payload, target).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = receiver.recv_from(&mut buf).expect("UDP datagram arrives");
    assert_eq!(&buf[..n], payload);
}

/// A TCP connection from `from` to `to` (port 2525): a line each way, then closed.
fn tcp(from: &Namespace, to: &Namespace, to_addr: IpAddr) {
    let target = SocketAddr::new(to_addr, 2525);
    let listener = to
        .run(|| std::net::TcpListener::bind(target))
        .unwrap()
        .unwrap();
    let mut client = from
        .run(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(b"EHLO pcap-test\r\n").unwrap();
    let mut line = [0u8; 16];
    server.read_exact(&mut line).unwrap();
    server.write_all(b"250 ok\r\n").unwrap();
    let mut reply = [0u8; 8];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"250 ok\r\n");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    drop(server);
    client.read_to_end(&mut rest).unwrap();
}

/// What the test needs from a frame: IP protocol, TTL or hop limit, ports, TCP flags and the
/// transport payload.
#[derive(Debug)]
struct Decoded {
    protocol: u8,
    ttl: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    payload: Vec<u8>,
}

fn decode(frame: &[u8]) -> Option<Decoded> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (protocol, ttl, transport) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
            (*ip.get(9)?, *ip.get(8)?, ip.get(ihl..total)?)
        }
        0x86dd => {
            let len = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
            (*ip.get(6)?, *ip.get(7)?, ip.get(40..40 + len)?)
        }
        _ => return None,
    };
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(
            transport.get(at..at + 2)?.try_into().ok()?,
        ))
    };
    let (tcp_flags, payload) = match protocol {
        17 => (0, transport.get(8..)?),
        6 => {
            let offset = usize::from(transport.get(12)? >> 4) * 4;
            (*transport.get(13)?, transport.get(offset..)?)
        }
        _ => (0, &[][..]),
    };
    Some(Decoded {
        protocol,
        ttl,
        src_port: port(0).unwrap_or(0),
        dst_port: port(2).unwrap_or(0),
        tcp_flags,
        payload: payload.to_vec(),
    })
}

fn tshark() -> Option<String> {
    let found = Command::new("tshark").arg("--version").output().ok()?;
    found.status.success().then(|| "tshark".to_owned())
}

fn run_tshark(tshark: &str, file: &Path, extra: &[&str]) -> String {
    let out = Command::new(tshark)
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(extra)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r {} {extra:?} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test_with::root()]
#[test_with::executable(tshark)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_udp_and_tcp_in_both_directions() {
    crate::test_support::require_root("network namespaces, packet sockets");
    let topology = topology("pcap").await;
    let sut = topology.host("sut").unwrap();
    let dns = topology.host("dns").unwrap();
    let mx1 = topology.host("mx1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.pcap");
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    let recorder = record(topology.router(), &router_interfaces(&topology), &path).unwrap();
    assert_eq!(recorder.path(), path);
    udp(sut, dns, v4(1), b"mxlab-pcap-udp4-probe");
    udp(sut, dns, v6(1), b"mxlab-pcap-udp6-probe");
    tcp(sut, mx1, v4(2));
    tcp(sut, mx1, v6(2));
    let stats = recorder.stop().unwrap();
    let ended = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    eprintln!("{stats:?}");
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.truncated, 0);

    let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
    let header = reader.header();
    assert_eq!(header.datalink, DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        assert!(
            packet.timestamp >= started && packet.timestamp <= ended,
            "kernel timestamp {:?} outside the test ({started:?}..{ended:?})",
            packet.timestamp
        );
        frames.push((packet.timestamp, packet.data.into_owned()));
    }
    assert_eq!(frames.len() as u64, stats.packets);
    let decoded: Vec<Decoded> = frames.iter().filter_map(|(_, f)| decode(f)).collect();

    // Each UDP datagram crosses the router: in on the sut's link, out on the dns's (one hop
    // later), so both directions were recorded.
    for probe in [&b"mxlab-pcap-udp4-probe"[..], b"mxlab-pcap-udp6-probe"] {
        let copies: Vec<&Decoded> = decoded
            .iter()
            .filter(|d| d.protocol == 17 && d.dst_port == 5300 && d.payload == probe)
            .collect();
        assert_eq!(
            copies.len(),
            2,
            "{}: {copies:?}",
            String::from_utf8_lossy(probe)
        );
        assert_eq!(copies[0].ttl, copies[1].ttl + 1, "received, then forwarded");
    }
    // Two TCP connections: SYN, SYN-ACK, ACK, 2 data segments, FINs... each seen twice.
    let tcp: Vec<&Decoded> = decoded
        .iter()
        .filter(|d| d.protocol == 6 && (d.dst_port == 2525 || d.src_port == 2525))
        .collect();
    let syns = tcp.iter().filter(|d| d.tcp_flags & 0x12 == 0x02).count();
    assert_eq!(syns, 4, "2 connections x 2 interfaces");
    assert!(tcp.len() >= 2 * 2 * 7, "{} TCP packets", tcp.len());
    assert!(tcp.iter().any(|d| d.payload == b"EHLO pcap-test\r\n"));
    assert!(frames.len() >= 4 + 28, "{} packets", frames.len());
    // Batches are sorted; across batches the order is only approximately by time.
    let sorted = frames.windows(2).filter(|w| w[0].0 <= w[1].0).count();
    assert!(
        sorted * 10 >= (frames.len() - 1) * 9,
        "mostly in time order"
    );

    let tshark = tshark().expect("tshark is installed (apt-get install tshark)");
    let all = run_tshark(&tshark, &path, &[]);
    assert_eq!(all.lines().count(), frames.len(), "{all}");
    let udp = run_tshark(
        &tshark,
        &path,
        &[
            "-Y",
            "udp.dstport == 5300",
            "-T",
            "fields",
            "-e",
            "udp.payload",
        ],
    );
    let hex: String = b"mxlab-pcap-udp4-probe"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(udp.lines().filter(|l| l.contains(&hex)).count(), 2, "{udp}");
    let syns = run_tshark(
        &tshark,
        &path,
        &[
            "-Y",
            "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == 2525",
        ],
    );
    assert_eq!(syns.lines().count(), 4, "{syns}");
}

#[test_with::root()]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_interface_is_an_error_and_drop_stops() {
    crate::test_support::require_root("network namespaces, packet sockets");
    let topology = topology("pcaperr").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pcap");
    let e = record(topology.router(), &["mxlab-nope".to_owned()], &path).unwrap_err();
    assert!(matches!(e, CaptureError::NoSuchInterface { .. }), "{e}");
    assert!(!path.exists(), "no file for a failed start");
    let e = record(topology.router(), &["a/b".to_owned()], &path).unwrap_err();
    assert!(matches!(e, CaptureError::InvalidInterface(_)), "{e}");
    let e = record(
        topology.router(),
        &router_interfaces(&topology),
        &dir.path().join("missing/x.pcap"),
    )
    .unwrap_err();
    assert!(matches!(e, CaptureError::Pcap { .. }), "{e}");

    // Dropped without stop: the thread ends and the file is complete (header only here, or a
    // few neighbour packets), readable.
    let recorder = record(topology.router(), &router_interfaces(&topology), &path).unwrap();
    drop(recorder);
    let mut reader = PcapReader::new(File::open(&path).unwrap()).unwrap();
    while let Some(packet) = reader.next_packet() {
        packet.unwrap();
    }
    // Interfaces deleted while recording: stop still succeeds.
    let recorder = record(topology.router(), &router_interfaces(&topology), &path).unwrap();
    drop(topology);
    tokio::time::sleep(Duration::from_millis(50)).await;
    recorder.stop().unwrap();
}
