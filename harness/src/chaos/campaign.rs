//! A chaos campaign: worlds drawn from a seed, each run against every SUT, judged by the
//! oracles; what breaks is shrunk and kept as a scenario file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::lab::{self, RunReport};
use crate::sut::SutKind;
use crate::verdict::Status;

use super::oracle::{self, Aspect, Breach, Disagreement, Outcome, Story};
use super::render::{self, Expectation, Notes};
use super::shrink;
use super::world::{self, World};
use super::ChaosError;

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SUTs every world runs against.
    pub suts: Vec<SutKind>,
    /// The seed: the same seed draws the same worlds.
    pub seed: u64,
    /// How many worlds.
    pub worlds: usize,
    /// Where shrunk scenarios and the report go.
    pub out: PathBuf,
    /// How many runs at once.
    pub jobs: usize,
    /// At most this many candidate runs to shrink each finding.
    pub shrink_budget: usize,
    /// Clock and timers of every run.
    pub run: lab::RunOptions,
}

/// A scenario file the campaign wrote.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Where.
    pub path: PathBuf,
    /// What broke, in words.
    pub what: String,
    /// The world (0-based) it was found in.
    pub world: usize,
    /// The campaign's run count when it was found (runs of generated worlds, shrinking
    /// excluded).
    pub found_after_runs: usize,
    /// Candidate runs spent shrinking it.
    pub shrink_tries: usize,
    /// Lines of the file that are not comments or blank.
    pub lines: usize,
    /// For a planted bug: the correct reference sender's verdict on the kept file.
    pub correct_status: Option<Status>,
    /// The breaking SUT's (or for a disagreement, the first SUT's) verdict on the kept file.
    pub status: Status,
}

/// What a campaign found.
#[derive(Debug, Default)]
pub struct Campaign {
    /// Worlds run.
    pub worlds: usize,
    /// Runs of generated worlds (world × SUT).
    pub runs: usize,
    /// Runs spent shrinking and checking kept files.
    pub shrink_runs: usize,
    /// Runs the harness could not complete.
    pub errors: usize,
    /// Every invariant broken, with its world.
    pub breaches: Vec<(usize, Breach)>,
    /// Every disagreement, with its world.
    pub disagreements: Vec<(usize, Disagreement)>,
    /// Scenario files written.
    pub kept: Vec<Kept>,
    /// Wall time.
    pub wall: Duration,
}

/// The RNG of a campaign: ChaCha seeded from `seed`, so that the seed reproduces every world.
pub fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes(),
        );
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// The worlds a seed draws, in order (for testing reproducibility).
#[cfg(test)]
fn worlds(seed: u64, count: usize) -> Vec<World> {
    let mut runner = TestRunner::new_with_rng(Config::default(), rng(seed));
    (0..count)
        .map(|_| {
            world::world()
                .new_tree(&mut runner)
                .expect("the world strategy never rejects")
                .current()
        })
        .collect()
}

/// Runs `world` against `suts` (at most `jobs` at once) with `expect`; the stories in the
/// order of `suts`.
async fn run_world(
    world: &World,
    name: &str,
    expect: &Expectation,
    suts: &[SutKind],
    options: &Options,
) -> Result<Vec<Story>, ChaosError> {
    let (scenario, _) = render::load(world, name, expect, &Notes::default())?;
    let scenario = &scenario;
    Ok(futures::stream::iter(suts)
        .map(|sut| async move {
            let report = lab::run_with(scenario, sut, &options.run)
                .await
                .unwrap_or_else(|err| RunReport::harness_error(scenario, sut, &options.run, &err));
            Story::read(scenario, &report)
        })
        .buffered(options.jobs.max(1))
        .collect()
        .await)
}

/// A world in a few words: hosts, faults, messages.
fn sketch(world: &World) -> String {
    format!(
        "{} MX, {} fault(s), {} DNS fault(s), {} message(s)",
        world.hosts.len(),
        world.fault_count(),
        world.dns_applied().len(),
        world.messages
    )
}

/// Runs a campaign, printing each world as it finishes.
pub async fn run(options: &Options) -> Result<Campaign, ChaosError> {
    let started = Instant::now();
    std::fs::create_dir_all(&options.out).map_err(|source| ChaosError::Write {
        path: options.out.clone(),
        source,
    })?;
    let mut runner = TestRunner::new_with_rng(Config::default(), rng(options.seed));
    let mut campaign = Campaign::default();
    let mut shrunk_keys: BTreeSet<String> = BTreeSet::new();
    let plain = Expectation::Delivered {
        mx: None,
        via: None,
    };
    for index in 0..options.worlds {
        let mut tree = world::world()
            .new_tree(&mut runner)
            .map_err(|reason| ChaosError::Generate(reason.to_string()))?;
        let world = tree.current();
        let name = format!("seed-{}-world-{index}", options.seed);
        let stories = run_world(&world, &name, &plain, &options.suts, options).await?;
        campaign.worlds += 1;
        campaign.runs += stories.len();
        campaign.errors += stories.iter().filter(|s| s.error.is_some()).count();
        println!("world {index} ({}):", sketch(&world));
        for story in &stories {
            println!("  {}", story.tell());
        }
        let breaches: Vec<Breach> = stories
            .iter()
            .flat_map(|story| oracle::breaches(&world, story))
            .collect();
        let disagreements = oracle::disagreements(&stories);
        for breach in &breaches {
            println!(
                "  BREACH {} by {}: {}",
                breach.invariant, breach.sut, breach.detail
            );
        }
        for disagreement in &disagreements {
            println!("  DISAGREE {disagreement}");
        }
        let found_after_runs = campaign.runs;
        // Shrink the first breach of each (SUT, invariant), else the first disagreement of
        // each (aspect, SUTs): one world's tree shrinks once.
        let breach = breaches
            .iter()
            .find(|b| !shrunk_keys.contains(&format!("{} {}", b.sut, b.invariant)))
            .cloned();
        let disagreement = disagreements
            .iter()
            .find(|d| !shrunk_keys.contains(&disagreement_key(d)))
            .cloned();
        campaign
            .breaches
            .extend(breaches.into_iter().map(|b| (index, b)));
        campaign
            .disagreements
            .extend(disagreements.into_iter().map(|d| (index, d)));
        let kept = if let Some(breach) = breach {
            shrunk_keys.insert(format!("{} {}", breach.sut, breach.invariant));
            Some(
                keep_breach(
                    &mut tree,
                    index,
                    &breach,
                    found_after_runs,
                    options,
                    &mut campaign,
                )
                .await?,
            )
        } else if let Some(disagreement) = disagreement {
            shrunk_keys.insert(disagreement_key(&disagreement));
            Some(
                keep_disagreement(
                    &mut tree,
                    index,
                    &disagreement,
                    &stories,
                    found_after_runs,
                    options,
                    &mut campaign,
                )
                .await?,
            )
        } else {
            None
        };
        if let Some(kept) = kept {
            println!(
                "  kept {} ({} lines, {} shrink runs)",
                kept.path.display(),
                kept.lines,
                kept.shrink_tries
            );
            campaign.kept.push(kept);
        }
    }
    campaign.wall = started.elapsed();
    let report = summary(&campaign, options);
    let path = options.out.join("campaign.txt");
    std::fs::write(&path, &report).map_err(|source| ChaosError::Write { path, source })?;
    Ok(campaign)
}

/// One disagreement per aspect is shrunk in a campaign.
fn disagreement_key(disagreement: &Disagreement) -> String {
    format!("disagreement on {}", disagreement.aspect.name())
}

/// Whether two hosts of `world` share a preference (an MTA then picks between them at random).
fn equal_preferences(world: &World) -> bool {
    let preferences: BTreeSet<u16> = world.hosts.iter().map(|h| h.preference()).collect();
    preferences.len() < world.hosts.len()
}

/// The SUT whose name is `name`, among those of the campaign.
fn sut_named<'a>(options: &'a Options, name: &str) -> &'a SutKind {
    options
        .suts
        .iter()
        .find(|sut| sut.name() == name)
        .expect("stories name the campaign's SUTs")
}

/// Shrinks a world that breaks `breach`'s invariant for its SUT, then writes it with the
/// expectation the invariant demands.
async fn keep_breach<T: ValueTree<Value = World>>(
    tree: &mut T,
    index: usize,
    breach: &Breach,
    found_after_runs: usize,
    options: &Options,
    campaign: &mut Campaign,
) -> Result<Kept, ChaosError> {
    let sut = sut_named(options, &breach.sut).clone();
    let name = format!("seed-{}-world-{index}-{}", options.seed, breach.invariant);
    let mut detail = breach.detail.clone();
    let mut runs = 0;
    // The smallest candidate whose rendered file also fails for the SUT: a breach whose
    // expectation cannot be written (two hosts share the best preference) still shrinks,
    // towards worlds where it can.
    let mut failing: Option<(World, String)> = None;
    let mut shrunk = shrink::shrink(tree, options.shrink_budget, async |candidate: &World| {
        let expect = breach.invariant.expectation(candidate);
        runs += 1;
        let Ok(stories) = run_world(
            candidate,
            &name,
            &expect,
            std::slice::from_ref(&sut),
            options,
        )
        .await
        else {
            return false;
        };
        let mut story = &stories[0];
        // Hosts of equal preference are tried in random order: a breach must then show twice
        // in a row, so that the file kept does not depend on one lucky draw.
        let confirm;
        if equal_preferences(candidate)
            && oracle::breaches(candidate, story)
                .iter()
                .any(|b| b.invariant == breach.invariant)
        {
            runs += 1;
            let Ok(again) = run_world(
                candidate,
                &name,
                &expect,
                std::slice::from_ref(&sut),
                options,
            )
            .await
            else {
                return false;
            };
            confirm = again;
            if confirm[0].status != Status::Fail {
                story = &confirm[0];
            }
            if !oracle::breaches(candidate, &confirm[0])
                .iter()
                .any(|b| b.invariant == breach.invariant)
            {
                return false;
            }
        }
        match oracle::breaches(candidate, story)
            .into_iter()
            .find(|b| b.invariant == breach.invariant)
        {
            Some(found) => {
                if story.status == Status::Fail {
                    failing = Some((candidate.clone(), found.detail.clone()));
                }
                detail = found.detail;
                true
            }
            None => false,
        }
    })
    .await;
    campaign.shrink_runs += runs;
    if let Some((world, failing_detail)) = failing {
        if world != shrunk.world {
            shrunk.world = world;
            detail = failing_detail;
        }
    }
    let expect = breach.invariant.expectation(&shrunk.world);
    let bug = match &sut {
        SutKind::Reference(bugs) => {
            let mut planted = bugs.iter();
            match (planted.next(), planted.next()) {
                (Some(bug), None) => Some(bug),
                _ => None,
            }
        }
        _ => None,
    };
    let what = format!("{} broken by {}: {detail}", breach.invariant, breach.sut);
    let reproduce = match bug {
        Some(_) => "mxlab run FILE --sut reference --mutants".to_string(),
        None => format!("mxlab run FILE --sut {}", breach.sut),
    };
    let notes = Notes {
        header: header(options, index, &what, &shrunk, &reproduce),
        mutant: bug.map(|bug| (bug, format!("chaos: {what}"))),
    };
    let (status, correct_status) = check_kept(
        &shrunk.world,
        &name,
        &expect,
        &sut,
        bug.is_some(),
        options,
        campaign,
    )
    .await?;
    write_kept(
        &shrunk,
        &name,
        &what,
        &expect,
        notes,
        index,
        found_after_runs,
        status,
        correct_status,
        options,
    )
}

/// Runs the kept world once against `sut` (and, for a planted bug, the correct reference
/// sender) with its expectation: the statuses the kept file gets.
async fn check_kept(
    world: &World,
    name: &str,
    expect: &Expectation,
    sut: &SutKind,
    planted: bool,
    options: &Options,
    campaign: &mut Campaign,
) -> Result<(Status, Option<Status>), ChaosError> {
    let mut suts = vec![sut.clone()];
    if planted {
        suts.push(SutKind::Reference(crate::sut::reference::Bugs::NONE));
    }
    let stories = run_world(world, name, expect, &suts, options).await?;
    campaign.shrink_runs += stories.len();
    Ok((stories[0].status, stories.get(1).map(|s| s.status)))
}

/// The comment lines at the top of a kept file.
fn header(
    options: &Options,
    index: usize,
    what: &str,
    shrunk: &shrink::Shrunk,
    reproduce: &str,
) -> Vec<String> {
    let suts: Vec<&str> = options.suts.iter().map(SutKind::name).collect();
    vec![
        format!(
            "mxlab chaos --seed {} --runs {} --sut {}: world {index}",
            options.seed,
            options.worlds,
            suts.join(",")
        ),
        format!("broke: {what}"),
        format!(
            "shrunk to {} in {} candidate runs ({} steps down)",
            sketch(&shrunk.world),
            shrunk.tries,
            shrunk.steps
        ),
        format!("reproduce: {reproduce}"),
    ]
}

/// Shrinks a world where the SUTs of `disagreement` disagree on its aspect while they still
/// do, then writes it expecting what the first of them did, with each SUT's story.
#[allow(clippy::too_many_arguments)]
async fn keep_disagreement<T: ValueTree<Value = World>>(
    tree: &mut T,
    index: usize,
    disagreement: &Disagreement,
    stories: &[Story],
    found_after_runs: usize,
    options: &Options,
    campaign: &mut Campaign,
) -> Result<Kept, ChaosError> {
    let suts: Vec<SutKind> = disagreement
        .values
        .iter()
        .map(|(name, _)| sut_named(options, name).clone())
        .collect();
    let name = format!(
        "seed-{}-world-{index}-disagree-{}",
        options.seed,
        disagreement.aspect.name()
    );
    let plain = Expectation::Delivered {
        mx: None,
        via: None,
    };
    let mut last: Vec<Story> = stories
        .iter()
        .filter(|s| suts.iter().any(|sut| sut.name() == s.sut))
        .cloned()
        .collect();
    let mut seen = disagreement.clone();
    let mut runs = 0;
    // A disagreement must show twice in a row: one that depends on a race is not kept.
    let shrunk = shrink::shrink(tree, options.shrink_budget, async |candidate: &World| {
        let mut found = None;
        for _ in 0..2 {
            runs += suts.len();
            let Ok(stories) = run_world(candidate, &name, &plain, &suts, options).await else {
                return false;
            };
            match oracle::disagreements(&stories)
                .into_iter()
                .find(|d| d.aspect == disagreement.aspect)
            {
                Some(disagreement) => found = Some((disagreement, stories)),
                None => return false,
            }
        }
        let Some((disagreement, stories)) = found else {
            return false;
        };
        seen = disagreement;
        last = stories;
        true
    })
    .await;
    campaign.shrink_runs += runs;
    let first = last
        .iter()
        .find(|s| s.sut == seen.values[0].0)
        .expect("the disagreement names a story");
    let expect = match &first.outcomes[seen.message] {
        Outcome::Delivered { mx, family, .. } => Expectation::Delivered {
            mx: (seen.aspect == Aspect::Mx).then(|| mx.clone()),
            via: (seen.aspect == Aspect::Family).then_some(*family),
        },
        Outcome::Bounced { .. } => Expectation::Bounced { status: None },
        Outcome::Deferred => Expectation::Deferred,
    };
    let what = format!("disagreement on {seen}");
    let sut_list: Vec<&str> = suts.iter().map(SutKind::name).collect();
    let mut header = header(
        options,
        index,
        &what,
        &shrunk,
        &format!(
            "mxlab run FILE --sut {} ([expect] records what {} did; reported, not judged)",
            sut_list.join(","),
            first.sut
        ),
    );
    header.extend(last.iter().map(|story| format!("  {}", story.tell())));
    // The kept file once more against every SUT of the disagreement, with its expectation.
    let rerun = run_world(&shrunk.world, &name, &expect, &suts, options).await?;
    campaign.shrink_runs += rerun.len();
    let statuses: Vec<String> = rerun
        .iter()
        .map(|story| format!("{} {}", story.sut, story.status))
        .collect();
    let again = oracle::disagreements(&rerun)
        .into_iter()
        .any(|d| d.aspect == seen.aspect);
    header.push(format!(
        "re-run of this file: {} ({})",
        if again {
            "the disagreement shows again"
        } else {
            "no disagreement this time"
        },
        statuses.join(", ")
    ));
    let notes = Notes {
        header,
        mutant: None,
    };
    let status = rerun[0].status;
    write_kept(
        &shrunk,
        &name,
        &what,
        &expect,
        notes,
        index,
        found_after_runs,
        status,
        None,
        options,
    )
}

#[allow(clippy::too_many_arguments)]
fn write_kept(
    shrunk: &shrink::Shrunk,
    name: &str,
    what: &str,
    expect: &Expectation,
    notes: Notes,
    index: usize,
    found_after_runs: usize,
    status: Status,
    correct_status: Option<Status>,
    options: &Options,
) -> Result<Kept, ChaosError> {
    let text = render::render(&shrunk.world, &format!("chaos: {what}"), expect, &notes);
    let path = options.out.join(format!("{name}.toml"));
    std::fs::write(&path, &text).map_err(|source| ChaosError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Kept {
        path,
        what: what.to_string(),
        world: index,
        found_after_runs,
        shrink_tries: shrunk.tries,
        lines: text
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .count(),
        correct_status,
        status,
    })
}

/// The campaign's report, as printed at the end and written to `campaign.txt`.
pub fn summary(campaign: &Campaign, options: &Options) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let suts: Vec<&str> = options.suts.iter().map(SutKind::name).collect();
    let _ = writeln!(
        out,
        "chaos seed {}: {} worlds x {} SUTs ({}) = {} runs ({} harness errors), {} runs shrinking, {:.0} s",
        options.seed,
        campaign.worlds,
        suts.len(),
        suts.join(","),
        campaign.runs,
        campaign.errors,
        campaign.shrink_runs,
        campaign.wall.as_secs_f64()
    );
    let mut firsts: Vec<(String, usize)> = Vec::new();
    for (world, breach) in &campaign.breaches {
        let key = format!("{} by {}", breach.invariant, breach.sut);
        if !firsts.iter().any(|(k, _)| *k == key) {
            firsts.push((key, *world));
        }
    }
    let _ = writeln!(out, "invariants broken: {}", campaign.breaches.len());
    for (key, world) in &firsts {
        let count = campaign
            .breaches
            .iter()
            .filter(|(_, b)| format!("{} by {}", b.invariant, b.sut) == *key)
            .count();
        let _ = writeln!(out, "  {key}: {count} world(s), first in world {world}");
    }
    let _ = writeln!(out, "disagreements: {}", campaign.disagreements.len());
    for aspect in [Aspect::Outcome, Aspect::Mx, Aspect::Family] {
        let count = campaign
            .disagreements
            .iter()
            .filter(|(_, d)| d.aspect == aspect)
            .count();
        let _ = writeln!(out, "  on {}: {count}", aspect.name());
    }
    let _ = writeln!(out, "kept scenarios: {}", campaign.kept.len());
    for kept in &campaign.kept {
        let _ = writeln!(
            out,
            "  {} ({} lines; world {}, found after {} runs; {} shrink runs; {} on it{})\n    {}",
            kept.path.display(),
            kept.lines,
            kept.world,
            kept.found_after_runs,
            kept.shrink_tries,
            kept.status,
            kept.correct_status
                .map_or(String::new(), |s| format!(", correct reference {s}")),
            kept.what
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_worlds_and_another_seed_others() {
        assert_eq!(worlds(7, 10), worlds(7, 10));
        assert_ne!(worlds(7, 10), worlds(8, 10));
    }
}
