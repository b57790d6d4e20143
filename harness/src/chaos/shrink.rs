//! Shrinking a world that breaks something to a smaller one that still does.

use proptest::strategy::ValueTree;

use super::world::World;

/// A shrunk world and what shrinking cost.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest world that still broke it.
    pub world: World,
    /// Candidates run.
    pub tries: usize,
    /// Candidates that still broke it (each one a step down).
    pub steps: usize,
}

/// Shrinks the world `tree` holds (which breaks something) with proptest's simplify and
/// complicate, keeping each candidate for which `still_breaks` holds, for at most `budget`
/// candidates. The world returned is always one `still_breaks` held for (or the original).
pub async fn shrink<T, F>(tree: &mut T, budget: usize, mut still_breaks: F) -> Shrunk
where
    T: ValueTree<Value = World>,
    F: AsyncFnMut(&World) -> bool,
{
    let mut shrunk = Shrunk {
        world: tree.current(),
        tries: 0,
        steps: 0,
    };
    if !tree.simplify() {
        return shrunk;
    }
    while shrunk.tries < budget {
        let candidate = tree.current();
        shrunk.tries += 1;
        if still_breaks(&candidate).await {
            shrunk.world = candidate;
            shrunk.steps += 1;
            if !tree.simplify() {
                break;
            }
        } else if !tree.complicate() && !tree.simplify() {
            // Nothing of the last simplification to undo: move on to simplify elsewhere
            // (proptest's runner stops here; a candidate run costs seconds, not
            // microseconds, but so does a larger scenario file).
            break;
        }
    }
    shrunk
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::chaos::world::{self, FaultKind, NetKind};

    /// Shrinking a world "broken" by any blackhole ends with a minimal one: one host, one
    /// message, one fault, the blackhole.
    #[test]
    fn shrinking_keeps_the_breach_and_drops_the_rest() {
        let mut runner = TestRunner::deterministic();
        let has_blackhole = |world: &World| {
            world
                .applied()
                .iter()
                .any(|f| f.kind == FaultKind::Net(NetKind::Blackhole))
        };
        let mut tree = loop {
            let tree = world::world().new_tree(&mut runner).unwrap();
            let world = tree.current();
            if has_blackhole(&world) && world.hosts.len() > 1 && world.fault_count() > 1 {
                break tree;
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let shrunk = runtime.block_on(shrink(&mut tree, 500, async |w: &World| has_blackhole(w)));
        assert!(has_blackhole(&shrunk.world));
        assert_eq!(shrunk.world.hosts.len(), 1, "{:?}", shrunk.world);
        assert_eq!(shrunk.world.fault_count(), 1, "{:?}", shrunk.world);
        assert_eq!(shrunk.world.messages, 1);
        assert!(shrunk.world.dns_applied().is_empty());
        assert!(shrunk.steps > 0 && shrunk.tries >= shrunk.steps);
    }
}
