//! A router namespace plus one namespace per host, linked by veth pairs, built over netlink.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage, State};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::RouteType;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::route::{self, Connection};
use crate::{Error, Namespace, Result};

/// Name of the host-side interface in every host namespace.
const HOST_INTERFACE: &str = "mxlab0";
/// The router's link-local address on every link.
const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The host's link-local address on its link.
const HOST_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
/// Prefix of every interface this crate creates.
const INTERFACE_PREFIX: &str = "mxlab";
/// Longest host name: "mxlab-" + 8 characters fits the kernel's 15-character limit.
const MAX_HOST_NAME: usize = 8;

/// Point-to-point link addresses between a host and the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkAddresses<A> {
    /// The host's address on the link (its default route points at `router`).
    pub host: A,
    /// The router's address on the link.
    pub router: A,
    /// Prefix length shared by both addresses (e.g. 30 or 31 for IPv4, 64 or 126 for IPv6).
    pub prefix_len: u8,
}

/// One host of a [`TopologySpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Short host name, e.g. "sut", "mx1" (1–8 characters: ASCII letters, digits, '-', '_').
    pub name: String,
    /// IPv4 addresses of the host's link to the router, if the link carries IPv4.
    pub ipv4: Option<LinkAddresses<Ipv4Addr>>,
    /// IPv6 addresses of the host's link to the router, if the link carries IPv6.
    pub ipv6: Option<LinkAddresses<Ipv6Addr>>,
}

/// What [`Topology::build`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    /// Label prefix for the namespaces, e.g. "mxlab-1a2b3c"; must start with "mxlab".
    pub prefix: String,
    /// The hosts, each linked to the router.
    pub hosts: Vec<HostSpec>,
}

/// A router namespace plus one namespace per host, each host linked to the router by a veth pair.
///
/// Dropping a `Topology` drops every namespace (and with them every interface, address and
/// route; nothing was ever attached to the root namespace).
#[derive(Debug)]
pub struct Topology {
    // Field order = drop order: hosts first, then the router.
    hosts: Vec<BuiltHost>,
    router: Namespace,
}

#[derive(Debug)]
struct BuiltHost {
    name: String,
    namespace: Namespace,
    router_interface: String,
}

impl Topology {
    /// Builds it over netlink: router + host namespaces, veth pairs created inside namespaces,
    /// links up BEFORE IPv6 addresses, IPv6 addresses NODAD and accept_dad=0 (all/default) in
    /// every namespace, default routes (both families) in each host via the router's address,
    /// forwarding on in the router for both families. Returns once every link is operational
    /// and every IPv6 address is local (the kernel delivers packets to it, see
    /// `Netlink::wait_local`). Interface names carry the "mxlab" prefix (≤ 15 chars): host
    /// side "mxlab0", router side "mxlab-<host>".
    ///
    /// Must be called inside a tokio runtime. Namespace labels are "<prefix>-router" and
    /// "<prefix>-<host>". On error everything created so far is dropped again.
    pub async fn build(spec: &TopologySpec) -> Result<Topology> {
        validate(spec)?;
        let started = std::time::Instant::now();

        // Creating a namespace costs the kernel a few milliseconds: create them all at once.
        let labels: Vec<String> = std::iter::once(format!("{}-router", spec.prefix))
            .chain(
                spec.hosts
                    .iter()
                    .map(|h| format!("{}-{}", spec.prefix, h.name)),
            )
            .collect();
        let mut created = std::thread::scope(|scope| {
            let handles: Vec<_> = labels
                .iter()
                .map(|label| scope.spawn(move || Namespace::create(label)))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("namespace creation does not panic"))
                .collect::<Result<Vec<Namespace>>>()
        })?
        .into_iter();
        let router = created.next().expect("one namespace per label");
        let hosts: Vec<BuiltHost> = spec
            .hosts
            .iter()
            .zip(created)
            .map(|(host, namespace)| BuiltHost {
                name: host.name.clone(),
                namespace,
                router_interface: format!("{INTERFACE_PREFIX}-{}", host.name),
            })
            .collect();

        // accept_dad=0 before any interface exists, so new interfaces inherit it from default.
        const NO_DAD: [(&str, &str); 2] = [
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ];
        set_sysctls(
            &router,
            &[
                NO_DAD[0],
                NO_DAD[1],
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
                ("net/ipv6/conf/default/forwarding", "1"),
            ],
        )?;
        for host in &hosts {
            set_sysctls(&host.namespace, &NO_DAD)?;
        }

        let runtime = tokio::runtime::Handle::current();
        let mut connections = Vec::with_capacity(hosts.len() + 1);
        let router_nl = connect(&router, &runtime, &mut connections)?;
        let mut host_nls = Vec::with_capacity(hosts.len());
        for host in &hosts {
            host_nls.push(connect(&host.namespace, &runtime, &mut connections)?);
        }

        let work =
            futures::future::try_join_all(spec.hosts.iter().zip(&hosts).zip(&host_nls).map(
                |((host_spec, built), host_nl)| link_host(&router_nl, built, host_nl, host_spec),
            ));
        // The netlink connections are polled right here, next to the requests, and dropped as
        // soon as the work is done: no socket outlives `build` to keep a namespace alive.
        let connections = futures::future::join_all(connections);
        tokio::select! {
            biased;
            result = work => { result?; }
            _ = connections => {
                return Err(Error::netlink(
                    router.label(),
                    "netlink connection",
                    rtnetlink::Error::RequestFailed,
                ));
            }
        }
        drop(host_nls);
        drop(router_nl);

        tracing::debug!(
            prefix = %spec.prefix,
            hosts = hosts.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "topology built"
        );
        Ok(Topology { hosts, router })
    }

    /// The router namespace.
    pub fn router(&self) -> &Namespace {
        &self.router
    }

    /// The namespace of the host called `name`, if the spec had one.
    pub fn host(&self, name: &str) -> Option<&Namespace> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.namespace)
    }

    /// Router-side interface name of a host's link (for later fault injection).
    pub fn router_interface(&self, host: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.router_interface.as_str())
    }
}

/// A netlink handle whose socket lives in a given namespace.
/// How long a new link may take to become operational.
const OPERATIONAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

struct Netlink {
    label: String,
    handle: rtnetlink::Handle,
}

impl Netlink {
    fn err(&self, action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        let action = action.into();
        move |e| Error::netlink(&self.label, action, e)
    }

    async fn index(&self, name: &str) -> Result<u32> {
        route::interface_index(&self.handle, &self.label, name).await
    }

    async fn up(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(self.err(format!("set {name} up")))
    }

    /// Waits until the link is operational. Until the kernel's link watch has run for a link
    /// that just came up, its queueing discipline drops every packet: an ARP request sent then
    /// is lost, and the first IPv4 packets wait a whole ARP retry (1 s) — longer than an
    /// MTA's connect timeout on an accelerated clock.
    async fn wait_operational(&self, index: u32, name: &str) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let link = self
                .link(index, format!("look up interface {name}"))
                .await?;
            let operational = link.is_some_and(|link| {
                link.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::OperState(State::Up)))
            });
            if operational {
                return Ok(());
            }
            if started.elapsed() > OPERATIONAL_TIMEOUT {
                return Err(Error::LinkNotOperational {
                    label: self.label.clone(),
                    interface: name.to_owned(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Waits until the kernel delivers packets for `addr` locally. An IPv6 address is listed
    /// (and a socket may bind it) as soon as it is added, but its route in table `local` is
    /// inserted later, by addrconf's work queue (for a NODAD address: `addrconf_dad_work` →
    /// `addrconf_dad_completed`, which needs the RTNL lock other namespaces' set-up and teardown
    /// hold). Until then a packet to the address matches only the link's prefix route and is
    /// "forwarded" — on a host without forwarding: dropped (`ip6_forward`, `IP_INADDRERRORS`),
    /// with no RST: a lost first SYN.
    async fn wait_local(&self, index: u32, name: &str, addr: Ipv6Addr) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            // `ip -6 route get <addr> oif <name>`: the kernel's own lookup, as a packet sees it.
            let query = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(addr, 128)
                .output_interface(index)
                .build();
            let route = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_next()
                .await
                .map_err(self.err(format!("look up the route to {addr} on {name}")))?;
            if route.is_some_and(|route| route.header.kind == RouteType::Local) {
                return Ok(());
            }
            if started.elapsed() > OPERATIONAL_TIMEOUT {
                return Err(Error::AddressNotLocal {
                    label: self.label.clone(),
                    interface: name.to_owned(),
                    address: addr,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// The link with `index`, if there is one; `action` names the lookup in an error.
    async fn link(&self, index: u32, action: String) -> Result<Option<LinkMessage>> {
        self.handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(self.err(action))
    }

    /// The link's hardware (MAC) address.
    async fn mac(&self, index: u32, name: &str) -> Result<Vec<u8>> {
        let action = format!("read the hardware address of {name}");
        let link = self.link(index, action.clone()).await?;
        link.and_then(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(mac) => Some(mac),
                _ => None,
            })
        })
        .ok_or_else(|| Error::netlink(&self.label, action, rtnetlink::Error::RequestFailed))
    }

    /// A permanent neighbour entry: `addr` is at `mac` on the link, without ARP or NDP.
    async fn neighbour(&self, index: u32, name: &str, addr: IpAddr, mac: &[u8]) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, addr)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            // The kernel may have made an entry already, from the first packets on the link.
            .replace()
            .execute()
            .await
            .map_err(self.err(format!("add neighbour {addr} on {name}")))
    }

    async fn add_v4(&self, index: u32, name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await
            .map_err(self.err(format!("add address {addr}/{prefix_len} to {name}")))
    }

    async fn add_v6(&self, index: u32, name: &str, addr: Ipv6Addr, prefix_len: u8) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V6(addr), prefix_len);
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        request
            .execute()
            .await
            .map_err(self.err(format!("add address {addr}/{prefix_len} nodad to {name}")))
    }
}

/// Opens a netlink socket inside `ns` (registered with `runtime`'s reactor); its connection
/// future is pushed to `connections` for the caller to poll.
fn connect(
    ns: &Namespace,
    runtime: &tokio::runtime::Handle,
    connections: &mut Vec<Connection>,
) -> Result<Netlink> {
    let (connection, handle) = route::connect_in(ns, runtime)?;
    connections.push(connection);
    Ok(Netlink {
        label: ns.label().to_owned(),
        handle,
    })
}

/// Writes several sysctls with one trip into the namespace.
fn set_sysctls(ns: &Namespace, pairs: &[(&str, &str)]) -> Result<()> {
    let failed = ns.run(|| {
        pairs.iter().find_map(|(key, value)| {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .err()
                .map(|e| (*key, *value, e))
        })
    })?;
    match failed {
        None => Ok(()),
        Some((key, value, source)) => Err(Error::Sysctl {
            label: ns.label().to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            source,
            hint: String::new(),
        }),
    }
}

/// Creates one host's veth pair, brings both ends up, adds addresses and the host's routes.
async fn link_host(
    router_nl: &Netlink,
    host: &BuiltHost,
    host_nl: &Netlink,
    spec: &HostSpec,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let rif = host.router_interface.as_str();

    // Created in the router namespace; the peer is created directly in the host namespace
    // (IFLA_NET_NS_FD on the peer), so nothing ever appears in the root namespace.
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(HOST_INTERFACE)
        .setns_by_fd(host.namespace.fd().as_raw_fd())
        .build();
    let veth = LinkVeth::new(rif, HOST_INTERFACE)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    router_nl
        .handle
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(router_nl.err(format!(
            "add veth {rif} with peer {HOST_INTERFACE} in namespace {}",
            host.namespace.label()
        )))?;

    let (router_index, host_index) =
        futures::try_join!(router_nl.index(rif), host_nl.index(HOST_INTERFACE))?;

    // Links up before any IPv6 address.
    futures::try_join!(
        router_nl.up(router_index, rif),
        host_nl.up(host_index, HOST_INTERFACE)
    )?;

    if let Some(v4) = &spec.ipv4 {
        futures::try_join!(
            router_nl.add_v4(router_index, rif, v4.router, v4.prefix_len),
            host_nl.add_v4(host_index, HOST_INTERFACE, v4.host, v4.prefix_len),
        )?;
    }
    if let Some(v6) = &spec.ipv6 {
        // Link-local addresses of our own, at once: the kernel's own appear only about a second
        // after the link comes up, and until then the router cannot resolve neighbours for the
        // packets it forwards.
        futures::try_join!(
            router_nl.add_v6(router_index, rif, v6.router, v6.prefix_len),
            host_nl.add_v6(host_index, HOST_INTERFACE, v6.host, v6.prefix_len),
            router_nl.add_v6(router_index, rif, ROUTER_LINK_LOCAL, 64),
            host_nl.add_v6(host_index, HOST_INTERFACE, HOST_LINK_LOCAL, 64),
        )?;
    }

    let gateways = [
        spec.ipv4.as_ref().map(|v4| IpAddr::V4(v4.router)),
        spec.ipv6.as_ref().map(|v6| IpAddr::V6(v6.router)),
    ];
    for gateway in gateways.into_iter().flatten() {
        let route = match gateway {
            IpAddr::V4(router) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(router)
                .output_interface(host_index)
                .build(),
            IpAddr::V6(router) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(router)
                .output_interface(host_index)
                .build(),
        };
        host_nl
            .handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(host_nl.err(format!("add default route via {gateway}")))?;
    }
    // Permanent neighbour entries both ways: a lost first ARP request or neighbour
    // solicitation would hold the first packets for a whole retry (1 s), which on an
    // accelerated clock is longer than an MTA's connect timeout.
    let (router_mac, host_mac) = futures::try_join!(
        router_nl.mac(router_index, rif),
        host_nl.mac(host_index, HOST_INTERFACE)
    )?;
    let mut router_side = Vec::new();
    let mut host_side = Vec::new();
    if let Some(v4) = &spec.ipv4 {
        router_side.push(IpAddr::V4(v4.router));
        host_side.push(IpAddr::V4(v4.host));
    }
    if let Some(v6) = &spec.ipv6 {
        router_side.extend([IpAddr::V6(v6.router), IpAddr::V6(ROUTER_LINK_LOCAL)]);
        host_side.extend([IpAddr::V6(v6.host), IpAddr::V6(HOST_LINK_LOCAL)]);
    }
    for addr in router_side {
        host_nl
            .neighbour(host_index, HOST_INTERFACE, addr, &router_mac)
            .await?;
    }
    for addr in host_side {
        router_nl
            .neighbour(router_index, rif, addr, &host_mac)
            .await?;
    }
    futures::try_join!(
        router_nl.wait_operational(router_index, rif),
        host_nl.wait_operational(host_index, HOST_INTERFACE)
    )?;
    if let Some(v6) = &spec.ipv6 {
        // IPv4 addresses are local as soon as they are added; IPv6 ones only once addrconf's
        // work queue has run (see `wait_local`).
        futures::try_join!(
            router_nl.wait_local(router_index, rif, v6.router),
            router_nl.wait_local(router_index, rif, ROUTER_LINK_LOCAL),
            host_nl.wait_local(host_index, HOST_INTERFACE, v6.host),
            host_nl.wait_local(host_index, HOST_INTERFACE, HOST_LINK_LOCAL),
        )?;
    }
    Ok(())
}

fn validate(spec: &TopologySpec) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidSpec(msg));
    if !spec.prefix.starts_with(INTERFACE_PREFIX) {
        return invalid(format!(
            "prefix {:?} must start with \"{INTERFACE_PREFIX}\" (e.g. \"mxlab-1a2b3c\")",
            spec.prefix
        ));
    }
    let mut names = HashSet::new();
    let mut v4_links = LinkPrefixes::new("IPv4", 31);
    let mut v6_links = LinkPrefixes::new("IPv6", 127);
    for host in &spec.hosts {
        let name = host.name.as_str();
        if name.is_empty()
            || name.len() > MAX_HOST_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid(format!(
                "host name {name:?} must be 1-{MAX_HOST_NAME} characters of ASCII letters, digits, '-' or '_' \
                 (the router-side interface \"{INTERFACE_PREFIX}-<host>\" must fit in 15 characters)"
            ));
        }
        if !names.insert(name) {
            return invalid(format!("host name {name:?} appears twice"));
        }
        if let Some(v4) = &host.ipv4 {
            v4_links.claim(name, v4.host.into(), v4.router.into(), v4.prefix_len)?;
        }
        if let Some(v6) = &host.ipv6 {
            v6_links.claim(name, v6.host.into(), v6.router.into(), v6.prefix_len)?;
        }
    }
    Ok(())
}

/// The link prefixes of one address family claimed so far, so that no two hosts overlap.
struct LinkPrefixes<'a> {
    family: &'static str,
    /// The longest prefix a link may have: it holds a host's and its router's address.
    longest: u8,
    /// Each host's name, address (see [`left_aligned`]) and prefix length.
    claimed: Vec<(&'a str, u128, u8)>,
}

impl<'a> LinkPrefixes<'a> {
    fn new(family: &'static str, longest: u8) -> Self {
        Self {
            family,
            longest,
            claimed: Vec::new(),
        }
    }

    /// Claims host `name`'s link: `host` and `router` must be two addresses of one prefix of
    /// length `len` that overlaps no link claimed before.
    fn claim(&mut self, name: &'a str, host: IpAddr, router: IpAddr, len: u8) -> Result<()> {
        let (h, r) = (left_aligned(host), left_aligned(router));
        if !(1..=self.longest).contains(&len) || h == r || mask(h, len) != mask(r, len) {
            return Err(Error::InvalidSpec(format!(
                "host {name:?}: {} {host}/{len} and router {router}/{len} must be two different \
                 addresses in one prefix of length 1-{}",
                self.family, self.longest
            )));
        }
        if let Some((other, _, _)) = self.claimed.iter().find(|(_, net, other_len)| {
            let shorter = len.min(*other_len);
            mask(*net, shorter) == mask(h, shorter)
        }) {
            return Err(Error::InvalidSpec(format!(
                "hosts {other:?} and {name:?} have overlapping {} link prefixes",
                self.family
            )));
        }
        self.claimed.push((name, h, len));
        Ok(())
    }
}

/// An address as a number whose prefix bits come first: an IPv4 address fills the top 32 bits,
/// so one mask serves both families.
fn left_aligned(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The first `len` bits of a left-aligned address.
fn mask(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, n: u8) -> HostSpec {
        HostSpec {
            name: name.into(),
            ipv4: Some(LinkAddresses {
                host: Ipv4Addr::new(192, 0, 2, 4 * n + 2),
                router: Ipv4Addr::new(192, 0, 2, 4 * n + 1),
                prefix_len: 30,
            }),
            ipv6: Some(LinkAddresses {
                host: Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 2),
                router: Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 1),
                prefix_len: 64,
            }),
        }
    }

    fn spec(hosts: Vec<HostSpec>) -> TopologySpec {
        TopologySpec {
            prefix: "mxlab-test".into(),
            hosts,
        }
    }

    #[test]
    fn accepts_good_spec() {
        validate(&spec(vec![host("sut", 0), host("mx1", 1), host("dns", 2)])).unwrap();
    }

    #[test]
    fn rejects_bad_names_and_prefixes() {
        let e = validate(&TopologySpec {
            prefix: "lab".into(),
            hosts: vec![],
        })
        .unwrap_err();
        assert!(e.to_string().contains("must start with \"mxlab\""), "{e}");
        let e = validate(&spec(vec![host("toolonghost", 0)])).unwrap_err();
        assert!(e.to_string().contains("1-8 characters"), "{e}");
        let e = validate(&spec(vec![host("a b", 0)])).unwrap_err();
        assert!(e.to_string().contains("1-8 characters"), "{e}");
        let e = validate(&spec(vec![host("sut", 0), host("sut", 1)])).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn rejects_bad_addresses() {
        let mut h = host("sut", 0);
        h.ipv4.as_mut().unwrap().router = Ipv4Addr::new(198, 51, 100, 1);
        let e = validate(&spec(vec![h])).unwrap_err();
        assert!(e.to_string().contains("one prefix"), "{e}");
        let mut h = host("sut", 0);
        h.ipv6.as_mut().unwrap().prefix_len = 128;
        assert!(validate(&spec(vec![h])).is_err());
        let e = validate(&spec(vec![host("sut", 1), host("mx1", 1)])).unwrap_err();
        assert!(e.to_string().contains("overlapping IPv4"), "{e}");
        let mut h = host("mx1", 2);
        h.ipv4 = None;
        h.ipv6 = host("sut", 1).ipv6;
        let e = validate(&spec(vec![host("sut", 1), h])).unwrap_err();
        assert!(e.to_string().contains("overlapping IPv6"), "{e}");
        let mut h = host("sut", 0);
        h.ipv4.as_mut().unwrap().prefix_len = 32;
        let e = validate(&spec(vec![h])).unwrap_err();
        assert!(e.to_string().contains("IPv4 192.0.2."), "{e}");
        assert!(e.to_string().contains("length 1-31"), "{e}");
    }
}
