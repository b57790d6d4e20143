//! Which system under test a run drives, and starting it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::reference::{bug_names, Bugs};
use super::{DriverError, DriverFile, Exim, Opensmtpd, Postfix, RunningSut, SutContext, SutError};
use crate::scenario::MutantSut;

/// A system under test mxlab can drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SutKind {
    /// Postfix, run as a private throwaway instance.
    Postfix,
    /// The built-in reference sender, correct (`reference`) or with planted bugs
    /// (`reference:BUG`); runs in-process, needs nothing installed.
    Reference(Bugs),
    /// Exim 4 (Debian's exim4-daemon-light, unpacked), run as a private throwaway instance.
    Exim,
    /// OpenSMTPD (Debian's package, unpacked), run as a private throwaway instance.
    Opensmtpd,
    /// Any MTA described by a driver file (`--sut path/to/driver.toml`); see
    /// [`crate::sut::driver`]. Named by the file's `name`.
    Driver(Arc<DriverFile>),
}

impl From<MutantSut> for SutKind {
    /// The SUT a mutant run drives: the same MTA, or the reference sender with just that bug.
    fn from(mutant: MutantSut) -> SutKind {
        match mutant {
            MutantSut::Postfix => SutKind::Postfix,
            MutantSut::Exim => SutKind::Exim,
            MutantSut::Opensmtpd => SutKind::Opensmtpd,
            MutantSut::Reference(bug) => SutKind::Reference(Bugs::only(bug)),
        }
    }
}

impl SutKind {
    /// Whether a run of this SUT (as chosen with `--sut`) brings `mutant` along: the same MTA,
    /// or for a `reference:BUG` mutant any reference sender.
    pub fn brings_along(&self, mutant: MutantSut) -> bool {
        matches!(
            (mutant, self),
            (MutantSut::Postfix, SutKind::Postfix)
                | (MutantSut::Exim, SutKind::Exim)
                | (MutantSut::Opensmtpd, SutKind::Opensmtpd)
                | (MutantSut::Reference(_), SutKind::Reference(_))
        )
    }

    /// Every built-in SUT, as accepted on the command line.
    pub const BUILT_IN: &'static [&'static str] = &["postfix", "exim", "opensmtpd", "reference"];

    /// The name used in reports, test names and `[sut.NAME]` sections.
    pub fn name(&self) -> &str {
        match self {
            SutKind::Postfix => "postfix",
            SutKind::Reference(bugs) => bugs.sut_name(),
            SutKind::Exim => "exim",
            SutKind::Opensmtpd => "opensmtpd",
            SutKind::Driver(driver) => &driver.name,
        }
    }

    /// The name of the scenario section with raw settings for this SUT (`[sut.NAME]`): the
    /// reference sender's bug variants read `[sut.reference]` too.
    pub fn settings_key(&self) -> &str {
        match self {
            SutKind::Reference(_) => "reference",
            other => other.name(),
        }
    }

    /// The scenario's `[expect]` for this SUT: a driver file's `[xfail]` entry for `scenario`
    /// is added unless the scenario has its own entry for the SUT (the scenario's wins).
    pub fn expectations(
        &self,
        scenario: &str,
        expect: &crate::scenario::Expect,
    ) -> crate::scenario::Expect {
        let mut expect = expect.clone();
        if let SutKind::Driver(driver) = self {
            if let Some(xfail) = driver.xfail(scenario) {
                expect
                    .xfail
                    .entry(driver.name.clone())
                    .or_insert_with(|| toml::Spanned::new(0..0, xfail.clone()));
            }
        }
        expect
    }

    /// Checks that the SUT is installed and usable, before anything is built.
    pub fn check_installed(&self) -> Result<(), SutError> {
        match self {
            SutKind::Postfix => super::postfix::check_installed(),
            SutKind::Reference(_) => Ok(()),
            SutKind::Exim => super::exim::check_installed(),
            SutKind::Opensmtpd => super::opensmtpd::check_installed(),
            SutKind::Driver(driver) => driver.check_installed(),
        }
    }

    /// Whether the SUT can run on an accelerated world clock: the built-in MTAs honour
    /// libfaketime (see [`crate::sut::faketime`]), the reference sender scales its own
    /// timers, a driver file says so with `clock = "faketime"`.
    pub fn can_accelerate(&self) -> bool {
        match self {
            SutKind::Postfix | SutKind::Reference(_) | SutKind::Exim | SutKind::Opensmtpd => true,
            SutKind::Driver(driver) => driver.can_accelerate(),
        }
    }

    /// Whether an accelerated run of the SUT needs libfaketime (the reference sender scales
    /// its own timers).
    pub fn needs_faketime(&self) -> bool {
        !matches!(self, SutKind::Reference(_)) && self.can_accelerate()
    }

    /// The MTA's version as the MTA itself reports it (`postconf -d mail_version`, `exim -bV`,
    /// `smtpd -h`, a driver file's `version` command; mxlab's own for the reference sender),
    /// e.g. `3.7.11`; `None` if it is not installed or does not say.
    pub async fn version(&self) -> Option<String> {
        let asked: (&str, Vec<String>) = match self {
            SutKind::Reference(_) => return Some(env!("CARGO_PKG_VERSION").to_string()),
            SutKind::Postfix => (
                "/usr/sbin/postconf",
                vec!["-d".into(), "-h".into(), "mail_version".into()],
            ),
            SutKind::Exim => (
                super::exim::config::EXIM,
                vec!["-C".into(), "/dev/null".into(), "-bV".into()],
            ),
            SutKind::Opensmtpd => (super::opensmtpd::config::SMTPD, vec!["-h".into()]),
            SutKind::Driver(driver) => {
                let argv = driver.version_command()?;
                (argv[0].as_str(), argv[1..].to_vec())
            }
        };
        let (program, args) = asked;
        // Read line by line: the first version line is enough, and some MTAs go on to other
        // work after printing it (Sendmail's -bt looks up the machine's own name).
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let (stdout, stderr) = (child.stdout.take()?, child.stderr.take()?);
        let read = async move {
            use tokio::io::AsyncBufReadExt;
            let mut out = tokio::io::BufReader::new(stdout).lines();
            let mut err = tokio::io::BufReader::new(stderr).lines();
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let line = tokio::select! {
                    line = out.next_line(), if out_open => line.ok().flatten().or_else(|| {
                        out_open = false;
                        None
                    }),
                    line = err.next_line(), if err_open => line.ok().flatten().or_else(|| {
                        err_open = false;
                        None
                    }),
                };
                if let Some(version) = line.as_deref().and_then(version_in) {
                    return Some(version);
                }
            }
            None
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .ok()
            .flatten()
    }

    /// Starts the SUT inside the lab and waits until it is ready for mail.
    pub async fn start(&self, ctx: SutContext<'_>) -> Result<Box<dyn RunningSut>, SutError> {
        match self {
            SutKind::Postfix => Ok(Box::new(Postfix::start(ctx).await?)),
            SutKind::Reference(bugs) => Ok(Box::new(super::Reference::start(ctx, *bugs).await?)),
            SutKind::Exim => Ok(Box::new(Exim::start(ctx).await?)),
            SutKind::Opensmtpd => Ok(Box::new(Opensmtpd::start(ctx).await?)),
            SutKind::Driver(driver) => Ok(Box::new(
                super::RunningDriver::start(driver.clone(), ctx).await?,
            )),
        }
    }
}

/// The version in an MTA's version output: the first word that starts with a digit, on the
/// first line that has one (`Exim version 4.96 #2 built …` gives `4.96`).
fn version_in(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.split_whitespace()
            .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
            .map(|word| word.trim_end_matches([',', ';', ':']).to_string())
    })
}

impl fmt::Display for SutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SUT name on the command line that mxlab does not know, or a driver file it cannot use.
#[derive(Debug, thiserror::Error)]
pub enum UnknownSut {
    /// Neither a built-in SUT nor a `.toml` driver file.
    #[error(
        "unknown system under test {given:?}; known: {}, reference:BUG (BUG: {}), or a driver \
         file PATH.toml",
        SutKind::BUILT_IN.join(", "),
        bug_names()
    )]
    Name {
        /// What was given.
        given: String,
    },
    /// A driver file (a value ending in `.toml`) that cannot be read or is invalid.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl FromStr for SutKind {
    type Err = UnknownSut;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "postfix" => Ok(SutKind::Postfix),
            "reference" => Ok(SutKind::Reference(Bugs::NONE)),
            bugged if bugged.starts_with("reference:") => bugged["reference:".len()..]
                .parse()
                .map(SutKind::Reference)
                .map_err(|_| UnknownSut::Name {
                    given: bugged.to_string(),
                }),
            "exim" => Ok(SutKind::Exim),
            "opensmtpd" => Ok(SutKind::Opensmtpd),
            path if path.ends_with(".toml") => Ok(SutKind::Driver(Arc::new(DriverFile::load(
                std::path::Path::new(path),
            )?))),
            other => Err(UnknownSut::Name {
                given: other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bugs::Bug;

    #[test]
    fn a_mutant_drives_its_own_mta_and_comes_along_with_it_only() {
        let never_ipv4 = MutantSut::Reference(Bug::NeverIpv4);
        assert_eq!(SutKind::from(MutantSut::Postfix), SutKind::Postfix);
        assert_eq!(SutKind::from(never_ipv4).name(), "reference:never-ipv4");
        assert!(SutKind::Postfix.brings_along(MutantSut::Postfix));
        assert!(!SutKind::Exim.brings_along(MutantSut::Postfix));
        assert!(SutKind::Reference(Bugs::NONE).brings_along(never_ipv4));
        assert!(!SutKind::Opensmtpd.brings_along(never_ipv4));
    }

    #[test]
    fn versions_are_read_from_what_the_mta_prints() {
        for (output, version) in [
            ("3.7.11\n", "3.7.11"),
            (
                "2026-12-04 15:59:11 Warning: purging the environment.\nExim version 4.96 #2 built 26-Nov-2026\n",
                "4.96",
            ),
            ("version: OpenSMTPD 6.8.0p2\nusage: smtpd [-dFhnv]\n", "6.8.0p2"),
            ("Version 8.17.1.9\n Compiled with: DNSMAP\n", "8.17.1.9"),
            ("chasquid 1.11-2+b2 (source date: 2023-04-09 07:19:28 +0000 UTC)\n", "1.11-2+b2"),
        ] {
            assert_eq!(version_in(output).as_deref(), Some(version), "{output}");
        }
        assert_eq!(version_in("no version here\n"), None);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for name in SutKind::BUILT_IN {
            assert_eq!(name.parse::<SutKind>().unwrap().name(), *name);
        }
        let err = "sendmail".parse::<SutKind>().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "unknown system under test \"sendmail\"; known: postfix, exim, opensmtpd, reference, reference:BUG (BUG: {}), or a driver file PATH.toml",
                bug_names()
            )
        );
    }

    #[test]
    fn the_reference_sender_takes_one_bug_and_lists_them_when_wrong() {
        use crate::sut::reference::Bug;
        for bug in Bug::ALL {
            let kind: SutKind = bug.sut_name().parse().unwrap();
            assert_eq!(kind, SutKind::Reference(Bugs::only(bug)));
            assert_eq!(kind.name(), bug.sut_name());
        }
        assert_eq!(
            "reference".parse::<SutKind>().unwrap(),
            SutKind::Reference(Bugs::NONE)
        );
        for wrong in [
            "reference:",
            "reference:never-ipv5",
            "reference:never-ipv4+",
        ] {
            let err = wrong.parse::<SutKind>().unwrap_err().to_string();
            assert!(
                err.contains("never-ipv4, never-ipv6, first-address-only"),
                "{err}"
            );
        }
    }
}
