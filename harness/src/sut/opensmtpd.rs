//! The OpenSMTPD driver: a private, throwaway OpenSMTPD instance inside the SUT namespace.
//!
//! OpenSMTPD is Debian's `opensmtpd`, unpacked (not installed: it conflicts with Postfix) under
//! `/opt/mxlab/opensmtpd` by `.ci/install-deps.sh`. Layout under the work directory (see
//! [`config::Layout`]): `smtpd.conf` (generated), `spool/` and `run/` (bind-mounted over the
//! compiled-in `/var/spool/smtpd` and `/run` in the instance's private mount namespace) and
//! `log/smtpd.log` (standard error of `smtpd -d`, OpenSMTPD's whole log: there is no syslog).
//!
//! `smtpd -d` runs in the foreground in a PID namespace of its own, so stopping that namespace
//! ends every OpenSMTPD process. OpenSMTPD has no retry-interval setting (it retries after
//! 400·n² s); the lab's kick (`smtpctl schedule all`) is what makes it retry promptly.

use std::time::{Duration, Instant};

use crate::events::{EventKind, QueueEntry};
use crate::sut::common;
use crate::sut::lifecycle::{Instance, InstanceSpec};
use crate::sut::{OutgoingMessage, RunningSut, SutContext, SutError, Timeouts};

pub mod config;
#[cfg(test)]
mod live_tests;
mod queue;

pub use config::{Layout, SMTPCTL, SMTPD};

/// The name used in messages.
pub(crate) const SUT: &str = "OpenSMTPD";
/// The users and group OpenSMTPD's processes run as.
const USERS: [&str; 2] = ["opensmtpd", "opensmtpq"];
/// How long OpenSMTPD may take to answer on its listener.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long smtpd gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long `smtpctl` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an `smtpctl` whose control-socket conversation was cut short is tried.
const SMTPCTL_ATTEMPTS: u32 = 4;
/// The pause before such a retry.
const SMTPCTL_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often a start whose process handshake timed out on the accelerated clock is tried.
const START_ATTEMPTS: u32 = 3;
/// What smtpd logs when a child process misses the start-up handshake.
const HANDSHAKE_TIMED_OUT: &str = "imsg_wait: Connection timed out";

/// Starts OpenSMTPD; see [`Opensmtpd::start`].
pub struct Opensmtpd;

impl Opensmtpd {
    /// Checks that OpenSMTPD is installed; writes `smtpd.conf` (see [`config::smtpd_conf`];
    /// the scenario's `[route]` (see [`config::route_settings`]) and then its
    /// `[sut.opensmtpd]` settings replace or add whole lines) and fresh spool
    /// and run directories into the work directory; starts `smtpd -d -f smtpd.conf` in the
    /// SUT namespace with the lab's resolv.conf, in a PID namespace of its own, after
    /// bind-mounting those directories over `/var/spool/smtpd` and `/run` in its private mount
    /// namespace; and waits (at most about 10 s) until the listener answers 220.
    ///
    /// Log lines are recorded as [`EventKind::SutLog`] from the start. A failure to start
    /// quotes the end of the log, where smtpd reports configuration errors.
    ///
    /// On an accelerated clock, smtpd's start-up handshake (each child process must answer
    /// within 10 s, `imsg_wait`) is 10 s of *MTA* time: 0.1 s at x100, which a loaded machine
    /// can miss. That failure says nothing about the MTA, so the start is retried (at most
    /// `START_ATTEMPTS` times), each retry recorded in the event log.
    pub async fn start(ctx: SutContext<'_>) -> Result<RunningOpensmtpd, SutError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(ctx.clone()).await {
                Err(SutError::Exited { log_tail, .. })
                    if attempt < START_ATTEMPTS
                        && ctx.timing.clock.is_accelerated()
                        && log_tail.contains(HANDSHAKE_TIMED_OUT) =>
                {
                    ctx.log.record(EventKind::Harness {
                        message: format!(
                            "OpenSMTPD's processes missed their start-up handshake (\"{HANDSHAKE_TIMED_OUT}\": \
                             its 10 s wait lasts {:.2}s at {}); starting it again ({attempt} of {START_ATTEMPTS} attempts failed)",
                            ctx.timing.clock.to_wall(Duration::from_secs(10)).as_secs_f64(),
                            ctx.timing.clock,
                        ),
                    });
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(ctx: SutContext<'_>) -> Result<RunningOpensmtpd, SutError> {
        let begun = Instant::now();
        check_installed()?;
        let layout = Layout::new(ctx.work_dir);
        if let Some(family) = ctx.route.only {
            ctx.log.record(EventKind::Harness {
                message: format!(
                    "OpenSMTPD has no per-action address-family setting: [route] families = \
                     [\"{family}\"] is not applied"
                ),
            });
        }
        let mut settings = config::route_settings(ctx.hostname, ctx.route);
        settings.extend(ctx.settings.clone());
        prepare(&layout, ctx.hostname, &settings, ctx.timing.timeouts)?;

        // smtpd itself is the first process: libfaketime's first process creates the shared
        // clock and passes it on in FAKETIME_SHARED, which a shell wrapper would not export.
        let mut command = std::process::Command::new(SMTPD);
        command.arg("-d").arg("-f").arg(&layout.config);
        let spec = InstanceSpec {
            sut: SUT,
            command,
            command_line: format!("{SMTPD} -d -f {}", layout.config.display()),
            // Its standard error is its whole log.
            output: layout.log.clone(),
            output_label: "smtpd -d",
            logs: vec![layout.log.clone()],
            quoted: Vec::new(),
            listen: common::listen_address(),
            // /run is covered last; the lab's resolv.conf is bound once more in case
            // /etc/resolv.conf is a symbolic link into /run on this machine.
            bind_mounts: vec![
                (layout.spool.clone(), config::SPOOL_TARGET.into()),
                (layout.run.clone(), config::RUN_TARGET.into()),
                (ctx.resolv_conf.to_path_buf(), "/etc/resolv.conf".into()),
            ],
            ready_timeout: READY_TIMEOUT,
            stop_grace: STOP_GRACE,
            begun,
        };
        match Instance::launch(&ctx, spec).await {
            Ok(instance) => Ok(RunningOpensmtpd { layout, instance }),
            Err(e) => {
                let refused = match &e {
                    SutError::Exited { log_tail, .. } => std::fs::read_to_string(&layout.config)
                        .ok()
                        .and_then(|conf| config::refused_setting(log_tail, &conf, ctx.settings)),
                    _ => None,
                };
                Err(refused.unwrap_or(e))
            }
        }
    }
}

/// A running OpenSMTPD instance. Dropping it kills every OpenSMTPD process (prefer
/// [`RunningOpensmtpd::stop`], which also records the last log lines).
pub struct RunningOpensmtpd {
    layout: Layout,
    instance: Instance,
}

#[async_trait::async_trait]
impl RunningSut for RunningOpensmtpd {
    /// Injects `message` over SMTP to the listener (`127.0.0.1:2525`) inside the SUT namespace
    /// and returns the reply to the end of DATA. Records
    /// [`EventKind::MessageInjected`]. Any refusal (non-2xx reply) is an error naming the step.
    async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        self.instance.inject(message).await
    }

    /// Asks OpenSMTPD to retry deferred mail now (`smtpctl schedule all`, over the control
    /// socket in the instance's `/run`).
    async fn kick(&self) -> Result<(), SutError> {
        self.smtpctl(&["schedule", "all"]).await.map(drop)
    }

    /// The messages still queued (`smtpctl show queue`), each with its recipients and last
    /// error. Records them as an [`EventKind::SutQueue`] event. Works after
    /// [`stop`](Self::stop) too (smtpctl then reads the spool directly).
    async fn queue(&self) -> Result<Vec<QueueEntry>, SutError> {
        let args = ["show", "queue"];
        let output = self.smtpctl(&args).await?;
        let entries = queue::parse(&output).map_err(|detail| SutError::Parse {
            sut: SUT,
            command: smtpctl_command_line(&args),
            detail,
        })?;
        Ok(self.instance.record_queue(entries))
    }

    /// Stops every OpenSMTPD process (SIGTERM, which the PID namespace's init forwards to all
    /// of them, then SIGKILL after a grace period) and records the log lines not yet recorded.
    async fn stop(self: Box<Self>) -> Result<(), SutError> {
        self.instance.stop().await
    }

    fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        self.instance.pid_namespace()
    }
}

impl RunningOpensmtpd {
    /// How long [`Opensmtpd::start`] took until the listener answered 220.
    pub fn startup_time(&self) -> Duration {
        self.instance.startup_time()
    }

    /// Where this instance keeps its files.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs `smtpctl ARGS` in the instance's namespaces (it finds the control socket and the
    /// spool at their compiled-in paths) and returns its standard output.
    ///
    /// A control-socket conversation that smtpd cuts short (`imsg_read error`, `pipe closed`:
    /// seen when the previous smtpctl was killed mid-request, e.g. a queue poll cancelled as
    /// the run ends) says nothing about the mail; the command is tried again, at most
    /// [`SMTPCTL_ATTEMPTS`] times, each retry recorded in the event log.
    async fn smtpctl(&self, args: &[&str]) -> Result<String, SutError> {
        let mut attempt = 1;
        loop {
            let mut command = tokio::process::Command::new(SMTPCTL);
            command.args(args);
            self.instance
                .ns()
                .enter_before_exec(command.as_std_mut(), false);
            match common::run_tool(SUT, command, smtpctl_command_line(args), TOOL_TIMEOUT).await {
                Err(SutError::Command { output, .. })
                    if attempt < SMTPCTL_ATTEMPTS && is_cut_short(&output) =>
                {
                    self.instance.log().record(EventKind::Harness {
                        message: format!(
                            "`{}` was cut short ({output}); retrying ({attempt} of {})",
                            smtpctl_command_line(args),
                            SMTPCTL_ATTEMPTS - 1
                        ),
                    });
                    attempt += 1;
                    tokio::time::sleep(SMTPCTL_RETRY_PAUSE).await;
                }
                result => return result,
            }
        }
    }
}

/// Whether smtpctl's error output says the control socket's conversation was cut short,
/// rather than that the request failed.
fn is_cut_short(output: &str) -> bool {
    output.contains("imsg_read error") || output.contains("pipe closed")
}

fn smtpctl_command_line(args: &[&str]) -> String {
    format!("{SMTPCTL} {}", args.join(" "))
}

fn io_error(action: &str, source: std::io::Error) -> SutError {
    common::io_error(SUT, action, source)
}

/// Checks that the unpacked OpenSMTPD, its compiled-in directories and its users are present.
pub fn check_installed() -> Result<(), SutError> {
    common::require_files(
        SUT,
        &[SMTPD, SMTPCTL, config::SPOOL_TARGET, config::EMPTY_DIR],
    )?;
    for user in USERS {
        if nix::unistd::User::from_name(user).ok().flatten().is_none() {
            return Err(common::not_installed(SUT, &format!("user {user:?}")));
        }
    }
    Ok(())
}

/// Writes the configuration and makes the directories with the modes smtpd insists on.
fn prepare(
    layout: &Layout,
    hostname: &str,
    settings: &std::collections::BTreeMap<String, String>,
    timeouts: Timeouts,
) -> Result<(), SutError> {
    let text = config::smtpd_conf(hostname, settings, timeouts)?;
    let root = Some(nix::unistd::Uid::from_raw(0));
    let root_group = Some(nix::unistd::Gid::from_raw(0));
    common::make_traversable(SUT, &layout.work_dir)?;
    common::make_dir(SUT, &layout.spool, root, root_group, 0o711)?;
    // The queue directories as smtpd makes them (`ckdir` checks owner and mode); made here so
    // the queue process's first purge run does not race their creation ("purge_task: opendir:
    // No such file or directory").
    let queue_user = nix::unistd::User::from_name("opensmtpq")
        .ok()
        .flatten()
        .ok_or_else(|| common::not_installed(SUT, "user \"opensmtpq\""))?;
    for name in ["incoming", "purge", "queue", "temporary"] {
        common::make_dir(
            SUT,
            &layout.spool.join(name),
            Some(queue_user.uid),
            root_group,
            0o700,
        )?;
    }
    common::make_dir(
        SUT,
        &layout.spool.join("offline"),
        root,
        Some(queue_user.gid),
        0o770,
    )?;
    common::make_dir(SUT, &layout.run, root, root_group, 0o755)?;
    common::make_dir(SUT, &layout.log_dir, root, root_group, 0o755)?;
    std::fs::write(&layout.config, text)
        .map_err(|e| io_error(&format!("write {}", layout.config.display()), e))
}

#[cfg(test)]
mod tests {
    use super::is_cut_short;

    #[test]
    fn a_conversation_cut_short_is_told_from_a_refused_request() {
        assert!(is_cut_short("smtpctl: imsg_read error"));
        assert!(is_cut_short("smtpctl: pipe closed"));
        assert!(!is_cut_short(
            "smtpctl: connect: /run/smtpd.sock: No such file or directory"
        ));
        assert!(!is_cut_short("smtpctl: command failed"));
    }
}
