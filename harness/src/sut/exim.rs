//! The Exim driver: a private, throwaway Exim 4 instance inside the SUT namespace.
//!
//! Exim is Debian's `exim4-daemon-light`, unpacked (not installed: it conflicts with Postfix)
//! under `/opt/mxlab/exim` by `.ci/install-deps.sh`. Layout under the work directory (see
//! [`config::Layout`]): `exim.conf` (generated), `spool/` (fresh per run, so no retry hints
//! carry over), `log/mainlog` and `log/paniclog`, and `exim.out` (the daemon's standard output
//! and error). The work directory is bind-mounted over [`config::INSTANCE_DIR`] in the
//! instance's private mount namespace, which is why every path Exim sees is an
//! `/opt/mxlab/exim/instance/...` path (see the [`config`] module for why).
//!
//! The daemon, `exim -C /opt/mxlab/exim/instance/exim.conf -bdf -q30m` (Debian's queue interval;
//! `-q1s` with retuned timers), runs in the foreground
//! in a PID namespace of its own, so stopping that namespace ends every delivery process too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::QueueEntry;
use crate::sut::common;
use crate::sut::lifecycle::{record_lines, Instance, InstanceSpec};
use crate::sut::{OutgoingMessage, RunningSut, SutContext, SutError, Timing};

pub mod config;
#[cfg(test)]
mod live_tests;
mod queue;

pub use config::{Layout, EXIM, INSTANCE_DIR, TRUSTED_CONFIGS};

/// The name used in messages.
pub(crate) const SUT: &str = "Exim";
/// The user Exim runs as (Debian's build).
const EXIM_USER: &str = "Debian-exim";
/// How long Exim may take to answer on its listener.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long `kick` waits for `exim -qff` to fail before leaving it to run in the background.
const KICK_PATIENCE: Duration = Duration::from_millis(300);
/// How long `exim -bp` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// The file in the work directory that gets what `exim -qff` prints.
const KICK_OUTPUT: &str = "kick.out";

/// Starts Exim; see [`Exim::start`].
pub struct Exim;

impl Exim {
    /// Checks that Exim is installed; writes `exim.conf` (see [`config::exim_conf`]; the scenario's
    /// `[route]` and then its `[sut.exim]` settings override main-section options, or
    /// router/transport options as `dnslookup.OPTION` / `remote_smtp.OPTION`; see
    /// [`config::route_settings`]) and an empty spool into the work directory; starts `exim -bdf
    /// -qINTERVAL` in the SUT namespace with the lab's resolv.conf, in a PID namespace of its own,
    /// after bind-mounting the work directory over [`INSTANCE_DIR`]; and waits (at most about 10 s)
    /// until the listener answers 220.
    ///
    /// Main-log lines are recorded as [`EventKind::SutLog`](crate::events::EventKind::SutLog) from
    /// the start. A failure to start quotes the end of the main and panic logs and of the daemon's
    /// standard error (where Exim reports configuration errors).
    pub async fn start(ctx: SutContext<'_>) -> Result<RunningExim, SutError> {
        let begun = Instant::now();
        check_installed()?;
        let layout = Layout::new(ctx.work_dir);
        let mut settings = config::route_settings(ctx.route);
        settings.extend(ctx.settings.clone());
        prepare(&layout, ctx.hostname, &settings, ctx.timing)?;
        let binary = layout.exim_inside(ctx.timing.clock);
        let queue_runner = config::queue_runner_option(ctx.timing.timeouts);
        let config_inside = layout.config_inside();
        // Exim itself is the first process: libfaketime's first process creates the shared
        // clock and passes it on in FAKETIME_SHARED, which a shell wrapper would not export.
        // Spawned by its path outside the instance's mounts (the same file as `binary`).
        let program = if ctx.timing.clock.is_accelerated() {
            layout.binary.clone()
        } else {
            std::path::PathBuf::from(EXIM)
        };
        let mut command = std::process::Command::new(&program);
        command
            .arg("-C")
            .arg(&config_inside)
            .arg("-bdf")
            .arg(&queue_runner);
        let spec = InstanceSpec {
            sut: SUT,
            command,
            command_line: format!(
                "{} -C {} -bdf {queue_runner}",
                binary.display(),
                config_inside.display()
            ),
            output: layout.stderr.clone(),
            output_label: "exim -bdf",
            logs: vec![layout.mainlog.clone()],
            quoted: vec![(layout.paniclog.clone(), "exim paniclog")],
            listen: common::listen_address(),
            bind_mounts: vec![(layout.work_dir.clone(), INSTANCE_DIR.into())],
            ready_timeout: READY_TIMEOUT,
            stop_grace: STOP_GRACE,
            begun,
        };
        let instance = Instance::launch(&ctx, spec).await?;
        Ok(RunningExim {
            layout,
            instance,
            kicks: Mutex::new(Vec::new()),
        })
    }
}

/// A running Exim instance. Dropping it kills every Exim process (prefer
/// [`RunningExim::stop`], which also records the last log lines).
pub struct RunningExim {
    layout: Layout,
    instance: Instance,
    /// `exim -qff` runs started by [`RunningExim::kick`] that were still going.
    kicks: Mutex<Vec<tokio::process::Child>>,
}

#[async_trait::async_trait]
impl RunningSut for RunningExim {
    /// Injects `message` over SMTP to the listener (`127.0.0.1:2525`) inside the SUT namespace
    /// and returns the reply to the end of DATA. Records
    /// [`EventKind::MessageInjected`](crate::events::EventKind::MessageInjected). Any refusal
    /// (non-2xx reply) is an error naming the step.
    async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        self.instance.inject(message).await
    }

    /// Asks Exim to retry deferred mail now: starts `exim -qff` (a forced queue run that
    /// ignores retry times and thaws frozen messages) in the instance's network, mount and PID
    /// namespaces. Returns once it has exited, or after a short wait while it is still
    /// delivering (like `postqueue -f`, it does not wait for the deliveries); a quick failure
    /// is an error quoting Exim.
    async fn kick(&self) -> Result<(), SutError> {
        let command_line = self.exim_command_line("-qff");
        let fail = |status: String, output: String| SutError::Command {
            sut: SUT,
            command: command_line.clone(),
            status,
            output,
        };
        let out_path = self.layout.work_dir.join(KICK_OUTPUT);
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&out_path)
            .map_err(|e| io_error(&format!("open {}", out_path.display()), e))?;
        let before = std::fs::metadata(&out_path).map_or(0, |m| m.len());
        let mut command = self.exim("-qff");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true);
        self.instance
            .ns()
            .enter_before_exec(command.as_std_mut(), true);
        let mut child = command
            .spawn()
            .map_err(|e| fail(format!("cannot run: {e}"), String::new()))?;
        match tokio::time::timeout(KICK_PATIENCE, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => {
                let text = std::fs::read(&out_path).unwrap_or_default();
                let text = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]);
                Err(fail(status.to_string(), text.trim().to_string()))
            }
            Ok(Err(e)) => Err(fail(format!("cannot wait: {e}"), String::new())),
            Err(_still_running) => {
                let mut kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
                kicks.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                kicks.push(child);
                Ok(())
            }
        }
    }

    /// The messages still queued (`exim -bp`), each with its pending recipients and the last error
    /// from its message log (`spool/msglog/ID`). Records them as an
    /// [`EventKind::SutQueue`](crate::events::EventKind::SutQueue) event. Works after
    /// [`stop`](Self::stop) too.
    async fn queue(&self) -> Result<Vec<QueueEntry>, SutError> {
        let mut command = self.exim("-bp");
        self.instance
            .ns()
            .enter_before_exec(command.as_std_mut(), false);
        let output =
            common::run_tool(SUT, command, self.exim_command_line("-bp"), TOOL_TIMEOUT).await?;
        let listed = queue::parse_listing(&output).map_err(|detail| SutError::Parse {
            sut: SUT,
            command: self.exim_command_line("-bp"),
            detail,
        })?;
        let entries: Vec<QueueEntry> = listed
            .iter()
            .map(|message| {
                let msglog = std::fs::read(self.layout.spool.join("msglog").join(&message.id))
                    .ok()
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                queue::entry(message, msglog.as_deref())
            })
            .collect();
        Ok(self.instance.record_queue(entries))
    }

    /// Stops every Exim process (SIGTERM, which the PID namespace's init forwards to all of
    /// them, then SIGKILL after a grace period) and any `exim -qff` still running, and records
    /// the log lines not yet recorded, the panic log, the daemon's standard error and what
    /// the `exim -qff` runs printed.
    async fn stop(self: Box<Self>) -> Result<(), SutError> {
        let RunningExim {
            layout,
            instance,
            kicks,
        } = *self;
        let log = instance.log().clone();
        let stopped = instance.stop().await;
        let kicks = kicks.into_inner().unwrap_or_else(|e| e.into_inner());
        for mut kick in kicks {
            let _ = kick.start_kill();
            let _ = kick.wait().await;
        }
        record_lines(&log, &layout.work_dir.join(KICK_OUTPUT), "exim -qff");
        stopped
    }

    fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        self.instance.pid_namespace()
    }
}

impl RunningExim {
    /// How long [`Exim::start`] took until the listener answered 220.
    pub fn startup_time(&self) -> Duration {
        self.instance.startup_time()
    }

    /// Where this instance keeps its files.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `exim -C CONFIG FLAG` (to be run inside the instance's mount namespace).
    fn exim(&self, flag: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(EXIM);
        command.arg("-C").arg(self.layout.config_inside()).arg(flag);
        command
    }

    fn exim_command_line(&self, flag: &str) -> String {
        format!("{EXIM} -C {} {flag}", self.layout.config_inside().display())
    }
}

fn io_error(action: &str, source: std::io::Error) -> SutError {
    common::io_error(SUT, action, source)
}

/// Checks that the unpacked Exim, its instance directory, its `trusted_configs` entry and its
/// user are present.
pub fn check_installed() -> Result<(), SutError> {
    common::require_files(SUT, &[EXIM, INSTANCE_DIR, TRUSTED_CONFIGS])?;
    let trusted = Layout::new(Path::new("/")).config_inside();
    let listed = std::fs::read_to_string(TRUSTED_CONFIGS)
        .map_err(|e| io_error(&format!("read {TRUSTED_CONFIGS}"), e))?;
    if !listed.lines().any(|l| Path::new(l.trim()) == trusted) {
        return Err(common::not_installed(
            SUT,
            &format!("line {} in {TRUSTED_CONFIGS}", trusted.display()),
        ));
    }
    exim_user().map(drop)
}

fn exim_user() -> Result<nix::unistd::User, SutError> {
    nix::unistd::User::from_name(EXIM_USER)
        .ok()
        .flatten()
        .ok_or_else(|| common::not_installed(SUT, &format!("user {EXIM_USER:?}")))
}

/// Writes the configuration and makes the directories, with the owners Exim insists on.
fn prepare(
    layout: &Layout,
    hostname: &str,
    settings: &std::collections::BTreeMap<String, String>,
    timing: Timing,
) -> Result<(), SutError> {
    let text = config::exim_conf(layout, hostname, settings, timing)?;
    if timing.clock.is_accelerated() {
        // A plain copy: std::fs::copy keeps the mode bits, setuid included.
        std::fs::copy(EXIM, &layout.binary)
            .and_then(|_| {
                std::fs::set_permissions(&layout.binary, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| io_error(&format!("copy {EXIM} to {}", layout.binary.display()), e))?;
    }
    let user = exim_user()?;
    // The work directory becomes INSTANCE_DIR; Exim's unprivileged processes must cross it.
    common::make_traversable(SUT, &layout.work_dir)?;
    common::make_dir(SUT, &layout.spool, Some(user.uid), Some(user.gid), 0o750)?;
    common::make_dir(SUT, &layout.log_dir, Some(user.uid), Some(user.gid), 0o750)?;
    // Exim refuses a configuration that is not root's or is writable by others.
    std::fs::write(&layout.config, text)
        .map_err(|e| io_error(&format!("write {}", layout.config.display()), e))?;
    std::fs::set_permissions(&layout.config, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io_error(&format!("chmod 644 {}", layout.config.display()), e))?;
    Ok(())
}
