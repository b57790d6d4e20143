//! The JSON report: every run with its verdict and its whole event log.
//!
//! Schema `mxlab-report/1` (stable; fields are only ever added):
//! `{ "schema": "mxlab-report/1", "runs": [ { "scenario", "sut", "status"
//! ("pass" | "fail" | "xfail" | "error"), "summary", "failures": [ { "expectation", "reason",
//! "evidence": [event index] } ], "wall_seconds", "topology_up_seconds", "teardown_seconds",
//! "clock_rate" (world seconds per wall second: 1 on the real clock, 100 at x100),
//! "world_seconds" (the run's wall time in the MTA's world time), "timeouts" ("stock" |
//! "fast"), "events": [ { "at" (wall seconds since the run's start), "kind", ...fields of the
//! kind } ], and for a mutant's run (`mxlab run --mutants`; its `sut` is then
//! `SUT::mutant-NAME` and its `status` pass for a kill, fail for a survivor) "mutant": { "name",
//! "sut", "status" ("killed" | "survived" | "error"), "change", "reason", "scenario_status" } } ] }`.

use serde::Serialize;

use crate::events::Event;
use crate::lab::{MutantRun, RunReport};
use crate::verdict::{Failure, Status};

/// The name and version of the schema.
pub const SCHEMA: &str = "mxlab-report/1";

#[derive(Serialize)]
struct Document<'r> {
    schema: &'static str,
    runs: Vec<Run<'r>>,
}

#[derive(Serialize)]
struct Run<'r> {
    scenario: &'r str,
    sut: &'r str,
    status: Status,
    summary: &'r str,
    failures: &'r [Failure],
    wall_seconds: f64,
    topology_up_seconds: f64,
    teardown_seconds: f64,
    clock_rate: u32,
    world_seconds: f64,
    timeouts: &'static str,
    events: &'r [Event],
    #[serde(skip_serializing_if = "Option::is_none")]
    mutant: Option<&'r MutantRun>,
}

/// The report of `runs` as pretty-printed JSON.
pub fn render(runs: &[RunReport]) -> String {
    let document = Document {
        schema: SCHEMA,
        runs: runs
            .iter()
            .map(|run| Run {
                scenario: &run.scenario,
                sut: &run.sut,
                status: run.verdict.status,
                summary: &run.verdict.summary,
                failures: &run.verdict.failures,
                wall_seconds: run.wall.as_secs_f64(),
                topology_up_seconds: run.topology_up.as_secs_f64(),
                teardown_seconds: run.teardown.as_secs_f64(),
                clock_rate: run.clock.times(),
                world_seconds: run.clock.to_world(run.wall).as_secs_f64(),
                timeouts: run.timeouts.name(),
                events: &run.events,
                mutant: run.mutant.as_ref(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&document).expect("the report serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample;

    #[test]
    fn the_schema_holds_verdict_failures_and_events() {
        let value: serde_json::Value =
            serde_json::from_str(&render(&[sample(Status::Fail)])).unwrap();
        assert_eq!(value["schema"], "mxlab-report/1");
        let run = &value["runs"][0];
        assert_eq!(run["scenario"], "smtp/x");
        assert_eq!(run["sut"], "postfix");
        assert_eq!(run["status"], "fail");
        assert_eq!(run["failures"][0]["expectation"], "via = \"ipv6\"");
        assert_eq!(run["failures"][0]["evidence"][0], 1);
        assert_eq!(run["events"][1]["kind"], "sut_log");
        assert_eq!(run["events"][1]["line"], "status=sent");
        assert!((run["events"][1]["at"].as_f64().unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(run["clock_rate"], 100);
        assert_eq!(run["timeouts"], "stock");
        let (wall, world) = (
            run["wall_seconds"].as_f64().unwrap(),
            run["world_seconds"].as_f64().unwrap(),
        );
        assert!((world - 100.0 * wall).abs() < 1e-6, "{wall} {world}");
        assert!(run.get("mutant").is_none(), "{run}");
    }

    #[test]
    fn a_mutant_run_carries_its_status() {
        let scenario = crate::scenario::parse(
            std::path::Path::new("s.toml"),
            "description = \"d\"\n[[mx]]\nname = \"mx1\"\ndomain = \"example.test\"\n\
             [[message]]\nto = [\"bob@example.test\"]\n[expect]\noutcome = \"delivered\"\n\
             [[mutant]]\nname = \"m\"\nsut = \"reference:never-ipv4\"\nreason = \"r\"\n",
        )
        .unwrap();
        let report = crate::lab::judge_mutant(&scenario.mutants[0], sample(Status::Pass));
        let value: serde_json::Value = serde_json::from_str(&render(&[report])).unwrap();
        let run = &value["runs"][0];
        assert_eq!(run["sut"], "reference:never-ipv4::mutant-m");
        assert_eq!(run["status"], "fail");
        assert_eq!(run["mutant"]["status"], "survived");
        assert_eq!(run["mutant"]["scenario_status"], "pass");
        assert_eq!(run["mutant"]["change"], "bug never-ipv4");
    }
}
