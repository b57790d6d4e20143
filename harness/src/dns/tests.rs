//! End-to-end tests: real UDP and TCP on 127.0.0.1 and [::1], queried with hickory-resolver
//! and with hand-built messages where the resolver hides the response's flags.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use super::*;
use crate::events::{Event, EventKind, EventLog};

const SPF: &str = "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all";

fn a(name: &str, addr: &str) -> Record {
    Record::new(name, RecordData::A(addr.parse().unwrap()))
}

fn aaaa(name: &str, addr: &str) -> Record {
    Record::new(name, RecordData::Aaaa(addr.parse().unwrap()))
}

fn mx(name: &str, preference: u16, exchange: &str) -> Record {
    Record::new(
        name,
        RecordData::Mx {
            preference,
            exchange: exchange.into(),
        },
    )
}

fn ptr(addr: &str, target: &str) -> Record {
    Record::new(
        reverse_name(addr.parse().unwrap()),
        RecordData::Ptr(target.into()),
    )
}

/// A small mail domain with forward and reverse zones.
fn zones() -> Vec<Zone> {
    let mut big = Vec::new();
    for host in 1..=40 {
        big.push(a("big.example.test", &format!("203.0.113.{host}")));
    }
    let mut forward = vec![
        mx("example.test", 10, "mx1.example.test"),
        mx("example.test", 20, "mx2.example.test"),
        Record::new("example.test", RecordData::Txt(SPF.into())),
        a("mx1.example.test", "192.0.2.10"),
        a("mx1.example.test", "192.0.2.11"),
        aaaa("mx1.example.test", "2001:db8::10"),
        aaaa("mx1.example.test", "2001:db8::11"),
        a("mx2.example.test", "198.51.100.20"),
        aaaa("mx2.example.test", "2001:db8:1::20"),
        Record::new(
            "mail.example.test.",
            RecordData::Cname("mx1.example.test".into()),
        ),
    ];
    forward.extend(big);
    vec![
        Zone::new("example.test", forward),
        Zone::new("in-addr.arpa", vec![ptr("192.0.2.10", "mx1.example.test")]),
        Zone::new("ip6.arpa", vec![ptr("2001:db8::10", "mx1.example.test")]),
    ]
}

/// A server on one loopback address, UDP and TCP on ephemeral ports.
struct Lab {
    dns: RunningDns,
    log: EventLog,
    udp: SocketAddr,
    tcp: SocketAddr,
}

impl Lab {
    fn start(ip: &str) -> Self {
        let ip: IpAddr = ip.parse().unwrap();
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let log = EventLog::new();
        let dns = DnsServer::new(&zones(), log.clone())
            .unwrap()
            .serve(vec![udp], vec![tcp])
            .unwrap();
        assert_eq!(dns.udp_addrs(), [udp_addr]);
        assert_eq!(dns.tcp_addrs(), [tcp_addr]);
        Self {
            dns,
            log,
            udp: udp_addr,
            tcp: tcp_addr,
        }
    }

    fn resolver(&self, transport: &str) -> TokioResolver {
        let (connection, addr) = match transport {
            "udp" => (ConnectionConfig::udp(), self.udp),
            _ => (ConnectionConfig::tcp(), self.tcp),
        };
        let mut connection = connection;
        connection.port = addr.port();
        let server = NameServerConfig::new(addr.ip(), true, vec![connection]);
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .unwrap()
    }

    /// Waits for `count` events and returns them, failing if more arrive.
    async fn events(&self, count: usize) -> Vec<Event> {
        let log = &self.log;
        assert!(
            log.wait_until(Duration::from_secs(5), |events| events.len() >= count)
                .await,
            "expected {count} events, got {:?}",
            log.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let events = log.snapshot();
        assert_eq!(events.len(), count, "{events:#?}");
        events
    }

    /// Asserts that the only event so far is this query.
    async fn assert_one_query(&self, transport: &str, name: &str, record_type: &str, answer: &str) {
        let events = self.events(1).await;
        assert_eq!(
            events[0].kind,
            EventKind::DnsQuery {
                client: self.udp.ip(),
                transport: transport.into(),
                name: name.into(),
                record_type: record_type.into(),
                answer: answer.into(),
            }
        );
    }
}

/// Sends one hand-built query over UDP, optionally with EDNS, and returns the response.
async fn raw_query(server: SocketAddr, name: &str, record_type: RecordType, edns: bool) -> Message {
    let mut query = Message::query();
    query.metadata.id = 4711;
    query.add_query(Query::query(name.parse::<Name>().unwrap(), record_type));
    if edns {
        let mut options = hickory_proto::op::Edns::new();
        options.set_max_payload(1232);
        query.set_edns(options);
    }
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::1]:0".parse().unwrap(),
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 65535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer))
        .await
        .expect("no response")
        .unwrap();
    let response = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(response.metadata.id, 4711);
    response
}

fn rdata_strings(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records
        .iter()
        .map(|record| record.data.to_string())
        .collect()
}

#[tokio::test]
async fn mx_lookup_returns_both_preferences() {
    let lab = Lab::start("127.0.0.1");
    let lookup = lab
        .resolver("udp")
        .mx_lookup("example.test.")
        .await
        .unwrap();
    let mut exchanges: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::MX(mx) => Some((mx.preference, mx.exchange.to_string())),
            _ => None,
        })
        .collect();
    exchanges.sort();
    assert_eq!(
        exchanges,
        [
            (10, "mx1.example.test.".to_string()),
            (20, "mx2.example.test.".to_string())
        ]
    );
    assert!(lookup.message().metadata.authoritative);
    lab.assert_one_query(
        "udp",
        "example.test",
        "MX",
        "NOERROR 10 mx1.example.test, 20 mx2.example.test",
    )
    .await;
}

#[tokio::test]
async fn a_and_aaaa_lookups_return_every_address_over_ipv6() {
    let lab = Lab::start("::1");
    let resolver = lab.resolver("udp");
    let v4 = resolver.ipv4_lookup("mx1.example.test.").await.unwrap();
    assert_eq!(rdata_strings(v4.answers()), ["192.0.2.10", "192.0.2.11"]);
    let v6 = resolver.ipv6_lookup("mx1.example.test.").await.unwrap();
    assert_eq!(
        rdata_strings(v6.answers()),
        ["2001:db8::10", "2001:db8::11"]
    );

    let events = lab.events(2).await;
    let expected = [
        ("A", "NOERROR 192.0.2.10, 192.0.2.11"),
        ("AAAA", "NOERROR 2001:db8::10, 2001:db8::11"),
    ];
    for (event, (record_type, answer)) in events.iter().zip(expected) {
        assert_eq!(
            event.kind,
            EventKind::DnsQuery {
                client: "::1".parse().unwrap(),
                transport: "udp".into(),
                name: "mx1.example.test".into(),
                record_type: record_type.into(),
                answer: answer.into(),
            }
        );
    }
}

#[tokio::test]
async fn ptr_lookups_answer_for_ipv4_and_ipv6_addresses() {
    let lab = Lab::start("127.0.0.1");
    let resolver = lab.resolver("udp");
    for addr in ["192.0.2.10", "2001:db8::10"] {
        let addr: IpAddr = addr.parse().unwrap();
        // Our helper agrees with hickory's own reverse mapping.
        assert_eq!(
            format!("{}.", reverse_name(addr)),
            Name::from(addr).to_string()
        );
        let lookup = resolver
            .reverse_lookup(format!("{}.", reverse_name(addr)).as_str())
            .await
            .unwrap();
        assert_eq!(rdata_strings(lookup.answers()), ["mx1.example.test."]);
    }
    let events = lab.events(2).await;
    let names: Vec<_> = events
        .iter()
        .map(|event| match &event.kind {
            EventKind::DnsQuery {
                name,
                record_type,
                answer,
                ..
            } => {
                assert_eq!(record_type, "PTR");
                assert_eq!(answer, "NOERROR mx1.example.test");
                name.clone()
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "10.2.0.192.in-addr.arpa",
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        ]
    );
}

#[tokio::test]
async fn txt_lookup_returns_the_spf_policy() {
    let lab = Lab::start("127.0.0.1");
    let lookup = lab
        .resolver("udp")
        .txt_lookup("example.test.")
        .await
        .unwrap();
    assert_eq!(rdata_strings(lookup.answers()), [SPF]);
    lab.assert_one_query("udp", "example.test", "TXT", &format!("NOERROR {SPF:?}"))
        .await;
}

#[tokio::test]
async fn cname_is_followed_to_the_addresses() {
    let lab = Lab::start("127.0.0.1");
    let lookup = lab
        .resolver("udp")
        .ipv4_lookup("mail.example.test.")
        .await
        .unwrap();
    let kinds: Vec<_> = lookup
        .answers()
        .iter()
        .map(|record| (record.record_type(), record.data.to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            (RecordType::CNAME, "mx1.example.test.".to_string()),
            (RecordType::A, "192.0.2.10".to_string()),
            (RecordType::A, "192.0.2.11".to_string()),
        ]
    );
    lab.assert_one_query(
        "udp",
        "mail.example.test",
        "A",
        "NOERROR CNAME mx1.example.test, 192.0.2.10, 192.0.2.11",
    )
    .await;
}

#[tokio::test]
async fn unknown_names_inside_a_zone_are_nxdomain() {
    let lab = Lab::start("127.0.0.1");
    let error = lab
        .resolver("udp")
        .ipv4_lookup("nosuch.example.test.")
        .await
        .unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");
    lab.assert_one_query("udp", "nosuch.example.test", "A", "NXDOMAIN")
        .await;

    // The same over the wire: authoritative, with the zone's SOA in the authority section.
    let response = raw_query(lab.udp, "nosuch.example.test.", RecordType::AAAA, true).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert!(response
        .authorities
        .iter()
        .any(|record| record.record_type() == RecordType::SOA));
}

#[tokio::test]
async fn existing_names_without_the_type_are_noerror_without_records() {
    let lab = Lab::start("127.0.0.1");
    let response = raw_query(lab.udp, "mx2.example.test.", RecordType::TXT, true).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    lab.assert_one_query("udp", "mx2.example.test", "TXT", "NOERROR (no records)")
        .await;
}

#[tokio::test]
async fn names_outside_every_zone_are_refused() {
    let lab = Lab::start("127.0.0.1");
    let response = raw_query(lab.udp, "mx1.elsewhere.test.", RecordType::A, false).await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    assert!(response.answers.is_empty());
    lab.assert_one_query("udp", "mx1.elsewhere.test", "A", "REFUSED")
        .await;
}

#[tokio::test]
async fn answers_are_authoritative_and_queries_are_logged_lowercase() {
    let lab = Lab::start("127.0.0.1");
    let response = raw_query(lab.udp, "MX2.Example.TEST.", RecordType::AAAA, false).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert!(response.edns.is_none());
    assert_eq!(rdata_strings(&response.answers), ["2001:db8:1::20"]);
    lab.assert_one_query("udp", "mx2.example.test", "AAAA", "NOERROR 2001:db8:1::20")
        .await;
}

#[tokio::test]
async fn queries_over_tcp_are_answered_and_logged_as_tcp() {
    let lab = Lab::start("127.0.0.1");
    let lookup = lab
        .resolver("tcp")
        .mx_lookup("example.test.")
        .await
        .unwrap();
    assert_eq!(lookup.answers().len(), 2);
    lab.assert_one_query(
        "tcp",
        "example.test",
        "MX",
        "NOERROR 10 mx1.example.test, 20 mx2.example.test",
    )
    .await;
}

#[tokio::test]
async fn large_udp_answers_without_edns_are_truncated() {
    let lab = Lab::start("127.0.0.1");
    let response = raw_query(lab.udp, "big.example.test.", RecordType::A, false).await;
    assert!(response.metadata.truncation);
    assert!(response.answers.len() < 40);
    let events = lab.events(1).await;
    let EventKind::DnsQuery { answer, .. } = &events[0].kind else {
        panic!("unexpected event {:?}", events[0]);
    };
    assert!(answer.starts_with("NOERROR 203.0.113.1, "), "{answer}");
    assert!(answer.ends_with("203.0.113.40 (truncated)"), "{answer}");

    // Over TCP everything fits.
    let lookup = lab
        .resolver("tcp")
        .ipv4_lookup("big.example.test.")
        .await
        .unwrap();
    assert_eq!(lookup.answers().len(), 40);
}

#[tokio::test]
async fn shutdown_closes_the_sockets() {
    let lab = Lab::start("127.0.0.1");
    let (udp, tcp) = (lab.udp, lab.tcp);
    lab.dns.shutdown().await;
    UdpSocket::bind(udp).expect("UDP port still in use");
    TcpListener::bind(tcp).expect("TCP port still in use");
}

#[tokio::test]
async fn serve_needs_a_socket() {
    let server = DnsServer::new(&zones(), EventLog::new()).unwrap();
    let error = server.serve(vec![], vec![]).err().unwrap();
    assert!(matches!(error, DnsError::NoSockets), "{error}");
}

#[test]
fn serve_needs_a_runtime() {
    let server = DnsServer::new(&zones(), EventLog::new()).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = server.serve(vec![udp], vec![]).err().unwrap();
    assert!(matches!(error, DnsError::NoRuntime), "{error}");
}
