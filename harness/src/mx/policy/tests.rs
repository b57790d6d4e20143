//! Policies over real TCP on loopback, with mxlab's own DNS server on 127.0.0.1 answering the
//! PTR, A/AAAA and SPF TXT lookups; and one test in a private network namespace (root only)
//! with IPv6 addresses of a documentation /64, asked through [`PolicyDns::in_namespace`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::*;
use crate::dns::{reverse_name, DnsServer, Record, RecordData, RunningDns, Zone};
use crate::events::{EventKind, EventLog};
use crate::family::Family;
use crate::mx::{Listener, ListenerBehaviour, MxBuilder, MxError, RunningMx};

const WAIT: Duration = Duration::from_secs(10);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn txt(name: &str, text: &str) -> Record {
    Record::new(name, RecordData::Txt(text.into()))
}

fn a(name: &str, addr: &str) -> Record {
    Record::new(name, RecordData::A(addr.parse().unwrap()))
}

fn aaaa(name: &str, addr: &str) -> Record {
    Record::new(name, RecordData::Aaaa(addr.parse().unwrap()))
}

fn ptr(addr: &str, target: &str) -> Record {
    Record::new(reverse_name(ip(addr)), RecordData::Ptr(target.into()))
}

/// The scenario DNS of these tests: reverse records for some loopback clients and SPF
/// records for some sender domains.
fn zones(v6_ptr: Option<(&str, &str)>) -> Vec<Zone> {
    let mut ip6 = Vec::new();
    let sender = vec![
        // Forward-confirmed: 127.0.0.2 -> good.sender.test -> 127.0.0.2.
        a("good.sender.test", "127.0.0.2"),
        // Not confirmed: 127.0.0.3 -> bad.sender.test -> 127.0.0.99.
        a("bad.sender.test", "127.0.0.99"),
        aaaa("bad6.sender.test", "::2"),
        aaaa("good6.sender.test", "::1"),
    ];
    if let Some((addr, target)) = v6_ptr {
        ip6.push(ptr(addr, target));
    }
    vec![
        Zone::new(
            "in-addr.arpa",
            vec![
                ptr("127.0.0.2", "good.sender.test"),
                ptr("127.0.0.3", "bad.sender.test"),
            ],
        ),
        Zone::new("ip6.arpa", ip6),
        Zone::new("sender.test", sender),
        Zone::new(
            "pass.test",
            vec![txt("pass.test", "v=spf1 ip4:127.0.0.2 ip6:::1 -all")],
        ),
        Zone::new(
            "fail.test",
            vec![txt("fail.test", "v=spf1 ip4:127.0.0.99 -all")],
        ),
        Zone::new(
            "soft.test",
            vec![txt("soft.test", "v=spf1 ip4:127.0.0.99 ~all")],
        ),
        Zone::new(
            "inc.test",
            vec![txt(
                "inc.test",
                "v=spf1 mx a:nothing.inc.test include:pass.test -all",
            )],
        ),
        Zone::new(
            "mx.test",
            vec![
                txt("mx.test", "v=spf1 mx -all"),
                Record::new(
                    "mx.test",
                    RecordData::Mx {
                        preference: 10,
                        exchange: "mail.mx.test".into(),
                    },
                ),
                a("mail.mx.test", "127.0.0.2"),
            ],
        ),
        Zone::new("nospf.test", vec![a("nospf.test", "127.0.0.1")]),
    ]
}

/// A DNS server on 127.0.0.1, UDP and TCP on the same port, and its log.
fn dns(zones: &[Zone]) -> (RunningDns, SocketAddr, EventLog) {
    let log = EventLog::new();
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let Ok(tcp) = std::net::TcpListener::bind(addr) else {
            continue;
        };
        let server = DnsServer::new(zones, log.clone()).unwrap();
        return (server.serve(vec![udp], vec![tcp]).unwrap(), addr, log);
    }
    panic!("no port free for UDP and TCP at once");
}

/// A server with one listener per address in `addrs`, all with `policies`.
fn server(
    addrs: &[&str],
    policies: Vec<Policy>,
    context: &PolicyContext,
) -> (RunningMx, Vec<SocketAddr>, EventLog) {
    let log = EventLog::new();
    let mut listeners = Vec::new();
    let mut locals = Vec::new();
    for addr in addrs {
        let socket = std::net::TcpListener::bind(addr).expect("bind loopback");
        let local = socket.local_addr().unwrap();
        locals.push(local);
        listeners.push(Listener {
            socket,
            family: Family::of(local.ip()),
            behaviour: ListenerBehaviour {
                policies: policies.clone(),
                ..ListenerBehaviour::normal("mx1.example.test")
            },
        });
    }
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listeners(listeners)
        .policy(context.clone())
        .try_start()
        .unwrap();
    (mx, locals, log)
}

/// A minimal SMTP client.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `server` from `source` (any port).
    async fn connect(source: &str, server: SocketAddr) -> Self {
        let source: IpAddr = source.parse().unwrap();
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = tokio::time::timeout(WAIT, socket.connect(server))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self::over(stream)
    }

    fn over(stream: TcpStream) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// The next reply, lines joined with `\n`; `None` at EOF.
    async fn reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("reply timed out")
                .ok()?;
            if n == 0 {
                return None;
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .unwrap();
    }

    /// Sends `command` and returns the reply.
    async fn ask(&mut self, command: &str) -> String {
        self.send(&format!("{command}\r\n")).await;
        self.reply().await.expect("a reply")
    }

    /// Greeting, EHLO, MAIL, RCPT: the replies to MAIL and RCPT (`None` for a RCPT not sent
    /// because MAIL failed).
    async fn envelope(&mut self, helo: &str, from: &str, to: &str) -> (String, Option<String>) {
        let greeting = self.reply().await.expect("greeting");
        assert!(greeting.starts_with("220"), "{greeting}");
        assert!(self.ask(&format!("EHLO {helo}")).await.starts_with("250"));
        let mail = self.ask(&format!("MAIL FROM:<{from}>")).await;
        if !mail.starts_with("250") {
            return (mail, None);
        }
        let rcpt = self.ask(&format!("RCPT TO:<{to}>")).await;
        (mail, Some(rcpt))
    }
}

/// The RCPT reply for one envelope from `source`.
async fn rcpt(source: &str, server: SocketAddr, from: &str, to: &str) -> String {
    let mut client = Client::connect(source, server).await;
    let (mail, rcpt) = client.envelope("client.test", from, to).await;
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = rcpt.unwrap();
    client.ask("QUIT").await;
    rcpt
}

/// The MAIL reply for one envelope from `source` with HELO `helo`.
async fn mail(source: &str, server: SocketAddr, helo: &str, from: &str) -> String {
    let mut client = Client::connect(source, server).await;
    let (mail, _) = client.envelope(helo, from, "bob@example.test").await;
    client.ask("QUIT").await;
    mail
}

fn notes(log: &EventLog) -> Vec<String> {
    log.snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Policy { detail, .. } => Some(detail),
            _ => None,
        })
        .collect()
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

#[test]
fn keys_are_addresses_or_networks() {
    assert_eq!(GreylistKey::Ip.of(ip("2001:db8::5")), "2001:db8::5");
    assert_eq!(
        GreylistKey::Prefix64.of(ip("2001:db8:0:7:1:2:3:4")),
        "2001:db8:0:7::/64"
    );
    assert_eq!(GreylistKey::Prefix64.of(ip("192.0.2.77")), "192.0.2.0/24");
    assert_eq!(
        GreylistKey::Prefix64.of(ip("::ffff:192.0.2.77")),
        "192.0.2.0/24"
    );
    assert_eq!(
        Policy::require_ptr().to_string(),
        "require-ptr (ipv6 only) at RCPT"
    );
}

#[test]
fn loopback_policy_dns_refuses_other_addresses() {
    let error = PolicyDns::loopback(vec!["192.0.2.53:53".parse().unwrap()]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn policies_needing_dns_need_a_resolver() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = MxBuilder::new("mx1", "mx1.example.test", EventLog::new())
        .listeners(vec![Listener {
            socket,
            family: Family::Ipv4,
            behaviour: ListenerBehaviour {
                policies: vec![Policy::RequireSpf {
                    reject_softfail: false,
                }],
                ..ListenerBehaviour::normal("mx1.example.test")
            },
        }])
        .try_start()
        .expect_err("no resolver");
    assert!(matches!(error, MxError::PolicyDns { .. }), "{error}");
}

#[tokio::test]
async fn greylisting_by_ip_refuses_new_triplets_until_the_period_has_passed() {
    // The early retries below take some 10 ms each: the period leaves them ample headroom.
    let period = Duration::from_secs(2);
    let policies = vec![Policy::Greylist {
        key: GreylistKey::Ip,
        period,
    }];
    let (_mx, addrs, log) = server(
        &["127.0.0.1:0", "[::1]:0"],
        policies,
        &PolicyContext::default(),
    );
    let (v4, v6) = (addrs[0], addrs[1]);
    let (alice, bob) = ("alice@sender.test", "bob@example.test");

    let first = rcpt("127.0.0.2", v4, alice, bob).await;
    assert!(first.starts_with("451 4.7.1 <bob@example.test>"), "{first}");
    // A retry too early, the same sender over the other family, another address, another
    // recipient: all new or early.
    assert_eq!(code(&rcpt("127.0.0.2", v4, alice, bob).await), "451");
    assert_eq!(code(&rcpt("::1", v6, alice, bob).await), "451");
    assert_eq!(code(&rcpt("127.0.0.3", v4, alice, bob).await), "451");
    assert_eq!(
        code(&rcpt("127.0.0.2", v4, alice, "carol@example.test").await),
        "451"
    );

    tokio::time::sleep(period + Duration::from_millis(50)).await;
    // Case does not matter; the message then goes through.
    let mut client = Client::connect("127.0.0.2", v4).await;
    let (_, after) = client
        .envelope("client.test", "Alice@Sender.test", "BOB@example.test")
        .await;
    assert_eq!(code(&after.unwrap()), "250");
    assert_eq!(code(&client.ask("DATA").await), "354");
    assert_eq!(
        code(&client.ask("Subject: x\r\n\r\nhello\r\n.").await),
        "250"
    );
    // Passed triplets keep passing.
    assert_eq!(code(&rcpt("127.0.0.2", v4, alice, bob).await), "250");

    let notes = notes(&log);
    assert_eq!(
        notes[0],
        "greylist 127.0.0.2 <alice@sender.test> <bob@example.test>: first seen, 451 for 2s"
    );
    assert!(
        notes[1].contains(": seen ") && notes[1].contains("451 for another"),
        "{notes:?}"
    );
    assert_eq!(
        notes[2],
        "greylist ::1 <alice@sender.test> <bob@example.test>: first seen, 451 for 2s"
    );
    assert!(notes[5].contains("passed after 2 refusal(s)"), "{notes:?}");
    assert!(notes[6].ends_with(": known, passed"), "{notes:?}");
}

#[tokio::test]
async fn greylisting_by_prefix_lets_a_neighbour_pass_after_the_period() {
    let period = Duration::from_millis(500);
    let policies = vec![Policy::Greylist {
        key: GreylistKey::Prefix64,
        period,
    }];
    let (_mx, addrs, log) = server(&["127.0.0.1:0"], policies, &PolicyContext::default());
    let (alice, bob) = ("alice@sender.test", "bob@example.test");
    assert_eq!(code(&rcpt("127.0.0.2", addrs[0], alice, bob).await), "451");
    // Same /24: the same triplet, still early.
    assert_eq!(code(&rcpt("127.0.0.3", addrs[0], alice, bob).await), "451");
    tokio::time::sleep(period + Duration::from_millis(50)).await;
    assert_eq!(code(&rcpt("127.0.0.3", addrs[0], alice, bob).await), "250");
    // Another /24 starts over.
    assert_eq!(code(&rcpt("127.0.1.2", addrs[0], alice, bob).await), "451");
    let notes = notes(&log);
    assert!(
        notes[0].starts_with("greylist 127.0.0.0/24 <alice@sender.test>"),
        "{notes:?}"
    );
    assert!(notes[3].starts_with("greylist 127.0.1.0/24"), "{notes:?}");
}

#[tokio::test]
async fn rate_limits_refuse_the_connection_over_the_limit() {
    let policies = vec![Policy::Rate {
        limit: 2,
        per: Duration::from_secs(30),
        key: GreylistKey::Ip,
    }];
    let (_mx, addrs, log) = server(&["127.0.0.1:0"], policies, &PolicyContext::default());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect("127.0.0.2", addrs[0]).await;
        assert_eq!(code(&client.reply().await.unwrap()), "220");
        open.push(client);
    }
    let mut third = Client::connect("127.0.0.2", addrs[0]).await;
    assert_eq!(
        third.reply().await.unwrap(),
        "421 4.7.0 mx1.example.test Error: too many connections from 127.0.0.2 (mxlab)"
    );
    assert_eq!(third.reply().await, None, "closed after the 421");
    // Another address has its own count.
    let mut other = Client::connect("127.0.0.3", addrs[0]).await;
    assert_eq!(code(&other.reply().await.unwrap()), "220");
    assert_eq!(
        notes(&log)[..3],
        [
            "rate 127.0.0.2: connection 1 within 30s (limit 2): accepted",
            "rate 127.0.0.2: connection 2 within 30s (limit 2): accepted",
            "rate 127.0.0.2: connection 3 within 30s (limit 2): over the limit, 421",
        ]
    );

    // By prefix, the neighbour shares the count; the window slides.
    let policies = vec![Policy::Rate {
        limit: 1,
        per: Duration::from_secs(2),
        key: GreylistKey::Prefix64,
    }];
    let (_mx, addrs, _log) = server(&["127.0.0.1:0"], policies, &PolicyContext::default());
    let mut first = Client::connect("127.0.0.2", addrs[0]).await;
    assert_eq!(code(&first.reply().await.unwrap()), "220");
    // Measured after the first connection was counted: when 2 s have passed here, they have
    // for it.
    let started = tokio::time::Instant::now();
    let mut neighbour = Client::connect("127.0.0.3", addrs[0]).await;
    assert_eq!(code(&neighbour.reply().await.unwrap()), "421");
    tokio::time::sleep_until(started + Duration::from_secs(2) + Duration::from_millis(50)).await;
    let mut later = Client::connect("127.0.0.3", addrs[0]).await;
    assert_eq!(code(&later.reply().await.unwrap()), "220");
}

/// A server with `policies` whose policy DNS is a fresh DNS server with [`zones`].
fn with_dns(
    addrs: &[&str],
    policies: Vec<Policy>,
    v6_ptr: Option<(&str, &str)>,
) -> (RunningMx, Vec<SocketAddr>, EventLog, RunningDns, EventLog) {
    let (dns, dns_addr, dns_log) = dns(&zones(v6_ptr));
    let context = PolicyContext::new(
        PolicyState::new(),
        Some(PolicyDns::loopback(vec![dns_addr]).unwrap()),
    );
    let (mx, locals, log) = server(addrs, policies, &context);
    (mx, locals, log, dns, dns_log)
}

#[tokio::test]
async fn require_spf_refuses_fail_and_optionally_softfail() {
    let policies = vec![Policy::RequireSpf {
        reject_softfail: false,
    }];
    let (_mx, addrs, log, _dns, _) = with_dns(&["127.0.0.1:0", "[::1]:0"], policies, None);
    let (v4, v6) = (addrs[0], addrs[1]);
    assert_eq!(
        code(&mail("127.0.0.2", v4, "c.test", "a@pass.test").await),
        "250"
    );
    assert_eq!(code(&mail("::1", v6, "c.test", "a@pass.test").await), "250");
    let failed = mail("127.0.0.2", v4, "c.test", "a@fail.test").await;
    assert_eq!(
        failed,
        "550 5.7.23 <a@fail.test>: Sender address rejected: SPF fail: 127.0.0.2 is not allowed \
         to send mail for fail.test (mxlab)"
    );
    assert_eq!(
        code(&mail("127.0.0.2", v4, "c.test", "a@soft.test").await),
        "250"
    );
    // include, mx; no record at all.
    assert_eq!(
        code(&mail("127.0.0.2", v4, "c.test", "a@inc.test").await),
        "250"
    );
    assert_eq!(
        code(&mail("127.0.0.2", v4, "c.test", "a@mx.test").await),
        "250"
    );
    assert_eq!(
        code(&mail("127.0.0.3", v4, "c.test", "a@mx.test").await),
        "550"
    );
    assert_eq!(
        code(&mail("127.0.0.2", v4, "c.test", "a@nospf.test").await),
        "250"
    );
    // The null sender is checked by its HELO name.
    assert_eq!(code(&mail("127.0.0.2", v4, "pass.test", "").await), "250");
    assert_eq!(code(&mail("127.0.0.2", v4, "fail.test", "").await), "550");
    let notes = notes(&log);
    assert_eq!(
        notes[..3],
        [
            "spf <a@pass.test> from 127.0.0.2: pass for pass.test, passed",
            "spf <a@pass.test> from ::1: pass for pass.test, passed",
            "spf <a@fail.test> from 127.0.0.2: fail for fail.test, 550 at MAIL",
        ]
    );
    assert_eq!(
        notes[3],
        "spf <a@soft.test> from 127.0.0.2: softfail for soft.test, passed"
    );
    assert_eq!(
        notes[7],
        "spf <a@nospf.test> from 127.0.0.2: none for nospf.test, passed"
    );
    assert_eq!(
        notes[9],
        "spf <> (helo fail.test) from 127.0.0.2: fail for fail.test, 550 at MAIL"
    );

    let policies = vec![Policy::RequireSpf {
        reject_softfail: true,
    }];
    let (_mx, addrs, _log, _dns, _) = with_dns(&["127.0.0.1:0"], policies, None);
    let soft = mail("127.0.0.2", addrs[0], "c.test", "a@soft.test").await;
    assert!(
        soft.starts_with("550 5.7.23 <a@soft.test>: Sender address rejected: SPF softfail"),
        "{soft}"
    );
}

#[tokio::test]
async fn pipelined_commands_wait_for_the_lookup_and_stay_in_order() {
    let policies = vec![
        Policy::RequireSpf {
            reject_softfail: false,
        },
        Policy::Greylist {
            key: GreylistKey::Ip,
            period: Duration::ZERO,
        },
    ];
    let (_mx, addrs, log, _dns, _) = with_dns(&["127.0.0.1:0"], policies, None);
    let mut client = Client::connect("127.0.0.2", addrs[0]).await;
    client.reply().await.unwrap();
    client
        .send(
            "EHLO c.test\r\nMAIL FROM:<a@fail.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n\
             MAIL FROM:<a@pass.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
        )
        .await;
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(code(&client.reply().await.unwrap()).to_string());
    }
    assert_eq!(codes, ["250", "550", "503", "503", "250", "250", "354"]);
    assert_eq!(code(&client.ask("hi\r\n.").await), "250");
    // Each decision is logged between its command and its reply.
    let lines: Vec<String> = log
        .snapshot()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SmtpCommand { line, .. } => Some(format!("C: {line}")),
            EventKind::SmtpReply { reply, .. } => Some(format!("S: {}", &reply[..3])),
            EventKind::Policy { detail, .. } => Some(format!("P: {}", &detail[..8])),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines[..12],
        [
            "S: 220",
            "C: EHLO c.test",
            "S: 250",
            "C: MAIL FROM:<a@fail.test>",
            "P: spf <a@f",
            "S: 550",
            "C: RCPT TO:<b@example.test>",
            "S: 503",
            "C: DATA",
            "S: 503",
            "C: MAIL FROM:<a@pass.test>",
            "P: spf <a@p",
        ]
    );
}

/// Runs `ip <args>` inside `namespace`.
fn ip_command(namespace: &netns::Namespace, args: &[&str]) {
    let status = namespace
        .run(|| std::process::Command::new("ip").args(args).status())
        .unwrap()
        .unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// A TCP connection from `source` to `server`, its socket made inside `namespace`.
async fn connect_in(namespace: &netns::Namespace, source: &str, server: SocketAddr) -> Client {
    let source = SocketAddr::new(source.parse().unwrap(), 0);
    let socket = namespace
        .run(move || {
            let socket = match source {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(source)?;
            Ok::<_, std::io::Error>(socket)
        })
        .unwrap()
        .unwrap();
    let stream = tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .expect("connect timed out")
        .expect("connect");
    Client::over(stream)
}

/// A private network namespace (root only) whose loopback carries a ULA /64 and a second
/// /64 for IPv6 clients and 198.18.77.0/24 for IPv4 ones (nothing could route them anywhere
/// useful), with the scenario DNS on `::53` and an MX with `policies` on `::25` and
/// `198.18.77.25`, its policy DNS asking from inside the namespace. Real (non-loopback)
/// addresses matter: hickory answers PTR lookups of 127/8 and ::1 itself (`localhost`).
struct NsLab {
    namespace: netns::Namespace,
    mx6: SocketAddr,
    mx4: SocketAddr,
    log: EventLog,
    dns_log: EventLog,
    _dns: RunningDns,
    _mx: RunningMx,
}

const NET: &str = "fd6d:786c:0:1";

fn v6(host: &str) -> String {
    format!("{NET}::{host}")
}

fn v4(host: &str) -> String {
    format!("198.18.77.{host}")
}

impl NsLab {
    fn start(tag: &str, policies: Vec<Policy>) -> NsLab {
        crate::test_support::require_root("a network namespace");
        let namespace =
            netns::Namespace::create(&format!("mxlab-t{}-{tag}", std::process::id())).unwrap();
        for host in ["53", "25", "5", "6", "7", "8"] {
            let address = format!("{}/128", v6(host));
            ip_command(
                &namespace,
                &["-6", "addr", "add", &address, "dev", "lo", "nodad"],
            );
            let address = format!("{}/32", v4(host));
            ip_command(&namespace, &["addr", "add", &address, "dev", "lo"]);
        }
        ip_command(
            &namespace,
            &[
                "-6",
                "addr",
                "add",
                "fd6d:786c:0:2::7/128",
                "dev",
                "lo",
                "nodad",
            ],
        );
        // ::5, ::6 and .5, .6 are forward-confirmed; ::8 and .8 point at names that resolve
        // elsewhere; the rest have no PTR.
        let zones = vec![
            Zone::new(
                "ip6.arpa",
                vec![
                    ptr(&v6("5"), "c5.sender.test"),
                    ptr(&v6("6"), "c6.sender.test"),
                    ptr(&v6("8"), "c8.sender.test"),
                ],
            ),
            Zone::new(
                "in-addr.arpa",
                vec![
                    ptr(&v4("5"), "c5.sender.test"),
                    ptr(&v4("6"), "c6.sender.test"),
                    ptr(&v4("8"), "c8.sender.test"),
                ],
            ),
            Zone::new(
                "sender.test",
                vec![
                    aaaa("c5.sender.test", &v6("5")),
                    aaaa("c6.sender.test", &v6("6")),
                    aaaa("c8.sender.test", &v6("99")),
                    a("c5.sender.test", &v4("5")),
                    a("c6.sender.test", &v4("6")),
                    a("c8.sender.test", &v4("99")),
                ],
            ),
        ];
        let dns_addr: SocketAddr = format!("[{}]:53", v6("53")).parse().unwrap();
        let mx6: SocketAddr = format!("[{}]:25", v6("25")).parse().unwrap();
        let mx4: SocketAddr = format!("{}:25", v4("25")).parse().unwrap();
        let (udp, tcp, listener6, listener4) = namespace
            .run(move || {
                Ok::<_, std::io::Error>((
                    std::net::UdpSocket::bind(dns_addr)?,
                    std::net::TcpListener::bind(dns_addr)?,
                    std::net::TcpListener::bind(mx6)?,
                    std::net::TcpListener::bind(mx4)?,
                ))
            })
            .unwrap()
            .unwrap();
        let dns_log = EventLog::new();
        let dns = DnsServer::new(&zones, dns_log.clone())
            .unwrap()
            .serve(vec![udp], vec![tcp])
            .unwrap();
        let context = PolicyContext::new(
            PolicyState::new(),
            Some(PolicyDns::in_namespace(&namespace, vec![dns_addr]).unwrap()),
        );
        let log = EventLog::new();
        let listeners: Vec<Listener> = [(listener6, Family::Ipv6), (listener4, Family::Ipv4)]
            .into_iter()
            .map(|(socket, family)| Listener {
                socket,
                family,
                behaviour: ListenerBehaviour {
                    policies: policies.clone(),
                    ..ListenerBehaviour::normal("mx1.example.test")
                },
            })
            .collect();
        let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
            .listeners(listeners)
            .policy(context.clone())
            .try_start()
            .unwrap();
        NsLab {
            namespace,
            mx6,
            mx4,
            log,
            dns_log,
            _dns: dns,
            _mx: mx,
        }
    }

    async fn connect(&self, source: &str) -> Client {
        let server = if source.contains(':') {
            self.mx6
        } else {
            self.mx4
        };
        connect_in(&self.namespace, source, server).await
    }

    /// The MAIL and RCPT replies of one envelope from `source`.
    async fn envelope(&self, source: &str) -> (String, Option<String>) {
        let mut client = self.connect(source).await;
        let replies = client
            .envelope("c.sender.test", "alice@sender.test", "bob@example.test")
            .await;
        client.ask("QUIT").await;
        replies
    }

    async fn rcpt(&self, source: &str) -> String {
        self.envelope(source).await.1.expect("MAIL accepted")
    }
}

/// Gmail's check: IPv6 clients need forward-confirmed reverse DNS, IPv4 clients are left
/// alone; then greylisting by /64 lets a neighbour through after the period.
#[test_with::root()]
#[tokio::test]
async fn in_a_namespace_ptr_checks_and_greylisting_by_prefix() {
    let period = Duration::from_millis(500);
    let policies = vec![
        Policy::require_ptr(),
        Policy::Greylist {
            key: GreylistKey::Prefix64,
            period,
        },
    ];
    let lab = NsLab::start("ptr6", policies);
    assert_eq!(code(&lab.rcpt(&v6("5")).await), "451");
    assert_eq!(code(&lab.rcpt(&v6("6")).await), "451");
    let mismatch = lab.rcpt(&v6("8")).await;
    assert!(
        mismatch.starts_with(&format!("550-5.7.25 [{}] The IP address", v6("8"))),
        "{mismatch}"
    );
    assert!(mismatch.lines().last().unwrap().starts_with("550 5.7.25 "));
    assert_eq!(code(&lab.rcpt("fd6d:786c:0:2::7").await), "550");
    // IPv4 without a PTR: not checked (greylisted, though).
    assert_eq!(code(&lab.rcpt(&v4("7")).await), "451");
    tokio::time::sleep(period + Duration::from_millis(50)).await;
    assert_eq!(code(&lab.rcpt(&v6("6")).await), "250");

    let notes = notes(&lab.log);
    assert_eq!(
        notes[..2],
        [
            format!("require-ptr {}: PTR c5.sender.test resolves back, passed", v6("5")),
            format!(
                "greylist {NET}::/64 <alice@sender.test> <bob@example.test>: first seen, 451 for 500ms"
            ),
        ]
    );
    assert_eq!(
        notes[4],
        format!(
            "require-ptr {}: PTR c8.sender.test does not resolve back (c8.sender.test AAAA {}), \
             550 at RCPT",
            v6("8"),
            v6("99")
        )
    );
    assert_eq!(
        notes[5],
        "require-ptr fd6d:786c:0:2::7: no PTR (NXDOMAIN), 550 at RCPT"
    );
    assert_eq!(
        notes[6],
        "require-ptr 198.18.77.7: IPv4 client, not checked (ipv6 only)"
    );
    assert!(notes[9].contains("passed after 2 refusal(s)"), "{notes:?}");
    // Every PTR lookup reached the namespace's DNS server.
    let ptr_queries = lab
        .dns_log
        .snapshot()
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::DnsQuery { record_type, .. } if record_type == "PTR"),
        )
        .count();
    assert_eq!(ptr_queries, 5);
}

/// Both families checked, at MAIL, with a reply of our own.
#[test_with::root()]
#[tokio::test]
async fn in_a_namespace_ptr_checks_of_both_families_at_mail() {
    let policy = Policy::RequirePtr {
        ipv6_only: false,
        stage: SmtpStage::Mail,
        reply: "550 5.7.25 no FCrDNS for {ip}".into(),
    };
    let lab = NsLab::start("ptr4", vec![policy]);
    assert_eq!(code(&lab.envelope(&v4("5")).await.0), "250");
    assert_eq!(
        lab.envelope(&v4("8")).await.0,
        "550 5.7.25 no FCrDNS for 198.18.77.8"
    );
    assert_eq!(
        lab.envelope(&v4("7")).await.0,
        "550 5.7.25 no FCrDNS for 198.18.77.7"
    );
    assert_eq!(code(&lab.envelope(&v6("6")).await.0), "250");
    assert_eq!(code(&lab.envelope(&v6("8")).await.0), "550");
}

/// At the greeting, the check is made before the greeting is sent.
#[test_with::root()]
#[tokio::test]
async fn in_a_namespace_ptr_checks_at_the_greeting() {
    let policy = Policy::RequirePtr {
        ipv6_only: false,
        stage: SmtpStage::Greeting,
        reply: "554 5.7.25 {ip} has no FCrDNS".into(),
    };
    let lab = NsLab::start("ptr0", vec![policy]);
    let mut client = lab.connect(&v4("7")).await;
    assert_eq!(
        client.reply().await.unwrap(),
        "554 5.7.25 198.18.77.7 has no FCrDNS"
    );
    // A 5xx greeting: everything but QUIT gets 503.
    assert_eq!(code(&client.ask("EHLO c.test").await), "503");
    let mut client = lab.connect(&v6("5")).await;
    assert_eq!(code(&client.reply().await.unwrap()), "220");
}
