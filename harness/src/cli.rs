//! The `mxlab` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures::StreamExt;

use crate::clock::ClockRate;
use crate::lab;
use crate::report::console;
use crate::report::progress::Progress;
use crate::scenario::{self, Scenario};
use crate::sut::{SutKind, Timeouts};
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
    /// Run scenarios × SUTs and write the compatibility matrix as Markdown and HTML.
    Matrix(MatrixArgs),
    /// Build a scenario's world, start the SUT, and open a shell in the SUT's namespace (dig
    /// and swaks work against the scenario's DNS and MX); exiting the shell tears it down.
    Explore {
        /// The scenario file.
        scenario: PathBuf,
        /// The MTA to start.
        #[arg(long, default_value = "postfix")]
        sut: SutKind,
        /// The shell to run.
        #[arg(long, default_value = "/bin/bash")]
        shell: String,
        #[command(flatten)]
        clock: ClockArgs,
    },
    /// List scenarios with their tags and descriptions.
    List {
        /// Scenario files or directories; default: ./scenarios
        paths: Vec<PathBuf>,
        /// Only scenarios with this tag (repeatable: all must match).
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Say what this machine can run: privileges, tools, and which SUTs are usable.
    Doctor {
        /// Also check this SUT end to end (a driver file PATH.toml, or a built-in name): that
        /// it parses and is installed, its version, and a baseline delivery in a lab, with the
        /// MTA's own log when it fails.
        #[arg(long)]
        sut: Option<SutKind>,
    },
    /// Remove what runs killed with SIGKILL left behind (work directories, stray processes).
    Gc,
    /// Run seeded random worlds against the SUTs, judge them against invariants and each
    /// other, and shrink what breaks to scenario files in --out.
    Chaos(ChaosArgs),
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
    /// The SUTs every world runs against, comma-separated (e.g. postfix,exim,opensmtpd,reference
    /// or reference:BUG).
    #[arg(long, value_delimiter = ',', required = true)]
    sut: Vec<SutKind>,
    /// The seed: the same seed draws the same worlds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many worlds to draw (each runs against every SUT).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Directory for the shrunk scenario files and campaign.txt.
    #[arg(long, default_value = "mxlab-chaos")]
    out: PathBuf,
    /// How many runs at once.
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// At most this many candidate runs to shrink each finding.
    #[arg(long, default_value_t = 16)]
    shrink: usize,
    #[command(flatten)]
    clock: ClockArgs,
}

/// The world clock and the SUT's timers, shared by `run`, `matrix` and `explore`.
#[derive(Debug, Clone, Copy, clap::Args)]
struct ClockArgs {
    /// The world clock: `xN` runs the MTA's own timers N times faster (under libfaketime) and
    /// scales the scenario's durations with them; `real` is the wall clock. Default: the
    /// scenario's `clock`, else x100 (with --timeouts fast: real).
    #[arg(long, value_name = "RATE")]
    clock: Option<ClockRate>,
    /// The MTA's timers: `stock` as shipped, or `fast` (mxlab's retuned short timers, for
    /// MTAs that cannot be accelerated; the verdict then describes a retuned MTA).
    #[arg(long, value_enum, default_value_t = Timeouts::Stock)]
    timeouts: Timeouts,
}

impl ClockArgs {
    fn run_options(self, pcap_dir: Option<PathBuf>) -> lab::RunOptions {
        lab::RunOptions {
            pcap_dir,
            clock: self.clock,
            timeouts: self.timeouts,
        }
    }
}

#[derive(Debug, clap::Args)]
struct MatrixArgs {
    /// Scenario files or directories; default: ./scenarios
    paths: Vec<PathBuf>,
    /// The MTAs to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "postfix")]
    sut: Vec<SutKind>,
    /// How many runs at once.
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Directory for matrix.md and matrix.html.
    #[arg(long, default_value = "mxlab-matrix")]
    out: PathBuf,
    /// Also run each scenario's `[[mutant]]` configurations of the SUTs compared; the matrix
    /// gets a column with how many of them each scenario kills.
    #[arg(long)]
    mutants: bool,
    /// Run each scenario × SUT this many times; pairs whose verdicts differ are listed as
    /// flaky with each run's outcome.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    repeat: u16,
    #[command(flatten)]
    clock: ClockArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario files or directories (searched recursively for *.toml); default: ./scenarios
    paths: Vec<PathBuf>,
    /// The MTAs to test, comma-separated; every scenario runs against each. Default: postfix,
    /// or the built-in reference sender where Postfix is not installed.
    #[arg(long, value_delimiter = ',')]
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
    /// Capture every packet on the router's links into DIR, one pcap file per run.
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Also run each scenario's `[[mutant]]` configurations of the chosen SUTs (a
    /// `reference:BUG` mutant with any reference sender): each must make the scenario fail
    /// (KILLED); one that passes it (SURVIVED) fails the run.
    #[arg(long)]
    mutants: bool,
    /// Run each scenario × SUT this many times; pairs whose verdicts differ are listed as
    /// flaky with each run's outcome.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    repeat: u16,
    #[command(flatten)]
    clock: ClockArgs,
}

impl Cli {
    /// Whether the command needs root or rootless mode (network namespaces, or a killed
    /// rootless run's files): `list` and `doctor` run without either.
    pub fn needs_privileges(&self) -> bool {
        // `doctor --sut` runs a lab: that needs them.
        !matches!(
            self.command,
            Command::List { .. } | Command::Doctor { sut: None }
        )
    }

    /// Runs the command and returns the process's exit status.
    pub async fn execute(self) -> ExitCode {
        match self.command {
            Command::Run(args) => run(args).await,
            Command::Matrix(args) => matrix(args).await,
            Command::List { paths, tag } => list(paths, &tag),
            Command::Explore {
                scenario,
                sut,
                shell,
                clock,
            } => explore(&scenario, &sut, &shell, &clock.run_options(None)).await,
            Command::Doctor { sut } => doctor(sut).await,
            Command::Gc => gc(),
            Command::Chaos(args) => chaos(args).await,
        }
    }
}

/// One run to make: a scenario against a SUT, or one of its mutants.
#[derive(Clone, Copy)]
enum Job<'a> {
    /// The scenario as written, against `sut`.
    Scenario(&'a Scenario, &'a SutKind),
    /// A `[[mutant]]` of the scenario.
    Mutant(&'a Scenario, &'a scenario::Mutant),
}

impl Job<'_> {
    /// The longest the job's run can watch its SUT, in wall time.
    fn watch_limit(&self, options: &lab::RunOptions) -> std::time::Duration {
        match *self {
            Job::Scenario(scenario, sut) => options.watch_limit(scenario, sut),
            Job::Mutant(scenario, mutant) => {
                options.watch_limit(scenario, &SutKind::from(*mutant.sut.get_ref()))
            }
        }
    }
}

/// Every scenario × SUT, each followed (with `mutants`) by the scenario's mutants of the SUTs
/// chosen, each mutant once.
fn jobs<'a>(scenarios: &'a [Scenario], suts: &'a [SutKind], mutants: bool) -> Vec<Job<'a>> {
    let mut jobs = Vec::new();
    for scenario in scenarios {
        let mut mutants_left: Vec<&scenario::Mutant> = if mutants {
            scenario.mutants.iter().collect()
        } else {
            Vec::new()
        };
        for sut in suts {
            jobs.push(Job::Scenario(scenario, sut));
            let (now, later) = mutants_left
                .into_iter()
                .partition(|mutant| sut.brings_along(*mutant.sut.get_ref()));
            mutants_left = later;
            jobs.extend(now.into_iter().map(|mutant| Job::Mutant(scenario, mutant)));
        }
    }
    jobs
}

/// The runs of every job, `jobs` at a time, each printed as it finishes; `None` if SIGINT or
/// SIGTERM came first (every lab is torn down before this returns).
async fn execute(
    work: &[Job<'_>],
    jobs: u16,
    timeline: bool,
    options: &lab::RunOptions,
) -> Option<Vec<lab::RunReport>> {
    let progress = Progress::new(work.len());
    let mut ordered: Vec<_> = work.iter().copied().enumerate().collect();
    // Longest first, so that a long run does not start last and keep the batch waiting for
    // it alone (longest-processing-time scheduling); ties keep the order of the jobs.
    ordered.sort_by_key(|(_, job)| std::cmp::Reverse(job.watch_limit(options)));
    // Printed as they finish; the reports keep the order of the jobs.
    let mut reports = futures::stream::iter(ordered)
        .map(|(index, job)| async move {
            let report = match job {
                Job::Scenario(scenario, sut) => lab::run_with(scenario, sut, options)
                    .await
                    .unwrap_or_else(|err| {
                        lab::RunReport::harness_error(scenario, sut, options, &err)
                    }),
                Job::Mutant(scenario, mutant) => lab::run_mutant(scenario, mutant, options).await,
            };
            (index, report)
        })
        .buffer_unordered(jobs.into());
    let mut finished = Vec::new();
    loop {
        let next = tokio::select! {
            next = reports.next() => next,
            signal = interrupted() => {
                drop(reports);
                progress.done();
                eprintln!("interrupted by {signal}: every lab torn down");
                return None;
            }
        };
        let Some((index, report)) = next else {
            progress.done();
            finished.sort_by_key(|(index, _)| *index);
            return Some(finished.into_iter().map(|(_, report)| report).collect());
        };
        progress.finished(&console::render(&report, timeline));
        finished.push((index, report));
    }
}

/// Every job `repeat` times in a row.
fn repeated(work: Vec<Job<'_>>, repeat: u16) -> Vec<Job<'_>> {
    work.into_iter()
        .flat_map(|job| std::iter::repeat_n(job, repeat.into()))
        .collect()
}

/// Prints the flaky pairs of repeated runs; returns them as Markdown lines.
fn report_flaky(runs: &[lab::RunReport], repeat: u16) -> String {
    if repeat < 2 {
        return String::new();
    }
    let flaky = crate::report::flaky::flaky(runs);
    println!("flaky pairs over {repeat} runs each: {}", flaky.len());
    let mut markdown = format!("\n## Flaky pairs ({repeat} runs each): {}\n", flaky.len());
    for pair in &flaky {
        println!("{pair}");
        let outcomes: Vec<String> = pair.outcomes.iter().map(|(s, _)| s.to_string()).collect();
        markdown.push_str(&format!(
            "- {} × {}: {}\n",
            pair.scenario,
            pair.sut,
            outcomes.join(", ")
        ));
    }
    markdown
}

/// The SUTs to run: those given, or Postfix, or the reference sender where Postfix is missing.
fn chosen_suts(given: Vec<SutKind>) -> Vec<SutKind> {
    if !given.is_empty() {
        return given;
    }
    match SutKind::Postfix.check_installed() {
        Ok(()) => vec![SutKind::Postfix],
        Err(err) => {
            eprintln!("note: {err}; running the built-in reference sender instead");
            vec!["reference"
                .parse()
                .expect("the reference sender is built in")]
        }
    }
}

/// Loads the scenarios and checks the SUTs and the clock asked for; `Err` is the exit status
/// for bad input.
fn prepare(
    paths: Vec<PathBuf>,
    suts: &[SutKind],
    options: &lab::RunOptions,
) -> Result<(Vec<Scenario>, bool), ExitCode> {
    let Some((scenarios, bad_input)) = load_scenarios(paths) else {
        return Err(ExitCode::from(EXIT_USAGE));
    };
    for sut in suts {
        if let Some(rate) = options.clock.filter(|rate| rate.is_accelerated()) {
            if !sut.can_accelerate() {
                let sut = sut.name().to_string();
                eprintln!("error: {}", lab::LabError::Clock { sut, rate });
                return Err(ExitCode::from(EXIT_USAGE));
            }
        }
    }
    for sut in suts {
        if let Err(err) = preflight(sut, options) {
            eprintln!("error: {err}");
            return Err(ExitCode::from(EXIT_USAGE));
        }
    }
    Ok((scenarios, bad_input))
}

/// Writes `text` to `path`, or says why it could not.
fn write_file(path: &std::path::Path, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|err| {
        eprintln!("error: cannot write {}: {err}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// The exit status for a set of finished runs.
fn exit_status(runs: &[lab::RunReport], bad_input: bool) -> ExitCode {
    let count = |status: Status| runs.iter().filter(|r| r.verdict.status == status).count();
    let (failed, errors) = (count(Status::Fail), count(Status::Error));
    println!(
        "{} passed, {failed} failed, {} xfailed, {errors} errors",
        count(Status::Pass),
        count(Status::Xfail)
    );
    let mutants: Vec<lab::MutantStatus> = runs
        .iter()
        .filter_map(|run| run.mutant.as_ref().map(|mutant| mutant.status))
        .collect();
    if !mutants.is_empty() {
        let count = |status| mutants.iter().filter(|s| **s == status).count();
        println!(
            "mutants: {} killed, {} survived, {} errors",
            count(lab::MutantStatus::Killed),
            count(lab::MutantStatus::Survived),
            count(lab::MutantStatus::Error)
        );
    }
    if bad_input || errors > 0 {
        ExitCode::from(EXIT_USAGE)
    } else if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(mut args: RunArgs) -> ExitCode {
    args.sut = chosen_suts(std::mem::take(&mut args.sut));
    let options = args.clock.run_options(args.pcap.clone());
    let (scenarios, bad_input) = match prepare(args.paths, &args.sut, &options) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    if let Some(dir) = &args.pcap {
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("error: cannot create {}: {err}", dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let work = repeated(jobs(&scenarios, &args.sut, args.mutants), args.repeat);
    let Some(finished) = execute(&work, args.jobs, args.timeline, &options).await else {
        return ExitCode::from(EXIT_INTERRUPTED);
    };
    report_flaky(&finished, args.repeat);
    let reports = [
        (
            args.json,
            crate::report::json::render as fn(&[lab::RunReport]) -> String,
        ),
        (args.junit, crate::report::junit::render),
    ];
    for (path, render) in reports {
        if let Some(path) = path {
            if let Err(status) = write_file(&path, &render(&finished)) {
                return status;
            }
        }
    }
    exit_status(&finished, bad_input)
}

async fn matrix(args: MatrixArgs) -> ExitCode {
    let options = args.clock.run_options(None);
    let (scenarios, bad_input) = match prepare(args.paths, &args.sut, &options) {
        Ok(prepared) => prepared,
        Err(status) => return status,
    };
    let work = repeated(jobs(&scenarios, &args.sut, args.mutants), args.repeat);
    let Some(finished) = execute(&work, args.jobs, false, &options).await else {
        return ExitCode::from(EXIT_INTERRUPTED);
    };
    // Each MTA's version, asked of the MTA itself, for the column headings.
    let mut versions = crate::report::matrix::Versions::new();
    for sut in &args.sut {
        if let Some(version) = sut.version().await {
            versions.insert(sut.name().to_string(), version);
        }
    }
    let table = crate::report::matrix::markdown_with(&finished, &versions)
        + &report_flaky(&finished, args.repeat);
    if let Err(err) = std::fs::create_dir_all(&args.out) {
        eprintln!("error: cannot create {}: {err}", args.out.display());
        return ExitCode::from(EXIT_USAGE);
    }
    let written = write_file(&args.out.join("matrix.md"), &table).and_then(|()| {
        write_file(
            &args.out.join("matrix.html"),
            &crate::report::matrix::html_with(&finished, &versions),
        )
    });
    if let Err(status) = written {
        return status;
    }
    println!("\n{table}");
    println!(
        "wrote {} and {}",
        args.out.join("matrix.md").display(),
        args.out.join("matrix.html").display()
    );
    let status = exit_status(&finished, bad_input);
    // A matrix exists to show failures: only bad input or harness errors fail the command.
    if bad_input || finished.iter().any(|r| r.verdict.status == Status::Error) {
        status
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

async fn explore(
    path: &std::path::Path,
    sut: &SutKind,
    shell: &str,
    options: &lab::RunOptions,
) -> ExitCode {
    let scenario = match scenario::load(path) {
        Ok(scenario) => scenario,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(err) = preflight(sut, options) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    match lab::explore(&scenario, sut, shell, options).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn doctor(sut: Option<SutKind>) -> ExitCode {
    let mut usable = true;
    let mut check = |what: &str, result: Result<(), String>| {
        match &result {
            Ok(()) => println!("ok    {what}"),
            Err(why) => println!("FAIL  {what}: {why}"),
        }
        usable &= result.is_ok();
    };
    match crate::rootless::mode() {
        Some(mode) => {
            let setup = crate::rootless::setup_time()
                .map(|t| format!(", entered in {:.1} ms", t.as_secs_f64() * 1e3))
                .unwrap_or_default();
            check(&format!("mode: {mode}{setup}"), Ok(()));
        }
        None => {
            for problem in crate::rootless::problems() {
                check("rootless mode", Err(problem.to_string()));
            }
            check(
                "mode: neither root nor rootless",
                Err("fix the problems above, or run mxlab as root".into()),
            );
        }
    }
    check(
        "network namespaces",
        netns::Namespace::create("mxlab-doctor")
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    let nft_found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .any(|dir| dir.join("nft").is_file());
    check(
        "nft (network faults)",
        if nft_found {
            Ok(())
        } else {
            Err("not found in PATH: apt-get install nftables".into())
        },
    );
    check(
        "libfaketime (the accelerated world clock, --clock xN)",
        crate::sut::faketime::check_installed("the world clock").map_err(|e| e.to_string()),
    );
    for name in SutKind::BUILT_IN {
        let sut: SutKind = name.parse().expect("built-in names parse");
        match sut.check_installed() {
            Ok(()) => println!("ok    SUT {name}"),
            Err(err) => println!("--    SUT {name}: {err}"),
        }
    }
    if let Some(sut) = sut {
        usable &= doctor_sut(&sut).await;
    }
    if usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}

async fn chaos(args: ChaosArgs) -> ExitCode {
    let run = args.clock.run_options(None);
    for sut in &args.sut {
        if let Err(err) = preflight(sut, &run) {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let options = crate::chaos::campaign::Options {
        suts: args.sut,
        seed: args.seed,
        worlds: args.runs,
        out: args.out,
        jobs: args.jobs.into(),
        shrink_budget: args.shrink,
        run,
    };
    let campaign = tokio::select! {
        campaign = crate::chaos::campaign::run(&options) => campaign,
        signal = interrupted() => {
            eprintln!("interrupted by {signal}: every lab torn down");
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    };
    match campaign {
        Ok(campaign) => {
            println!("\n{}", crate::chaos::campaign::summary(&campaign, &options));
            // Breaches fail the command; disagreements are reported, not judged.
            if campaign.breaches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `doctor --sut`: the SUT installed, its version, and a baseline delivery in a lab (the run's
/// timeline when it is not a pass). Returns whether all went well.
async fn doctor_sut(sut: &SutKind) -> bool {
    let name = sut.name();
    if let Err(err) = sut.check_installed() {
        println!("FAIL  SUT {name}: {err}");
        return false;
    }
    println!("ok    SUT {name} installed");
    match sut.version().await {
        Some(version) => println!("ok    SUT {name} version {version}"),
        None => println!("--    SUT {name}: no version (a driver file says how with `version`)"),
    }
    let scenario = crate::scenario::ScenarioBuilder::new(
        "doctor/baseline",
        "one message to a dual-stack MX with nothing broken",
    )
    .mx("mx1", "example.test", 10)
    .message("alice@sender.test", &["bob@example.test"])
    .outcome(crate::scenario::Outcome::Delivered)
    .within(std::time::Duration::from_secs(600))
    .build()
    .expect("the doctor's scenario is valid");
    let options = lab::RunOptions::default();
    let report = match lab::run_with(&scenario, sut, &options).await {
        Ok(report) => report,
        Err(err) => {
            println!("FAIL  SUT {name} baseline delivery: {err}");
            return false;
        }
    };
    let passed = report.verdict.status == crate::verdict::Status::Pass;
    println!(
        "{}  SUT {name} baseline delivery: {} {}",
        if passed { "ok  " } else { "FAIL" },
        report.verdict.status,
        report.verdict.summary
    );
    if !passed {
        println!("{}", crate::report::console::render(&report, true));
    }
    passed
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
fn preflight(sut: &SutKind, options: &lab::RunOptions) -> anyhow::Result<()> {
    netns::Namespace::create("mxlab-preflight")?;
    sut.check_installed()?;
    if options.unscripted_clock().is_accelerated() && sut.needs_faketime() {
        crate::sut::faketime::check_installed("the world clock")?;
    }
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
