//! Messages per second accepted by one fake MX server, next to Postfix's `smtp-sink` under the
//! same load.
//!
//! `cargo bench -p mxlab --bench mx [-- OPTIONS]` runs Postfix's `smtp-source` (the load) with
//! the same settings against three servers, each on its own 127.0.0.1 port, in turn, for a few
//! rounds, after one warm-up round of all three that is not counted (the machine may be busy
//! with other work; the median and the spread over the rounds are reported):
//!
//! 1. `smtp-sink` (a child process, killed by its PID at the end), which throws messages away;
//! 2. mxlab's server (`mx::MxBuilder::try_start`) with a fresh event log; its events and messages are
//!    dropped after the run. The server has no switch that turns recording off, so this is the
//!    normal server: the cost of recording alone is *estimated* below, by replaying the
//!    recorded events of one session into a fresh [`EventLog`];
//! 3. mxlab's server as in a real run: events and messages kept to the end, then read back
//!    (`EventLog::snapshot`, `RunningMx::messages`) as a report would; the read-back is timed
//!    and counted in this run's rate.
//!
//! It prints messages per second for each (median, min–max over the rounds), the ratios, the
//! CPU time per message of the server and of the load generator `smtp-source` (on 2 cores it
//! may be the bottleneck: then the rates say more about it than about the server), the resident
//! memory of this process before and right after the first mxlab run (what the server and its
//! log hold for the stored messages) and its peak (`VmHWM`); the load generator and
//! `smtp-sink` are other processes. It skips (successfully) if `smtp-source` or `smtp-sink` is missing
//! (`apt-get install -y postfix`).
//!
//! Options (after `--`):
//!
//! * `--messages N`: `smtp-source -m` (default 20000)
//! * `--sessions N`: `smtp-source -s`, sessions in parallel (default 50)
//! * `--size N`: `smtp-source -l`, payload bytes per message (default 1024)
//! * `--reuse`: `smtp-source -d`, many messages per connection (default: one per connection)
//! * `--threads N`: tokio worker threads for mxlab (default 2, what `mxlab` gets on 2 cores)
//! * `--rounds N`: how many times to measure each server, after the warm-up (default 5)

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use mxlab::events::{EventKind, EventLog};
use mxlab::family::Family;
use mxlab::mx::{self, Listener, ListenerBehaviour};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Command-line settings.
#[derive(clap::Parser)]
#[command(about = "mxlab's fake MX against Postfix's smtp-sink, measured by smtp-source")]
struct Options {
    /// Messages per round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Parallel sessions.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    sessions: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Send several messages per session.
    #[arg(long)]
    reuse: bool,
    /// Worker threads of the fake MX.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Measured rounds (after one warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    #[command(flatten)]
    cargo_bench: common::CargoBenchArgs,
}

impl Options {
    /// The `smtp-source` arguments shared by all runs (the address goes last).
    fn source_args(&self) -> Vec<String> {
        let mut args = vec![
            "-s".to_string(),
            self.sessions.to_string(),
            "-m".to_string(),
            self.messages.to_string(),
            "-l".to_string(),
            self.size.to_string(),
            "-M".to_string(),
            "client.sender.test".to_string(),
            "-f".to_string(),
            "alice@sender.test".to_string(),
            "-t".to_string(),
            "bob@example.test".to_string(),
        ];
        if self.reuse {
            args.push("-d".to_string());
        }
        args
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mx bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One load run's result.
struct Measurement {
    /// Messages per second.
    rate: f64,
    /// CPU time the server spent per message, in microseconds.
    cpu_us: f64,
    /// CPU time the load generator (`smtp-source`) spent per message, in microseconds.
    source_cpu_us: f64,
}

fn run() -> Result<()> {
    let options = Options::parse();
    let (Some(source), Some(sink)) = (find_program("smtp-source"), find_program("smtp-sink"))
    else {
        println!(
            "mx bench skipped: smtp-source and smtp-sink are needed (apt-get install -y postfix)"
        );
        return Ok(());
    };
    let settings = options.source_args();
    println!(
        "smtp-source {} ADDRESS (same load for every server; a warm-up round, then {} round(s), \
         each (i), (ii), (iii); mxlab on {} worker thread(s))",
        settings.join(" "),
        options.rounds,
        options.threads
    );
    let n = u64::from(options.messages);

    // smtp-sink, as a child process for all rounds.
    let sink_addr = SocketAddr::new(LOCALHOST, free_port()?);
    let mut sink_command = Command::new(&sink);
    // As root, smtp-sink must drop privileges (-u).
    if nix::unistd::geteuid().is_root() {
        sink_command.args(["-u", "postfix"]);
    }
    let child = sink_command
        .args(["-m", "1024"])
        .arg(sink_addr.to_string())
        .arg("1024")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", sink.display()))?;
    let sink_pid = child.id().to_string();
    let sink_child = ChildGuard(Some(child));
    wait_for_listener(sink_addr)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(options.threads))
        .enable_all()
        .build()?;
    let baseline = memory()?;
    let mut first_load = None;
    let mut first_read_back = None;
    let (mut sinks, mut fresh, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let mut one_session = Vec::new();
    let mut event_count = 0;
    // Round 0 warms up all three (page cache, allocator, TCP ports) and is not counted.
    for round in 0..=options.rounds {
        let counted = round > 0;
        if counted {
            println!("\n== round {round}");
        } else {
            println!("\n== warm-up round (not counted)");
        }
        // (i) smtp-sink.
        print!("(i)   smtp-sink on {sink_addr}: ");
        let sink = load(&source, &settings, sink_addr, &sink_pid)?.measured(Duration::ZERO);
        if counted {
            sinks.push(sink);
        }

        // (ii) mxlab, its state dropped after the run.
        let (addr, server, log) = start_mx(&runtime)?;
        print!("(ii)  mxlab on {addr}, state dropped after the run: ");
        let dropped = load(&source, &settings, addr, "self")?.measured(Duration::ZERO);
        // Memory is measured around the very first mxlab run (the warm-up's).
        if first_load.is_none() {
            first_load = Some(memory()?);
        }
        if counted {
            fresh.push(dropped);
        }
        check_count("(ii)", server.messages().len(), n)?;
        runtime.block_on(server.shutdown());
        drop(log);

        // (iii) mxlab as in a real run: everything kept, then read back; the read-back is
        // timed and counted in the rate.
        let (addr, server, log) = start_mx(&runtime)?;
        print!("(iii) mxlab on {addr}, everything kept and read back: ");
        let loaded = load(&source, &settings, addr, "self")?;
        let started = Instant::now();
        let messages = server.messages();
        let events = log.snapshot();
        let took = started.elapsed();
        print!("read back in {:.3} s; with it: ", took.as_secs_f64());
        let real = loaded.measured(took);
        check_count("(iii)", messages.len(), n)?;
        if first_read_back.is_none() {
            first_read_back = Some(memory()?);
            one_session = session_events(&events);
            event_count = events.len();
        }
        if counted {
            kept.push(real);
        }
        runtime.block_on(server.shutdown());
    }
    sink_child.stop();
    runtime.shutdown_timeout(Duration::from_secs(2));
    let end = memory()?;

    // What recording alone costs: as many events as run (iii) recorded (those of its first
    // session, over and over), recorded again.
    let replay = EventLog::new();
    let start = Instant::now();
    for kind in one_session.iter().cycle().take(event_count) {
        replay.record(kind.clone());
    }
    let record_seconds = start.elapsed().as_secs_f64();
    drop(replay);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (sink_rate, fresh_rate, kept_rate) = (median(&sinks), median(&fresh), median(&kept));
    println!(
        "\n== Summary: median of {} round(s), {n} messages of {} payload bytes each",
        options.rounds, options.size
    );
    let line = |name: &str, rate: f64, all: &[Measurement]| {
        let each: Vec<String> = all.iter().map(|m| format!("{:.0}", m.rate)).collect();
        let (low, high) = spread(all.iter().map(|m| m.rate));
        let source_us = middle(all.iter().map(|m| m.source_cpu_us));
        println!(
            "{name:<42} {rate:>7.0} msgs/s median, {low:.0}–{high:.0} (±{:.0}%) over rounds \
             [{}]; CPU µs/msg (median): server {:.0}, smtp-source {source_us:.0} (it keeps \
             {:.2} of {cores} core(s) busy at this rate)",
            50.0 * (high - low) / rate,
            each.join(", "),
            middle(all.iter().map(|m| m.cpu_us)),
            rate * source_us / 1e6,
        );
    };
    line("(i)   smtp-sink:", sink_rate, &sinks);
    line(
        "(ii)  mxlab, state dropped after the run:",
        fresh_rate,
        &fresh,
    );
    line("(iii) mxlab, as in a real run:", kept_rate, &kept);
    println!(
        "ratios: (ii)/(i) {:.3}, (iii)/(i) {:.3}, (iii)/(ii) {:.3}",
        fresh_rate / sink_rate,
        kept_rate / sink_rate,
        kept_rate / fresh_rate
    );
    let per_message = event_count as f64 / n as f64;
    println!(
        "recording: {per_message:.1} events per message; recording them again into a fresh log \
         takes {:.2} µs per message, {:.1}% of a message's time at the (iii) rate (one thread, \
         no contention: roughly what a 'recording off' switch would save)",
        record_seconds * 1e6 / n as f64,
        100.0 * record_seconds / n as f64 * kept_rate
    );
    let (first_load, first_read_back) = (
        first_load.context("no round ran")?,
        first_read_back.context("no round ran")?,
    );
    let held = first_load.rss_kib.saturating_sub(baseline.rss_kib);
    println!(
        "memory of this process: VmRSS {} MiB before the first mxlab run, {} MiB right after it \
         (the server and its log holding {n} messages and {event_count} events), {} MiB after \
         (iii) read everything back (copies); VmHWM {} MiB at the end",
        baseline.rss_kib / 1024,
        first_load.rss_kib / 1024,
        first_read_back.rss_kib / 1024,
        end.hwm_kib / 1024,
    );
    println!(
        "  => {:.1} KiB resident per stored message ({:.0} MiB per 20000 messages of {} payload \
         bytes)",
        held as f64 / n as f64,
        held as f64 / n as f64 * 20_000.0 / 1024.0,
        options.size
    );
    Ok(())
}

/// The median rate of `runs`.
fn median(runs: &[Measurement]) -> f64 {
    middle(runs.iter().map(|m| m.rate))
}

/// The median of `values` (the upper one of the middle two for an even count).
fn middle(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The lowest and highest of `values`.
fn spread(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    })
}

/// Starts a normal mxlab server on a free 127.0.0.1 port; returns its address, the server and
/// its log.
fn start_mx(runtime: &tokio::runtime::Runtime) -> Result<(SocketAddr, mx::RunningMx, EventLog)> {
    let socket = TcpListener::bind((LOCALHOST, 0)).context("binding mxlab's port")?;
    let addr = socket.local_addr()?;
    let log = EventLog::new();
    let listener = Listener {
        socket,
        family: Family::Ipv4,
        behaviour: ListenerBehaviour::normal("mx1.example.test"),
    };
    let server = runtime.block_on(async {
        mx::MxBuilder::new("mx1", "mx1.example.test", log.clone())
            .listener(listener)
            .try_start()
    })?;
    Ok((addr, server, log))
}

/// The events of the first session in `events`, for replaying.
fn session_events(events: &[mxlab::events::Event]) -> Vec<EventKind> {
    let session = |kind: &EventKind| match kind {
        EventKind::SmtpConnected { session, .. }
        | EventKind::SmtpCommand { session, .. }
        | EventKind::SmtpReply { session, .. }
        | EventKind::MessageAccepted { session, .. }
        | EventKind::SmtpClosed { session, .. } => Some(*session),
        _ => None,
    };
    let first = events.iter().find_map(|e| session(&e.kind));
    events
        .iter()
        .filter(|e| first.is_some() && session(&e.kind) == first)
        .map(|e| e.kind.clone())
        .collect()
}

fn check_count(run: &str, stored: usize, want: u64) -> Result<()> {
    if stored as u64 != want {
        bail!("{run}: the server stored {stored} messages, smtp-source sent {want}");
    }
    Ok(())
}

/// One `smtp-source` run, before it is turned into a rate.
struct Load {
    /// Messages sent.
    messages: f64,
    /// Wall time of the run.
    seconds: f64,
    /// Server CPU time per message, in microseconds.
    cpu_us: f64,
    /// `smtp-source` CPU time per message, in microseconds.
    source_cpu_us: f64,
}

impl Load {
    /// The measurement, counting `extra` wall time (e.g. a read-back) as part of the run;
    /// prints it.
    fn measured(self, extra: Duration) -> Measurement {
        let seconds = self.seconds + extra.as_secs_f64();
        let rate = self.messages / seconds;
        println!(
            "{} messages in {seconds:.2} s: {rate:.0} msgs/s, server CPU {:.0} µs/msg, \
             smtp-source CPU {:.0} µs/msg",
            self.messages, self.cpu_us, self.source_cpu_us
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        Measurement {
            rate,
            cpu_us: self.cpu_us,
            source_cpu_us: self.source_cpu_us,
        }
    }
}

/// Runs `smtp-source` against `server`, whose CPU time is that of process `pid` (`self` for
/// this one).
fn load(source: &Path, settings: &[String], server: SocketAddr, pid: &str) -> Result<Load> {
    let messages: f64 = settings
        .iter()
        .position(|a| a == "-m")
        .and_then(|i| settings.get(i + 1))
        .and_then(|m| m.parse().ok())
        .context("-m in the settings")?;
    let cpu_before = cpu_ticks(pid)?;
    let children_before = children_cpu_seconds();
    let start = Instant::now();
    let output = Command::new(source)
        .args(settings)
        .arg(server.to_string())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", source.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks(pid)? - cpu_before) as f64 * 1e6 / TICKS_PER_SECOND / messages;
    // smtp-source is the only child reaped during the run (smtp-sink is reaped at the end).
    let source_cpu_us = (children_cpu_seconds() - children_before) * 1e6 / messages;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        bail!(
            "smtp-source against {server}: {} {}",
            output.status,
            stderr.lines().take(10).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Load {
        messages,
        seconds,
        cpu_us,
        source_cpu_us,
    })
}

/// User plus system CPU time of this process's reaped children so far, in seconds.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The unit of the CPU times in `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of process `pid` (all its threads) so far, in ticks.
fn cpu_ticks(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {} of /proc/{pid}/stat", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Resident memory of this process, from `/proc/self/status`.
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory() -> Result<Memory> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} in /proc/self/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Kills the child (by its PID) when stopped or dropped, and reaps it.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            if !stderr.trim().is_empty() {
                println!("smtp-sink said: {}", stderr.trim());
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A program on `PATH` or in the sbin directories (Postfix's tools live in `/usr/sbin`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback TCP port free right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((LOCALHOST, 0))?.local_addr()?.port())
}

/// Waits up to 10 s until something accepts connections on `addr`.
fn wait_for_listener(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after 10 s")
}
