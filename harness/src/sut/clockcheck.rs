//! The clock self-check: did every process of the MTA run on the accelerated world clock?
//!
//! A process escapes libfaketime when it is started by a setuid exec (the loader drops
//! `LD_PRELOAD`), is a static or Go binary, or had its environment cleaned. It then waits for
//! its timeouts in wall time — 100 times too long at x100 — and the verdict would describe the
//! clock, not the MTA. So every accelerated run is checked from outside, two ways:
//!
//! - **Every process** the MTA starts in its PID namespace is looked at while the run goes
//!   (`/proc/PID/maps` must contain libfaketime). One that does not is named with its
//!   command and executable, and the run is an ERROR.
//! - **The MTA's clock as it logs it:** log lines that start with a timestamp (Postfix's
//!   `Dec  3 21:08:11`, Exim's `2026-12-03 21:08:11.123`) are compared with the wall clock.
//!   Over the run, the MTA's clock must advance by the rate (within the timestamps'
//!   resolution); the measured rate is reported, and a line stamped by the wall clock long
//!   after the start names its process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::clock::ClockRate;
use crate::events::{Event, EventKind};

/// How often the PID namespace is looked at.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A process of the MTA that runs on the wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape {
    /// The process: `smtp (pid 4711, /usr/lib/postfix/sbin/smtp)` or, from its log line,
    /// `postfix/smtp[57]`.
    pub process: String,
    /// How it was caught.
    pub evidence: String,
}

/// Processes of one PID namespace seen so far, and those that escaped the world clock.
#[derive(Debug, Default)]
pub struct ProcessWatch {
    seen: BTreeMap<u32, ()>,
    escapes: Vec<Escape>,
}

impl ProcessWatch {
    /// Looks at every process now in the PID namespace named by `namespace` (a `pid:[inode]`
    /// link text) that was not looked at before. The namespace's init (netns's own reaper,
    /// which never execs) is skipped.
    pub fn sample(&mut self, namespace: &Path) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if self.seen.contains_key(&pid) {
                continue;
            }
            let dir = entry.path();
            if std::fs::read_link(dir.join("ns/pid")).ok().as_deref() != Some(namespace) {
                continue;
            }
            let Some(inside) = pid_inside(&dir) else {
                continue;
            };
            if inside == 1 {
                self.seen.insert(pid, ());
                continue;
            }
            // A zombie has no maps and no exe; a process caught between fork and exec still
            // shows the harness's image: look again next time.
            let (Ok(maps), Ok(exe)) = (
                std::fs::read_to_string(dir.join("maps")),
                std::fs::read_link(dir.join("exe")),
            ) else {
                continue;
            };
            if maps.is_empty() || exe == std::env::current_exe().unwrap_or_default() {
                continue;
            }
            let evidence = match Image::of(&maps) {
                // The dynamic loader has not mapped the libraries yet: look again next time.
                Image::Loading => continue,
                Image::Preloaded => None,
                Image::Dynamic => Some("libfaketime is not loaded in it"),
                Image::Static => Some("it is a static binary, which libfaketime cannot reach"),
            };
            self.seen.insert(pid, ());
            if let Some(evidence) = evidence {
                self.escapes.push(Escape {
                    process: describe(&dir, pid, &exe),
                    evidence: evidence.into(),
                });
            }
        }
    }

    /// How many processes were looked at.
    pub fn checked(&self) -> usize {
        self.seen.len()
    }

    /// The processes that ran on the wall clock.
    pub fn escapes(&self) -> &[Escape] {
        &self.escapes
    }
}

/// What a process's memory map says of its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    /// Dynamically linked, with libfaketime loaded.
    Preloaded,
    /// Dynamically linked, without libfaketime.
    Dynamic,
    /// The kernel or the loader is still at work: execve maps the binary, then the dynamic
    /// loader, then the vDSO, and the loader maps the C library after that.
    Loading,
    /// No dynamic loader at all: a static binary (Go's, for instance).
    Static,
}

impl Image {
    fn of(maps: &str) -> Image {
        if maps.contains(super::faketime::LIBRARY_NAME) {
            Image::Preloaded
        } else if !maps.contains("[vdso]") {
            Image::Loading
        } else if !maps.contains("/ld-linux") {
            Image::Static
        } else if maps.contains("/libc.so") {
            Image::Dynamic
        } else {
            Image::Loading
        }
    }
}

/// The PID of a process in its own (innermost) PID namespace, from `NSpid` in its status.
fn pid_inside(dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last())
        .and_then(|pid| pid.parse().ok())
}

fn describe(dir: &Path, pid: u32, exe: &Path) -> String {
    let command: Vec<String> = std::fs::read(dir.join("cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
    let preloaded = environ
        .split(|b| *b == 0)
        .any(|var| var.starts_with(b"LD_PRELOAD="));
    format!(
        "`{}` (pid {pid}, {}; LD_PRELOAD {})",
        command.join(" "),
        exe.display(),
        if preloaded {
            "set but not honoured"
        } else {
            "missing from its environment"
        }
    )
}

/// What the MTA's log says of its clock.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedClock {
    /// The rate measured from the MTA's start to its latest timestamped line: MTA seconds
    /// per wall second (a lower bound: a line is read a little after it was written).
    pub measured: Option<f64>,
    /// Lines that carry the wall clock although the world clock had long moved on.
    pub escapes: Vec<Escape>,
}

/// Reads the MTA's clock off its timestamped log lines. `events` are the run's events, whose
/// times count from `log_start` (system time); `spawned` is when the MTA was started, which is
/// when its world clock started. Times in the log are read as UTC (the SUT runs with `TZ=UTC`).
pub fn logged_clock(
    events: &[Event],
    log_start: SystemTime,
    spawned: SystemTime,
    rate: ClockRate,
) -> LoggedClock {
    let stamped: Vec<(SystemTime, SystemTime, String)> = events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::SutLog { line } => {
                let (stamp, process) = timestamp(line, log_start + event.at)?;
                Some((log_start + event.at, stamp, process))
            }
            _ => None,
        })
        .collect();
    // One log file is written in order, so its stamps only go forwards, give or take the
    // scheduling of processes that log at about the same time (0.1 s of wall time). A process
    // on the wall clock falls behind the world clock by the rate each second, and its lines
    // go backwards against those of its accelerated peers.
    let tolerance = (0.1 * f64::from(rate.times())).max(2.0);
    let mut escapes: Vec<Escape> = Vec::new();
    let mut latest: Option<(SystemTime, &str)> = None;
    for (_, stamp, process) in &stamped {
        match latest {
            Some((ahead, by)) if secs_between(*stamp, ahead) > tolerance => {
                if !escapes.iter().any(|e| &e.process == process) {
                    escapes.push(Escape {
                        process: process.clone(),
                        evidence: format!(
                            "its clock read {} after {by} had logged {}: it runs {:.0} s behind \
                             the world clock at {rate}",
                            humantime::format_rfc3339_millis(*stamp),
                            humantime::format_rfc3339_millis(ahead),
                            secs_between(*stamp, ahead)
                        ),
                    });
                }
            }
            Some((ahead, _)) if ahead >= *stamp => {}
            _ => latest = Some((*stamp, process)),
        }
    }
    // The world clock started with the MTA at the wall time of its start, so each line gives
    // (world elapsed)/(wall elapsed); the latest line, whose span dwarfs the stamps'
    // resolution and the tail's delay best, gives the measurement.
    let measured = stamped
        .iter()
        .map(|(received, stamp, _)| {
            (
                secs_between(spawned, *received),
                secs_between(spawned, *stamp),
            )
        })
        .filter(|(wall, world)| *wall > 0.0 && *world >= 10.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(wall, world)| world / wall);
    LoggedClock { measured, escapes }
}

fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The timestamp a log line starts with, and the process it names (`postfix/smtp[57]`, or
/// Exim's `[pid]`, or the rest of the prefix). Understands syslog's `Mmm dd hh:mm:ss` (the year
/// taken as the one that puts the stamp nearest `near`) and `YYYY-MM-DD hh:mm:ss[.fff]`.
pub fn timestamp(line: &str, near: SystemTime) -> Option<(SystemTime, String)> {
    if let Some((stamp, rest)) = iso_stamp(line) {
        let process = rest
            .split_whitespace()
            .find(|word| word.starts_with('[') && word.ends_with(']'))
            .unwrap_or("exim")
            .to_string();
        return Some((stamp, process));
    }
    let (stamp, rest) = syslog_stamp(line, near)?;
    // `HOST PROGRAM[PID]: message`
    let process = rest
        .split_whitespace()
        .nth(1)
        .map(|p| p.trim_end_matches(':').to_string())
        .unwrap_or_default();
    Some((stamp, process))
}

fn iso_stamp(line: &str) -> Option<(SystemTime, &str)> {
    let end = line
        .char_indices()
        .skip(19)
        .find(|(_, c)| *c == ' ')
        .map_or(line.len(), |(i, _)| i);
    let text = line.get(..end)?;
    let stamp = humantime::parse_rfc3339_weak(text).ok()?;
    Some((stamp, &line[end..]))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn syslog_stamp(line: &str, near: SystemTime) -> Option<(SystemTime, &str)> {
    let month = MONTHS.iter().position(|m| line.starts_with(m))? + 1;
    let rest = line.get(3..)?.trim_start();
    let (day, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start();
    let (clock, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok()?;
    let near_year: i64 = humantime::format_rfc3339(near).to_string()[..4]
        .parse()
        .ok()?;
    let candidates = [near_year - 1, near_year, near_year + 1];
    let stamp = candidates
        .iter()
        .filter_map(|year| {
            humantime::parse_rfc3339_weak(&format!("{year:04}-{month:02}-{day:02} {clock}")).ok()
        })
        .min_by_key(|stamp| (secs_between(near, *stamp).abs() * 1000.0) as u64)?;
    Some((stamp, rest))
}

/// The `pid:[inode]` link that names the PID namespace of the children of `pid`.
pub fn pid_namespace_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid_for_children")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(text).unwrap()
    }

    #[test]
    fn a_process_mid_exec_is_not_taken_for_a_static_binary() {
        let exe = "55d0c0a00000-55d0c0a2e000 r--p 00000000 08:01 1234 /opt/mxlab/exim4\n";
        let stack = "7ffd1e3a1000-7ffd1e3c2000 rw-p 00000000 00:00 0 [stack]\n";
        let loader = "7f1b2c3d4000-7f1b2c3d5000 r--p 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n";
        let vdso = "7ffd1e3f0000-7ffd1e3f2000 r-xp 00000000 00:00 0 [vdso]\n";
        let libc = "7f1b2c000000-7f1b2c028000 r--p 00000000 08:01 98 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        let faketime = "7f1b2b000000-7f1b2b008000 r--p 00000000 08:01 97 /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1\n";
        // execve has mapped the binary but neither the loader nor the vDSO yet.
        assert_eq!(Image::of(&format!("{exe}{stack}")), Image::Loading);
        assert_eq!(Image::of(&format!("{exe}{loader}{stack}")), Image::Loading);
        assert_eq!(
            Image::of(&format!("{exe}{loader}{stack}{vdso}")),
            Image::Loading
        );
        assert_eq!(Image::of(&format!("{exe}{stack}{vdso}")), Image::Static);
        assert_eq!(
            Image::of(&format!("{exe}{libc}{loader}{stack}{vdso}")),
            Image::Dynamic
        );
        assert_eq!(
            Image::of(&format!("{exe}{faketime}{libc}{loader}{stack}{vdso}")),
            Image::Preloaded
        );
    }

    #[test]
    fn syslog_and_iso_stamps_are_read_with_their_process() {
        let near = at("2026-12-03 21:08:30");
        let (stamp, process) =
            timestamp("Dec  3 21:08:11 sut postfix/smtp[57]: connect to x", near).unwrap();
        assert_eq!(stamp, at("2026-12-03 21:08:11"));
        assert_eq!(process, "postfix/smtp[57]");
        let (stamp, process) =
            timestamp("2026-12-03 21:08:11.250 [42] 1vXa Completed", near).unwrap();
        assert_eq!(stamp, at("2026-12-03 21:08:11.250"));
        assert_eq!(process, "[42]");
        // A stamp from the world clock days ahead still gets this year.
        let (stamp, _) = timestamp("Dec  9 04:00:00 sut postfix/qmgr[3]: x", near).unwrap();
        assert_eq!(stamp, at("2026-12-09 04:00:00"));
        assert!(timestamp("postfix start-fg: fatal", near).is_none());
        assert!(timestamp("reference: connect", near).is_none());
    }

    fn log(lines: &[(u64, &str)]) -> Vec<Event> {
        lines
            .iter()
            .map(|(millis, line)| Event {
                at: Duration::from_millis(*millis),
                kind: EventKind::SutLog {
                    line: line.to_string(),
                },
            })
            .collect()
    }

    #[test]
    fn an_accelerated_log_measures_the_rate_and_a_wall_clock_line_is_named() {
        let start = at("2026-12-03 21:00:00");
        let rate: ClockRate = "x100".parse().unwrap();
        // Lines received 0.1 s and 2.1 s after the start: 10 s and 210 s of MTA time.
        let events = log(&[
            (100, "Dec  3 21:00:10 sut postfix/master[2]: daemon started"),
            (2100, "Dec  3 21:03:30 sut postfix/qmgr[5]: 1A2B: removed"),
        ]);
        let clock = logged_clock(&events, start, start, rate);
        assert!(clock.escapes.is_empty(), "{clock:?}");
        assert_eq!(clock.measured.map(|r| r.round()), Some(100.0));

        // postfix/smtp logs the wall clock 2.1 s after the start, behind qmgr's world clock.
        let events = log(&[
            (100, "Dec  3 21:00:10 sut postfix/master[2]: daemon started"),
            (
                2000,
                "Dec  3 21:03:20 sut postfix/qmgr[5]: 1A2B: from=<a@b.test>",
            ),
            (2100, "Dec  3 21:00:02 sut postfix/smtp[9]: connect to mx1"),
        ]);
        let clock = logged_clock(&events, start, start, rate);
        assert_eq!(clock.escapes.len(), 1, "{clock:?}");
        assert_eq!(clock.escapes[0].process, "postfix/smtp[9]");
        // Lines of processes that log at about the same time may swap by a few seconds.
        let events = log(&[
            (100, "Dec  3 21:00:15 sut postfix/master[2]: daemon started"),
            (150, "Dec  3 21:00:09 sut postfix/qmgr[5]: started"),
        ]);
        assert!(logged_clock(&events, start, start, rate).escapes.is_empty());
    }
}
