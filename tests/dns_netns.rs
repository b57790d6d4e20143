//! The scenario DNS server seen from another network namespace, the way an MTA sees it: the
//! server runs in the `dns` host of a real topology and `dig` asks from the SUT's namespace,
//! over IPv4 and IPv6, UDP and TCP. Each record type and each fault must give exactly the
//! promised answer, and every query must be in the query log with the SUT's address. Needs
//! root and `dig` (dnsutils); otherwise reported as ignored with the reason (failed under
//! `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mxlab::clock::ScenarioClock;
use mxlab::dns::{reverse_name, DnsServer, RunningDns};
use mxlab::events::{EventKind, EventLog};
use mxlab::family::Family;
use mxlab::plan::Plan;
use mxlab::scenario::parse;
use netns::{Namespace, Topology};

const SCENARIO: &str = r#"
description = "the scenario DNS from the SUT's namespace"

[[mx]]
name = "mx1"
domain = "example.test"

[[mx]]
name = "mx2"
domain = "example.test"
preference = 20
exchange_is_cname = true
extra_addresses = ["fe80::25"]

[[mx]]
name = "servfail"
domain = "faults.test"

[[mx]]
name = "refused"
domain = "faults.test"

[[mx]]
name = "nxdomain"
domain = "faults.test"

[[mx]]
name = "nodata"
domain = "faults.test"

[[mx]]
name = "timeout"
domain = "faults.test"

[[mx]]
name = "delay"
domain = "faults.test"

[[mx]]
name = "truncate"
domain = "faults.test"

[[fault]]
on = "servfail"
dns = { type = "AAAA", answer = "servfail" }

[[fault]]
on = "refused"
dns = { type = "AAAA", answer = "refused" }

[[fault]]
on = "nxdomain"
dns = { type = "AAAA", answer = "nxdomain" }

[[fault]]
on = "nodata"
dns = { type = "AAAA", answer = "nodata" }

[[fault]]
on = "timeout"
dns = { type = "AAAA", answer = "timeout" }

[[fault]]
on = "delay"
dns = { type = "AAAA", answer = { delay = "1500ms" } }

[[fault]]
on = "truncate"
dns = { type = "AAAA", answer = "truncate" }

[[fault]]
on = "mx1"
family = "ipv6"
ptr = "missing"

[[fault]]
on = "mx2"
family = "ipv6"
ptr = "mismatch"

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#;

/// What `dig` printed, parsed.
#[derive(Debug)]
struct Reply {
    /// `NOERROR`, `SERVFAIL`, ...; `None` when no answer came.
    status: Option<String>,
    /// The header flags, e.g. `["qr", "aa"]`.
    flags: Vec<String>,
    /// The answer section's records as `TYPE DATA` (names and TTLs left out).
    answers: Vec<String>,
    /// How long dig took.
    elapsed: Duration,
}

impl Reply {
    fn parse(text: &str, elapsed: Duration) -> Reply {
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_string);
        let flags = text
            .lines()
            .find_map(|line| line.strip_prefix(";; flags: "))
            .and_then(|rest| rest.split(';').next())
            .map(|flags| flags.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let answers = text
            .split(";; ANSWER SECTION:\n")
            .nth(1)
            .map(|section| {
                section
                    .lines()
                    .take_while(|line| !line.trim().is_empty())
                    .map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields[3..].join(" ")
                    })
                    .collect()
            })
            .unwrap_or_default();
        Reply {
            status,
            flags,
            answers,
            elapsed,
        }
    }

    fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("no answer")
    }
}

struct World {
    // Drop order: the server (sockets) first, then the namespaces.
    dns: Option<RunningDns>,
    log: EventLog,
    plan: Plan,
    topology: Topology,
    queries: usize,
}

impl World {
    async fn new() -> World {
        let scenario = parse(Path::new("scenarios/dns/netns.toml"), SCENARIO).unwrap();
        let plan = Plan::new(&scenario);
        let topology = Topology::build(&plan.topology(&format!("mxlab-d{}", std::process::id())))
            .await
            .unwrap();
        let addresses = plan.host("dns").unwrap().addresses();
        let (udp, tcp) = topology
            .host("dns")
            .unwrap()
            .run(move || {
                let mut udp = Vec::new();
                let mut tcp = Vec::new();
                for ip in addresses {
                    udp.push(std::net::UdpSocket::bind((ip, 53))?);
                    tcp.push(std::net::TcpListener::bind((ip, 53))?);
                }
                std::io::Result::Ok((udp, tcp))
            })
            .unwrap()
            .unwrap();
        let log = EventLog::new();
        let dns = DnsServer::with_faults(
            &plan.zones,
            plan.dns_faults.clone(),
            ScenarioClock::new(),
            log.clone(),
        )
        .unwrap()
        .serve(udp, tcp)
        .unwrap();
        World {
            dns: Some(dns),
            log,
            plan,
            topology,
            queries: 0,
        }
    }

    fn sut(&self) -> &Namespace {
        self.topology.host("sut").unwrap()
    }

    fn address(&self, host: &str, family: Family) -> IpAddr {
        self.plan.host(host).unwrap().address(family).unwrap()
    }

    /// Runs `dig` in the SUT's namespace against the DNS host's address of `family`; `options`
    /// are extra dig options such as `+tcp`. dig runs in `block_in_place`, so the server keeps
    /// answering on the runtime's other worker.
    async fn dig(&mut self, family: Family, name: &str, kind: &str, options: &[&str]) -> Reply {
        self.queries += 1;
        let server = format!("@{}", self.address("dns", family));
        let mut command = Command::new("dig");
        command.args([
            server.as_str(),
            "+norecurse",
            "+tries=1",
            "+time=3",
            "+nocookie",
            name,
            kind,
        ]);
        command.args(options);
        let begun = Instant::now();
        let output = tokio::task::block_in_place(|| netns::output(self.sut(), command).unwrap());
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        Reply::parse(&text, begun.elapsed())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        drop(self.dns.take());
    }
}

/// Why these tests cannot run here (not root, dig missing), if they cannot.
fn cannot_run() -> Option<String> {
    common::needs_root("creates network namespaces").or_else(|| {
        Command::new("dig").arg("-v").output().err().map(|_| {
            "dig is missing (apt-get install dnsutils, or bash .ci/install-deps.sh)".to_string()
        })
    })
}

async fn every_record_type_answers_from_the_sut_namespace_over_both_families() {
    let mut world = World::new().await;
    let mx1_v4 = world.address("mx1", Family::Ipv4);
    let mx1_v6 = world.address("mx1", Family::Ipv6);
    let mx2_v4 = world.address("mx2", Family::Ipv4);
    let mx2_v6 = world.address("mx2", Family::Ipv6);
    for family in [Family::Ipv4, Family::Ipv6] {
        let mx = world.dig(family, "example.test", "MX", &[]).await;
        assert_eq!(mx.status(), "NOERROR", "{family}: {mx:?}");
        assert!(mx.flags.contains(&"aa".to_string()), "{mx:?}");
        let mut answers = mx.answers.clone();
        answers.sort();
        assert_eq!(
            answers,
            ["MX 10 mx1.example.test.", "MX 20 mail-mx2.example.test."]
        );
        let a = world.dig(family, "mx1.example.test", "A", &[]).await;
        assert_eq!(a.answers, [format!("A {mx1_v4}")], "{family}");
        let aaaa = world.dig(family, "mx1.example.test", "AAAA", &[]).await;
        assert_eq!(aaaa.answers, [format!("AAAA {mx1_v6}")], "{family}");
    }
    let cname = world
        .dig(Family::Ipv6, "mail-mx2.example.test", "AAAA", &[])
        .await;
    assert_eq!(cname.answers[0], "CNAME mx2.example.test.", "{cname:?}");
    let mut targets = cname.answers[1..].to_vec();
    targets.sort();
    let mut expected = vec![format!("AAAA {mx2_v6}"), "AAAA fe80::25".to_string()];
    expected.sort();
    assert_eq!(targets, expected);
    let txt = world.dig(Family::Ipv4, "sender.test", "TXT", &[]).await;
    let sut_v4 = world.address("sut", Family::Ipv4);
    let sut_v6 = world.address("sut", Family::Ipv6);
    assert_eq!(
        txt.answers,
        [format!("TXT \"v=spf1 ip4:{sut_v4} ip6:{sut_v6} -all\"")]
    );
    let ptr = world
        .dig(Family::Ipv6, &reverse_name(mx1_v4), "PTR", &[])
        .await;
    assert_eq!(ptr.answers, ["PTR mx1.example.test."]);
    let ptr = world
        .dig(Family::Ipv4, &reverse_name(sut_v6), "PTR", &[])
        .await;
    assert_eq!(ptr.answers, ["PTR sut.sender.test."]);
    let ptr = world
        .dig(Family::Ipv4, &reverse_name(mx2_v4), "PTR", &[])
        .await;
    assert_eq!(ptr.answers, ["PTR mx2.example.test."]);
    let over_tcp = world
        .dig(Family::Ipv6, "mx1.example.test", "A", &["+tcp"])
        .await;
    assert_eq!(over_tcp.answers, [format!("A {mx1_v4}")]);
    let unknown = world
        .dig(Family::Ipv4, "nobody.example.test", "A", &[])
        .await;
    assert_eq!(unknown.status(), "NXDOMAIN");
    let outside = world.dig(Family::Ipv4, "example.com", "A", &[]).await;
    assert_eq!(outside.status(), "REFUSED");

    assert_query_log(&world, &[sut_v4, sut_v6]);
}

async fn each_fault_gives_exactly_the_promised_answer_from_the_sut_namespace() {
    let mut world = World::new().await;
    for (name, status) in [
        ("servfail", "SERVFAIL"),
        ("refused", "REFUSED"),
        ("nxdomain", "NXDOMAIN"),
        ("nodata", "NOERROR"),
    ] {
        let fqdn = format!("{name}.faults.test");
        let faulty = world.dig(Family::Ipv6, &fqdn, "AAAA", &[]).await;
        assert_eq!(faulty.status(), status, "{name}: {faulty:?}");
        assert!(faulty.answers.is_empty(), "{name}: {faulty:?}");
        // Only the faulty type: A still answers.
        let a = world.dig(Family::Ipv6, &fqdn, "A", &[]).await;
        assert_eq!(
            a.answers,
            [format!("A {}", world.address(name, Family::Ipv4))],
            "{name}"
        );
    }

    let silent = world
        .dig(Family::Ipv4, "timeout.faults.test", "AAAA", &[])
        .await;
    assert_eq!(silent.status, None, "{silent:?}");
    assert!(silent.elapsed >= Duration::from_secs(3), "{silent:?}");

    let late = world
        .dig(Family::Ipv4, "delay.faults.test", "AAAA", &[])
        .await;
    assert_eq!(
        late.answers,
        [format!("AAAA {}", world.address("delay", Family::Ipv6))]
    );
    assert!(late.elapsed >= Duration::from_millis(1500), "{late:?}");
    let prompt = world.dig(Family::Ipv4, "delay.faults.test", "A", &[]).await;
    assert!(prompt.elapsed < Duration::from_millis(1000), "{prompt:?}");

    let truncated = world
        .dig(Family::Ipv6, "truncate.faults.test", "AAAA", &["+ignore"])
        .await;
    assert!(truncated.flags.contains(&"tc".to_string()), "{truncated:?}");
    assert!(truncated.answers.is_empty(), "{truncated:?}");
    let full = world
        .dig(Family::Ipv6, "truncate.faults.test", "AAAA", &["+tcp"])
        .await;
    assert!(!full.flags.contains(&"tc".to_string()), "{full:?}");
    assert_eq!(
        full.answers,
        [format!("AAAA {}", world.address("truncate", Family::Ipv6))]
    );

    // ptr = "missing" on mx1's IPv6 address: NXDOMAIN; its IPv4 PTR is untouched.
    let mx1_v6 = world.address("mx1", Family::Ipv6);
    let missing = world
        .dig(Family::Ipv4, &reverse_name(mx1_v6), "PTR", &[])
        .await;
    assert_eq!(missing.status(), "NXDOMAIN", "{missing:?}");
    // ptr = "mismatch" on mx2's IPv6 address: a name whose AAAA is another address.
    let mx2_v6 = world.address("mx2", Family::Ipv6);
    let mismatch = world
        .dig(Family::Ipv4, &reverse_name(mx2_v6), "PTR", &[])
        .await;
    assert_eq!(mismatch.answers, ["PTR mx2-unverified.example.test."]);
    let forward = world
        .dig(Family::Ipv4, "mx2-unverified.example.test", "AAAA", &[])
        .await;
    assert_eq!(forward.answers.len(), 1, "{forward:?}");
    assert_ne!(forward.answers[0], format!("AAAA {mx2_v6}"));

    let sut_v4 = world.address("sut", Family::Ipv4);
    let sut_v6 = world.address("sut", Family::Ipv6);
    assert_query_log(&world, &[sut_v4, sut_v6]);
    let answers: Vec<String> = world
        .log
        .snapshot()
        .into_iter()
        .filter_map(|event| match event.kind {
            EventKind::DnsQuery {
                name,
                record_type,
                answer,
                ..
            } if record_type == "AAAA" && name.ends_with("faults.test") => Some(answer),
            _ => None,
        })
        .collect();
    for fault in [
        "fault servfail",
        "fault refused",
        "fault nxdomain",
        "fault nodata",
        "fault timeout",
        "fault delay",
        "fault truncate",
    ] {
        assert!(
            answers.iter().any(|answer| answer.contains(fault)),
            "no query log entry names {fault:?}: {answers:#?}"
        );
    }
}

/// Every dig query is one query-log event, asked from one of the SUT's addresses.
fn assert_query_log(world: &World, sut: &[IpAddr]) {
    let events = world.log.snapshot();
    let queries: Vec<(IpAddr, String)> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::DnsQuery {
                client, transport, ..
            } => Some((*client, transport.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(queries.len(), world.queries, "{queries:?}");
    for (client, _) in &queries {
        assert!(sut.contains(client), "query from {client}, not the SUT");
    }
    assert!(queries.iter().any(|(_, transport)| transport == "tcp"));
    assert!(queries.iter().any(|(_, transport)| transport == "udp"));
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = cannot_run();
    let trials = vec![
        common::trial(
            "every_record_type_answers_from_the_sut_namespace_over_both_families",
            reason.clone(),
            || {
                common::runtime().block_on(
                    every_record_type_answers_from_the_sut_namespace_over_both_families(),
                );
                Ok(())
            },
        ),
        common::trial(
            "each_fault_gives_exactly_the_promised_answer_from_the_sut_namespace",
            reason.clone(),
            || {
                common::runtime().block_on(
                    each_fault_gives_exactly_the_promised_answer_from_the_sut_namespace(),
                );
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
