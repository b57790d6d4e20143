//! The terminal report: a verdict line per run and, for a failed run, the failure story.

use std::fmt::Write as _;

use crate::events::{Event, EventKind};
use crate::lab::RunReport;
use crate::verdict::Status;

/// At most this many timeline lines are shown for a failed run.
const TIMELINE_LIMIT: usize = 120;

/// One line: status (for a mutant's run KILLED, SURVIVED or ERROR), scenario, SUT, what
/// happened and how long the run took.
pub fn verdict_line(report: &RunReport) -> String {
    let status = match &report.mutant {
        Some(mutant) => mutant.status.to_string(),
        None => report.verdict.status.to_string(),
    };
    format!(
        "{:<5} {} [{}]  {}  ({:.2}s)",
        status,
        report.scenario,
        report.sut,
        report.verdict.summary,
        report.wall.as_secs_f64()
    )
}

/// The verdict line, followed for a failed run (or always, with `timeline`) by each failed
/// expectation and the timeline, with the events that show a failure marked `>`.
pub fn render(report: &RunReport, timeline: bool) -> String {
    let mut out = verdict_line(report);
    out.push('\n');
    if report.verdict.status == Status::Pass && !timeline {
        return out;
    }
    let brief = report.verdict.status == Status::Xfail && !timeline;
    for failure in &report.verdict.failures {
        let _ = writeln!(
            out,
            "      expected {}: {}",
            failure.expectation, failure.reason
        );
    }
    let evidence: Vec<usize> = report
        .verdict
        .failures
        .iter()
        .flat_map(|f| f.evidence.iter().copied())
        .collect();
    // A run that failed before anything happened has no timeline to show.
    if brief || report.events.is_empty() {
        return out;
    }
    let _ = writeln!(out, "      timeline:");
    let shown: Vec<(usize, &Event)> = report
        .events
        .iter()
        .enumerate()
        .filter(|(index, event)| evidence.contains(index) || worth_showing(event))
        .collect();
    let skipped = shown.len().saturating_sub(TIMELINE_LIMIT);
    for (index, event) in shown.into_iter().skip(skipped) {
        let marker = if evidence.contains(&index) { '>' } else { ' ' };
        let _ = writeln!(out, "     {marker}{event}");
    }
    if skipped > 0 {
        let _ = writeln!(out, "      ({skipped} earlier events not shown)");
    }
    out
}

/// Hides the noise of a timeline: Postfix's own bookkeeping lines.
fn worth_showing(event: &Event) -> bool {
    match &event.kind {
        EventKind::SutLog { line } => {
            !(line.contains("statistics:")
                || line.contains("daemon started")
                || line.contains("postfix/postlog"))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status) -> RunReport {
        crate::report::tests::sample(status)
    }

    #[test]
    fn a_pass_is_one_line() {
        let text = render(&report(Status::Pass), false);
        assert_eq!(
            text,
            "PASS  smtp/x [postfix]  delivered once via ipv4 by mx1  (1.50s)\n"
        );
    }

    #[test]
    fn a_pass_shows_its_timeline_on_request() {
        let text = render(&report(Status::Pass), true);
        assert!(
            text.contains("timeline:") && text.contains("status=sent"),
            "{text}"
        );
    }

    #[test]
    fn a_failure_tells_its_story_and_marks_the_evidence() {
        let text = render(&report(Status::Fail), false);
        assert!(text.starts_with("FAIL  smtp/x [postfix]"));
        assert!(text.contains("expected via = \"ipv6\": accepted over ipv4 by mx1"));
        assert!(text.contains("      0.005s  mxlab lab up"), "{text}");
        assert!(text.contains("    >   0.900s  sut   status=sent"), "{text}");
    }
}
