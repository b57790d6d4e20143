//! Network faults: installing a planned [`NetFaultPlan`] in a built topology, and healing it.
//!
//! A shape (`net = { delay = "200ms", ... }`) is the userspace path shaper of
//! [`netns::Shaper`]: a TUN device in the router and policy rules that steer the family's
//! traffic between the SUT and the host through it (see `shape.rs`).
//!
//! Every kind but `no-route` lives in the router namespace, in an nftables table of its own
//! (`inet mxlab_fault_<index>`, applied with `nft -f -` as one transaction); `pmtu-blackhole`
//! adds a routing table (1000 + index) with MTU-1280 routes and two policy rules. `no-route`
//! removes the SUT's default route of the family. Healing deletes exactly what installing
//! added. Each fault touches one family of one host only: the other family, other hosts and the
//! DNS traffic pass untouched.
//!
//! Why nft text rather than the `nftables` JSON crate: the rules here are a handful of lines
//! per fault, the text is what the cookbook verified and what `nft list ruleset` shows back
//! (easy to log and compare), and it needs no extra dependency; `nft -f -` applies a whole
//! table atomically either way.

mod nft;
mod shape;

use netns::{Firewall, Route, Routes, Rule, Shaper, Topology};

use crate::plan::NetFaultPlan;
use crate::scenario::NetFault;

/// The path MTU `pmtu-blackhole` imposes between the SUT and the host.
pub const PMTU_BLACKHOLE_MTU: u32 = 1280;

/// Routing table (and rule priority) base for `pmtu-blackhole`: fault `index` uses 1000 + index.
const PMTU_TABLE_BASE: u32 = 1000;

/// Whether `first = N` can be combined with this kind of fault. It cannot for `no-route` (the
/// SUT has no route at all: there are no connections to count) and `pmtu-blackhole` (the MTU
/// is a route property, not a per-connection one).
pub fn supports_first(kind: NetFault) -> bool {
    !matches!(
        kind,
        NetFault::NoRoute | NetFault::PmtuBlackhole | NetFault::Shape(_)
    )
}

/// Why a fault could not be installed or healed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The fault cannot be built as planned (e.g. `first` with `no-route`).
    #[error("{fault}: {reason}")]
    Unsupported {
        /// The fault's description.
        fault: String,
        /// What is not supported.
        reason: String,
    },
    /// The plan names a host the topology lacks, or the SUT lacks the route to remove.
    #[error("{fault}: {problem}")]
    Topology {
        /// The fault's description.
        fault: String,
        /// What is missing.
        problem: String,
    },
    /// A netlink or nftables operation failed.
    #[error("{fault}: could not {action}: {source}")]
    System {
        /// The fault's description.
        fault: String,
        /// What was being attempted, e.g. "install" or "heal".
        action: String,
        /// The underlying error.
        #[source]
        source: Box<netns::Error>,
    },
}

/// A fault in force. Healing removes exactly what install added.
///
/// Dropping it without [`heal`](InstalledFault::heal) leaves the fault in place (until the
/// topology itself is dropped); it holds handles on the namespaces it changed, which keep them
/// alive while it lives.
#[derive(Debug)]
pub struct InstalledFault {
    description: String,
    /// The nft table and the firewall of the namespace that holds it.
    table: Option<(Firewall, String)>,
    /// The netlink socket in the namespace whose routes changed (router or SUT).
    routes: Option<Routes>,
    /// Added by install: deleted by heal.
    added_routes: Vec<Route>,
    added_rules: Vec<Rule>,
    /// Removed by install: re-added by heal.
    removed_routes: Vec<Route>,
    /// The path shaper of a shape fault.
    shaper: Option<Shaper>,
}

impl InstalledFault {
    /// The fault's description, e.g. `blackhole on mx1 ipv6`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// What the path shaper of a shape fault has done so far.
    pub fn shaper_stats(&self) -> Option<netns::ShaperStats> {
        self.shaper.as_ref().map(Shaper::stats)
    }

    /// Removes the fault: deletes its nft table, its rules and routes, restores removed
    /// routes and stops its path shaper. Every step is attempted; the first failure is
    /// returned.
    pub async fn heal(mut self) -> Result<(), FaultError> {
        let mut first_error = None;
        let mut note = |result: Result<(), netns::Error>, action: String| {
            if let Err(source) = result {
                tracing::warn!(fault = %self.description, %action, error = %source, "healing step failed");
                first_error.get_or_insert(FaultError::System {
                    fault: self.description.clone(),
                    action,
                    source: Box::new(source),
                });
            }
        };
        if let Some(routes) = &self.routes {
            for rule in self.added_rules.iter().rev() {
                note(
                    routes.delete_rule(rule).await,
                    format!("heal: delete rule {}", rule.describe()),
                );
            }
            for route in self.added_routes.iter().rev() {
                note(
                    routes.delete_route(route).await,
                    format!("heal: delete route {}", route.describe()),
                );
            }
            for route in &self.removed_routes {
                note(
                    routes.add_route(route).await,
                    format!("heal: restore route {}", route.describe()),
                );
            }
        }
        if let Some(shaper) = self.shaper.take() {
            note(shaper.remove().await, "heal: remove the path shaper".into());
        }
        if let Some((firewall, table)) = self.table.take() {
            note(
                firewall.apply(
                    &format!("delete table inet {table}"),
                    &format!("delete table inet {table}\n"),
                ),
                format!("heal: delete nft table inet {table}"),
            );
        }
        tracing::debug!(fault = %self.description, ok = first_error.is_none(), "fault healed");
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Installs `fault` in the topology (router namespace for all kinds but no-route, which removes
/// the SUT's default route of that family). `index` is unique per run and names the fault's
/// nft table and routing table. On failure, whatever was already installed is removed again.
pub async fn install(
    topology: &Topology,
    fault: &NetFaultPlan,
    index: usize,
) -> Result<InstalledFault, FaultError> {
    let unsupported = |reason: String| FaultError::Unsupported {
        fault: fault.description.clone(),
        reason,
    };
    if fault.target.is_ipv4() != fault.sut.is_ipv4() {
        return Err(unsupported(format!(
            "target {} and SUT address {} are of different families",
            fault.target, fault.sut
        )));
    }
    if let Some(n) = fault.first {
        if !supports_first(fault.kind) {
            return Err(unsupported(format!(
                "`first = {n}` is not supported with {}: it changes a path, not connections",
                fault.kind
            )));
        }
        if n == 0 {
            return Err(unsupported("`first = 0` would never apply".into()));
        }
    }

    let mut installed = InstalledFault {
        description: fault.description.clone(),
        table: None,
        routes: None,
        added_routes: Vec::new(),
        added_rules: Vec::new(),
        removed_routes: Vec::new(),
        shaper: None,
    };
    match install_parts(topology, fault, index, &mut installed).await {
        Ok(()) => {
            tracing::debug!(fault = %fault.description, index, "fault installed");
            Ok(installed)
        }
        Err(e) => {
            if let Err(undo) = installed.heal().await {
                tracing::warn!(fault = %fault.description, error = %undo, "undoing a partly installed fault failed");
            }
            Err(e)
        }
    }
}

fn namespace<'t>(
    topology: &'t Topology,
    fault: &NetFaultPlan,
    host: Option<&str>,
) -> Result<&'t netns::Namespace, FaultError> {
    match host {
        None => Ok(topology.router()),
        Some(name) => topology.host(name).ok_or_else(|| FaultError::Topology {
            fault: fault.description.clone(),
            problem: format!("the topology has no host {name:?}"),
        }),
    }
}

async fn install_parts(
    topology: &Topology,
    fault: &NetFaultPlan,
    index: usize,
    installed: &mut InstalledFault,
) -> Result<(), FaultError> {
    let system = |action: &str| {
        let action = action.to_owned();
        let description = fault.description.clone();
        move |source: netns::Error| FaultError::System {
            fault: description,
            action,
            source: Box::new(source),
        }
    };
    let ipv6 = fault.target.is_ipv6();

    if fault.kind == NetFault::NoRoute {
        let sut = namespace(topology, fault, Some("sut"))?;
        let routes = Routes::open(sut).map_err(system("open a netlink socket in the SUT"))?;
        let defaults = routes
            .default_routes(ipv6)
            .await
            .map_err(system("list the SUT's default routes"))?;
        if defaults.is_empty() {
            return Err(FaultError::Topology {
                fault: fault.description.clone(),
                problem: format!("the SUT has no {} default route to remove", fault.family),
            });
        }
        installed.routes = Some(routes);
        for route in defaults {
            let routes = installed.routes.as_ref().expect("set above");
            routes.delete_route(&route).await.map_err(system(&format!(
                "delete the SUT's route {}",
                route.describe()
            )))?;
            installed.removed_routes.push(route);
        }
        return Ok(());
    }

    if let NetFault::Shape(shape) = &fault.kind {
        let shaper = shape::install(topology, fault, shape, index)
            .await
            .map_err(system("start the path shaper"))?;
        installed.shaper = Some(shaper);
        return Ok(());
    }

    let router = topology.router();
    if let Some(script) = nft::script(fault, index) {
        let firewall = Firewall::new(router).map_err(system("reach the router's namespace"))?;
        let table = nft::table_name(index);
        tracing::trace!(fault = %fault.description, %script, "nft script");
        firewall
            .apply(&format!("add table inet {table}"), &script)
            .map_err(system(&format!("add nft table inet {table}")))?;
        installed.table = Some((firewall, table));
    }

    if fault.kind == NetFault::PmtuBlackhole {
        let interface = |host: &str| {
            topology
                .router_interface(host)
                .ok_or_else(|| FaultError::Topology {
                    fault: fault.description.clone(),
                    problem: format!("the topology has no host {host:?}"),
                })
        };
        let (target_if, sut_if) = (interface(&fault.host)?, interface("sut")?);
        let routes = Routes::open(router).map_err(system("open a netlink socket in the router"))?;
        let target_index = routes
            .interface_index(target_if)
            .await
            .map_err(system("look up the router's interfaces"))?;
        let sut_index = routes
            .interface_index(sut_if)
            .await
            .map_err(system("look up the router's interfaces"))?;
        installed.routes = Some(routes);
        let table = PMTU_TABLE_BASE + index as u32;
        let host_len = if ipv6 { 128 } else { 32 };
        // Forward path: SUT → host; return path: host → SUT. Both through the fault's own
        // table, selected by (source, destination) rules, so nothing else changes.
        let paths = [
            (fault.sut, fault.target, target_index),
            (fault.target, fault.sut, sut_index),
        ];
        for (from, to, via_index) in paths {
            let route = Route::to(to, host_len)
                .map_err(system("build a route"))?
                .interface(via_index)
                .table(table)
                .mtu(PMTU_BLACKHOLE_MTU);
            let routes = installed.routes.as_ref().expect("set above");
            routes
                .add_route(&route)
                .await
                .map_err(system(&format!("add route {}", route.describe())))?;
            installed.added_routes.push(route);
            let rule = Rule::lookup((from, host_len), (to, host_len), table, table)
                .map_err(system("build a rule"))?;
            routes
                .add_rule(&rule)
                .await
                .map_err(system(&format!("add rule {}", rule.describe())))?;
            installed.added_rules.push(rule);
        }
        // A path MTU learned earlier would hide the black hole.
        for host in ["sut", fault.host.as_str()] {
            let ns = namespace(topology, fault, Some(host))?;
            let socket = Routes::open(ns).map_err(system("open a netlink socket"))?;
            socket
                .flush_route_cache(ns)
                .await
                .map_err(system(&format!("flush the cached path MTUs of {host}")))?;
        }
    }
    Ok(())
}
