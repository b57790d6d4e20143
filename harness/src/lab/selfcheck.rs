//! The clock self-check of an accelerated run (see [`crate::sut::clockcheck`]), wired into
//! the run: processes are watched while it goes, the log is read at the end.

use std::path::Path;
use std::time::SystemTime;

use crate::clock::ClockRate;
use crate::events::{EventKind, EventLog};
use crate::sut::clockcheck::{self, ProcessWatch};

/// Looks at the SUT's processes every [`clockcheck::SAMPLE_EVERY`]; never completes. Without
/// a PID namespace to watch it just waits.
pub async fn watch_processes(namespace: Option<&Path>, watch: &mut ProcessWatch) {
    let Some(namespace) = namespace else {
        return std::future::pending().await;
    };
    loop {
        watch.sample(namespace);
        tokio::time::sleep(clockcheck::SAMPLE_EVERY).await;
    }
}

/// Judges the run's clock: records what was checked and measured as a harness event, and
/// returns the reason for an ERROR if a process of the MTA ran on the wall clock.
pub fn conclude(
    log: &EventLog,
    rate: ClockRate,
    watch: &ProcessWatch,
    log_start: SystemTime,
    spawned: SystemTime,
) -> Option<String> {
    let logged = clockcheck::logged_clock(&log.snapshot(), log_start, spawned, rate);
    let measured = logged.measured.map_or_else(
        || "too short a log to measure its rate".to_string(),
        |measured| format!("its log's clock ran at x{measured:.0}"),
    );
    log.record(EventKind::Harness {
        message: format!(
            "clock self-check at {rate}: {} process(es) checked for libfaketime; {measured}",
            watch.checked()
        ),
    });
    let escapes: Vec<String> = watch
        .escapes()
        .iter()
        .chain(&logged.escapes)
        .map(|escape| format!("{}: {}", escape.process, escape.evidence))
        .collect();
    /// Escaped processes named in the verdict; the rest are counted.
    const NAMED: usize = 3;
    (!escapes.is_empty()).then(|| {
        let named = escapes[..escapes.len().min(NAMED)].join("; ");
        let more = match escapes.len().saturating_sub(NAMED) {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        format!(
            "the MTA did not run on the accelerated clock ({rate}), so its timeouts took {} times \
             too long and no verdict is given. {named}{more}. Fix: keep LD_PRELOAD and FAKETIME through \
             the MTA's environment filter, avoid setuid re-execs (use a plain copy of the \
             binary), or run it with --clock real --timeouts fast",
            rate.times(),
        )
    })
}
