//! Reporters: render finished runs. All of them read the same [`RunReport`](crate::lab::RunReport).

pub mod console;
pub mod flaky;
pub mod json;
pub mod junit;
pub mod matrix;
pub mod progress;

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use crate::events::{Event, EventKind};
    use crate::lab::RunReport;
    use crate::verdict::{Failure, Status, Verdict};

    /// A small run report for reporter tests; failed ones fail `via`.
    pub(crate) fn sample(status: Status) -> RunReport {
        RunReport {
            clock: crate::clock::ClockRate::DEFAULT,
            timeouts: crate::sut::Timeouts::Stock,
            scenario: "smtp/x".into(),
            sut: "postfix".into(),
            verdict: Verdict {
                status,
                summary: "delivered once via ipv4 by mx1".into(),
                failures: match status {
                    Status::Pass => vec![],
                    _ => vec![Failure {
                        key: Some(crate::scenario::Expectation::Via),
                        expectation: "via = \"ipv6\"".into(),
                        reason: "accepted over ipv4 by mx1".into(),
                        evidence: vec![1],
                    }],
                },
            },
            events: vec![
                Event {
                    at: Duration::from_millis(5),
                    kind: EventKind::Harness {
                        message: "lab up".into(),
                    },
                },
                Event {
                    at: Duration::from_millis(900),
                    kind: EventKind::SutLog {
                        line: "status=sent".into(),
                    },
                },
            ],
            wall: Duration::from_millis(1500),
            topology_up: Duration::from_millis(10),
            teardown: Duration::from_millis(10),
            mutant: None,
        }
    }
}
