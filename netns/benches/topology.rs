//! Benchmark: the standard mxlab topology (router, sut, dns, bounce collector, two MX hosts)
//! brought up and down over netlink by `netns::Topology`, side by side with the same topology
//! built by `ip` commands. Run as root: `cargo bench -p mxlab-netns --bench topology [ITERATIONS]`.
//!
//! Both sides are warmed up (one uncounted round each), then measured interleaved: each
//! iteration runs both, alternating which goes first, so load from other work on the machine
//! falls on both alike. "Down" is what each side waits for: netlink closes the namespaces' file
//! descriptors, `ip netns del` unmounts and removes the names; on both the kernel tears the
//! namespaces down later, asynchronously. So that this deferred work does not land in the other
//! side's measurement, every measured run is followed by an untimed pause ([`SETTLE`]).
//! Reported per side: median and 95th percentile over the iterations.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{HostSpec, LinkAddresses, Topology, TopologySpec};

const HOSTS: [&str; 5] = ["sut", "dns", "bounces", "mx1", "mx2"];

/// Untimed pause after each measured run, for the kernel's deferred namespace teardown.
const SETTLE: Duration = Duration::from_millis(300);

/// Host `index` gets 192.0.2.(8·index)/29 and 2001:db8:0:index::/64, as mxlab's plan does.
fn host(name: &str, index: u8) -> HostSpec {
    HostSpec {
        name: name.to_string(),
        ipv4: Some(LinkAddresses {
            host: Ipv4Addr::new(192, 0, 2, index * 8 + 2),
            router: Ipv4Addr::new(192, 0, 2, index * 8 + 1),
            prefix_len: 29,
        }),
        ipv6: Some(LinkAddresses {
            host: Ipv6Addr::new(0x2001, 0xdb8, 0, index.into(), 0, 0, 0, 2),
            router: Ipv6Addr::new(0x2001, 0xdb8, 0, index.into(), 0, 0, 0, 1),
            prefix_len: 64,
        }),
    }
}

fn spec() -> TopologySpec {
    TopologySpec {
        prefix: format!("mxlab-bench{}", std::process::id()),
        hosts: HOSTS
            .iter()
            .zip(0..)
            .map(|(name, i)| host(name, i))
            .collect(),
    }
}

/// Up and down over netlink; returns (up, down).
async fn netlink_once(spec: &TopologySpec) -> (Duration, Duration) {
    let started = Instant::now();
    let topology = Topology::build(spec).await.expect("Topology::build");
    let up = started.elapsed();
    let started = Instant::now();
    drop(topology);
    (up, started.elapsed())
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip runs");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

fn sysctl(namespace: &str, settings: &[&str]) {
    let status = Command::new("ip")
        .args(["netns", "exec", namespace, "sysctl", "-q", "-w"])
        .args(settings)
        .status()
        .expect("ip netns exec sysctl runs");
    assert!(status.success(), "sysctl in {namespace} failed");
}

/// The same topology with `ip` commands (named namespaces); returns (up, down).
fn ip_once(prefix: &str) -> (Duration, Duration) {
    let router = format!("{prefix}-router");
    let started = Instant::now();
    ip(&["netns", "add", &router]);
    ip(&["-n", &router, "link", "set", "lo", "up"]);
    sysctl(
        &router,
        &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
    );
    for (name, index) in HOSTS.iter().zip(0u8..) {
        let spec = host(name, index);
        let (v4, v6) = (spec.ipv4.unwrap(), spec.ipv6.unwrap());
        let namespace = format!("{prefix}-{name}");
        let router_side = format!("mxlab-{name}");
        ip(&["netns", "add", &namespace]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        sysctl(
            &namespace,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        );
        ip(&[
            "-n",
            &router,
            "link",
            "add",
            &router_side,
            "type",
            "veth",
            "peer",
            "name",
            "mxlab0",
            "netns",
            &namespace,
        ]);
        ip(&["-n", &router, "link", "set", &router_side, "up"]);
        ip(&["-n", &namespace, "link", "set", "mxlab0", "up"]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{}/29", v4.router),
            "dev",
            &router_side,
        ]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{}/64", v6.router),
            "dev",
            &router_side,
            "nodad",
        ]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{}/29", v4.host),
            "dev",
            "mxlab0",
        ]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{}/64", v6.host),
            "dev",
            "mxlab0",
            "nodad",
        ]);
        ip(&[
            "-n",
            &namespace,
            "route",
            "add",
            "default",
            "via",
            &v4.router.to_string(),
        ]);
        ip(&[
            "-n",
            &namespace,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &v6.router.to_string(),
        ]);
    }
    let up = started.elapsed();
    let started = Instant::now();
    for name in HOSTS {
        ip(&["netns", "del", &format!("{prefix}-{name}")]);
    }
    ip(&["netns", "del", &router]);
    (up, started.elapsed())
}

/// Median and 95th percentile in milliseconds.
fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.95))
}

fn report(label: &str, runs: Vec<(Duration, Duration)>) {
    let up: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    let down: Vec<Duration> = runs.iter().map(|r| r.1).collect();
    let total: Vec<Duration> = runs.iter().map(|r| r.0 + r.1).collect();
    let (up50, up95) = stats(up);
    let (down50, down95) = stats(down);
    let (total50, total95) = stats(total);
    println!(
        "{label:<8} up median {up50:7.2} ms p95 {up95:7.2} ms | down median {down50:7.2} ms p95 {down95:7.2} ms | up+down median {total50:7.2} ms p95 {total95:7.2} ms"
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the topology benchmark: it creates network namespaces and needs root");
        return;
    }
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let spec = spec();
    let prefix = format!("mxlab-benchip{}", std::process::id());
    let netlink_run = || {
        let run = runtime.block_on(netlink_once(&spec));
        std::thread::sleep(SETTLE);
        run
    };
    let ip_run = || {
        let run = ip_once(&prefix);
        std::thread::sleep(SETTLE);
        run
    };
    // Warm-up, not counted.
    netlink_run();
    ip_run();
    let (mut netlink, mut commands) = (Vec::new(), Vec::new());
    for iteration in 0..iterations {
        if iteration % 2 == 0 {
            netlink.push(netlink_run());
            commands.push(ip_run());
        } else {
            commands.push(ip_run());
            netlink.push(netlink_run());
        }
    }
    println!(
        "topology: router + {} hosts ({}), {iterations} interleaved iterations each after a \
         warm-up; down = until the handles are released (the kernel finishes later)",
        HOSTS.len(),
        HOSTS.join(", ")
    );
    report("netlink", netlink);
    report("ip", commands);
}
