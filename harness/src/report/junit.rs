//! The JUnit XML report: one test case per scenario × SUT, the failure story as the message.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::console;
use crate::lab::RunReport;
use crate::verdict::Status;

/// The report of `runs` as JUnit XML: a test suite per SUT, test cases named like
/// `smtp::v6-greeting-421` with the SUT as class name.
pub fn render(runs: &[RunReport]) -> String {
    let mut report = Report::new("mxlab");
    let mut suts: Vec<&str> = runs.iter().map(|run| run.sut.as_str()).collect();
    suts.dedup();
    suts.sort_unstable();
    suts.dedup();
    for sut in suts {
        let mut suite = TestSuite::new(sut);
        for run in runs.iter().filter(|run| run.sut == sut) {
            let status = match run.verdict.status {
                Status::Pass => TestCaseStatus::success(),
                Status::Xfail => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(format!("xfail: {}", run.verdict.summary));
                    status
                }
                Status::Fail | Status::Error => {
                    let kind = if run.verdict.status == Status::Fail {
                        NonSuccessKind::Failure
                    } else {
                        NonSuccessKind::Error
                    };
                    let mut status = TestCaseStatus::non_success(kind);
                    let first = run.verdict.failures.first().map_or_else(
                        || run.verdict.summary.clone(),
                        |f| format!("expected {}: {}", f.expectation, f.reason),
                    );
                    status.set_message(first);
                    status.set_description(console::render(run, true));
                    status
                }
            };
            let mut case = TestCase::new(run.scenario.replace('/', "::"), status);
            case.set_classname(format!("mxlab.{sut}"));
            case.set_time(run.wall);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().expect("the JUnit report serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn a_failure_carries_its_story_and_a_pass_is_a_plain_case() {
        let mut pass = sample(Status::Pass);
        pass.scenario = "baseline/y".into();
        let xml = render(&[sample(Status::Fail), pass]);
        assert!(
            xml.contains("<testsuite name=\"postfix\" tests=\"2\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"smtp::x\" classname=\"mxlab.postfix\""),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<failure message=\"expected via = &quot;ipv6&quot;: accepted over ipv4 by mx1\""
            ),
            "{xml}"
        );
        assert!(xml.contains("timeline:"), "{xml}");
        assert!(xml.contains("<testcase name=\"baseline::y\""), "{xml}");
    }
}
