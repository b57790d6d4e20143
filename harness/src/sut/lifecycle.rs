//! One external SUT process's life, shared by the built-in MTA drivers and driver files:
//! spawning it isolated in the SUT namespace, waiting until it is ready, handing it mail over
//! SMTP, quoting its logs when it fails, and stopping it.
//!
//! A driver writes its configuration, describes the process in an [`InstanceSpec`] and
//! [`Instance::launch`]es it; what is particular to one MTA (its tools for the queue and for
//! retries, diagnosing a refused start) stays in the driver, around these calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::events::{EventKind, EventLog, QueueEntry};
use crate::sut::common;
use crate::sut::instance::Isolation;
use crate::sut::logtail::{last_lines, LogTail};
use crate::sut::{faketime, OutgoingMessage, SutContext, SutError};

/// Pause between greeting probes.
const GREETING_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of each log quoted in start-up errors.
const TAIL_LINES: usize = 25;

/// What to start and how to watch it.
pub(crate) struct InstanceSpec {
    /// The MTA's name in messages, e.g. `Postfix`.
    pub(crate) sut: &'static str,
    /// The command (program, arguments, working directory, environment). Its standard input
    /// is closed and its output goes to [`output`](Self::output); it runs on the world clock
    /// (libfaketime's variables are added unless it sets them itself).
    pub(crate) command: std::process::Command,
    /// How errors name the command, e.g. `/usr/sbin/postfix -c DIR start-fg`.
    pub(crate) command_line: String,
    /// The file that gets the command's standard output and error.
    pub(crate) output: PathBuf,
    /// What the output's lines are labelled with where they are quoted or recorded, and how
    /// errors about watching the command name it, e.g. `postfix start-fg`.
    pub(crate) output_label: &'static str,
    /// Log files recorded line by line as [`EventKind::SutLog`] while the instance runs (it
    /// may write them later). Listing [`output`](Self::output) here records its lines
    /// unlabelled as they come; otherwise they are recorded, labelled, when it stops.
    pub(crate) logs: Vec<PathBuf>,
    /// Further files the MTA writes besides its logs (e.g. a panic log): quoted in start-up
    /// errors and recorded when it stops, each line with its label.
    pub(crate) quoted: Vec<(PathBuf, &'static str)>,
    /// The SMTP listener mail is injected to (and probed by [`Instance::launch`]).
    pub(crate) listen: SocketAddr,
    /// `(source, target)` bind mounts in the instance's mount namespace, before the shared
    /// clock's and the instance's `/etc/hosts`.
    pub(crate) bind_mounts: Vec<(PathBuf, PathBuf)>,
    /// How long after [`begun`](Self::begun) the MTA may take to become ready.
    pub(crate) ready_timeout: Duration,
    /// How long the MTA gets to exit after SIGTERM before SIGKILL.
    pub(crate) stop_grace: Duration,
    /// When the driver began starting the MTA: the ready timeout and the start-up time count
    /// from here.
    pub(crate) begun: Instant,
}

/// A running MTA process in the SUT namespace, in a PID namespace of its own (so ending it
/// ends every process of the MTA), with the lab's `resolv.conf`, its own host name,
/// `/etc/hosts` and `/dev/log`. Dropping it kills every process (prefer
/// [`stop`](Self::stop), which also records the last log lines).
pub(crate) struct Instance {
    sut: &'static str,
    namespaces: netns::ProcessNamespaces,
    process: netns::Process,
    tails: Vec<LogTail>,
    isolation: Isolation,
    log: EventLog,
    listen: SocketAddr,
    /// The followed logs, quoted as they are.
    followed: Vec<PathBuf>,
    /// The files quoted and recorded at stop with their label.
    quoted: Vec<(PathBuf, &'static str)>,
    output_label: &'static str,
    ready_timeout: Duration,
    stop_grace: Duration,
    begun: Instant,
    startup: Duration,
}

impl Instance {
    /// [`spawn`](Self::spawn)s the MTA and waits until its listener answers 220 (at most the
    /// spec's ready timeout). If it does not, the instance is stopped and the error quotes the
    /// end of its logs: [`SutError::Exited`] if the MTA exited, [`SutError::NotReady`] with
    /// the last probe's outcome if the time ran out.
    pub(crate) async fn launch(ctx: &SutContext<'_>, spec: InstanceSpec) -> Result<Self, SutError> {
        let mut instance = Self::spawn(ctx, spec)?;
        let listen = instance.listen;
        let ready = instance
            .wait_ready(
                &listen.to_string(),
                GREETING_PROBE_INTERVAL,
                async |instance| common::probe_greeting(instance.namespaces.net(), listen).await,
            )
            .await;
        match ready {
            Ok(()) => Ok(instance),
            Err(e) => {
                let _ = instance.stop().await;
                Err(e)
            }
        }
    }

    /// Starts the spec's command in the SUT namespace (private mount namespace with the lab's
    /// `resolv.conf`, the spec's bind mounts and, on an accelerated clock, the shared clock;
    /// own PID namespace; the instance's host name, `/etc/hosts` and `/dev/log`) and starts
    /// recording its logs. It is not ready yet: see [`wait_ready`](Self::wait_ready).
    pub(crate) fn spawn(ctx: &SutContext<'_>, spec: InstanceSpec) -> Result<Self, SutError> {
        let InstanceSpec {
            sut,
            mut command,
            command_line,
            output,
            output_label,
            logs,
            mut quoted,
            listen,
            bind_mounts,
            ready_timeout,
            stop_grace,
            begun,
        } = spec;
        if ctx.timing.clock.is_accelerated() {
            faketime::check_installed(sut)?;
        }
        let out = std::fs::File::create(&output)
            .map_err(|e| common::io_error(sut, &format!("create {}", output.display()), e))?;
        let out2 = out
            .try_clone()
            .map_err(|e| common::io_error(sut, "duplicate a file descriptor", e))?;
        for (key, value) in faketime::environment(ctx.timing.clock) {
            if !command.get_envs().any(|(set, _)| set == key) {
                command.env(key, value);
            }
        }
        command.stdin(Stdio::null()).stdout(out).stderr(out2);
        if !logs.contains(&output) {
            quoted.push((output, output_label));
        }
        let tails = logs
            .iter()
            .map(|path| LogTail::start(path.clone(), ctx.log.clone()))
            .collect();
        let isolation = Isolation::prepare(sut, ctx)?;
        let options = isolation.spawn_options(netns::SpawnOptions {
            resolv_conf: Some(ctx.resolv_conf.to_path_buf()),
            own_pid_namespace: true,
            bind_mounts: bind_mounts
                .into_iter()
                .chain(faketime::SharedClock::prepare(
                    sut,
                    ctx.timing.clock,
                    ctx.work_dir,
                )?)
                .collect(),
            ..Default::default()
        });
        let process =
            netns::spawn(ctx.namespace, command, options).map_err(|e| SutError::Namespace {
                sut,
                action: format!("start `{command_line}`"),
                detail: e.to_string(),
            })?;
        // Held open so the MTA's tools can run in them, also after the instance stopped.
        let namespaces = netns::ProcessNamespaces::of(ctx.namespace.fd(), &process)
            .map_err(|e| common::io_error(sut, "open the instance's namespaces", e))?;
        Ok(Self {
            sut,
            namespaces,
            process,
            tails,
            isolation,
            log: ctx.log.clone(),
            listen,
            followed: logs,
            quoted,
            output_label,
            ready_timeout,
            stop_grace,
            begun,
            startup: Duration::ZERO,
        })
    }

    /// Runs `probe` every `interval` until it succeeds (the instance is ready: the start-up
    /// time is taken), the command exits ([`SutError::Exited`]) or the ready timeout has passed
    /// ([`SutError::NotReady`] naming `what` was probed, with the last probe's outcome); both
    /// errors quote the end of the logs.
    pub(crate) async fn wait_ready(
        &mut self,
        what: &str,
        interval: Duration,
        mut probe: impl AsyncFnMut(&Instance) -> Result<(), String>,
    ) -> Result<(), SutError> {
        let sut = self.sut;
        loop {
            match self.process.try_exit_status() {
                Ok(Some(status)) => {
                    return Err(SutError::Exited {
                        sut,
                        status: status.to_string(),
                        log_tail: self.log_tail(),
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(SutError::Namespace {
                        sut,
                        action: format!("watch `{}`", self.output_label),
                        detail: e.to_string(),
                    })
                }
            }
            let detail = match probe(self).await {
                Ok(()) => {
                    self.startup = self.begun.elapsed();
                    tracing::info!(
                        seconds = self.startup.as_secs_f64(),
                        "{sut} is ready on {what}"
                    );
                    return Ok(());
                }
                Err(detail) => detail,
            };
            if self.begun.elapsed() >= self.ready_timeout {
                return Err(SutError::NotReady {
                    sut,
                    address: what.to_string(),
                    waited: self.begun.elapsed(),
                    detail,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Injects `message` over SMTP to the listener inside the SUT namespace and returns the
    /// reply to the end of DATA. Records [`EventKind::MessageInjected`]. Any refusal (non-2xx
    /// reply) is an error naming the step.
    pub(crate) async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        let reply =
            common::send_over_smtp(self.sut, self.namespaces.net(), self.listen, message).await?;
        common::record_injection(&self.log, message, &reply);
        Ok(reply)
    }

    /// The end of each log, of the other quoted files (labelled) and of what the MTA sent to
    /// `/dev/log` (labelled `syslog`), for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let mut lines = Vec::new();
        for path in &self.followed {
            lines.extend(last_lines(path, TAIL_LINES));
        }
        for (path, label) in &self.quoted {
            lines.extend(labelled(label, last_lines(path, TAIL_LINES)));
        }
        lines.extend(labelled(
            "syslog",
            self.isolation.last_syslog_lines(TAIL_LINES),
        ));
        if lines.is_empty() {
            let files: Vec<String> = self
                .followed
                .iter()
                .chain(self.quoted.iter().map(|(path, _)| path))
                .map(|path| path.display().to_string())
                .collect();
            format!("(nothing in {})", enumerate(&files))
        } else {
            lines.join("\n")
        }
    }

    /// Gives the command up to `within` to exit by itself (e.g. after the MTA's own stop
    /// command), checking every `interval`.
    pub(crate) async fn wait_for_exit(&mut self, within: Duration, interval: Duration) {
        let waited = Instant::now();
        while waited.elapsed() < within && matches!(self.process.try_exit_status(), Ok(None)) {
            tokio::time::sleep(interval).await;
        }
    }

    /// Stops every process of the MTA (SIGTERM, which the PID namespace's init forwards to all
    /// of them, then SIGKILL after the grace period) and records the log lines not yet
    /// recorded, then those of the quoted files, labelled.
    pub(crate) async fn stop(self) -> Result<(), SutError> {
        let Instance {
            sut,
            mut process,
            tails,
            isolation,
            log,
            quoted,
            stop_grace,
            ..
        } = self;
        let begun = Instant::now();
        let stopped = process
            .stop(stop_grace)
            .await
            .map_err(|e| SutError::Namespace {
                sut,
                action: format!("stop the {sut} PID namespace"),
                detail: e.to_string(),
            });
        tracing::info!(seconds = begun.elapsed().as_secs_f64(), "{sut} stopped");
        for tail in tails {
            tail.finish().await;
        }
        isolation.finish().await;
        for (path, label) in &quoted {
            record_lines(&log, path, label);
        }
        stopped
    }

    /// Records `entries`, the messages still queued, as an [`EventKind::SutQueue`] event and
    /// returns them.
    pub(crate) fn record_queue(&self, entries: Vec<QueueEntry>) -> Vec<QueueEntry> {
        self.log.record(EventKind::SutQueue {
            entries: entries.clone(),
        });
        entries
    }

    /// How long the start took until the MTA was ready.
    pub(crate) fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The `pid:[inode]` name of the instance's PID namespace, for the clock self-check.
    pub(crate) fn pid_namespace(&self) -> Option<PathBuf> {
        crate::sut::clockcheck::pid_namespace_of(self.process.pid())
    }

    /// The instance's namespaces, for running the MTA's tools inside them.
    pub(crate) fn ns(&self) -> &netns::ProcessNamespaces {
        &self.namespaces
    }

    /// The run's event log.
    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }
}

/// Records every line of `path` as an [`EventKind::SutLog`] labelled `label`.
pub(crate) fn record_lines(log: &EventLog, path: &std::path::Path, label: &str) {
    for line in labelled(label, last_lines(path, usize::MAX)) {
        log.record(EventKind::SutLog { line });
    }
}

/// `lines`, each prefixed with `label: `.
fn labelled(label: &str, lines: Vec<String>) -> impl Iterator<Item = String> + '_ {
    lines
        .into_iter()
        .map(move |line| format!("{label}: {line}"))
}

/// `a`, `a or b`, `a, b or c`.
fn enumerate(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lists_read_as_prose() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(enumerate(&names(&["a"])), "a");
        assert_eq!(enumerate(&names(&["a", "b"])), "a or b");
        assert_eq!(enumerate(&names(&["a", "b", "c"])), "a, b or c");
    }

    #[test]
    fn recorded_lines_carry_their_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paniclog");
        std::fs::write(&path, "one\n\ntwo\n").unwrap();
        let log = EventLog::new();
        record_lines(&log, &path, "exim paniclog");
        let lines = crate::test_support::sut_log_lines(&log);
        assert_eq!(lines, ["exim paniclog: one", "exim paniclog: two"]);
    }
}
