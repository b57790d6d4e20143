//! A `net = { delay = ..., ... }` fault: the userspace path shaper of [`netns::Shaper`] on the
//! path between the SUT and the fault's host, in the fault's family.

use netns::{Direction, Shape, ShapedPath, Shaper, Topology};

use crate::plan::NetFaultPlan;
use crate::scenario::{NetShape, ShapeDirection};

/// The shaper's settings for a planned shape (already in wall time, see
/// [`NetShape::to_wall`]).
pub(crate) fn shape_of(shape: &NetShape) -> Shape {
    Shape {
        delay: shape.delay,
        jitter: shape.jitter,
        reorder: shape.reorder,
        duplicate: shape.duplicate,
        rate: shape.rate.map(|rate| rate.bytes_per_second),
        seed: shape.seed,
    }
}

/// The shaped path: SUT ("client") to the fault's host, in the fault's family.
pub(crate) fn path_of(fault: &NetFaultPlan, shape: &NetShape) -> ShapedPath {
    ShapedPath {
        client: fault.sut_host.clone(),
        client_address: fault.sut,
        server: fault.host.clone(),
        server_address: fault.target,
        direction: match shape.direction {
            ShapeDirection::To => Direction::To,
            ShapeDirection::From => Direction::From,
            ShapeDirection::Both => Direction::Both,
        },
    }
}

/// Starts shaping; `index` is the fault's, unique per run (it names the TUN device and the
/// routing table).
pub(crate) async fn install(
    topology: &Topology,
    fault: &NetFaultPlan,
    shape: &NetShape,
    index: usize,
) -> Result<Shaper, netns::Error> {
    let index = u32::try_from(index)
        .map_err(|_| netns::Error::InvalidSpec(format!("fault index {index} is too large")))?;
    Shaper::install(topology, &path_of(fault, shape), shape_of(shape), index).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::activation::Activation;
    use crate::family::Family;
    use crate::scenario::{NetFault, Rate};

    #[test]
    fn the_path_runs_from_the_sut_to_the_host_in_the_fault_family() {
        let shape = NetShape {
            delay: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
            reorder: 10,
            duplicate: 20,
            rate: Some(Rate {
                bytes_per_second: 10_000,
            }),
            direction: ShapeDirection::From,
            seed: 7,
        };
        let fault = NetFaultPlan {
            description: format!("{shape} on mx1 ipv6"),
            kind: NetFault::Shape(shape),
            host: "mx1".into(),
            sut_host: "sut".into(),
            family: Family::Ipv6,
            target: "2001:db8:0:3::2".parse().unwrap(),
            sut: "2001:db8::2".parse().unwrap(),
            activation: Activation::ALWAYS,
        };
        let path = path_of(&fault, &shape);
        assert_eq!((path.client.as_str(), path.server.as_str()), ("sut", "mx1"));
        assert_eq!(path.client_address, fault.sut);
        assert_eq!(path.server_address, fault.target);
        assert_eq!(path.direction, Direction::From);
        let settings = shape_of(&shape);
        assert_eq!(settings.rate, Some(10_000));
        assert_eq!(
            (settings.reorder, settings.duplicate, settings.seed),
            (10, 20, 7)
        );
        settings.check().unwrap();
    }
}
