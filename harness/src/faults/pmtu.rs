//! `pmtu-blackhole`: routes with MTU 1280 between the SUT and the host in a routing table of
//! the fault's own, selected by two policy rules, with the router's Packet Too Big /
//! Fragmentation Needed filtered by the fault's nft table (see `nft`).

use netns::{Route, Routes, Rule, Topology};

use super::{namespace, system, FaultError, InstalledFault};
use crate::plan::NetFaultPlan;

/// The path MTU `pmtu-blackhole` imposes between the SUT and the host.
pub const PMTU_BLACKHOLE_MTU: u32 = 1280;

/// Routing table (and rule priority) base for `pmtu-blackhole`: fault `index` uses 1000 + index.
const PMTU_TABLE_BASE: u32 = 1000;

/// Adds the MTU-1280 routes and their rules in the router, recording each in `installed`,
/// then flushes the path MTUs the SUT and the host have learned.
pub(super) async fn install(
    topology: &Topology,
    fault: &NetFaultPlan,
    index: usize,
    installed: &mut InstalledFault,
) -> Result<(), FaultError> {
    let router = topology.router();
    let interface = |host: &str| {
        topology
            .router_interface(host)
            .ok_or_else(|| FaultError::Topology {
                fault: fault.description.clone(),
                problem: format!("the topology has no host {host:?}"),
            })
    };
    let (target_if, sut_if) = (interface(&fault.host)?, interface(&fault.sut_host)?);
    let routes =
        Routes::open(router).map_err(system(fault, "open a netlink socket in the router"))?;
    let target_index = routes
        .interface_index(target_if)
        .await
        .map_err(system(fault, "look up the router's interfaces"))?;
    let sut_index = routes
        .interface_index(sut_if)
        .await
        .map_err(system(fault, "look up the router's interfaces"))?;
    let routes = installed.routes.insert(routes);
    let table = PMTU_TABLE_BASE + index as u32;
    let host_len = if fault.target.is_ipv6() { 128 } else { 32 };
    // Forward path: SUT → host; return path: host → SUT. Both through the fault's own
    // table, selected by (source, destination) rules, so nothing else changes.
    let paths = [
        (fault.sut, fault.target, target_index),
        (fault.target, fault.sut, sut_index),
    ];
    for (from, to, via_index) in paths {
        let route = Route::to(to, host_len)
            .map_err(system(fault, "build a route"))?
            .interface(via_index)
            .table(table)
            .mtu(PMTU_BLACKHOLE_MTU);
        routes
            .add_route(&route)
            .await
            .map_err(system(fault, &format!("add route {}", route.describe())))?;
        installed.added_routes.push(route);
        let rule = Rule::lookup((from, host_len), (to, host_len), table, table)
            .map_err(system(fault, "build a rule"))?;
        routes
            .add_rule(&rule)
            .await
            .map_err(system(fault, &format!("add rule {}", rule.describe())))?;
        installed.added_rules.push(rule);
    }
    // A path MTU learned earlier would hide the black hole.
    for host in [fault.sut_host.as_str(), fault.host.as_str()] {
        let ns = namespace(topology, fault, host)?;
        let socket = Routes::open(ns).map_err(system(fault, "open a netlink socket"))?;
        socket.flush_route_cache(ns).await.map_err(system(
            fault,
            &format!("flush the cached path MTUs of {host}"),
        ))?;
    }
    Ok(())
}
