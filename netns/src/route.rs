//! Routes, policy rules and route MTUs inside a namespace, over rtnetlink.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;

use crate::{Error, Namespace, Result};

/// What a [`Route`] does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forward them (via a gateway or out of an interface).
    Unicast,
    /// Drop them silently.
    Blackhole,
    /// Drop them and answer ICMP (host) unreachable.
    Unreachable,
    /// Drop them and answer ICMP administratively prohibited.
    Prohibit,
}

/// One route, as read from or written to the kernel.
///
/// Built with [`Route::to`] and its setters, or read with [`Routes::default_routes`]; a route
/// read from the kernel can be deleted and re-added unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    message: RouteMessage,
}

impl Route {
    /// A unicast route to `destination/prefix_len` in the main table (static, scope universe
    /// for IPv6, scope link for IPv4 until a gateway is set).
    pub fn to(destination: IpAddr, prefix_len: u8) -> Result<Route> {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination, prefix_len)
            .map_err(|e| Error::InvalidSpec(format!("route to {destination}/{prefix_len}: {e}")))?;
        let mut message = builder.build();
        if destination.is_ipv4() {
            message.header.scope = RouteScope::Link;
        }
        Ok(Route { message })
    }

    /// Sends matching packets via `gateway` (same family as the destination).
    pub fn via(mut self, gateway: IpAddr) -> Route {
        self.message.header.scope = RouteScope::Universe;
        self.message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Gateway(_)));
        self.message
            .attributes
            .push(RouteAttribute::Gateway(gateway.into()));
        self
    }

    /// Sends matching packets out of the interface with this index.
    pub fn interface(mut self, index: u32) -> Route {
        self.message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        self.message.attributes.push(RouteAttribute::Oif(index));
        self
    }

    /// Puts the route in routing table `table` (default: main, 254).
    pub fn table(mut self, table: u32) -> Route {
        self.message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        if table > 255 {
            self.message.header.table = RouteHeader::RT_TABLE_UNSPEC;
            self.message.attributes.push(RouteAttribute::Table(table));
        } else {
            self.message.header.table = table as u8;
        }
        self
    }

    /// Sets the route's MTU metric (the path MTU of packets it forwards or sends).
    pub fn mtu(mut self, mtu: u32) -> Route {
        self.message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Metrics(_)));
        self.message
            .attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        self
    }

    /// Sets what the route does with packets.
    pub fn kind(mut self, kind: RouteKind) -> Route {
        self.message.header.kind = match kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
        };
        if kind != RouteKind::Unicast {
            self.message.header.scope = RouteScope::Universe;
        }
        self
    }

    /// The destination address and prefix length.
    pub fn destination(&self) -> (IpAddr, u8) {
        let addr = self.message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(addr) => ip_of(addr),
            _ => None,
        });
        let unspecified = match self.message.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        (
            addr.unwrap_or(unspecified),
            self.message.header.destination_prefix_length,
        )
    }

    /// The gateway, if the route has one.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(addr) => ip_of(addr),
            _ => None,
        })
    }

    /// For messages: "2001:db8::/64 via 2001:db8::1 table 1000 mtu 1280".
    pub fn describe(&self) -> String {
        let (dst, len) = self.destination();
        let mut text = match self.message.header.kind {
            RouteType::BlackHole => format!("blackhole {dst}/{len}"),
            RouteType::Unreachable => format!("unreachable {dst}/{len}"),
            RouteType::Prohibit => format!("prohibit {dst}/{len}"),
            _ => format!("{dst}/{len}"),
        };
        for attr in &self.message.attributes {
            match attr {
                RouteAttribute::Gateway(addr) => {
                    if let Some(gw) = ip_of(addr) {
                        text.push_str(&format!(" via {gw}"));
                    }
                }
                RouteAttribute::Oif(index) => text.push_str(&format!(" dev #{index}")),
                RouteAttribute::Table(table) => text.push_str(&format!(" table {table}")),
                RouteAttribute::Metrics(metrics) => {
                    for metric in metrics {
                        if let RouteMetric::Mtu(mtu) = metric {
                            text.push_str(&format!(" mtu {mtu}"));
                        }
                    }
                }
                _ => {}
            }
        }
        let table = self.message.header.table;
        if table != RouteHeader::RT_TABLE_MAIN && table != RouteHeader::RT_TABLE_UNSPEC {
            text.push_str(&format!(" table {table}"));
        }
        text
    }

    /// A copy fit for RTM_NEWROUTE/RTM_DELROUTE: only the attributes that identify or define
    /// a route (a dumped route also carries cache info and the like).
    fn request(&self) -> RouteMessage {
        let mut message = self.message.clone();
        message.header.flags = RouteFlags::empty();
        message.attributes.retain(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Table(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Preference(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Metrics(_)
            )
        });
        message
    }
}

/// A policy routing rule: packets `from` a prefix `to` a prefix look up `table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    message: RuleMessage,
}

impl Rule {
    /// `from <from> to <to> lookup <table> priority <priority>` (one family: `from` and `to`
    /// must both be IPv4 or both IPv6).
    pub fn lookup(from: (IpAddr, u8), to: (IpAddr, u8), table: u32, priority: u32) -> Result<Rule> {
        if from.0.is_ipv4() != to.0.is_ipv4() {
            return Err(Error::InvalidSpec(format!(
                "rule from {}/{} to {}/{}: both addresses must be of one family",
                from.0, from.1, to.0, to.1
            )));
        }
        let mut message = RuleMessage::default();
        message.header.family = if from.0.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        message.header.src_len = from.1;
        message.header.dst_len = to.1;
        message.header.action = RuleAction::ToTable;
        if table > 255 {
            message.header.table = RouteHeader::RT_TABLE_UNSPEC;
            message.attributes.push(RuleAttribute::Table(table));
        } else {
            message.header.table = table as u8;
        }
        message.attributes.push(RuleAttribute::Source(from.0));
        message.attributes.push(RuleAttribute::Destination(to.0));
        message.attributes.push(RuleAttribute::Priority(priority));
        Ok(Rule { message })
    }

    /// Matches only packets that arrived on the interface called `name` (`iif name`).
    pub fn input_interface(mut self, name: &str) -> Rule {
        self.message
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::Iifname(_)));
        self.message
            .attributes
            .push(RuleAttribute::Iifname(name.to_owned()));
        self
    }

    /// For messages: "priority 1000 from 192.0.2.2/32 to 192.0.2.26/32 lookup 1000" (with
    /// "iif NAME" after the priority when the rule has one).
    pub fn describe(&self) -> String {
        let mut iif = String::new();
        let mut from = String::from("all");
        let mut to = String::from("all");
        let mut priority = 0;
        let mut table = u32::from(self.message.header.table);
        for attr in &self.message.attributes {
            match attr {
                RuleAttribute::Source(a) => from = format!("{a}/{}", self.message.header.src_len),
                RuleAttribute::Destination(a) => {
                    to = format!("{a}/{}", self.message.header.dst_len)
                }
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Iifname(name) => iif = format!(" iif {name}"),
                _ => {}
            }
        }
        format!("priority {priority}{iif} from {from} to {to} lookup {table}")
    }
}

fn ip_of(addr: &netlink_packet_route::route::RouteAddress) -> Option<IpAddr> {
    use netlink_packet_route::route::RouteAddress;
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A netlink route socket that lives in one namespace, for route, rule and interface lookups.
///
/// The socket is created on a thread inside the namespace (with the tokio runtime entered) and
/// its connection is driven by a tokio task; dropping `Routes` stops that task and closes the
/// socket. While it lives, the socket keeps the namespace alive.
#[derive(Debug)]
pub struct Routes {
    label: String,
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The index of the interface called `name`, asked over `handle`, a netlink socket in the
/// namespace labelled `label`.
pub(crate) async fn interface_index(
    handle: &rtnetlink::Handle,
    label: &str,
    name: &str,
) -> Result<u32> {
    let action = format!("look up interface {name}");
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(|e| Error::netlink(label, action.clone(), e))?;
    link.map(|link| link.header.index)
        .ok_or_else(|| Error::netlink(label, action, rtnetlink::Error::RequestFailed))
}

/// The future that drives a route netlink socket; spawn it, or join it with the requests.
pub(crate) type Connection = rtnetlink::proto::Connection<RouteNetlinkMessage>;

/// Opens a route netlink socket inside `ns`, registered with `runtime`'s reactor.
pub(crate) fn connect_in(
    ns: &Namespace,
    runtime: &tokio::runtime::Handle,
) -> Result<(Connection, rtnetlink::Handle)> {
    let (connection, handle, _messages) = ns
        .run(|| {
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })?
        .map_err(|e| Error::namespace(ns.label(), "opening a netlink socket", e))?;
    Ok((connection, handle))
}

impl Routes {
    /// Opens a route socket inside `ns`. Must be called inside a tokio runtime.
    pub fn open(ns: &Namespace) -> Result<Routes> {
        let runtime = tokio::runtime::Handle::current();
        let (connection, handle) = connect_in(ns, &runtime)?;
        let task = runtime.spawn(connection);
        Ok(Routes {
            label: ns.label().to_owned(),
            handle,
            task,
        })
    }

    /// The label of the namespace the socket lives in.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn err(&self, action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        let action = action.into();
        move |e| Error::netlink(&self.label, action, e)
    }

    /// The index of the interface called `name`.
    pub async fn interface_index(&self, name: &str) -> Result<u32> {
        interface_index(&self.handle, &self.label, name).await
    }

    /// Sets the interface with this index up.
    pub(crate) async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(self.err(format!("set interface #{index} up")))
    }

    /// The default routes (0.0.0.0/0 or ::/0) of the main table for `ipv6 == false/true`.
    pub async fn default_routes(&self, ipv6: bool) -> Result<Vec<Route>> {
        let filter = if ipv6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let family = filter.header.address_family;
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list routes"))?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                r.header.address_family == family
                    && r.header.destination_prefix_length == 0
                    && r.header.kind == RouteType::Unicast
                    && table_of(r) == u32::from(RouteHeader::RT_TABLE_MAIN)
            })
            .map(|message| Route { message })
            .collect())
    }

    /// Adds a route (fails if it exists).
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        let mut message = route.request();
        if message.header.protocol == RouteProtocol::Unspec {
            message.header.protocol = RouteProtocol::Static;
        }
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(self.err(format!("add route {}", route.describe())))
    }

    /// Deletes a route.
    pub async fn delete_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .del(route.request())
            .execute()
            .await
            .map_err(self.err(format!("delete route {}", route.describe())))
    }

    /// Adds a policy rule (fails if an identical one exists).
    pub async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let mut request = self.handle.rule().add();
        *request.message_mut() = rule.message.clone();
        request
            .execute()
            .await
            .map_err(self.err(format!("add rule {}", rule.describe())))
    }

    /// Deletes a policy rule.
    pub async fn delete_rule(&self, rule: &Rule) -> Result<()> {
        self.handle
            .rule()
            .del(rule.message.clone())
            .execute()
            .await
            .map_err(self.err(format!("delete rule {}", rule.describe())))
    }

    /// Forgets every learned path MTU (and redirect) in the namespace, like `ip route flush
    /// cache` plus `ip -6 route flush cache`: IPv6 exceptions are listed and deleted, the IPv4
    /// ones are invalidated through /proc/sys/net/ipv4/route/flush (which `ns` must be the
    /// namespace of this socket).
    pub async fn flush_route_cache(&self, ns: &Namespace) -> Result<()> {
        ns.set_sysctl("net/ipv4/route/flush", "1")?;
        let mut filter = RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
        filter.header.flags = RouteFlags::Cloned;
        let cached: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(self.err("list cached IPv6 routes"))?;
        for message in cached {
            if !message.header.flags.contains(RouteFlags::Cloned) {
                continue;
            }
            let route = Route { message };
            let mut request = route.request();
            request.header.flags = RouteFlags::Cloned;
            match self.handle.route().del(request).execute().await {
                Ok(()) => {}
                // Expired or removed meanwhile.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ESRCH => {}
                Err(e) => {
                    return Err(Error::netlink(
                        &self.label,
                        format!("delete cached route {}", route.describe()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

fn table_of(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}
