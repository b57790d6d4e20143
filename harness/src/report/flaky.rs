//! Flaky pairs: a scenario × SUT run several times (`--repeat`) with different verdicts.

use std::collections::BTreeMap;

use crate::lab::RunReport;
use crate::verdict::Status;

/// One scenario × SUT whose repeated runs did not agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaky {
    /// The scenario.
    pub scenario: String,
    /// The SUT (a mutant run's SUT name).
    pub sut: String,
    /// Each run's status and summary, in the order of the runs.
    pub outcomes: Vec<(Status, String)>,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FLAKY {} × {}:", self.scenario, self.sut)?;
        for (index, (status, summary)) in self.outcomes.iter().enumerate() {
            write!(f, "\n  run {}: {status} {summary}", index + 1)?;
        }
        Ok(())
    }
}

/// The scenario × SUT pairs among `runs` whose verdict status differs between runs, in the
/// order they first appear.
pub fn flaky(runs: &[RunReport]) -> Vec<Flaky> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut by_pair: BTreeMap<(String, String), Vec<(Status, String)>> = BTreeMap::new();
    for run in runs {
        let key = (run.scenario.clone(), run.sut.clone());
        if !by_pair.contains_key(&key) {
            order.push(key.clone());
        }
        by_pair
            .entry(key)
            .or_default()
            .push((run.verdict.status, run.verdict.summary.clone()));
    }
    order
        .into_iter()
        .filter_map(|key| {
            let outcomes = by_pair.remove(&key)?;
            let first = outcomes.first()?.0;
            let differs = outcomes.iter().any(|(status, _)| *status != first);
            differs.then_some(Flaky {
                scenario: key.0,
                sut: key.1,
                outcomes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn only_pairs_whose_statuses_differ_are_flaky() {
        let mut other = sample(Status::Pass);
        other.scenario = "smtp/y".into();
        let runs = vec![
            sample(Status::Pass),
            other.clone(),
            sample(Status::Fail),
            other,
            sample(Status::Pass),
        ];
        let found = flaky(&runs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].scenario, "smtp/x");
        assert_eq!(
            found[0]
                .outcomes
                .iter()
                .map(|(status, _)| *status)
                .collect::<Vec<_>>(),
            vec![Status::Pass, Status::Fail, Status::Pass]
        );
        assert!(found[0]
            .to_string()
            .starts_with("FLAKY smtp/x × postfix:\n  run 1: PASS"));
        assert!(flaky(&[sample(Status::Fail), sample(Status::Fail)]).is_empty());
    }
}
