//! The `mxlab` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::StreamExt;

use crate::lab;
use crate::report::console;
use crate::scenario::{self, Scenario};
use crate::sut::SutKind;
use crate::verdict::Status;

/// Exit status when a scenario failed.
const EXIT_FAILED: u8 = 1;
/// Exit status for bad input or a harness problem (the MTA was not judged).
const EXIT_USAGE: u8 = 2;
/// Exit status after SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

/// mxlab: reproduce dual-stack mail delivery failures and check what a real MTA does in them.
#[derive(Debug, Parser)]
#[command(name = "mxlab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios against systems under test and print a verdict per run.
    Run(RunArgs),
    /// List scenarios with their tags and descriptions.
    List {
        /// Scenario files or directories; default: ./scenarios
        paths: Vec<PathBuf>,
        /// Only scenarios with this tag (repeatable: all must match).
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Remove what runs killed with SIGKILL left behind (work directories, stray processes).
    Gc,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario files or directories (searched recursively for *.toml); default: ./scenarios
    paths: Vec<PathBuf>,
    /// The MTAs to test, comma-separated; every scenario runs against each.
    #[arg(long, value_delimiter = ',', default_value = "postfix")]
    sut: Vec<SutKind>,
    /// Print the timeline of every run, not only of failed ones.
    #[arg(long)]
    timeline: bool,
    /// How many runs at once (each in its own namespaces).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Also write every run, with its events, as JSON (schema mxlab-report/1) to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write a JUnit XML report (one test case per scenario × SUT) to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

impl Cli {
    /// Runs the command and returns the process's exit status.
    pub async fn execute(self) -> ExitCode {
        match self.command {
            Command::Run(args) => run(args).await,
            Command::List { paths, tag } => list(paths, &tag),
            Command::Gc => gc(),
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        paths,
        sut: suts,
        timeline,
        jobs,
        json,
        junit,
    } = args;
    let Some((scenarios, bad_input)) = load_scenarios(paths) else {
        return ExitCode::from(EXIT_USAGE);
    };
    for sut in &suts {
        if let Err(err) = preflight(sut) {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    }

    let (mut passed, mut failed, mut xfailed, mut errors) = (0, 0, 0, 0);
    let mut finished = Vec::new();
    let runs = scenarios
        .iter()
        .flat_map(|scenario| suts.iter().map(move |sut| (scenario, sut)));
    let mut reports = futures::stream::iter(runs)
        .map(|(scenario, sut)| async move { (scenario, sut, lab::run(scenario, sut).await) })
        .buffered(jobs.into());
    loop {
        let next = tokio::select! {
            next = reports.next() => next,
            signal = interrupted() => {
                eprintln!("interrupted by {signal}: every lab torn down");
                return ExitCode::from(EXIT_INTERRUPTED);
            }
        };
        let Some((scenario, sut, report)) = next else {
            break;
        };
        let report = report.unwrap_or_else(|err| lab::RunReport::harness_error(scenario, sut, &err));
        print!("{}", console::render(&report, timeline));
        match report.verdict.status {
            Status::Pass => passed += 1,
            Status::Fail => failed += 1,
            Status::Xfail => xfailed += 1,
            Status::Error => errors += 1,
        }
        finished.push(report);
    }
    let written = [
        (json, crate::report::json::render as fn(&[lab::RunReport]) -> String),
        (junit, crate::report::junit::render),
    ];
    for (path, render) in written {
        let Some(path) = path else { continue };
        if let Err(err) = std::fs::write(&path, render(&finished)) {
            eprintln!("error: cannot write {}: {err}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    println!("{passed} passed, {failed} failed, {xfailed} xfailed, {errors} errors");
    if bad_input || errors > 0 {
        ExitCode::from(EXIT_USAGE)
    } else if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads every scenario under `paths` (default ./scenarios), reporting malformed ones on
/// stderr; `None` when nothing usable was found. The flag tells whether any file was bad.
fn load_scenarios(paths: Vec<PathBuf>) -> Option<(Vec<Scenario>, bool)> {
    let paths = if paths.is_empty() {
        let default = PathBuf::from("scenarios");
        if !default.is_dir() {
            eprintln!("error: no scenario given and ./scenarios does not exist: run mxlab from its checkout or name scenario files");
            return None;
        }
        vec![default]
    } else {
        paths
    };
    let files = match scenario::find_scenarios(&paths) {
        Ok(files) => files,
        Err(err) => {
            eprintln!("error: {err}");
            return None;
        }
    };
    let mut bad_input = false;
    let mut scenarios = Vec::new();
    for file in &files {
        match scenario::load(file) {
            Ok(scenario) => scenarios.push(scenario),
            Err(err) => {
                eprintln!("error: {err}");
                bad_input = true;
            }
        }
    }
    if scenarios.is_empty() {
        if !bad_input {
            eprintln!("error: no scenario files (*.toml) found in the given paths");
        }
        return None;
    }
    Some((scenarios, bad_input))
}

fn list(paths: Vec<PathBuf>, tags: &[String]) -> ExitCode {
    let Some((scenarios, bad_input)) = load_scenarios(paths) else {
        return ExitCode::from(EXIT_USAGE);
    };
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for scenario in scenarios
        .iter()
        .filter(|s| tags.iter().all(|tag| s.tags.contains(tag)))
    {
        println!(
            "{:<width$}  [{}]  {}",
            scenario.name,
            scenario.tags.join(", "),
            scenario.description
        );
    }
    if bad_input {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

fn gc() -> ExitCode {
    match crate::gc::collect(&std::env::temp_dir()) {
        Ok(collected) => {
            for dir in &collected.directories {
                println!("removed {}", dir.display());
            }
            for pid in &collected.processes {
                println!("killed process {pid}");
            }
            if collected.directories.is_empty() {
                println!("nothing left behind");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Checks privileges and the SUT before anything is built, so these problems get one line.
fn preflight(sut: &SutKind) -> anyhow::Result<()> {
    netns::Namespace::create("mxlab-preflight")?;
    sut.check_installed()?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
