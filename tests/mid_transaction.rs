//! Mid-transaction faults of the fake MX, measured with real sockets from the SUT's namespace
//! over both families: the reply lost after the final dot (a reset, or silence, with the
//! message already stored: RFC 1047's duplicate window), a reset in the middle of the content,
//! a 421 after the dot. Then a real run in which `copies = 1` must fail because the lost reply
//! made the MTA send the message twice. Needs root; otherwise reported as ignored with the
//! reason (failed under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mxlab::events::{EventKind, EventLog};
use mxlab::family::Family;
use mxlab::lab;
use mxlab::mx::{self, Listener, RunningMx, SessionIds};
use mxlab::plan::Plan;
use mxlab::scenario::{self, parse, Copies};
use mxlab::sut::reference::Bugs;
use mxlab::sut::SutKind;
use mxlab::verdict::Status;

/// One host per fault; the hosts' order is the plan's.
const SCENARIO: &str = r#"
description = "mid-transaction faults"

[[mx]]
name = "reset"
domain = "example.test"

[[mx]]
name = "silent"
domain = "example.test"

[[mx]]
name = "middata"
domain = "example.test"

[[mx]]
name = "busy"
domain = "example.test"

[[mx]]
name = "tlsstall"
domain = "example.test"

[[mx]]
name = "tlsalert"
domain = "example.test"

[[fault]]
on = "reset"
smtp = { stage = "end-of-data", action = "accept-then-reset" }

[[fault]]
on = "tlsstall"
family = "ipv6"
smtp = { starttls = "stalled" }

[[fault]]
on = "tlsalert"
family = "ipv6"
smtp = { starttls = "alert" }

[[fault]]
on = "silent"
smtp = { stage = "end-of-data", action = "accept-then-stall" }

[[fault]]
on = "middata"
smtp = { stage = "content", after = 4000, action = "reset" }

[[fault]]
on = "busy"
smtp = { stage = "end-of-data", reply = "421 4.3.0 busy, closing" }

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#;

/// A reply that must come at once arrives within this (it takes well under a millisecond).
const PROMPT: Duration = Duration::from_millis(1000);
/// "Silence" means no byte within this.
const SILENCE: Duration = Duration::from_millis(1500);
/// The message body sent to `middata`: larger than its 4000-byte cut.
const BODY: usize = 20_000;

fn cannot_run() -> Option<String> {
    common::needs_root("creates network namespaces")
}

/// Reads one SMTP reply (up to its last line); `Err` carries the I/O error or EOF.
fn reply(stream: &mut TcpStream) -> io::Result<String> {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        text.push(byte[0]);
        if text.ends_with(b"\r\n") {
            let line_start = text[..text.len() - 2]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            if text.get(line_start + 3) == Some(&b' ') {
                return Ok(String::from_utf8_lossy(&text).trim_end().to_string());
            }
        }
    }
}

/// Connects from the SUT's namespace, then EHLO, MAIL, RCPT, DATA; returns the stream after
/// the `354`.
fn open_transaction(sut: &netns::Namespace, to: SocketAddr) -> TcpStream {
    let mut stream = sut.run(move || TcpStream::connect(to)).unwrap().unwrap();
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    assert!(reply(&mut stream).unwrap().starts_with("220"));
    for (command, code) in [
        ("EHLO sut.sender.test", "250"),
        ("MAIL FROM:<alice@sender.test>", "250"),
        ("RCPT TO:<bob@example.test>", "250"),
        ("DATA", "354"),
    ] {
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let got = reply(&mut stream).unwrap();
        assert!(got.starts_with(code), "{command}: {got}");
    }
    stream
}

fn message(id: &str, body: usize) -> Vec<u8> {
    let mut text = format!("Message-ID: <{id}>\r\nSubject: t\r\n\r\n").into_bytes();
    while text.len() < body {
        text.extend_from_slice(&[b'x'; 78]);
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b".\r\n");
    text
}

/// How a read after the final dot ended.
fn after_dot(stream: &mut TcpStream, wait: Duration) -> (Result<String, ErrorKind>, Duration) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let begun = Instant::now();
    let got = reply(stream).map_err(|e| e.kind());
    (got, begun.elapsed())
}

struct World {
    servers: Vec<RunningMx>,
    log: EventLog,
    plan: Plan,
    topology: netns::Topology,
}

impl World {
    async fn new() -> World {
        let scenario = parse(Path::new("scenarios/smtp/mid.toml"), SCENARIO).unwrap();
        let plan = Plan::new(&scenario);
        let topology =
            netns::Topology::build(&plan.topology(&format!("mxlab-m{}", std::process::id())))
                .await
                .unwrap();
        let log = EventLog::new();
        let ids = SessionIds::new();
        let mut servers = Vec::new();
        for name in ["reset", "silent", "middata", "busy", "tlsstall", "tlsalert"] {
            let host = plan.host(name).unwrap();
            let mut listeners = Vec::new();
            for (family, behaviour) in &host.smtp {
                let address = SocketAddr::new(host.address(*family).unwrap(), 25);
                let socket = topology
                    .host(name)
                    .unwrap()
                    .run(move || TcpListener::bind(address))
                    .unwrap()
                    .unwrap();
                listeners.push(Listener {
                    socket,
                    family: *family,
                    behaviour: behaviour.clone(),
                });
            }
            servers.push(
                mx::MxBuilder::new(name, &host.fqdn, log.clone())
                    .listeners(listeners)
                    .session_ids(ids.clone())
                    .try_start()
                    .unwrap(),
            );
        }
        World {
            servers,
            log,
            plan,
            topology,
        }
    }

    fn address(&self, host: &str, family: Family) -> SocketAddr {
        SocketAddr::new(self.plan.host(host).unwrap().address(family).unwrap(), 25)
    }

    fn stored(&self, host: &str) -> usize {
        self.servers
            .iter()
            .find(|s| s.host() == host)
            .unwrap()
            .messages()
            .len()
    }

    fn closed_reasons(&self, host: &str) -> Vec<String> {
        self.log
            .snapshot()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::SmtpClosed {
                    host: h, reason, ..
                } if h == host => Some(reason),
                _ => None,
            })
            .collect()
    }
}

async fn each_mid_transaction_fault_as_the_client_sees_it_over_both_families() {
    let world = World::new().await;
    let sut = world.topology.host("sut").unwrap();
    for family in [Family::Ipv4, Family::Ipv6] {
        let at = |host: &str| world.address(host, family);
        let (reset, silent, middata, busy) = (at("reset"), at("silent"), at("middata"), at("busy"));
        // Blocking client I/O on this worker; the MX keeps serving on the other.
        let seen = tokio::task::block_in_place(|| {
            // Stored, then reset: the client reads ECONNRESET instead of the 250.
            let mut stream = open_transaction(sut, reset);
            stream.write_all(&message("r@sender.test", 100)).unwrap();
            let reset_seen = after_dot(&mut stream, PROMPT);
            // Stored, then silence.
            let mut stream = open_transaction(sut, silent);
            stream.write_all(&message("s@sender.test", 100)).unwrap();
            let silence_seen = after_dot(&mut stream, SILENCE);
            drop(stream);
            // Reset after 4000 bytes of a 20 kB message: a later write or the read fails.
            let mut stream = open_transaction(sut, middata);
            let mut written = 0;
            let mut write_error = None;
            for chunk in message("m@sender.test", BODY).chunks(1000) {
                std::thread::sleep(Duration::from_millis(2));
                match stream.write_all(chunk) {
                    Ok(()) => written += chunk.len(),
                    Err(e) => {
                        write_error = Some(e.kind());
                        break;
                    }
                }
            }
            let middata_seen = match write_error {
                Some(kind) => (Err(kind), Duration::ZERO),
                None => after_dot(&mut stream, PROMPT),
            };
            // 421 after the dot, then a clean close (FIN, not RST).
            let mut stream = open_transaction(sut, busy);
            stream.write_all(&message("b@sender.test", 100)).unwrap();
            let busy_seen = after_dot(&mut stream, PROMPT);
            let busy_then = after_dot(&mut stream, PROMPT);
            (
                reset_seen,
                silence_seen,
                written,
                middata_seen,
                busy_seen,
                busy_then,
            )
        });
        let (reset_seen, silence_seen, written, middata_seen, busy_seen, busy_then) = seen;
        eprintln!(
            "{family}: accept-then-reset: {:?} after {:.1} ms; accept-then-stall: {:?} after \
             {:.0} ms; reset mid-DATA: {written} of ~{BODY} bytes written, then {:?}; 421 \
             after the dot: {:?} in {:.1} ms, then {:?}",
            reset_seen.0,
            reset_seen.1.as_secs_f64() * 1e3,
            silence_seen.0,
            silence_seen.1.as_secs_f64() * 1e3,
            middata_seen.0,
            busy_seen.0,
            busy_seen.1.as_secs_f64() * 1e3,
            busy_then.0,
        );
        assert_eq!(reset_seen.0, Err(ErrorKind::ConnectionReset), "{family}");
        assert!(reset_seen.1 < PROMPT, "{family}: the reset comes at once");
        assert!(
            matches!(
                silence_seen.0,
                Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)
            ),
            "{family}: {:?}",
            silence_seen.0
        );
        assert!(
            silence_seen.1 >= SILENCE,
            "{family}: silent for the whole wait"
        );
        assert!(
            matches!(
                middata_seen.0,
                Err(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
            ),
            "{family}: {:?}",
            middata_seen.0
        );
        assert!(written < BODY, "{family}: the reset cut the content short");
        let busy_reply = busy_seen.0.clone().unwrap();
        assert!(
            busy_reply.starts_with("421 4.3.0"),
            "{family}: {busy_reply}"
        );
        assert_eq!(
            busy_then.0,
            Err(ErrorKind::UnexpectedEof),
            "{family}: FIN after the 421"
        );
    }
    // What the MX stored: the lost replies' messages, never the cut or refused ones.
    assert_eq!(world.stored("reset"), 2);
    assert_eq!(world.stored("silent"), 2);
    assert_eq!(world.stored("middata"), 0);
    assert_eq!(world.stored("busy"), 0);
    assert!(world
        .closed_reasons("reset")
        .iter()
        .all(|r| r.starts_with("scripted reset after storing mxlab-")));
    assert_eq!(
        world.closed_reasons("middata"),
        ["scripted reset at DATA content after 4000 bytes"; 2]
    );
    assert_eq!(
        world.closed_reasons("busy"),
        ["scripted 421 at end of data"; 2]
    );
    for server in world.servers {
        server.shutdown().await;
    }
}

/// Sends EHLO and returns its reply.
fn ehlo(stream: &mut TcpStream) -> String {
    stream.write_all(b"EHLO sut.sender.test\r\n").unwrap();
    reply(stream).unwrap()
}

/// The start of a TLS 1.2 ClientHello record: enough for the server to read a handshake.
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, 0x00, 0x01, 0x02, 0x03, 0x04,
    0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14,
    0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x00, 0x00, 0x02, 0x00, 0x2f,
    0x01, 0x00,
];

/// What the server sends after STARTTLS and a ClientHello: its bytes, until EOF or `wait`.
fn after_client_hello(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, Option<ErrorKind>) {
    stream.write_all(b"STARTTLS\r\n").unwrap();
    assert!(reply(stream).unwrap().starts_with("220"));
    stream.write_all(CLIENT_HELLO).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

/// STARTTLS faults on one family, from the SUT's namespace: over IPv6 `tlsstall` never answers
/// the ClientHello and `tlsalert` answers it with a fatal alert; over IPv4 neither offers
/// STARTTLS at all (the fault is on IPv6 only).
async fn starttls_faults_hit_one_family_only() {
    let world = World::new().await;
    let sut = world.topology.host("sut").unwrap();
    let (stall6, alert6) = (
        world.address("tlsstall", Family::Ipv6),
        world.address("tlsalert", Family::Ipv6),
    );
    let (stall4, alert4) = (
        world.address("tlsstall", Family::Ipv4),
        world.address("tlsalert", Family::Ipv4),
    );
    tokio::task::block_in_place(|| {
        let connect = |to: SocketAddr| {
            let mut stream = sut.run(move || TcpStream::connect(to)).unwrap().unwrap();
            stream.set_read_timeout(Some(PROMPT)).unwrap();
            assert!(reply(&mut stream).unwrap().starts_with("220"));
            stream
        };
        for to in [stall4, alert4] {
            let offer = ehlo(&mut connect(to));
            assert!(!offer.contains("STARTTLS"), "IPv4 {to}: {offer}");
        }
        let mut stream = connect(stall6);
        assert!(ehlo(&mut stream).contains("250-STARTTLS"));
        let begun = Instant::now();
        let (bytes, error) = after_client_hello(&mut stream, SILENCE);
        let waited = begun.elapsed();
        eprintln!(
            "stalled: {} bytes, {error:?} after {:.0} ms",
            bytes.len(),
            waited.as_secs_f64() * 1e3
        );
        assert!(bytes.is_empty(), "the stalled handshake sent {bytes:?}");
        assert!(matches!(
            error,
            Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ));
        assert!(waited >= SILENCE);
        drop(stream); // the server records the stall once the client gives up

        let mut stream = connect(alert6);
        assert!(ehlo(&mut stream).contains("250-STARTTLS"));
        let begun = Instant::now();
        let (bytes, error) = after_client_hello(&mut stream, PROMPT);
        eprintln!(
            "alert: {bytes:02x?} then {error:?} (EOF when None) after {:.1} ms",
            begun.elapsed().as_secs_f64() * 1e3
        );
        // One alert record: fatal (2) handshake_failure (40), then the server closes.
        assert_eq!(bytes, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        assert_eq!(error, None);
    });
    let tls_events = || -> Vec<String> {
        world
            .log
            .snapshot()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::SmtpTls { host, detail, .. } => Some(format!("{host}: {detail}")),
                _ => None,
            })
            .collect()
    };
    let deadline = Instant::now() + PROMPT;
    while tls_events().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tls_events = tls_events();
    tls_events.sort();
    assert_eq!(tls_events.len(), 2, "{tls_events:?}");
    assert!(tls_events[0].starts_with("tlsalert: handshake failed: fatal alert"));
    assert!(tls_events[1].starts_with("tlsstall: handshake stalled on purpose"));
    for server in world.servers {
        server.shutdown().await;
    }
}

/// A real run of the reference sender against the lost-250 scenario with `copies = 1`: the
/// MTA sends the message again after the reset, so the assertion must fail, naming both
/// sessions; the shipped `copies = "at most 2"` passes on the same run's events.
async fn copies_1_fails_when_the_lost_reply_makes_the_mta_send_again() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/smtp/lost-250-reset-after-dot.toml");
    let mut scenario = scenario::load(&path).unwrap();
    scenario.expect.copies = Some(Copies::Exactly(1));
    let report = lab::run(&scenario, &SutKind::Reference(Bugs::NONE))
        .await
        .unwrap();
    assert_eq!(report.verdict.status, Status::Fail, "{:?}", report.verdict);
    let failure = &report.verdict.failures[0];
    assert_eq!(failure.expectation, "copies = 1");
    assert!(
        failure.reason.starts_with("2 copies of message <1.smtp.lost-250-reset-after-dot@sender.test> were accepted: session ")
            && failure.reason.matches("(mx1 over ipv4)").count() == 2,
        "{}",
        failure.reason
    );
    eprintln!("copies = 1: {}", failure.reason);
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = cannot_run();
    let tests = vec![
        common::trial(
            "each_mid_transaction_fault_as_the_client_sees_it_over_both_families",
            reason.clone(),
            || {
                common::runtime().block_on(
                    each_mid_transaction_fault_as_the_client_sees_it_over_both_families(),
                );
                Ok(())
            },
        ),
        common::trial(
            "starttls_faults_hit_one_family_only",
            reason.clone(),
            || {
                common::runtime().block_on(starttls_faults_hit_one_family_only());
                Ok(())
            },
        ),
        common::trial(
            "copies_1_fails_when_the_lost_reply_makes_the_mta_send_again",
            reason,
            || {
                common::runtime()
                    .block_on(copies_1_fails_when_the_lost_reply_makes_the_mta_send_again());
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
