//! Puts network faults in force and heals them on their schedule.

use std::time::Duration;

use super::LabError;
use crate::clock::ScenarioClock;
use crate::events::{EventKind, EventLog};
use crate::faults::{self, InstalledFault};
use crate::plan::NetFaultPlan;

/// One step of the fault timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Activate(usize),
    Heal(usize),
}

/// The faults of a run and the order their steps happen in.
pub struct FaultTimeline<'p> {
    faults: &'p [NetFaultPlan],
    steps: Vec<(Duration, Step)>,
    installed: Vec<Option<InstalledFault>>,
    log: EventLog,
}

impl<'p> FaultTimeline<'p> {
    /// A timeline for `faults`; nothing is installed yet.
    pub fn new(faults: &'p [NetFaultPlan], log: EventLog) -> Self {
        let mut steps: Vec<(Duration, Step)> = faults
            .iter()
            .enumerate()
            .flat_map(|(i, fault)| {
                let heal = fault.activation.until.map(|until| (until, Step::Heal(i)));
                [(fault.activation.from, Step::Activate(i))]
                    .into_iter()
                    .chain(heal)
            })
            .collect();
        steps.sort_by_key(|(at, step)| (*at, matches!(step, Step::Activate(_))));
        Self {
            faults,
            steps,
            installed: faults.iter().map(|_| None).collect(),
            log,
        }
    }

    /// Performs every step due at or before what `clock` reads now (zero before it starts);
    /// returns whether a fault was healed (so the SUT can be told to retry).
    pub async fn catch_up(
        &mut self,
        topology: &netns::Topology,
        clock: &ScenarioClock,
    ) -> Result<bool, LabError> {
        let elapsed = clock.elapsed();
        let mut healed = false;
        while let Some(&(at, step)) = self.steps.first() {
            if at > elapsed {
                break;
            }
            self.steps.remove(0);
            match step {
                Step::Activate(i) => {
                    let fault = &self.faults[i];
                    self.installed[i] = Some(faults::install(topology, fault, i).await?);
                    self.log.record(EventKind::FaultActivated {
                        fault: fault.description.clone(),
                    });
                }
                Step::Heal(i) => {
                    if let Some(installed) = self.installed[i].take() {
                        installed.heal().await?;
                        self.log.record(EventKind::FaultHealed {
                            fault: self.faults[i].description.clone(),
                        });
                        healed = true;
                    }
                }
            }
        }
        Ok(healed)
    }

    /// When the next step is due on the scenario clock; `None` when all are done.
    pub fn next_due(&self) -> Option<Duration> {
        self.steps.first().map(|(at, _)| *at)
    }

    /// Runs the remaining steps on time on `clock` (the scenario clock the DNS and SMTP faults
    /// read too), calling `on_heal` after each healing. Never returns `Ok` before every step is
    /// done; after that it stays pending.
    pub async fn drive<F, Fut>(
        &mut self,
        topology: &netns::Topology,
        clock: &ScenarioClock,
        mut on_heal: F,
    ) -> Result<(), LabError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        while let Some(due) = self.next_due() {
            clock.sleep_until(due).await;
            if self.catch_up(topology, clock).await? {
                on_heal().await;
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::family::Family;
    use crate::scenario::NetFault;

    fn fault(from: u64, until: Option<u64>) -> NetFaultPlan {
        NetFaultPlan {
            description: format!("reset {from}-{until:?}"),
            kind: NetFault::Reset,
            host: "mx1".into(),
            sut_host: "sut".into(),
            family: Family::Ipv6,
            target: "2001:db8:0:3::2".parse().unwrap(),
            sut: "2001:db8::2".parse().unwrap(),
            activation: Activation {
                from: Duration::from_secs(from),
                until: until.map(Duration::from_secs),
                first: None,
            },
        }
    }

    #[test]
    fn steps_are_ordered_by_time_with_healing_first_at_the_same_instant() {
        let faults = [fault(5, Some(10)), fault(0, Some(5)), fault(0, None)];
        let timeline = FaultTimeline::new(&faults, EventLog::new());
        let secs: Vec<(u64, Step)> = timeline
            .steps
            .iter()
            .map(|(at, step)| (at.as_secs(), *step))
            .collect();
        assert_eq!(
            secs,
            [
                (0, Step::Activate(1)),
                (0, Step::Activate(2)),
                (5, Step::Heal(1)),
                (5, Step::Activate(0)),
                (10, Step::Heal(0)),
            ]
        );
        assert_eq!(timeline.next_due(), Some(Duration::ZERO));
    }
}
