//! Which system under test a run drives, and starting it.

use std::fmt;
use std::str::FromStr;

use super::{Postfix, RunningSut, SutContext, SutError};

/// A system under test mxlab can drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SutKind {
    /// Postfix, run as a private throwaway instance.
    Postfix,
}

impl SutKind {
    /// Every built-in SUT, as accepted on the command line.
    pub const BUILT_IN: &'static [&'static str] = &["postfix"];

    /// The name used in reports, test names and `[sut.NAME]` sections.
    pub fn name(&self) -> &str {
        match self {
            SutKind::Postfix => "postfix",
        }
    }

    /// Checks that the SUT is installed and usable, before anything is built.
    pub fn check_installed(&self) -> Result<(), SutError> {
        match self {
            SutKind::Postfix => super::postfix::check_installed(),
        }
    }

    /// Starts the SUT inside the lab and waits until it is ready for mail.
    pub async fn start(&self, ctx: SutContext<'_>) -> Result<Box<dyn RunningSut>, SutError> {
        match self {
            SutKind::Postfix => Ok(Box::new(Postfix::start(ctx).await?)),
        }
    }
}

impl fmt::Display for SutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SUT name on the command line that mxlab does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown system under test {given:?}; known: {}", SutKind::BUILT_IN.join(", "))]
pub struct UnknownSut {
    given: String,
}

impl FromStr for SutKind {
    type Err = UnknownSut;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "postfix" => Ok(SutKind::Postfix),
            other => Err(UnknownSut {
                given: other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for name in SutKind::BUILT_IN {
            assert_eq!(name.parse::<SutKind>().unwrap().name(), *name);
        }
        let err = "sendmail".parse::<SutKind>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown system under test \"sendmail\"; known: postfix"
        );
    }
}
