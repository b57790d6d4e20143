//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use libtest_mimic::{Arguments, Trial};

use netns::{HostSpec, LinkAddresses, Namespace, TopologySpec};

/// Why the tests that create namespaces cannot run here (not root), if they cannot.
pub fn needs_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| {
        "needs root (creates network namespaces); run `cargo test -p mxlab-netns` as root".into()
    })
}

/// A test named `name` running `test`; when `cannot_run` gives a reason, the test is listed
/// as ignored and the reason printed once (under `MXLAB_REQUIRE_ALL=1`, set by `.ci/run`, it
/// fails with the reason instead, so CI cannot pass a test it never ran).
pub fn trial(
    name: &str,
    cannot_run: Option<String>,
    test: impl FnOnce() + Send + 'static,
) -> Trial {
    let run = move || {
        test();
        Ok(())
    };
    match cannot_run {
        None => Trial::test(name, run),
        Some(reason) if std::env::var("MXLAB_REQUIRE_ALL").is_ok_and(|value| value == "1") => {
            Trial::test(name, move || {
                Err(format!("cannot run here, and MXLAB_REQUIRE_ALL=1: {reason}").into())
            })
        }
        Some(reason) => {
            static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
            if SAID.lock().expect("not poisoned").insert(reason.clone()) {
                eprintln!("ignoring tests that cannot run here: {reason}");
            }
            Trial::test(name, run).with_ignored_flag(true)
        }
    }
}

/// Runs the trials with the command line's filters and options, and exits.
pub fn run(trials: Vec<Trial>) -> ! {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// Runs `future` to completion on a multi-threaded runtime with two workers.
pub fn on_threads<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Runs `future` to completion on a current-thread runtime.
pub fn on_current_thread<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// A unique "mxlab-…" label prefix for one test.
pub fn prefix(tag: &str) -> String {
    format!("mxlab-t{}-{tag}", std::process::id())
}

/// Host `n` with documentation addresses: IPv4 from 192.0.2.0/24, 198.51.100.0/24,
/// 203.0.113.0/24 (a /30 per host), IPv6 2001:db8:<n+1>::/64.
pub fn host(name: &str, n: u8) -> HostSpec {
    let v4_net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][usize::from(n % 3)];
    let base = 4 * (n / 3);
    HostSpec {
        name: name.to_owned(),
        ipv4: Some(LinkAddresses {
            host: Ipv4Addr::new(v4_net[0], v4_net[1], v4_net[2], base + 2),
            router: Ipv4Addr::new(v4_net[0], v4_net[1], v4_net[2], base + 1),
            prefix_len: 30,
        }),
        ipv6: Some(LinkAddresses {
            host: Ipv6Addr::new(0x2001, 0xdb8, u16::from(n) + 1, 0, 0, 0, 0, 2),
            router: Ipv6Addr::new(0x2001, 0xdb8, u16::from(n) + 1, 0, 0, 0, 0, 1),
            prefix_len: 64,
        }),
    }
}

/// sut, dns, mx1 (+ more hosts named h3, h4, … up to `count`).
pub fn spec(tag: &str, count: u8) -> TopologySpec {
    let names = ["sut", "dns", "mx1"];
    TopologySpec {
        prefix: prefix(tag),
        hosts: (0..count)
            .map(|n| match names.get(usize::from(n)) {
                Some(name) => host(name, n),
                None => host(&format!("h{n}"), n),
            })
            .collect(),
    }
}

/// The inode of a namespace (to compare with /proc/PID/ns/net).
pub fn ns_inode(ns: &Namespace) -> u64 {
    let stat = nix::sys::stat::fstat(ns.fd()).expect("fstat namespace fd");
    stat.st_ino
}

/// The inode of a process's network namespace.
pub fn pid_ns_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("stat /proc/PID/ns/net")
        .ino()
}

/// Output of an `ip` command in the caller's (root) namespace.
pub fn ip(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// All descendants of `pid` (children, grandchildren, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(c);
                queue.push(c);
            }
        }
    }
    found
}

/// Whether a pid exists (as anything but a reaped process).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
