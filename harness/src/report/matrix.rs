//! The compatibility matrix: scenarios × SUTs, as Markdown and as a self-contained HTML page.
//!
//! Each cell says how the run ended, over which family the message went, how long it took
//! from injection, and for an xfail the known reason.

use std::fmt::Write as _;
use std::time::Duration;

use crate::family::Family;
use crate::lab::{MutantStatus, RunReport};
use crate::observe::{attempts, fallback, first_delivery};
use crate::verdict::Status;

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// How the run ended.
    pub status: Status,
    /// The family of the first acceptance, if the message was delivered.
    pub family: Option<Family>,
    /// Time from the first injection to the first acceptance.
    pub took: Option<Duration>,
    /// The first failed expectation, or the xfail reason, or the harness error.
    pub note: Option<String>,
    /// Time to fall back to the other address family, in the MTA's world time: from the first
    /// connection attempt to the first SYN on the other family, if the MTA switched.
    pub fallback: Option<Duration>,
}

impl Cell {
    /// The cell of one run.
    pub fn of(run: &RunReport) -> Cell {
        let (family, took) = first_delivery(&run.events)
            .map(|arrival| (arrival.family, arrival.took))
            .unzip();
        let note = match run.verdict.status {
            Status::Pass => None,
            Status::Xfail => run
                .verdict
                .summary
                .rsplit_once("(known: ")
                .map(|(_, reason)| reason.strip_suffix(')').unwrap_or(reason).to_string()),
            Status::Fail => run
                .verdict
                .failures
                .first()
                .map(|f| format!("expected {}: {}", f.expectation, f.reason)),
            Status::Error => Some(run.verdict.summary.clone()),
        };
        let fallback = fallback(&attempts(&run.events)).map(|fb| run.clock.to_world(fb.took));
        Cell {
            status: run.verdict.status,
            family,
            took,
            note,
            fallback,
        }
    }

    /// `PASS ipv4 0.31s`, `FAIL ipv6 2.00s`, `XFAIL`, `ERROR`; with `fallback 30s` (world
    /// time) when the MTA switched address family.
    pub fn headline(&self) -> String {
        let mut text = self.status.to_string();
        if let Some(family) = self.family {
            let _ = write!(text, " {family}");
        }
        if let Some(took) = self.took {
            let _ = write!(text, " {:.2}s", took.as_secs_f64());
        }
        if let Some(fallback) = self.fallback {
            let secs = fallback.as_secs_f64();
            let _ = if secs >= 10.0 {
                write!(text, " fallback {secs:.0}s")
            } else {
                write!(text, " fallback {secs:.1}s")
            };
        }
        text
    }
}

/// The rows (scenarios, in first-seen order) and columns (SUTs, in first-seen order; a
/// mutant's run is counted in the mutants column, not given a column of its own).
fn axes(runs: &[RunReport]) -> (Vec<&str>, Vec<&str>) {
    let mut scenarios: Vec<&str> = Vec::new();
    let mut suts: Vec<&str> = Vec::new();
    for run in runs {
        if !scenarios.contains(&run.scenario.as_str()) {
            scenarios.push(&run.scenario);
        }
        if run.mutant.is_none() && !suts.contains(&run.sut.as_str()) {
            suts.push(&run.sut);
        }
    }
    (scenarios, suts)
}

/// Whether any mutant ran, so that the matrix gets a mutants column.
fn has_mutants(runs: &[RunReport]) -> bool {
    runs.iter().any(|run| run.mutant.is_some())
}

/// How many of a scenario's mutants it killed: `2/2 killed`, or `—` when none ran.
fn mutants_killed(runs: &[RunReport], scenario: &str) -> String {
    let statuses: Vec<MutantStatus> = runs
        .iter()
        .filter(|run| run.scenario == scenario)
        .filter_map(|run| run.mutant.as_ref().map(|mutant| mutant.status))
        .collect();
    if statuses.is_empty() {
        return "—".to_string();
    }
    let killed = statuses
        .iter()
        .filter(|status| **status == MutantStatus::Killed)
        .count();
    format!("{killed}/{} killed", statuses.len())
}

fn cell<'r>(runs: &'r [RunReport], scenario: &str, sut: &str) -> Option<&'r RunReport> {
    runs.iter()
        .find(|run| run.mutant.is_none() && run.scenario == scenario && run.sut == sut)
}

/// SUT name → the MTA's version as it reports it (see [`SutKind::version`]), for the column
/// headings.
///
/// [`SutKind::version`]: crate::sut::SutKind::version
pub type Versions = std::collections::BTreeMap<String, String>;

/// A column heading: the SUT's name and, if known, its version (`postfix 3.7.11`).
fn heading(sut: &str, versions: &Versions) -> String {
    match versions.get(sut) {
        Some(version) => format!("{sut} {version}"),
        None => sut.to_string(),
    }
}

/// The matrix as a Markdown table; notes follow the table, numbered.
pub fn markdown(runs: &[RunReport]) -> String {
    markdown_with(runs, &Versions::new())
}

/// [`markdown`] with each SUT's version in its column heading.
pub fn markdown_with(runs: &[RunReport], versions: &Versions) -> String {
    let (scenarios, suts) = axes(runs);
    let mutants = has_mutants(runs);
    let headings: Vec<String> = suts.iter().map(|sut| heading(sut, versions)).collect();
    let mut out = format!(
        "| scenario | {} |{}\n|---|{}{}\n",
        headings.join(" | "),
        if mutants { " mutants |" } else { "" },
        "---|".repeat(suts.len()),
        if mutants { "---|" } else { "" }
    );
    let mut notes = Vec::new();
    for scenario in &scenarios {
        let _ = write!(out, "| {scenario} |");
        for sut in &suts {
            let text = cell(runs, scenario, sut).map_or_else(
                || "—".to_string(),
                |run| {
                    let cell = Cell::of(run);
                    match &cell.note {
                        Some(note) => {
                            notes.push(note.replace('|', "\\|"));
                            format!("{} [{}]", cell.headline(), notes.len())
                        }
                        None => cell.headline(),
                    }
                },
            );
            let _ = write!(out, " {text} |");
        }
        if mutants {
            let _ = write!(out, " {} |", mutants_killed(runs, scenario));
        }
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push('\n');
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "{}. {note}", i + 1);
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The matrix as a self-contained HTML page (inline CSS, no scripts, no external assets).
pub fn html(runs: &[RunReport]) -> String {
    html_with(runs, &Versions::new())
}

/// [`html`] with each SUT's version in its column heading.
pub fn html_with(runs: &[RunReport], versions: &Versions) -> String {
    let (scenarios, suts) = axes(runs);
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>mxlab compatibility matrix</title><style>\
body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
th,td{border:1px solid #bbb;padding:.35em .6em;text-align:left;vertical-align:top}\
th{background:#eee}.pass{background:#dff5dd}.fail{background:#f8d7d5}.xfail{background:#fdf0c8}\
.error{background:#e3e3e3}small{display:block;color:#444;max-width:28em}\
</style></head><body>\n<h1>mxlab compatibility matrix</h1>\n<table id=\"matrix\">\n<thead><tr><th>scenario</th>",
    );
    for sut in &suts {
        let _ = write!(out, "<th>{}</th>", escape(&heading(sut, versions)));
    }
    let mutants = has_mutants(runs);
    if mutants {
        out.push_str("<th>mutants</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for scenario in &scenarios {
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(scenario));
        for sut in &suts {
            match cell(runs, scenario, sut) {
                None => out.push_str("<td>—</td>"),
                Some(run) => {
                    let cell = Cell::of(run);
                    let class = format!("{:?}", cell.status).to_ascii_lowercase();
                    let _ = write!(out, "<td class=\"{class}\">{}", escape(&cell.headline()));
                    if let Some(note) = &cell.note {
                        let _ = write!(out, "<small>{}</small>", escape(note));
                    }
                    out.push_str("</td>");
                }
            }
        }
        if mutants {
            let _ = write!(out, "<td>{}</td>", escape(&mutants_killed(runs, scenario)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventKind};
    use crate::lab::MutantRun;
    use crate::report::tests::sample;

    fn runs() -> Vec<RunReport> {
        let mut delivered = sample(Status::Pass);
        delivered.events.insert(
            0,
            Event {
                at: Duration::from_millis(100),
                kind: EventKind::MessageInjected {
                    from: "alice@sender.test".into(),
                    to: vec!["bob@example.test".into()],
                    reply: "250 ok".into(),
                },
            },
        );
        delivered.events.push(Event {
            at: Duration::from_millis(400),
            kind: EventKind::MessageAccepted {
                host: "mx1".into(),
                session: 2,
                family: Family::Ipv4,
                from: "alice@sender.test".into(),
                to: vec!["bob@example.test".into()],
                size: 10,
                digest: "aa".into(),
                message_id: None,
            },
        });
        let mut failed = sample(Status::Fail);
        failed.sut = "exim".into();
        vec![delivered, failed]
    }

    #[test]
    fn markdown_has_a_row_per_scenario_and_a_column_per_sut() {
        let text = markdown(&runs());
        assert!(
            text.starts_with("| scenario | postfix | exim |\n|---|---|---|\n"),
            "{text}"
        );
        assert!(
            text.contains("| smtp/x | PASS ipv4 0.30s | FAIL [1] |"),
            "{text}"
        );
        assert!(
            text.contains("1. expected via = \"ipv6\": accepted over ipv4 by mx1"),
            "{text}"
        );
    }

    #[test]
    fn column_headings_name_each_mta_version_where_known() {
        let versions = Versions::from([("postfix".to_string(), "3.7.11".to_string())]);
        let text = markdown_with(&runs(), &versions);
        assert!(
            text.starts_with("| scenario | postfix 3.7.11 | exim |\n"),
            "{text}"
        );
        assert!(
            text.contains("| smtp/x | PASS ipv4 0.30s | FAIL [1] |"),
            "{text}"
        );
        let page = html_with(&runs(), &versions);
        assert!(
            page.contains("<th>postfix 3.7.11</th><th>exim</th>"),
            "{page}"
        );
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let page = html(&runs());
        assert!(page.contains("<tr><th scope=\"row\">smtp/x</th><td class=\"pass\">PASS ipv4 0.30s</td><td class=\"fail\">FAIL"), "{page}");
        assert!(page.contains("expected via = &quot;ipv6&quot;"), "{page}");
        assert!(
            !page.contains("http://") && !page.contains("https://") && !page.contains("<script")
        );
    }

    /// A run of a mutant of smtp/x against Postfix, with the given outcome.
    fn mutant_run(name: &str, status: MutantStatus) -> RunReport {
        let mut run = sample(Status::Pass);
        run.sut = format!("postfix::mutant-{name}");
        run.mutant = Some(MutantRun {
            name: name.into(),
            sut: "postfix".into(),
            status,
            change: "smtp_mx_address_limit = \"1\"".into(),
            reason: "r".into(),
            scenario_status: Status::Fail,
        });
        run
    }

    #[test]
    fn mutants_are_counted_per_scenario_not_given_columns() {
        let mut all = runs();
        all.push(mutant_run("a", MutantStatus::Killed));
        all.push(mutant_run("b", MutantStatus::Survived));
        let text = markdown(&all);
        assert!(
            text.starts_with("| scenario | postfix | exim | mutants |\n|---|---|---|---|\n"),
            "{text}"
        );
        assert!(text.contains("| FAIL [1] | 1/2 killed |"), "{text}");
        let page = html(&all);
        assert!(page.contains("<th>mutants</th>") && page.contains("<td>1/2 killed</td>"));
        assert!(!page.contains("mutant-a"), "{page}");
        // Without mutants, no column.
        assert!(!markdown(&runs()).contains("mutants"));
    }

    #[test]
    fn an_xfail_reason_keeps_its_own_closing_parenthesis() {
        let mut known = sample(Status::Xfail);
        known.verdict.summary =
            "deferred (known: retries after 400 s (400·n² s, no setting))".into();
        let cell = Cell::of(&known);
        assert_eq!(
            cell.note.as_deref(),
            Some("retries after 400 s (400·n² s, no setting)")
        );
    }
}
