//! Driver files: any MTA described by a small TOML file, without Rust code.
//!
//! `mxlab run --sut drivers/haraka.toml` (any value ending in `.toml`) loads the file as the
//! system under test. The driver writes the file's `[[config]]` templates into the instance's
//! fresh work directory, runs `start` in the SUT's network namespace (in a PID namespace of its
//! own, with the lab's `resolv.conf` bind-mounted over `/etc/resolv.conf`), waits for `ready`,
//! and drives it with the other steps. The format (every key but `name` and `start` is
//! optional; unknown keys are errors):
//!
//! ```toml
//! name = "mymta"                  # reports, test names and the [sut.mymta] settings section
//! description = "My MTA 1.2"
//! check = ["/usr/sbin/mymta"]     # absolute paths that must exist, else "not installed"
//! install = "apt-get install mymta"   # the fix quoted when a `check` path is missing
//!
//! # Steps: commands are argument lists (no shell), every argument a template. They run with
//! # the work directory as current directory; all but `start` run inside the instance's
//! # network and mount namespaces, limited to 30 s, and fail on a non-zero exit.
//! start = ["/usr/sbin/mymta", "-f", "{{work_dir}}/etc/mymta.conf", "--foreground"]
//! ready = 2525                    # an SMTP port on 127.0.0.1 or an address ("{{listen}}",
//!                                 # the default) probed for a 220 greeting, or a command
//!                                 # retried until it exits 0
//! ready_timeout = "20s"           # the default
//! inject = "smtp"                 # the default: SMTP to {{listen}}; or a command that reads
//!                                 # the message (LF line ends) on standard input, e.g.
//!                                 # ["/usr/sbin/sendmail", "-f", "{{from}}", "--", "{{to}}"]
//! kick = ["/usr/sbin/mymtactl", "flush"]   # retry deferred mail now; none: do nothing
//! queue = ["/usr/sbin/mymtactl", "list"]   # the queue, see below; none: always empty
//! stop = ["/usr/sbin/mymtactl", "stop"]    # then up to 5 s for `start` to exit; always
//!                                          # followed by SIGTERM/SIGKILL of the PID namespace
//! version = ["/usr/sbin/mymta", "-V"]   # prints the MTA's version (the first word starting
//!                                 # with a digit is taken), named in the matrix; runs
//!                                 # outside any lab, so no placeholders
//! log = "log/mymta.log"           # a log file in the work directory, recorded as SUT log
//!                                 # lines (start's own stdout/stderr always are)
//! clock = "faketime"              # the MTA honours libfaketime's LD_PRELOAD: `start` gets
//!                                 # its environment and a private /dev/shm, and the MTA runs
//!                                 # with its stock timers on the accelerated world clock (a
//!                                 # process that drops it is an ERROR); "real", the default:
//!                                 # the real clock only
//!
//! # Tables last: in TOML every key after a [[config]] header belongs to that table.
//! [[config]]                      # rendered into the work directory before `start`
//! path = "etc/mymta.conf"         # relative to the work directory; parents are created
//! template = """
//! hostname {{hostname}}
//! listen {{listen}}
//! {{#if route.relay}}relay {{route.relay}}{{/if}}
//! {{settings}}"""
//!
//! [[config]]
//! path = "mymta.cf"
//! filter = ["/usr/bin/m4"]        # optional: the rendered template is piped through this
//!                                 # command (run in the work directory with [env], 30 s at
//!                                 # most) and its standard output is the file
//! template = "include(`/usr/share/mymta/cf.m4')dnl\n"
//! ```
//!
//! More keys (all optional), before the first table:
//!
//! ```toml
//! listen_family = "ipv6"          # an IPv6-only MTA: {{listen}} is [::1]:2525
//!
//! [env]                           # environment of `start`, every step and filter (templates)
//! LD_LIBRARY_PATH = "/opt/mymta/lib"
//! MYMTA_HOSTNAME = "{{hostname}}"
//!
//! [xfail]                         # known deviations by scenario, merged with the scenarios'
//!                                 # own [expect.xfail] (a scenario's own entry wins)
//! "tls/starttls-verified" = { expects = ["outcome"], reason = "delivers without verifying: \
//!   its log says verify=FAIL" }
//! ```
//!
//! Every instance runs with its own host name (`uname -n` is `{{hostname}}`), an `/etc/hosts`
//! naming it on the SUT's addresses, and a `/dev/log` whose messages are recorded as SUT log
//! lines: an MTA that logs to syslog needs nothing more. The steps run inside the instance's
//! network, mount and UTS namespaces, and what they start lands in its PID namespace (a
//! backgrounded queue run ends with the instance).
//!
//! `queue` prints one queued message per line: `ID<TAB>RECIPIENTS<TAB>REASON`, recipients
//! separated by `,`, the reason optional (`ID<TAB>RECIPIENTS` is fine too); a line without a tab
//! is one entry with that line as id and no recipients. Blank lines are ignored.
//!
//! Placeholders: see the README's "Driver files" (rendered by `template`). Settings come
//! from the scenario's `[sut.NAME]` section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::excerpt::Located;

mod file;
mod queue;
mod running;
pub(crate) mod template;
#[cfg(test)]
mod tests;

pub use running::RunningDriver;

/// A system under test described by a driver file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverFile {
    /// The SUT's name (`name = …`): used in reports, test names and `[sut.NAME]`.
    pub name: String,
    /// What the SUT is (`description = …`).
    pub description: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// How to install the MTA, quoted when a `check` path is missing.
    install: String,
    /// Files that must exist.
    check: Vec<PathBuf>,
    /// Files rendered into the work directory.
    config: Vec<ConfigFile>,
    /// The foreground daemon command.
    start: Vec<String>,
    /// How to tell that the MTA is ready.
    ready: Ready,
    /// How long `ready` may take.
    ready_timeout: Duration,
    /// How messages are handed over.
    inject: Inject,
    /// Retry deferred mail now.
    kick: Option<Vec<String>>,
    /// List the queue.
    queue: Option<Vec<String>>,
    /// Stop the MTA gracefully.
    stop: Option<Vec<String>>,
    /// Print the MTA's version (run outside any lab, no placeholders).
    version: Option<Vec<String>>,
    /// A log file in the work directory to record.
    log: Option<String>,
    /// Whether the MTA can run on the accelerated world clock.
    clock: DriverClock,
    /// The only family the MTA listens on (`listen_family = …`), which sets `{{listen}}`.
    listen_family: Option<crate::family::Family>,
    /// Environment variables (templates) for `start` and every step.
    env: Vec<(String, String)>,
    /// Known deviations by scenario name (`[xfail]`), merged with the scenarios' own.
    xfail: std::collections::BTreeMap<String, crate::scenario::Xfail>,
    /// `NAME (PATH)`, the SUT as named in [`SutError`](crate::sut::SutError)s (leaked once per
    /// loaded file: those errors name their SUT with a `&'static str`).
    label: &'static str,
}

/// The clocks a driver's MTA can run on (`clock = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverClock {
    /// The real clock only (the default).
    Real,
    /// Any rate: the MTA honours libfaketime's `LD_PRELOAD`.
    Faketime,
}

/// One `[[config]]` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigFile {
    /// Relative to the work directory.
    path: String,
    /// Its text, a template.
    template: String,
    /// A command the rendered text is piped through; its standard output is the file (e.g.
    /// `m4` for a `sendmail.mc`).
    filter: Option<Vec<String>>,
}

/// How the driver tells that the MTA is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ready {
    /// An SMTP address (a template) that must answer 220.
    Smtp(String),
    /// A command that must exit 0.
    Command(Vec<String>),
}

/// How messages are handed to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inject {
    /// SMTP to the listen address.
    Smtp,
    /// A command reading the message on standard input.
    Command(Vec<String>),
}

/// A driver file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The file could not be read.
    #[error("{}: cannot read driver file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or not a valid driver: the place and the lines around it.
    #[error(transparent)]
    Invalid(#[from] Located),
    /// A required step is not given.
    #[error("{}: the driver has no `{step}` step; add {hint}", path.display())]
    MissingStep {
        /// The file.
        path: PathBuf,
        /// The step, e.g. `start`.
        step: &'static str,
        /// What to write.
        hint: &'static str,
    },
}

impl DriverFile {
    /// Reads and checks a driver file.
    pub fn load(path: &Path) -> Result<Self, DriverError> {
        let text = std::fs::read_to_string(path).map_err(|source| DriverError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks driver-file text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, DriverError> {
        file::parse(path, text)
    }

    /// The `version` command, if the driver has one.
    pub(crate) fn version_command(&self) -> Option<&[String]> {
        self.version.as_deref()
    }

    /// Whether a template of the driver uses a `{{route.…}}` placeholder.
    fn uses_route(&self) -> bool {
        self.config
            .iter()
            .map(|file| file.template.as_str())
            .chain(self.env.iter().map(|(_, value)| value.as_str()))
            .chain(self.start.iter().map(String::as_str))
            .any(template::uses_route)
    }

    /// The driver's known deviation in `scenario` (`[xfail]`), if it lists one.
    pub fn xfail(&self, scenario: &str) -> Option<&crate::scenario::Xfail> {
        self.xfail.get(scenario)
    }

    /// Whether the MTA can run on an accelerated world clock (`clock = "faketime"`).
    pub fn can_accelerate(&self) -> bool {
        self.clock == DriverClock::Faketime
    }

    /// Fails with [`SutError::NotInstalled`](crate::sut::SutError::NotInstalled) naming the
    /// first `check` path that is missing, with the file's `install` hint.
    pub fn check_installed(&self) -> Result<(), crate::sut::SutError> {
        match self.check.iter().find(|path| !path.exists()) {
            Some(missing) => Err(crate::sut::SutError::NotInstalled {
                sut: self.label,
                missing: missing.clone(),
                fix: self.install.clone(),
            }),
            None => Ok(()),
        }
    }
}
