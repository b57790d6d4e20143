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
//! One module per part: `nft` writes and applies the table, `no_route` removes the SUT's
//! routes, `pmtu` adds the MTU-1280 routes and rules; [`InstalledFault`] records what was
//! added or removed and heals it.
//!
//! Why nft text rather than the `nftables` JSON crate: the rules here are a handful of lines
//! per fault, the text is what the cookbook verified and what `nft list ruleset` shows back
//! (easy to log and compare), and it needs no extra dependency; `nft -f -` applies a whole
//! table atomically either way.

mod installed;
mod nft;
mod no_route;
mod pmtu;
mod shape;

pub use installed::InstalledFault;
pub use pmtu::PMTU_BLACKHOLE_MTU;

use netns::Topology;

use crate::plan::NetFaultPlan;
use crate::scenario::NetFault;

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
    if let Some(n) = fault.activation.first {
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

    let mut installed = InstalledFault::new(&fault.description);
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

/// The namespace of the topology's host `name`.
fn namespace<'t>(
    topology: &'t Topology,
    fault: &NetFaultPlan,
    name: &str,
) -> Result<&'t netns::Namespace, FaultError> {
    topology.host(name).ok_or_else(|| FaultError::Topology {
        fault: fault.description.clone(),
        problem: format!("the topology has no host {name:?}"),
    })
}

/// Installs the parts of `fault` into `installed` as they are added, so a failure part-way
/// leaves `installed` holding exactly what must be undone.
async fn install_parts(
    topology: &Topology,
    fault: &NetFaultPlan,
    index: usize,
    installed: &mut InstalledFault,
) -> Result<(), FaultError> {
    if fault.kind == NetFault::NoRoute {
        return no_route::install(topology, fault, installed).await;
    }
    if let NetFault::Shape(shape) = &fault.kind {
        let shaper = shape::install(topology, fault, shape, index)
            .await
            .map_err(system(fault, "start the path shaper"))?;
        installed.shaper = Some(shaper);
        return Ok(());
    }
    nft::install(topology, fault, index, installed)?;
    if fault.kind == NetFault::PmtuBlackhole {
        pmtu::install(topology, fault, index, installed).await?;
    }
    Ok(())
}

/// Maps a netlink or nftables error of `fault` while doing `action` to a [`FaultError`].
fn system(fault: &NetFaultPlan, action: &str) -> impl FnOnce(netns::Error) -> FaultError {
    let action = action.to_owned();
    let description = fault.description.clone();
    move |source: netns::Error| FaultError::System {
        fault: description,
        action,
        source: Box::new(source),
    }
}
