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
use crate::clock::ScenarioClock;
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
        let log = EventLog::new();
        Self::serve(ip, DnsServer::new(&zones(), log.clone()).unwrap(), log)
    }

    /// A server with `faults` on the scenario `clock`.
    fn with_faults(ip: &str, faults: Vec<DnsFault>, clock: &ScenarioClock) -> Self {
        let ip: IpAddr = ip.parse().unwrap();
        let log = EventLog::new();
        let server = DnsServer::with_faults(&zones(), faults, clock.clone(), log.clone()).unwrap();
        Self::serve(ip, server, log)
    }

    fn serve(ip: IpAddr, server: DnsServer, log: EventLog) -> Self {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let dns = server.serve(vec![udp], vec![tcp]).unwrap();
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
        let mut udp = ConnectionConfig::udp();
        udp.port = self.udp.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = self.tcp.port();
        let connections = match transport {
            "udp" => vec![udp],
            "tcp" => vec![tcp],
            _ => vec![udp, tcp],
        };
        let server = NameServerConfig::new(self.udp.ip(), true, connections);
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
            without_latency(&events[0].kind),
            EventKind::DnsQuery {
                client: self.udp.ip(),
                transport: transport.into(),
                name: name.into(),
                record_type: record_type.into(),
                answer: answer.into(),
                latency: Duration::ZERO,
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
            without_latency(&event.kind),
            EventKind::DnsQuery {
                client: "::1".parse().unwrap(),
                transport: "udp".into(),
                name: "mx1.example.test".into(),
                record_type: record_type.into(),
                answer: answer.into(),
                latency: Duration::ZERO,
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
async fn repeated_queries_get_the_same_answer_with_their_own_id() {
    let lab = Lab::start("127.0.0.1");
    let mut responses = Vec::new();
    for (id, name) in [
        (1, "example.test."),
        (2, "example.test."),
        (3, "EXAMPLE.test."),
    ] {
        let query = query_message(id, name, RecordType::MX);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&query.to_vec().unwrap(), lab.udp)
            .await
            .unwrap();
        let mut buffer = vec![0; 4096];
        let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer))
            .await
            .expect("no response")
            .unwrap();
        let response = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(response.metadata.id, id);
        assert_eq!(
            response.queries[0].name().to_lowercase().to_ascii(),
            "example.test."
        );
        responses.push(response);
    }
    for response in &responses[1..] {
        assert_eq!(response.answers, responses[0].answers);
        assert_eq!(response.additionals, responses[0].additionals);
        assert_eq!(
            response.metadata.response_code,
            responses[0].metadata.response_code
        );
    }
    let events = lab.events(3).await;
    assert_eq!(
        answers(&events),
        ["NOERROR 10 mx1.example.test, 20 mx2.example.test"; 3]
    );
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
async fn large_udp_answers_fit_in_the_edns_payload_size() {
    let lab = Lab::start("127.0.0.1");
    for _ in 0..2 {
        let response = raw_query(lab.udp, "big.example.test.", RecordType::A, true).await;
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), 40);
        // Without EDNS the same (kept) answer is truncated to 512 bytes.
        let response = raw_query(lab.udp, "big.example.test.", RecordType::A, false).await;
        assert!(response.metadata.truncation);
    }
    let events = lab.events(4).await;
    let notes: Vec<bool> = answers(&events)
        .iter()
        .map(|answer| answer.ends_with("(truncated)"))
        .collect();
    assert_eq!(notes, [false, true, false, true]);
}

#[tokio::test]
async fn malformed_udp_queries_get_formerr_and_responses_are_ignored() {
    let lab = Lab::start("127.0.0.1");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = query_message(4713, "example.test.", RecordType::MX);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    let mut malformed = query_message(4714, "example.test.", RecordType::MX)
        .to_vec()
        .unwrap();
    malformed.truncate(malformed.len() - 3);
    for datagram in [&[0_u8; 5][..], &response.to_vec().unwrap(), &malformed] {
        socket.send_to(datagram, lab.udp).await.unwrap();
    }
    let mut buffer = vec![0; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer))
        .await
        .expect("no FORMERR")
        .unwrap();
    let answer = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(answer.metadata.id, 4714);
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    // Nothing else comes back, and nothing is recorded.
    let more = tokio::time::timeout(TIMEOUT_WAIT, socket.recv_from(&mut buffer)).await;
    assert!(more.is_err(), "{more:?}");
    assert!(lab.log.snapshot().is_empty());
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

// Per-query faults.

/// Sends one hand-built query over UDP (without EDNS) and waits up to `wait` for the response.
async fn udp_query(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    wait: Duration,
) -> Option<Message> {
    let query = query_message(4712, name, record_type);
    let socket = tokio::net::UdpSocket::bind(loopback_of(server))
        .await
        .unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buffer))
        .await
        .ok()?
        .unwrap();
    let response = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(response.metadata.id, 4712);
    Some(response)
}

fn query_message(id: u16, name: &str, record_type: RecordType) -> Message {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.parse::<Name>().unwrap(), record_type));
    query
}

fn loopback_of(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::1]:0".parse().unwrap(),
    }
}

/// Sends `queries` back to back on one TCP connection and returns the responses in the order
/// they arrive, each with the time it took.
async fn tcp_queries(
    server: SocketAddr,
    queries: &[(u16, &str, RecordType)],
) -> Vec<(Message, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let started = tokio::time::Instant::now();
    for (id, name, record_type) in queries {
        let bytes = query_message(*id, name, *record_type).to_vec().unwrap();
        let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        framed.extend(bytes);
        stream.write_all(&framed).await.unwrap();
    }
    let mut responses = Vec::new();
    for _ in queries {
        let read = async {
            let len = stream.read_u16().await.unwrap();
            let mut buffer = vec![0; usize::from(len)];
            stream.read_exact(&mut buffer).await.unwrap();
            Message::from_vec(&buffer).unwrap()
        };
        let response = tokio::time::timeout(Duration::from_secs(3), read)
            .await
            .expect("no TCP response");
        responses.push((response, started.elapsed()));
    }
    responses
}

fn fault(name: &str, record_type: Option<RecordType>, action: DnsFaultAction) -> DnsFault {
    let mut fault = DnsFault::new(name, action);
    fault.record_type = record_type;
    fault
}

fn has_soa(message: &Message) -> bool {
    message
        .authorities
        .iter()
        .any(|record| record.record_type() == RecordType::SOA)
}

/// The answer texts of the events so far, in order.
/// `kind` with a DNS query's latency set to zero, for comparing the rest exactly.
fn without_latency(kind: &EventKind) -> EventKind {
    let mut kind = kind.clone();
    if let EventKind::DnsQuery { latency, .. } = &mut kind {
        *latency = Duration::ZERO;
    }
    kind
}

fn answers(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|event| match &event.kind {
            EventKind::DnsQuery { answer, .. } => answer.clone(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

const TIMEOUT_WAIT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn rcode_faults_replace_the_answer_for_one_type_only() {
    let name = "mx1.example.test.";
    let cases = [
        (
            DnsFaultAction::ServFail,
            ResponseCode::ServFail,
            false,
            "SERVFAIL (fault servfail)",
        ),
        (
            DnsFaultAction::Refused,
            ResponseCode::Refused,
            false,
            "REFUSED (fault refused)",
        ),
        (
            DnsFaultAction::NxDomain,
            ResponseCode::NXDomain,
            true,
            "NXDOMAIN (fault nxdomain)",
        ),
        (
            DnsFaultAction::NoData,
            ResponseCode::NoError,
            true,
            "NOERROR (no records, fault nodata)",
        ),
    ];
    for (action, code, negative, text) in cases {
        let lab = Lab::with_faults(
            "127.0.0.1",
            vec![fault("MX1.example.test", Some(RecordType::AAAA), action)],
            &ScenarioClock::new(),
        );
        let faulted = udp_query(lab.udp, name, RecordType::AAAA, TIMEOUT_WAIT)
            .await
            .unwrap();
        assert_eq!(faulted.metadata.response_code, code, "{action}");
        assert!(faulted.answers.is_empty(), "{action}");
        assert_eq!(faulted.metadata.authoritative, negative, "{action}");
        assert_eq!(has_soa(&faulted), negative, "{action}");
        assert!(!faulted.metadata.truncation, "{action}");

        // The same name's A records are unaffected.
        let normal = udp_query(lab.udp, name, RecordType::A, TIMEOUT_WAIT)
            .await
            .unwrap();
        assert_eq!(normal.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata_strings(&normal.answers), ["192.0.2.10", "192.0.2.11"]);

        // And so is TCP for the rcode faults: they apply on every transport.
        let over_tcp = tcp_queries(lab.tcp, &[(1, name, RecordType::AAAA)]).await;
        assert_eq!(over_tcp[0].0.metadata.response_code, code, "{action}");

        let events = lab.events(3).await;
        assert_eq!(
            answers(&events),
            [text, "NOERROR 192.0.2.10, 192.0.2.11", text],
            "{action}"
        );
    }
}

#[tokio::test]
async fn nxdomain_fault_is_seen_by_a_resolver() {
    let lab = Lab::with_faults(
        "::1",
        vec![fault("mx2.example.test", None, DnsFaultAction::NxDomain)],
        &ScenarioClock::new(),
    );
    let error = lab
        .resolver("udp")
        .ipv6_lookup("mx2.example.test.")
        .await
        .unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");
    lab.assert_one_query(
        "udp",
        "mx2.example.test",
        "AAAA",
        "NXDOMAIN (fault nxdomain)",
    )
    .await;
}

#[tokio::test]
async fn timeout_fault_sends_nothing() {
    let lab = Lab::with_faults(
        "127.0.0.1",
        vec![fault(
            "mx1.example.test",
            Some(RecordType::AAAA),
            DnsFaultAction::Timeout,
        )],
        &ScenarioClock::new(),
    );
    let started = std::time::Instant::now();
    let response = udp_query(lab.udp, "mx1.example.test.", RecordType::AAAA, TIMEOUT_WAIT).await;
    assert!(response.is_none(), "{response:?}");
    assert!(started.elapsed() >= TIMEOUT_WAIT);
    // The A query is answered at once.
    let normal = udp_query(lab.udp, "mx1.example.test.", RecordType::A, TIMEOUT_WAIT)
        .await
        .unwrap();
    assert_eq!(normal.answers.len(), 2);
    let events = lab.events(2).await;
    assert_eq!(
        answers(&events),
        [
            "no answer (fault timeout)",
            "NOERROR 192.0.2.10, 192.0.2.11"
        ]
    );
}

#[tokio::test]
async fn delay_fault_answers_late_without_holding_up_other_queries() {
    let delay = Duration::from_millis(700);
    let lab = Lab::with_faults(
        "127.0.0.1",
        vec![fault(
            "mx1.example.test",
            Some(RecordType::AAAA),
            DnsFaultAction::Delay(delay),
        )],
        &ScenarioClock::new(),
    );
    // Over UDP, with an A query sent while the AAAA answer is pending.
    let started = tokio::time::Instant::now();
    let (delayed, normal) = tokio::join!(
        async {
            let response = udp_query(
                lab.udp,
                "mx1.example.test.",
                RecordType::AAAA,
                Duration::from_secs(3),
            )
            .await;
            (response.unwrap(), started.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let response =
                udp_query(lab.udp, "mx1.example.test.", RecordType::A, TIMEOUT_WAIT).await;
            (response.unwrap(), started.elapsed())
        },
    );
    assert_eq!(
        rdata_strings(&delayed.0.answers),
        ["2001:db8::10", "2001:db8::11"]
    );
    assert!(delayed.1 >= delay, "{:?}", delayed.1);
    assert!(
        delayed.1 < delay + Duration::from_millis(500),
        "{:?}",
        delayed.1
    );
    assert_eq!(normal.0.answers.len(), 2);
    assert!(normal.1 < delay, "the A answer waited: {:?}", normal.1);

    // Over TCP, the A query behind the AAAA query on the same connection is answered first.
    let responses = tcp_queries(
        lab.tcp,
        &[
            (1, "mx1.example.test.", RecordType::AAAA),
            (2, "mx1.example.test.", RecordType::A),
        ],
    )
    .await;
    let order: Vec<u16> = responses
        .iter()
        .map(|(message, _)| message.metadata.id)
        .collect();
    assert_eq!(order, [2, 1]);
    assert!(responses[0].1 < delay, "{:?}", responses[0].1);
    assert!(responses[1].1 >= delay, "{:?}", responses[1].1);
    assert!(responses[1].1 < delay + Duration::from_millis(500));
    assert_eq!(responses[1].0.answers.len(), 2);

    // Events are recorded when the answer goes out.
    let events = lab.events(4).await;
    assert_eq!(
        answers(&events),
        [
            "NOERROR 192.0.2.10, 192.0.2.11",
            "NOERROR 2001:db8::10, 2001:db8::11 (fault delay 700ms)",
            "NOERROR 192.0.2.10, 192.0.2.11",
            "NOERROR 2001:db8::10, 2001:db8::11 (fault delay 700ms)",
        ]
    );
    // And carry the time from query to answer.
    let latencies: Vec<Duration> = events
        .iter()
        .map(|event| match &event.kind {
            EventKind::DnsQuery { latency, .. } => *latency,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    for prompt in [latencies[0], latencies[2]] {
        assert!(prompt < Duration::from_millis(200), "{latencies:?}");
    }
    for late in [latencies[1], latencies[3]] {
        assert!(late >= delay, "{latencies:?}");
        assert!(late < delay + Duration::from_millis(500), "{latencies:?}");
    }
}

#[tokio::test]
async fn truncate_fault_sets_tc_over_udp_and_answers_in_full_over_tcp() {
    let lab = Lab::with_faults(
        "::1",
        vec![fault(
            "mx1.example.test",
            Some(RecordType::AAAA),
            DnsFaultAction::Truncate,
        )],
        &ScenarioClock::new(),
    );
    let truncated = udp_query(lab.udp, "mx1.example.test.", RecordType::AAAA, TIMEOUT_WAIT)
        .await
        .unwrap();
    assert!(truncated.metadata.truncation);
    assert_eq!(truncated.metadata.response_code, ResponseCode::NoError);
    assert!(truncated.answers.is_empty());
    assert!(truncated.authorities.is_empty());

    let full = tcp_queries(lab.tcp, &[(1, "mx1.example.test.", RecordType::AAAA)]).await;
    assert!(!full[0].0.metadata.truncation);
    assert_eq!(
        rdata_strings(&full[0].0.answers),
        ["2001:db8::10", "2001:db8::11"]
    );

    // A resolver retries over TCP by itself.
    let lookup = lab
        .resolver("udp+tcp")
        .ipv6_lookup("mx1.example.test.")
        .await
        .unwrap();
    assert_eq!(lookup.answers().len(), 2);

    let events = lab.events(4).await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|event| match &event.kind {
            EventKind::DnsQuery {
                transport, answer, ..
            } => (transport.clone(), answer.clone()),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    let truncated = (
        "udp".to_string(),
        "NOERROR (truncated, fault truncate)".to_string(),
    );
    let full = (
        "tcp".to_string(),
        "NOERROR 2001:db8::10, 2001:db8::11".to_string(),
    );
    assert_eq!(seen, [truncated.clone(), full.clone(), truncated, full]);
}

#[tokio::test]
async fn first_limits_a_fault_to_the_first_queries() {
    let mut once = fault(
        "example.test",
        Some(RecordType::MX),
        DnsFaultAction::ServFail,
    );
    once.when.first = Some(1);
    let lab = Lab::with_faults("127.0.0.1", vec![once], &ScenarioClock::new());
    let codes = [
        udp_query(lab.udp, "example.test.", RecordType::MX, TIMEOUT_WAIT).await,
        udp_query(lab.udp, "example.test.", RecordType::MX, TIMEOUT_WAIT).await,
    ]
    .map(|response| {
        let response = response.unwrap();
        (response.metadata.response_code, response.answers.len())
    });
    assert_eq!(
        codes,
        [(ResponseCode::ServFail, 0), (ResponseCode::NoError, 2)]
    );
    let events = lab.events(2).await;
    assert_eq!(
        answers(&events),
        [
            "SERVFAIL (fault servfail)",
            "NOERROR 10 mx1.example.test, 20 mx2.example.test"
        ]
    );
}

#[tokio::test]
async fn a_window_on_the_scenario_clock_ends_the_fault() {
    // Queries take about a millisecond here: the window leaves them ~1000x headroom.
    let until = Duration::from_secs(1);
    let mut windowed = fault("mx2.example.test", None, DnsFaultAction::Refused);
    windowed.when.until = Some(until);
    let mut not_yet = fault("mx2.example.test", None, DnsFaultAction::ServFail);
    not_yet.when.from = Duration::from_secs(3600);
    let clock = ScenarioClock::new();
    let lab = Lab::with_faults("127.0.0.1", vec![not_yet, windowed], &clock);

    // Before the clock starts it reads zero: the window from 0 is open.
    let code = |response: Option<Message>| response.unwrap().metadata.response_code;
    let before = udp_query(lab.udp, "mx2.example.test.", RecordType::A, TIMEOUT_WAIT).await;
    assert_eq!(code(before), ResponseCode::Refused);
    clock.start();
    // Measured from after the clock started: when `until` has passed here, it has on the clock.
    let started = tokio::time::Instant::now();
    let during = udp_query(lab.udp, "mx2.example.test.", RecordType::A, TIMEOUT_WAIT).await;
    assert_eq!(code(during), ResponseCode::Refused);
    tokio::time::sleep_until(started + until).await;
    let after = udp_query(lab.udp, "mx2.example.test.", RecordType::A, TIMEOUT_WAIT).await;
    let after = after.unwrap();
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata_strings(&after.answers), ["198.51.100.20"]);

    let events = lab.events(3).await;
    assert_eq!(
        answers(&events),
        [
            "REFUSED (fault refused)",
            "REFUSED (fault refused)",
            "NOERROR 198.51.100.20"
        ]
    );
}

#[test]
fn with_faults_rejects_faults_outside_the_zones() {
    let outside = DnsServer::with_faults(
        &zones(),
        vec![fault("mx1.other.test", None, DnsFaultAction::Timeout)],
        ScenarioClock::new(),
        EventLog::new(),
    );
    let message = outside.err().unwrap().to_string();
    assert!(message.contains("mx1.other.test"), "{message}");
    assert!(
        message.contains("example.test, in-addr.arpa, ip6.arpa"),
        "{message}"
    );
}
