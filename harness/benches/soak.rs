//! Soak: many chaos runs, some killed with SIGKILL at random moments, each followed by
//! `mxlab gc`; then nothing of them may be left.
//!
//! `cargo bench -p mxlab --bench soak [-- --runs N --kills K --sut SUT --clock RATE]` runs the
//! `mxlab` binary as a child process N times (default 100), each a one-world campaign
//! (`mxlab chaos --runs 1 --seed I --shrink 0`), and SIGKILLs K of them (default 20, spread at
//! random over the runs) at a random moment 20–500 ms after the start (a kill planned for a
//! run that ends first moves on to the next run), each followed by `mxlab
//! gc`. Every child gets its own `TMPDIR` under one soak directory, so what it leaves can be
//! told apart from what other programs on the machine do.
//!
//! Afterwards it checks that nothing is left, against a snapshot taken before: network
//! namespaces (by inode, over every process's `/proc/PID/ns/net`), mounts (`/proc/self/mountinfo`),
//! processes whose environment names the soak directory, work directories (`mxlab-*` under any
//! child's `TMPDIR`) and `/dev/shm` entries. It prints the peak resident memory of each child
//! (one lab at a time: memory per lab) and its peak open file descriptors, sampled every 50 ms,
//! for the first and last ten runs (flat means no growth), and this process's own open
//! descriptors before and after. Needs root (namespaces); it says so and exits 0 otherwise.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

/// What the machine holds that a run could leak.
#[derive(Debug, Default)]
struct Snapshot {
    namespaces: BTreeSet<u64>,
    mounts: BTreeSet<String>,
    shm: BTreeSet<String>,
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn snapshot() -> Snapshot {
    use std::os::unix::fs::MetadataExt;
    let namespaces = pids()
        .into_iter()
        .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|meta| meta.ino())
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        // Mount id and parent id change on every mount; the rest says what is mounted where.
        .map(|line| line.split(' ').skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    let shm = std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Snapshot {
        namespaces,
        mounts,
        shm,
    }
}

/// Processes whose environment names `soak_dir` (the children's `TMPDIR`).
fn soak_processes(soak_dir: &Path) -> Vec<(u32, String)> {
    let needle = format!("TMPDIR={}", soak_dir.display());
    pids()
        .into_iter()
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let ours = environ
                .split(|b| *b == 0)
                .any(|var| var.starts_with(needle.as_bytes()));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            ours.then_some((pid, cmdline))
        })
        .collect()
}

/// The processes in the network namespace `inode`, as `PID COMMAND`.
fn holders(inode: u64) -> String {
    use std::os::unix::fs::MetadataExt;
    let found: Vec<String> = pids()
        .into_iter()
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|meta| meta.ino() == inode)
        })
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim())
        })
        .collect();
    if found.is_empty() {
        "no process (gone since the snapshot)".to_string()
    } else {
        found.join(", ")
    }
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One child's run.
struct Run {
    killed: bool,
    wall: Duration,
    peak_rss_kib: u64,
    peak_fds: usize,
    exit: String,
}

/// Command-line settings.
#[derive(clap::Parser)]
#[command(about = "Many chaos runs, some killed with SIGKILL; then nothing of them may be left")]
struct Options {
    /// How many runs.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// How many of them are killed mid-way.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The SUT each run uses.
    #[arg(long, default_value = "reference")]
    sut: String,
    /// The world clock of each run.
    #[arg(long, default_value = "x1000")]
    clock: String,
    #[command(flatten)]
    cargo_bench: common::CargoBenchArgs,
}

fn main() {
    let Options {
        runs,
        kills,
        sut,
        clock,
        ..
    } = Options::parse();
    if !nix::unistd::geteuid().is_root() {
        println!("soak: skipped, needs root (network namespaces)");
        return;
    }
    let mxlab = PathBuf::from(env!("CARGO_BIN_EXE_mxlab"));
    let soak_dir = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir()
        .expect("a soak directory");
    let soak = soak_dir.path().to_path_buf();
    // Seeded, so the kill schedule is the same every time.
    let mut rng = fastrand::Rng::with_seed(0x5eed_0000_0000_0016);
    let mut to_kill = BTreeSet::new();
    while to_kill.len() < kills.min(runs) {
        to_kill.insert(rng.usize(..runs));
    }
    let before = snapshot();
    let own_fds_before = open_fds(std::process::id()).unwrap_or(0);
    let started = Instant::now();
    let mut results = Vec::new();
    let mut gc_removed = 0usize;
    let mut kills_pending = 0usize;
    for index in 0..runs {
        let tmp = soak.join(format!("run-{index}"));
        std::fs::create_dir_all(&tmp).expect("the child's TMPDIR");
        let run_started = Instant::now();
        let mut child = Command::new(&mxlab)
            .args(["chaos", "--sut", &sut, "--runs", "1", "--shrink", "0"])
            .args(["--seed", &index.to_string(), "--clock", &clock])
            .arg("--out")
            .arg(tmp.join("out"))
            .env("TMPDIR", &soak)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mxlab starts");
        // A kill planned for a run that ends first moves on to the next run.
        if to_kill.contains(&index) {
            kills_pending += 1;
        }
        let to_be_killed = kills_pending > 0;
        let kill_at = Duration::from_millis(rng.u64(20..500));
        let mut killed = false;
        let (mut peak_rss_kib, mut peak_fds) = (0, 0);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for mxlab") {
                break status;
            }
            peak_rss_kib = peak_rss_kib.max(rss_kib(child.id()).unwrap_or(0));
            peak_fds = peak_fds.max(open_fds(child.id()).unwrap_or(0));
            if to_be_killed && run_started.elapsed() >= kill_at {
                // Child::kill sends SIGKILL to this child's PID only.
                child.kill().expect("SIGKILL mxlab");
                killed = true;
                kills_pending -= 1;
                break child.wait().expect("reap mxlab");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let wall = run_started.elapsed();
        if killed {
            let gc = Command::new(&mxlab)
                .arg("gc")
                .env("TMPDIR", &soak)
                .output()
                .expect("mxlab gc runs");
            let said = String::from_utf8_lossy(&gc.stdout);
            gc_removed += said.lines().filter(|l| l.starts_with("removed")).count();
            assert!(gc.status.success(), "mxlab gc failed: {said}");
        }
        results.push(Run {
            killed,
            wall,
            peak_rss_kib,
            peak_fds,
            exit: format!("{status}"),
        });
    }
    let total = started.elapsed();
    // Give the kernel a moment for deferred namespace teardown before looking.
    std::thread::sleep(Duration::from_secs(2));
    let after = snapshot();
    let own_fds_after = open_fds(std::process::id()).unwrap_or(0);
    let new_namespaces: Vec<&u64> = after.namespaces.difference(&before.namespaces).collect();
    let new_mounts: Vec<&String> = after.mounts.difference(&before.mounts).collect();
    let new_shm: Vec<&String> = after.shm.difference(&before.shm).collect();
    let processes = soak_processes(&soak);
    let work_dirs: Vec<PathBuf> = std::fs::read_dir(&soak)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mxlab-"))
        })
        .collect();

    let killed = results.iter().filter(|r| r.killed).count();
    let exits: BTreeSet<&str> = results
        .iter()
        .filter(|r| !r.killed)
        .map(|r| r.exit.as_str())
        .collect();
    println!(
        "soak: {runs} runs of `mxlab chaos --sut {sut} --clock {clock} --runs 1` ({killed} SIGKILLed, each followed by mxlab gc) in {:.0} s; gc removed {gc_removed} work directories",
        total.as_secs_f64()
    );
    println!("  exit statuses of the runs not killed: {exits:?}");
    let describe = |label: &str, slice: &[Run]| {
        // Runs too short to be sampled even once are left out.
        let sampled: Vec<&Run> = slice.iter().filter(|r| r.peak_rss_kib > 0).collect();
        let rss: Vec<u64> = sampled.iter().map(|r| r.peak_rss_kib).collect();
        let fds: Vec<usize> = sampled.iter().map(|r| r.peak_fds).collect();
        let wall: f64 =
            slice.iter().map(|r| r.wall.as_secs_f64()).sum::<f64>() / slice.len() as f64;
        println!(
            "  {label} ({} sampled): peak RSS per lab {}–{} MiB (mean {:.1}), peak open fds {}–{} (mean {:.1}), mean wall {wall:.1} s",
            sampled.len(),
            rss.iter().min().unwrap_or(&0) / 1024,
            rss.iter().max().unwrap_or(&0) / 1024,
            rss.iter().sum::<u64>() as f64 / 1024.0 / rss.len().max(1) as f64,
            fds.iter().min().unwrap_or(&0),
            fds.iter().max().unwrap_or(&0),
            fds.iter().sum::<usize>() as f64 / fds.len().max(1) as f64,
        );
    };
    let unkilled: Vec<Run> = results.into_iter().filter(|r| !r.killed).collect();
    let ten = unkilled.len().min(10);
    describe("first 10 runs not killed", &unkilled[..ten]);
    describe("last 10 runs not killed", &unkilled[unkilled.len() - ten..]);
    describe("all runs not killed", &unkilled);
    println!("  this process's open fds: {own_fds_before} before, {own_fds_after} after");
    println!("  left behind: {} network namespaces (new inodes), {} mounts, {} processes, {} work directories, {} /dev/shm entries",
        new_namespaces.len(), new_mounts.len(), processes.len(), work_dirs.len(), new_shm.len());
    for inode in &new_namespaces {
        println!("    namespace inode {inode}, held by: {}", holders(**inode));
    }
    for mount in &new_mounts {
        println!("    mount {mount}");
    }
    for (pid, cmdline) in &processes {
        println!("    process {pid}: {cmdline}");
    }
    for dir in &work_dirs {
        println!("    work directory {}", dir.display());
    }
    for entry in &new_shm {
        println!("    /dev/shm/{entry}");
    }
    let clean = new_mounts.is_empty() && processes.is_empty() && work_dirs.is_empty();
    assert!(clean, "the soak left something behind");
}
