//! Mutant runs: a scenario run against a known-bad configuration (`[[mutant]]`), which must
//! make it fail. A mutant the scenario fails is killed; one it passes survived, and the
//! scenario does not tell a correct MTA from that broken one.

use std::fmt;

use serde::Serialize;

use super::{run_with, RunOptions, RunReport};
use crate::scenario::{Mutant, Scenario};
use crate::sut::SutKind;
use crate::verdict::{Failure, Status, Verdict};

/// What a mutant's run showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MutantStatus {
    /// The scenario failed for the mutant: it tells the broken configuration apart.
    Killed,
    /// The scenario passed (or xfailed) for the mutant: it does not tell it apart.
    Survived,
    /// The harness could not run the mutant: says nothing either way.
    Error,
}

impl fmt::Display for MutantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            MutantStatus::Killed => "KILLED",
            MutantStatus::Survived => "SURVIVED",
            MutantStatus::Error => "ERROR",
        })
    }
}

/// The mutant a run report belongs to, and what its run showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MutantRun {
    /// The mutant's name, e.g. `no-balance`.
    pub name: String,
    /// The mutated SUT, e.g. `postfix` or `reference:never-ipv4`.
    pub sut: String,
    /// Killed, survived or error.
    pub status: MutantStatus,
    /// The mutated configuration, e.g. `smtp_balance_inet_protocols = "no"`.
    pub change: String,
    /// Why the configuration is wrong, from the scenario.
    pub reason: String,
    /// The scenario's own verdict for the mutant (pass, fail, xfail or error).
    pub scenario_status: Status,
}

/// The name a mutant's run goes by in reports and test names: `postfix::mutant-no-balance`.
pub fn mutant_sut_name(mutant: &Mutant) -> String {
    format!("{}::mutant-{}", mutant.sut.get_ref(), mutant.name.get_ref())
}

/// Runs `mutant` of `scenario` and judges it: the report's verdict passes when the mutant was
/// killed, fails when it survived and is an error when the harness could not run it.
pub async fn run_mutant(scenario: &Scenario, mutant: &Mutant, options: &RunOptions) -> RunReport {
    let (mutated, sut) = (mutant.apply(scenario), SutKind::from(*mutant.sut.get_ref()));
    let report = run_with(&mutated, &sut, options)
        .await
        .unwrap_or_else(|err| RunReport::harness_error(&mutated, &sut, options, &err));
    judge(mutant, report)
}

/// Turns the scenario's verdict for a mutant's run into the mutant's verdict.
pub fn judge(mutant: &Mutant, mut report: RunReport) -> RunReport {
    let scenario_status = report.verdict.status;
    let status = match scenario_status {
        Status::Fail => MutantStatus::Killed,
        Status::Pass | Status::Xfail => MutantStatus::Survived,
        Status::Error => MutantStatus::Error,
    };
    let run = MutantRun {
        name: mutant.name.get_ref().clone(),
        sut: mutant.sut.get_ref().name().to_string(),
        status,
        change: mutant.change(),
        reason: mutant.reason.get_ref().clone(),
        scenario_status,
    };
    report.verdict = match status {
        MutantStatus::Killed => Verdict {
            status: Status::Pass,
            summary: format!(
                "killed: the scenario fails with {} ({})",
                run.change, report.verdict.summary
            ),
            failures: Vec::new(),
        },
        MutantStatus::Survived => {
            let message = format!(
                "the scenario does not tell a correct {} from one with {} ({})",
                mutant.sut.get_ref().correct(),
                run.change,
                run.reason
            );
            Verdict {
                status: Status::Fail,
                summary: format!(
                    "survived: {} with {}: {}",
                    scenario_status.to_string().trim().to_lowercase(),
                    run.change,
                    report.verdict.summary
                ),
                failures: vec![Failure {
                    key: None,
                    expectation: format!("mutant {} fails the scenario", run.name),
                    reason: message,
                    evidence: Vec::new(),
                }],
            }
        }
        MutantStatus::Error => report.verdict,
    };
    report.sut = mutant_sut_name(mutant);
    report.mutant = Some(run);
    report
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::report::tests::sample;

    fn mutant(extra: &str) -> Mutant {
        let text = format!(
            "description = \"d\"\n[[mx]]\nname = \"mx1\"\ndomain = \"example.test\"\n\
             [[message]]\nto = [\"bob@example.test\"]\n[expect]\noutcome = \"delivered\"\n\
             [[mutant]]\nname = \"no-balance\"\n{extra}reason = \"field bug 3\"\n"
        );
        let scenario = crate::scenario::parse(Path::new("s.toml"), &text).unwrap();
        scenario.mutants[0].clone()
    }

    fn postfix() -> Mutant {
        mutant("sut = \"postfix\"\nsettings = { smtp_balance_inet_protocols = \"no\" }\n")
    }

    #[test]
    fn a_failed_scenario_kills_the_mutant() {
        let report = judge(&postfix(), sample(Status::Fail));
        let run = report.mutant.as_ref().unwrap();
        assert_eq!(run.status, MutantStatus::Killed);
        assert_eq!(run.scenario_status, Status::Fail);
        assert_eq!(report.verdict.status, Status::Pass);
        assert_eq!(report.sut, "postfix::mutant-no-balance");
    }

    #[test]
    fn a_passed_or_xfailed_scenario_lets_the_mutant_survive_and_fails_the_run() {
        for status in [Status::Pass, Status::Xfail] {
            let report = judge(&postfix(), sample(status));
            assert_eq!(
                report.mutant.as_ref().unwrap().status,
                MutantStatus::Survived
            );
            assert_eq!(report.verdict.status, Status::Fail);
            assert_eq!(
                report.verdict.failures[0].reason,
                "the scenario does not tell a correct Postfix from one with \
                 smtp_balance_inet_protocols = \"no\" (field bug 3)"
            );
        }
        let reference = mutant("sut = \"reference:never-ipv4\"\n");
        let report = judge(&reference, sample(Status::Pass));
        assert_eq!(
            report.verdict.failures[0].reason,
            "the scenario does not tell a correct reference sender from one with bug \
             never-ipv4 (field bug 3)"
        );
        assert_eq!(report.sut, "reference:never-ipv4::mutant-no-balance");
    }

    #[test]
    fn an_error_is_no_kill() {
        let report = judge(&postfix(), sample(Status::Error));
        assert_eq!(report.mutant.as_ref().unwrap().status, MutantStatus::Error);
        assert_eq!(report.verdict.status, Status::Error);
    }
}
