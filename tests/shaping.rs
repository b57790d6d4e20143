//! Path shaping from scenario to packets: `net = { delay, jitter, reorder, duplicate, rate }`
//! faults planned from scenario text and installed with `faults::install`, measured with real
//! sockets from the SUT's namespace (like tests/faults.rs). Needs root; otherwise reported as
//! ignored with the reason (failed under `MXLAB_REQUIRE_ALL=1`).

mod common;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use mxlab::clock::ClockRate;
use mxlab::family::Family;
use mxlab::faults;
use mxlab::plan::Plan;
use mxlab::scenario::parse;
use netns::{Namespace, Topology};

/// Scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(40);

fn scenario(net: &str, family: &str) -> String {
    format!(
        r#"
description = "shaping mechanics"

[[mx]]
name = "mx1"
domain = "example.test"

[[fault]]
on = "mx1"
family = "{family}"
net = {net}

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#
    )
}

struct Lab {
    plan: Plan,
    topology: Topology,
}

impl Lab {
    async fn new(tag: &str, net: &str, family: &str, clock: ClockRate) -> Lab {
        let scenario = parse(
            Path::new("scenarios/shaping/t.toml"),
            &scenario(net, family),
        )
        .unwrap();
        let plan = Plan::with_clock(&scenario, clock);
        let topology =
            Topology::build(&plan.topology(&format!("mxlab-s{}-{tag}", std::process::id())))
                .await
                .unwrap();
        Lab { plan, topology }
    }

    fn ns(&self, host: &str) -> &Namespace {
        self.topology.host(host).unwrap()
    }

    fn address(&self, host: &str, family: Family) -> IpAddr {
        self.plan.host(host).unwrap().address(family).unwrap()
    }

    async fn install(&self) -> faults::InstalledFault {
        assert_eq!(self.plan.net_faults.len(), 1);
        faults::install(&self.topology, &self.plan.net_faults[0], 0)
            .await
            .unwrap()
    }

    /// A listener on an ephemeral port of mx1's address of `family`.
    fn listen(&self, family: Family) -> TcpListener {
        let address = self.address("mx1", family);
        self.ns("mx1")
            .run(|| TcpListener::bind(SocketAddr::new(address, 0)))
            .unwrap()
            .unwrap()
    }

    /// `count` connect() times from the SUT to mx1 over `family`.
    fn connect_times(&self, family: Family, count: usize) -> Vec<Duration> {
        let listener = self.listen(family);
        let target = listener.local_addr().unwrap();
        let accepting = std::thread::spawn(move || {
            let kept: Vec<TcpStream> = listener
                .incoming()
                .take(count)
                .map(|s| s.unwrap())
                .collect();
            drop(kept);
        });
        let times = self
            .ns("sut")
            .run(|| {
                (0..count)
                    .map(|_| {
                        let started = Instant::now();
                        let stream =
                            TcpStream::connect_timeout(&target, Duration::from_secs(10)).unwrap();
                        let elapsed = started.elapsed();
                        drop(stream);
                        elapsed
                    })
                    .collect()
            })
            .unwrap();
        accepting.join().unwrap();
        times
    }

    /// The time from the SUT's DATA command to the 250 after the final dot, for a message of
    /// `bytes` bytes, against a minimal SMTP DATA responder on mx1.
    fn data_phase(&self, family: Family, bytes: usize) -> Duration {
        let listener = self.listen(family);
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "DATA\r\n");
            writer.write_all(b"354 go ahead\r\n").unwrap();
            let mut received = 0;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 || line == ".\r\n" {
                    break;
                }
                received += line.len();
            }
            writer.write_all(b"250 2.0.0 ok\r\n").unwrap();
            received
        });
        let mut body = String::new();
        while body.len() < bytes {
            body.push_str(&"x".repeat(78));
            body.push_str("\r\n");
        }
        body.truncate(bytes - 2);
        body.push_str("\r\n");
        let elapsed = self
            .ns("sut")
            .run(|| {
                let stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut writer = stream;
                let started = Instant::now();
                writer.write_all(b"DATA\r\n")?;
                let mut reply = String::new();
                reader.read_line(&mut reply)?;
                assert!(reply.starts_with("354"), "{reply}");
                writer.write_all(body.as_bytes())?;
                writer.write_all(b".\r\n")?;
                reply.clear();
                reader.read_line(&mut reply)?;
                assert!(reply.starts_with("250"), "{reply}");
                io::Result::Ok(started.elapsed())
            })
            .unwrap()
            .unwrap();
        assert_eq!(server.join().unwrap(), bytes);
        elapsed
    }

    /// Sends `count` numbered datagrams from the SUT to mx1 (1 ms apart); the numbers in
    /// arrival order.
    fn datagrams(&self, family: Family, count: u32) -> Vec<u32> {
        let address = self.address("mx1", family);
        let receiver = self
            .ns("mx1")
            .run(|| UdpSocket::bind(SocketAddr::new(address, 0)))
            .unwrap()
            .unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let target = receiver.local_addr().unwrap();
        let sender = self
            .ns("sut")
            .run(|| {
                UdpSocket::bind(if family == Family::Ipv4 {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })
            })
            .unwrap()
            .unwrap();
        for i in 0..count {
            sender.send_to(&i.to_be_bytes(), target).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut arrived = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok(n) = receiver.recv(&mut buf) {
            assert_eq!(n, 4);
            arrived.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
        }
        arrived
    }
}

/// The assertion this file makes about delay: every sample within `delay ± jitter` (plus
/// scheduling slack), and the samples spread over at least half the jitter range.
fn delay_shows(samples: &[Duration], delay: Duration, jitter: Duration) -> Result<(), String> {
    let min = *samples.iter().min().ok_or("no samples")?;
    let max = *samples.iter().max().ok_or("no samples")?;
    if min < delay - jitter || max > delay + jitter + SLACK {
        return Err(format!(
            "samples {min:?}..{max:?} outside {delay:?} ± {jitter:?}"
        ));
    }
    if max - min < jitter {
        return Err(format!(
            "samples {min:?}..{max:?} do not spread over ± {jitter:?}"
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len() as u32
}

async fn delay_and_jitter_show_in_connect_rtt_samples_from_the_sut() {
    let lab = Lab::new(
        "dj",
        r#"{ delay = "200ms", jitter = "50ms", direction = "to", seed = 7 }"#,
        "ipv6",
        ClockRate::REAL,
    )
    .await;
    let installed = lab.install().await;
    assert_eq!(
        installed.description(),
        "shape delay 200ms ± 50ms to seed 7 on mx1 ipv6"
    );
    let v6 = lab.connect_times(Family::Ipv6, 30);
    let v4 = lab.connect_times(Family::Ipv4, 10);
    eprintln!(
        "IPv6 200 ms ± 50 ms (to): connect RTT min {:.1} mean {:.1} max {:.1} ms (30); IPv4 max {:.2} ms",
        ms(*v6.iter().min().unwrap()),
        ms(mean(&v6)),
        ms(*v6.iter().max().unwrap()),
        ms(*v4.iter().max().unwrap())
    );
    let (delay, jitter) = (Duration::from_millis(200), Duration::from_millis(50));
    delay_shows(&v6, delay, jitter).unwrap();
    let m = mean(&v6);
    assert!(
        m > Duration::from_millis(175) && m < Duration::from_millis(235),
        "{m:?}"
    );
    // The same assertion must fail on the unshaped family.
    let err = delay_shows(&v4, delay, jitter).unwrap_err();
    eprintln!("unshaped IPv4: {err}");
    installed.heal().await.unwrap();
    // And on the healed path.
    let healed = lab.connect_times(Family::Ipv6, 10);
    assert!(delay_shows(&healed, delay, jitter).is_err(), "{healed:?}");
    assert!(
        healed.iter().all(|t| *t < Duration::from_millis(30)),
        "{healed:?}"
    );
}

async fn an_accelerated_clock_scales_the_delay_to_wall_time() {
    // 20 s of world delay at x100 is 200 ms of wall time, both ways: 400 ms round trips.
    let lab = Lab::new(
        "clk",
        r#"{ delay = "20s", jitter = "5s" }"#,
        "ipv4",
        ClockRate::new(100).unwrap(),
    )
    .await;
    let installed = lab.install().await;
    assert_eq!(
        installed.description(),
        "shape delay 20s ± 5s both seed 0 on mx1 ipv4"
    );
    let v4 = lab.connect_times(Family::Ipv4, 10);
    eprintln!(
        "x100, 20 s ± 5 s both ways on IPv4: connect RTT min {:.1} mean {:.1} max {:.1} ms",
        ms(*v4.iter().min().unwrap()),
        ms(mean(&v4)),
        ms(*v4.iter().max().unwrap())
    );
    for t in &v4 {
        assert!(
            *t >= Duration::from_millis(300) && *t <= Duration::from_millis(500) + SLACK,
            "{t:?}"
        );
    }
    installed.heal().await.unwrap();
}

async fn a_rate_limit_shows_in_the_time_a_data_phase_takes() {
    let lab = Lab::new(
        "rate",
        r#"{ rate = "10kB/s", direction = "to" }"#,
        "ipv6",
        ClockRate::REAL,
    )
    .await;
    let unshaped = lab.data_phase(Family::Ipv6, 20_000);
    let installed = lab.install().await;
    let shaped = lab.data_phase(Family::Ipv6, 20_000);
    let other = lab.data_phase(Family::Ipv4, 20_000);
    eprintln!(
        "10 kB/s on IPv6: a 20000-byte DATA phase took {:.0} ms (unshaped {:.1} ms, IPv4 meanwhile {:.1} ms); {:?}",
        ms(shaped),
        ms(unshaped),
        ms(other),
        installed.shaper_stats()
    );
    installed.heal().await.unwrap();
    assert!(unshaped < Duration::from_millis(200), "{unshaped:?}");
    assert!(other < Duration::from_millis(200), "{other:?}");
    assert!(
        shaped > Duration::from_millis(1900) && shaped < Duration::from_millis(3200),
        "{shaped:?}"
    );
}

async fn duplicates_and_reordering_are_counted_at_the_receiver() {
    let lab = Lab::new(
        "dup",
        r#"{ delay = "100ms", reorder = "10%", duplicate = "20%", direction = "to", seed = 7 }"#,
        "ipv4",
        ClockRate::REAL,
    )
    .await;
    const SENT: u32 = 200;
    let installed = lab.install().await;
    let arrived = lab.datagrams(Family::Ipv4, SENT);
    let stats = installed.shaper_stats().unwrap();
    installed.heal().await.unwrap();
    let plain = lab.datagrams(Family::Ipv4, SENT);
    let mut distinct = arrived.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let duplicates = arrived.len() - distinct.len();
    // Datagrams that arrived before one sent earlier.
    let overtakers = |arrived: &[u32]| {
        let mut lowest_later = u32::MAX;
        arrived
            .iter()
            .rev()
            .filter(|&&seq| {
                let overtook = seq > lowest_later;
                lowest_later = lowest_later.min(seq);
                overtook
            })
            .count()
    };
    let overtook = overtakers(&arrived);
    eprintln!(
        "IPv4 reorder 10% duplicate 20% seed 7: {SENT} sent, {} arrived, {duplicates} duplicates, {overtook} overtakers; unshaped {} arrived, {} overtakers; {stats:?}",
        arrived.len(),
        plain.len(),
        overtakers(&plain)
    );
    assert_eq!(distinct.len(), SENT as usize);
    assert!((20..=60).contains(&duplicates), "{duplicates}");
    assert!((8..=45).contains(&overtook), "{overtook}");
    assert_eq!(plain.len(), SENT as usize, "unshaped: no duplicates");
    assert_eq!(overtakers(&plain), 0, "unshaped: no reordering");
}

fn main() {
    common::enter();
    let args = libtest_mimic::Arguments::from_args();
    let reason = common::needs_root("creates network namespaces and TUN devices");
    let run = |f: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        move || {
            common::runtime().block_on(f());
            Ok(())
        }
    };
    let trials = vec![
        common::trial(
            "delay_and_jitter_show_in_connect_rtt_samples_from_the_sut",
            reason.clone(),
            run(|| Box::pin(delay_and_jitter_show_in_connect_rtt_samples_from_the_sut())),
        ),
        common::trial(
            "an_accelerated_clock_scales_the_delay_to_wall_time",
            reason.clone(),
            run(|| Box::pin(an_accelerated_clock_scales_the_delay_to_wall_time())),
        ),
        common::trial(
            "a_rate_limit_shows_in_the_time_a_data_phase_takes",
            reason.clone(),
            run(|| Box::pin(a_rate_limit_shows_in_the_time_a_data_phase_takes())),
        ),
        common::trial(
            "duplicates_and_reordering_are_counted_at_the_receiver",
            reason,
            run(|| Box::pin(duplicates_and_reordering_are_counted_at_the_receiver())),
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
