//! A userspace path shaper: delay with jitter, reordering, duplication and a rate limit on the
//! path between two hosts of a [`Topology`], for one address family, in one or both
//! directions.
//!
//! This kernel has `tbf` but no `netem`, `fq` or NFQUEUE, so the shaping happens in userspace:
//! a TUN device in the router namespace, policy routing rules (by input interface, source and
//! destination) that send the shaped packets into it, and a tokio task that reads each packet
//! and writes it back into the device when its time has come ([`Shape`] says how that time is
//! chosen). Written back, a packet arrives on the TUN device, misses the rules (they match the
//! hosts' links only) and is forwarded by the main table as before. The rate limit is pacing in
//! the same task rather than `tbf`, so that one queue orders the delay and the rate.

mod plan;
mod tun;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use plan::Shape;
use plan::{Release, Scheduler};
pub use tun::check_tun_access;
use tun::Tun;

use crate::{Error, Result, Route, Routes, Rule, Topology};

/// Routing table (and rule priority) base: shaper `index` uses 2000 + index.
const TABLE_BASE: u32 = 2000;
/// Packets waiting in the shaper at most (netem's default limit); more are dropped.
const QUEUE_LIMIT: usize = 1000;
/// Largest packet a TUN device hands over (its MTU is far smaller).
const MAX_PACKET: usize = 65_535;

/// Which packets of a path are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server.
    To,
    /// From the server to the client.
    From,
    /// Both ways (each way shaped on its own: a round trip meets the delay twice).
    Both,
}

/// The path a shaper sits on: between two hosts of the topology, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedPath {
    /// The host whose traffic to `server` is shaped ("to" direction), e.g. "sut".
    pub client: String,
    /// The client's address (of the shaped family).
    pub client_address: IpAddr,
    /// The other host, e.g. "mx1".
    pub server: String,
    /// The server's address (same family as the client's).
    pub server_address: IpAddr,
    /// Which way packets are shaped.
    pub direction: Direction,
}

/// What a shaper has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Packets read from the path.
    pub received: u64,
    /// Packets written back (copies included).
    pub sent: u64,
    /// Packets sent twice.
    pub duplicated: u64,
    /// Copies that skipped the delay.
    pub reordered: u64,
    /// Packets dropped because the queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    dropped: AtomicU64,
}

/// A shaper in force on one path. [`remove`](Shaper::remove) deletes its rules and routes;
/// dropping it stops the task and deletes the TUN device (with its routes) all the same, and
/// the rules that remain point at an empty table, so traffic takes the unshaped path.
#[derive(Debug)]
pub struct Shaper {
    interface: String,
    routes: Routes,
    added_routes: Vec<Route>,
    added_rules: Vec<Rule>,
    counters: Arc<Counters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Shaper {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Shaper {
    /// Shapes `path` in `topology`'s router as `shape` says. `index` is unique among the
    /// topology's shapers: it names the TUN device (`mxlab-sh<index>`), the routing table and
    /// the rules' priority (2000 + index). Must be called inside a tokio runtime; the shaping
    /// task runs on it. On failure, whatever was already added is removed again.
    pub async fn install(
        topology: &Topology,
        path: &ShapedPath,
        shape: Shape,
        index: u32,
    ) -> Result<Shaper> {
        shape
            .check()
            .map_err(|problem| Error::InvalidSpec(format!("shape: {problem}")))?;
        if path.client_address.is_ipv4() != path.server_address.is_ipv4() {
            return Err(Error::InvalidSpec(format!(
                "shaped path {} - {}: both addresses must be of one family",
                path.client_address, path.server_address
            )));
        }
        let link = |host: &str| {
            topology.router_interface(host).ok_or_else(|| {
                Error::InvalidSpec(format!("shaped path: the topology has no host {host:?}"))
            })
        };
        let (client_link, server_link) = (link(&path.client)?, link(&path.server)?);
        let router = topology.router();
        let interface = format!("mxlab-sh{index}");
        let tun = Tun::create(router, &interface)?;
        // No IPv6 link-local address (nothing of the router's own goes into the device), and no
        // reverse-path check: packets come back from it with the hosts' source addresses.
        router.set_sysctl(&format!("net/ipv6/conf/{interface}/addr_gen_mode"), "1")?;
        router.set_sysctl(&format!("net/ipv4/conf/{interface}/rp_filter"), "0")?;

        let routes = Routes::open(router)?;
        let tun_index = routes.interface_index(&interface).await?;
        routes.set_up(tun_index).await?;

        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            tun,
            Scheduler::new(shape),
            path.server_address,
            counters.clone(),
        ));
        let mut shaper = Shaper {
            interface,
            routes,
            added_routes: Vec::new(),
            added_rules: Vec::new(),
            counters,
            task: Some(task),
        };
        let table = TABLE_BASE + index;
        let len = if path.client_address.is_ipv4() {
            32
        } else {
            128
        };
        let mut ways = Vec::new();
        if path.direction != Direction::From {
            ways.push((client_link, path.client_address, path.server_address));
        }
        if path.direction != Direction::To {
            ways.push((server_link, path.server_address, path.client_address));
        }
        for (input, from, to) in ways {
            if let Err(e) = shaper.steer(input, from, to, len, tun_index, table).await {
                if let Err(undo) = shaper.remove().await {
                    tracing::warn!(error = %undo, "removing a partly installed shaper failed");
                }
                return Err(e);
            }
        }
        tracing::debug!(interface = %shaper.interface, ?shape, ?path, "shaper installed");
        Ok(shaper)
    }

    /// Sends packets that arrive on `input` from `from` to `to` into the TUN device.
    async fn steer(
        &mut self,
        input: &str,
        from: IpAddr,
        to: IpAddr,
        len: u8,
        tun_index: u32,
        table: u32,
    ) -> Result<()> {
        let route = Route::to(to, len)?.interface(tun_index).table(table);
        self.routes.add_route(&route).await?;
        self.added_routes.push(route);
        let rule = Rule::lookup((from, len), (to, len), table, table)?.input_interface(input);
        self.routes.add_rule(&rule).await?;
        self.added_rules.push(rule);
        Ok(())
    }

    /// The TUN device's name, e.g. `mxlab-sh0`.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// What the shaper has done so far.
    pub fn stats(&self) -> ShaperStats {
        let c = &self.counters;
        ShaperStats {
            received: c.received.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops shaping: deletes the rules and routes, stops the task and deletes the TUN device.
    /// Packets still queued are dropped. Every step is attempted; the first failure is
    /// returned.
    pub async fn remove(mut self) -> Result<()> {
        let mut first_error = None;
        for rule in self.added_rules.drain(..).rev() {
            if let Err(e) = self.routes.delete_rule(&rule).await {
                first_error.get_or_insert(e);
            }
        }
        for route in self.added_routes.drain(..).rev() {
            if let Err(e) = self.routes.delete_route(&route).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(task) = self.task.take() {
            task.abort();
            // Wait until the task (and with it the device's descriptor) is gone.
            let _ = task.await;
        }
        tracing::debug!(interface = %self.interface, stats = ?self.stats(), "shaper removed");
        first_error.map_or(Ok(()), Err)
    }
}

/// The destination address of an IPv4 or IPv6 packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let bytes: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(bytes))
        }
        6 => {
            let bytes: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(bytes))
        }
        _ => None,
    }
}

/// A hash of the packet's flow: addresses, protocol and (for TCP and UDP) ports. An IPv6
/// packet with extension headers counts by its addresses and next header only.
fn flow(packet: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let (addresses, protocol, transport) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            (&packet[12..20], packet[9], packet.get(header..))
        }
        Some(6) if packet.len() >= 40 => (&packet[8..40], packet[6], packet.get(40..)),
        _ => (packet, 0, None),
    };
    addresses.hash(&mut hasher);
    protocol.hash(&mut hasher);
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    if matches!(protocol, TCP | UDP) {
        if let Some(ports) = transport.and_then(|t| t.get(..4)) {
            ports.hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// A packet copy waiting for its release (ordered by release time, then arrival).
type Waiting = Reverse<(Instant, u64, Vec<u8>)>;

/// Reads packets from the device and writes each back at its release time.
async fn run(tun: Tun, mut scheduler: Scheduler, server: IpAddr, counters: Arc<Counters>) {
    let mut queue: BinaryHeap<Waiting> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let next = queue.peek().map(|Reverse((at, _, _))| *at);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            next.unwrap_or_else(Instant::now),
        ));
        tokio::select! {
            read = tun.recv(&mut buf) => {
                let len = match read {
                    Ok(len) => len,
                    Err(e) => {
                        tracing::warn!(error = %e, "shaper: reading the TUN device failed; shaping stopped");
                        return;
                    }
                };
                counters.received.fetch_add(1, Ordering::Relaxed);
                let packet = &buf[..len];
                let lane = usize::from(destination(packet) != Some(server));
                let releases = scheduler.admit(Instant::now(), len, lane, flow(packet));
                for Release { at, reordered, duplicate } in releases {
                    if queue.len() >= QUEUE_LIMIT {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if duplicate {
                        counters.duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    if reordered {
                        counters.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    sequence += 1;
                    queue.push(Reverse((at, sequence, packet.to_vec())));
                }
            }
            () = sleep, if next.is_some() => {
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    let Reverse((_, _, packet)) = queue.pop().expect("peeked");
                    match tun.send(&packet) {
                        Ok(()) => {
                            counters.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "shaper: writing a packet back failed");
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_reads_both_families() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[192, 0, 2, 26]);
        assert_eq!(destination(&v4), Some("192.0.2.26".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        let addr: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        v6[24..40].copy_from_slice(&addr.octets());
        assert_eq!(destination(&v6), Some(IpAddr::V6(addr)));
        assert_eq!(destination(&v6[..30]), None);
        assert_eq!(destination(&[]), None);
    }

    #[test]
    fn flows_differ_by_port_and_not_by_payload() {
        let mut a = [0u8; 60];
        a[0] = 0x45;
        a[9] = 6;
        a[20..24].copy_from_slice(&[0x30, 0x39, 0, 25]);
        let mut b = a;
        b[50] = 1;
        assert_eq!(flow(&a), flow(&b));
        b[21] = 0x3a;
        assert_ne!(flow(&a), flow(&b));
    }
}
