//! The Postfix driver: a private, throwaway Postfix instance inside the SUT namespace.
//!
//! Layout under the work directory (see [`config::Layout`]): `conf/` (main.cf, master.cf),
//! `spool/` (root-owned queue directory), `data/` (postfix-owned), `log/maillog` (written by
//! the `postlog` service) and `log/postfix.out` (standard output and error of `postfix
//! start-fg`). Postfix runs in a PID namespace of its own (`postfix-script` runs `master -s` in
//! the foreground under netns's init), so ending that namespace ends every Postfix process.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::events::QueueEntry;
use crate::sut::common;
use crate::sut::lifecycle::{Instance, InstanceSpec};
use crate::sut::{OutgoingMessage, RunningSut, SutContext, SutError, Timing};

pub mod config;
#[cfg(test)]
mod live_tests;
mod queue;

pub use config::Layout;

/// The name used in messages.
pub(crate) const SUT: &str = "Postfix";
/// The `postfix` command.
const POSTFIX: &str = "/usr/sbin/postfix";
/// The `postqueue` command.
const POSTQUEUE: &str = "/usr/sbin/postqueue";
/// Postfix's configuration tool; it warns about parameters Postfix does not use.
const POSTCONF: &str = "/usr/sbin/postconf";
/// The stock `master.cf` the private one is made from.
const STOCK_MASTER_CF: &str = "/etc/postfix/master.cf";
/// How long Postfix may take to answer on its listener.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `master` gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How far the config files are back-dated: Postfix re-reads a main.cf younger than about
/// two seconds in a 300 ms loop before it starts (2.45 s per fresh instance).
const BACKDATE: Duration = Duration::from_secs(60);
/// How long `postqueue` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts Postfix; see [`Postfix::start`].
pub struct Postfix;

impl Postfix {
    /// Checks that Postfix is installed; writes `main.cf` and `master.cf` (from Debian's master.cf
    /// with chroot off and the stock listeners replaced by one on `127.0.0.1:2525`, or
    /// `[::1]:2525` for an IPv6-only Postfix) and a fresh spool into the work directory; starts
    /// `postfix -c DIR start-fg` in the SUT namespace with the lab's resolv.conf, in a PID
    /// namespace of its own; and waits (at most about 10 s) until the listener answers 220.
    ///
    /// The spool is created as `post-install` would and marked `quick-start`, so `postfix` skips
    /// its integrity checks (start ~60 ms instead of ~0.35 s). Log lines are recorded as
    /// [`EventKind::SutLog`](crate::events::EventKind::SutLog) from the start. A failure to start
    /// quotes the end of Postfix's log and standard error and, if Postfix exited, what `postfix
    /// check` prints on a terminal (Postfix reports configuration errors only there when syslog is
    /// absent).
    pub async fn start(ctx: SutContext<'_>) -> Result<RunningPostfix, SutError> {
        let begun = Instant::now();
        check_installed()?;
        let layout = Layout::new(ctx.work_dir);
        // The scenario's `[route]` and the run's CA (for `smtp_tls_security_level = verify`
        // scenarios); the scenario's own settings still override both.
        let mut settings = config::route_settings(ctx.route);
        settings.extend(ctx.settings.clone());
        if let Some(ca_file) = ctx.ca_file {
            settings
                .entry("smtp_tls_CAfile".to_string())
                .or_insert_with(|| ca_file.display().to_string());
        }
        let listen = common::listen_address_for(config::listen_family(&settings));
        prepare(
            ctx.work_dir,
            &layout,
            ctx.hostname,
            &settings,
            ctx.route.only,
            ctx.timing,
            listen,
        )?;
        let mut command = std::process::Command::new(POSTFIX);
        command.arg("-c").arg(&layout.conf).arg("start-fg");
        let spec = InstanceSpec {
            sut: SUT,
            command,
            command_line: format!("{POSTFIX} -c {} start-fg", layout.conf.display()),
            output: layout.stderr.clone(),
            output_label: "postfix start-fg",
            logs: vec![layout.maillog.clone()],
            quoted: Vec::new(),
            listen,
            bind_mounts: Vec::new(),
            ready_timeout: READY_TIMEOUT,
            stop_grace: STOP_GRACE,
            begun,
        };
        match Instance::launch(&ctx, spec).await {
            Ok(instance) => Ok(RunningPostfix { layout, instance }),
            // Postfix prints fatal configuration errors only to a terminal: ask `postfix check`.
            Err(SutError::Exited {
                sut,
                status,
                mut log_tail,
            }) => {
                for line in diagnose(&layout.conf).await {
                    log_tail.push_str(&format!("\npostfix check: {line}"));
                }
                Err(SutError::Exited {
                    sut,
                    status,
                    log_tail,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// A running Postfix instance. Dropping it kills every Postfix process (prefer
/// [`RunningPostfix::stop`], which also records the last log lines).
pub struct RunningPostfix {
    layout: Layout,
    instance: Instance,
}

#[async_trait::async_trait]
impl RunningSut for RunningPostfix {
    /// Injects `message` over SMTP to its listener inside the SUT namespace and returns the reply
    /// to the end of DATA. Records
    /// [`EventKind::MessageInjected`](crate::events::EventKind::MessageInjected). Any refusal
    /// (non-2xx reply) is an error naming the step.
    async fn inject(&self, message: &OutgoingMessage) -> Result<String, SutError> {
        self.instance.inject(message).await
    }

    /// Asks Postfix to retry deferred mail now (`postqueue -f`).
    async fn kick(&self) -> Result<(), SutError> {
        self.postqueue("-f").await.map(drop)
    }

    /// The messages still queued (`postqueue -j`), each with its recipients and delay reason.
    /// Records them as an [`EventKind::SutQueue`](crate::events::EventKind::SutQueue) event. Works
    /// after [`stop`](Self::stop) too (postqueue then reads the queue directly).
    async fn queue(&self) -> Result<Vec<QueueEntry>, SutError> {
        let output = self.postqueue("-j").await?;
        let entries = queue::parse(&output).map_err(|detail| SutError::Parse {
            sut: SUT,
            command: self.postqueue_command_line("-j"),
            detail,
        })?;
        Ok(self.instance.record_queue(entries))
    }

    /// Stops every Postfix process (SIGTERM through the PID namespace's init to every process
    /// in it, then SIGKILL after a grace period) and records the log lines not yet recorded.
    async fn stop(self: Box<Self>) -> Result<(), SutError> {
        self.instance.stop().await
    }

    fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        self.instance.pid_namespace()
    }
}

impl RunningPostfix {
    /// How long [`Postfix::start`] took until the listener answered 220.
    pub fn startup_time(&self) -> Duration {
        self.instance.startup_time()
    }

    /// Where this instance keeps its files.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn postqueue_command_line(&self, flag: &str) -> String {
        format!("{POSTQUEUE} -c {} {flag}", self.layout.conf.display())
    }

    /// Runs `postqueue -c DIR FLAG` (from the harness's namespaces: it only talks to Postfix
    /// over UNIX sockets in the spool) and returns its standard output.
    async fn postqueue(&self, flag: &str) -> Result<String, SutError> {
        let mut command = tokio::process::Command::new(POSTQUEUE);
        command.arg("-c").arg(&self.layout.conf).arg(flag);
        common::run_tool(
            SUT,
            command,
            self.postqueue_command_line(flag),
            TOOL_TIMEOUT,
        )
        .await
    }
}

/// Runs `postfix -c DIR check` with its standard error on a terminal and returns what it
/// printed. Postfix reports a fatal configuration error on standard error only when that is a
/// terminal (otherwise to syslog, absent here, and not to maillog_file, which it has not read
/// yet), so `start-fg` dies silently on, e.g., a bad `inet_protocols`; this recovers the reason.
/// Uses util-linux `script` for the terminal; returns nothing if that is missing.
async fn diagnose(conf: &Path) -> Vec<String> {
    const SCRIPT: &str = "/usr/bin/script";
    if !Path::new(SCRIPT).exists() {
        return Vec::new();
    }
    let quoted = conf.to_string_lossy().replace('\'', "'\\''");
    let check = format!("{POSTFIX} -c '{quoted}' check");
    let output = tokio::process::Command::new(SCRIPT)
        .args(["-qec", &check, "/dev/null"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), output).await {
        Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.trim().is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn io_error(action: &str, source: std::io::Error) -> SutError {
    common::io_error(SUT, action, source)
}

/// Checks that the Postfix binaries and stock files this driver uses are present.
pub fn check_installed() -> Result<(), SutError> {
    common::require_files(SUT, &[POSTFIX, POSTQUEUE, STOCK_MASTER_CF])
}

/// Writes the configuration and makes the directories, with the owners Postfix insists on.
fn prepare(
    work_dir: &Path,
    layout: &Layout,
    hostname: &str,
    settings: &std::collections::BTreeMap<String, String>,
    only_family: Option<crate::family::Family>,
    timing: Timing,
    listen: std::net::SocketAddr,
) -> Result<(), SutError> {
    let main_cf = config::main_cf(layout, hostname, settings, timing)?;
    let stock = std::fs::read_to_string(STOCK_MASTER_CF)
        .map_err(|e| io_error(&format!("read {STOCK_MASTER_CF}"), e))?;
    let mut master_cf = config::master_cf(&stock, &listen.to_string());
    if let Some(family) = only_family {
        master_cf.push_str(&config::family_transport(family));
    }
    let mail_owner = nix::unistd::User::from_name("postfix")
        .ok()
        .flatten()
        .ok_or_else(|| common::not_installed(SUT, "user \"postfix\""))?;
    let setgid_group = nix::unistd::Group::from_name("postdrop")
        .ok()
        .flatten()
        .ok_or_else(|| common::not_installed(SUT, "group \"postdrop\""))?;

    // Postfix's unprivileged processes must be able to reach data/ and log/ below it.
    common::make_traversable(SUT, work_dir)?;
    let dir = |path: &Path,
               owner: Option<nix::unistd::Uid>,
               group: Option<nix::unistd::Gid>,
               mode: u32| common::make_dir(SUT, path, owner, group, mode);
    let root = Some(nix::unistd::Uid::from_raw(0));
    let root_group = Some(nix::unistd::Gid::from_raw(0));
    dir(&layout.conf, root, root_group, 0o755)?;
    dir(&layout.log_dir, root, root_group, 0o755)?;
    dir(&layout.data, Some(mail_owner.uid), None, 0o700)?;
    // The spool as Postfix's `post-install create-missing` makes it (postfix-files), so that
    // `postfix start-fg` can skip its integrity checks (`quick-start`), which cost 0.25-0.4 s.
    dir(&layout.spool, root, root_group, 0o755)?;
    for (name, owner, mode) in config::SPOOL_DIRS {
        let (uid, gid) = match owner {
            config::SpoolOwner::Root => (root, root_group),
            config::SpoolOwner::MailOwner => (Some(mail_owner.uid), root_group),
            config::SpoolOwner::MailOwnerSetgidGroup => {
                (Some(mail_owner.uid), Some(setgid_group.gid))
            }
        };
        dir(&layout.spool.join(name), uid, gid, *mode)?;
    }
    let quick_start = layout.spool.join("quick-start");
    std::fs::write(&quick_start, "")
        .map_err(|e| io_error(&format!("create {}", quick_start.display()), e))?;

    let backdated = SystemTime::now() - BACKDATE;
    for (name, text) in [("main.cf", main_cf), ("master.cf", master_cf)] {
        let path = layout.conf.join(name);
        std::fs::write(&path, text)
            .map_err(|e| io_error(&format!("write {}", path.display()), e))?;
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(backdated))
            .map_err(|e| io_error(&format!("back-date {}", path.display()), e))?;
    }
    refuse_unused(layout, settings)
}

/// Refuses a scenario setting Postfix does not know or no longer uses (e.g.
/// `smtp_skip_4xx_greeting`, ignored since Postfix 2.0): `postconf -n` warns "unused parameter"
/// for it, and Postfix would silently run with the default instead.
fn refuse_unused(
    layout: &Layout,
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<(), SutError> {
    let output = std::process::Command::new(POSTCONF)
        .arg("-c")
        .arg(&layout.conf)
        .arg("-n")
        .output()
        .map_err(|e| io_error(&format!("run {POSTCONF}"), e))?;
    let unused = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| {
            line.split_once(": unused parameter: ")
                .map(|(_, rest)| rest)
        })
        .filter_map(|rest| rest.split_once('=').map(|(key, _)| key.trim().to_string()))
        .find(|key| settings.contains_key(key));
    match unused {
        Some(key) => Err(SutError::bad_setting(
            SUT,
            key,
            "Postfix does not know this parameter (postconf: unused parameter); it would ignore \
             it and run with its default: remove it or use a parameter this Postfix has",
        )),
        None => Ok(()),
    }
}
