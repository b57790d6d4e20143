//! `no-route`: the SUT's default routes of the fault's family are removed (and restored on
//! healing), so the SUT sees "Network is unreachable".

use netns::Topology;

use super::{namespace, system, FaultError, InstalledFault};
use crate::plan::NetFaultPlan;

/// Removes the SUT's default routes of the fault's family, recording each in `installed`.
pub(super) async fn install(
    topology: &Topology,
    fault: &NetFaultPlan,
    installed: &mut InstalledFault,
) -> Result<(), FaultError> {
    let sut = namespace(topology, fault, &fault.sut_host)?;
    let routes =
        netns::Routes::open(sut).map_err(system(fault, "open a netlink socket in the SUT"))?;
    let defaults = routes
        .default_routes(fault.target.is_ipv6())
        .await
        .map_err(system(fault, "list the SUT's default routes"))?;
    if defaults.is_empty() {
        return Err(FaultError::Topology {
            fault: fault.description.clone(),
            problem: format!("the SUT has no {} default route to remove", fault.family),
        });
    }
    let routes = installed.routes.insert(routes);
    for route in defaults {
        routes.delete_route(&route).await.map_err(system(
            fault,
            &format!("delete the SUT's route {}", route.describe()),
        ))?;
        installed.removed_routes.push(route);
    }
    Ok(())
}
