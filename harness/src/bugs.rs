//! Planted bugs: switches that make the reference sender wrong in one known way.
//!
//! A leaf module: scenarios name these bugs (`reference:BUG` mutants) and the reference sender
//! plants them, so neither of the two depends on the other for them.
//!
//! Each bug models a failure seen in real MTAs. Running a scenario library against
//! `reference:BUG` proves that the library catches that bug: at least one scenario must fail.
//! The correct sender is `reference` (no bug).

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// `never-ipv4`: looks up only AAAA records and connects only over IPv6, as an MTA bound to
    /// an IPv6-only socket or configured `inet_protocols = ipv6` by mistake. Mail to an MX whose
    /// IPv6 path is broken is never delivered.
    NeverIpv4,
    /// `never-ipv6`: looks up only A records and connects only over IPv4, as an MTA that
    /// ignores AAAA records. Delivers, but never over IPv6.
    NeverIpv6,
    /// `first-address-only`: tries only the first address of the most preferred MX host and
    /// defers when it fails, as a client that calls `connect()` on the first `getaddrinfo()`
    /// result and gives up (Debian bug #837535, Delta Chat #2169).
    FirstAddressOnly,
    /// `4xx-as-5xx`: treats every 4xx reply (greeting, EHLO, MAIL, RCPT, DATA) as permanent and
    /// bounces the message instead of trying the next address or retrying later.
    TempfailAsPermanent,
    /// `same-family-retry`: once the first address has failed, tries only addresses of the same
    /// family (the next MX hosts' too), so a broken IPv6 path is never worked around over
    /// IPv4 (Postal #813).
    SameFamilyRetry,
    /// `no-mx-fallback`: tries only the most preferred MX host and defers when all its
    /// addresses fail, ignoring the backup MX hosts.
    NoMxFallback,
    /// `ignore-preference`: tries the MX hosts in reverse preference order (the least preferred
    /// first), as a client that sorts preferences the wrong way round.
    IgnorePreference,
    /// `no-cname-mx`: refuses an MX exchange that is an alias (a CNAME), reading RFC 2181
    /// §10.3 as a prohibition, and defers instead of following it to the host's addresses
    /// (serverfault 482035).
    NoCnameMx,
}

impl Bug {
    /// Every bug, in the order they are documented.
    pub const ALL: [Bug; 8] = [
        Bug::NeverIpv4,
        Bug::NeverIpv6,
        Bug::FirstAddressOnly,
        Bug::TempfailAsPermanent,
        Bug::SameFamilyRetry,
        Bug::NoMxFallback,
        Bug::IgnorePreference,
        Bug::NoCnameMx,
    ];

    /// The bug's name, e.g. `never-ipv4`.
    pub const fn name(self) -> &'static str {
        match self {
            Bug::NeverIpv4 => "never-ipv4",
            Bug::NeverIpv6 => "never-ipv6",
            Bug::FirstAddressOnly => "first-address-only",
            Bug::TempfailAsPermanent => "4xx-as-5xx",
            Bug::SameFamilyRetry => "same-family-retry",
            Bug::NoMxFallback => "no-mx-fallback",
            Bug::IgnorePreference => "ignore-preference",
            Bug::NoCnameMx => "no-cname-mx",
        }
    }

    /// The SUT name of the reference sender with only this bug, e.g. `reference:never-ipv4`.
    pub const fn sut_name(self) -> &'static str {
        match self {
            Bug::NeverIpv4 => "reference:never-ipv4",
            Bug::NeverIpv6 => "reference:never-ipv6",
            Bug::FirstAddressOnly => "reference:first-address-only",
            Bug::TempfailAsPermanent => "reference:4xx-as-5xx",
            Bug::SameFamilyRetry => "reference:same-family-retry",
            Bug::NoMxFallback => "reference:no-mx-fallback",
            Bug::IgnorePreference => "reference:ignore-preference",
            Bug::NoCnameMx => "reference:no-cname-mx",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bug name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reference sender bug {given:?}; known: {}", bug_names())]
pub struct UnknownBug {
    given: String,
}

/// Every bug name, comma-separated.
pub fn bug_names() -> String {
    Bug::ALL
        .iter()
        .map(|bug| bug.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Bug::ALL
            .into_iter()
            .find(|bug| bug.name() == text)
            .ok_or_else(|| UnknownBug {
                given: text.to_string(),
            })
    }
}

/// The set of bugs planted in a reference sender; empty for the correct sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Bugs(u16);

impl Bugs {
    /// No bug: the correct sender.
    pub const NONE: Bugs = Bugs(0);

    /// Just `bug`.
    pub const fn only(bug: Bug) -> Bugs {
        Bugs(bug.bit())
    }

    /// These bugs and `bug`.
    pub const fn with(self, bug: Bug) -> Bugs {
        Bugs(self.0 | bug.bit())
    }

    /// Whether `bug` is planted.
    pub const fn has(self, bug: Bug) -> bool {
        self.0 & bug.bit() != 0
    }

    /// Whether no bug is planted.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The planted bugs in documentation order.
    pub fn iter(self) -> impl Iterator<Item = Bug> {
        Bug::ALL.into_iter().filter(move |bug| self.has(*bug))
    }

    /// The SUT name: `reference`, `reference:BUG`, or `reference:BUG+BUG` for several.
    pub fn sut_name(self) -> &'static str {
        let mut bugs = self.iter();
        match (bugs.next(), bugs.next()) {
            (None, _) => "reference",
            (Some(bug), None) => bug.sut_name(),
            (Some(_), Some(_)) => interned(self),
        }
    }
}

/// Names of bug combinations, made once each (there are at most 2^8 of them).
fn interned(bugs: Bugs) -> &'static str {
    static NAMES: OnceLock<Mutex<Vec<(Bugs, &'static str)>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, name)) = names.iter().find(|(known, _)| *known == bugs) {
        return name;
    }
    let name = format!(
        "reference:{}",
        bugs.iter().map(Bug::name).collect::<Vec<_>>().join("+")
    );
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.push((bugs, name));
    name
}

impl FromIterator<Bug> for Bugs {
    fn from_iter<I: IntoIterator<Item = Bug>>(iter: I) -> Self {
        iter.into_iter().fold(Bugs::NONE, Bugs::with)
    }
}

impl fmt::Display for Bugs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sut_name())
    }
}

impl FromStr for Bugs {
    type Err = UnknownBug;

    /// Parses what follows `reference:`: one bug name, or several joined with `+`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split('+').map(str::parse::<Bug>).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for bug in Bug::ALL {
            assert_eq!(bug.name().parse::<Bug>().unwrap(), bug);
            assert_eq!(bug.sut_name(), format!("reference:{}", bug.name()));
            assert_eq!(Bugs::only(bug).sut_name(), bug.sut_name());
        }
        assert_eq!(Bugs::NONE.sut_name(), "reference");
        let two: Bugs = "never-ipv6+4xx-as-5xx".parse().unwrap();
        assert!(two.has(Bug::NeverIpv6) && two.has(Bug::TempfailAsPermanent));
        assert!(!two.has(Bug::NeverIpv4));
        assert_eq!(two.sut_name(), "reference:never-ipv6+4xx-as-5xx");
        assert!(std::ptr::eq(two.sut_name(), two.sut_name()));
    }

    #[test]
    fn an_unknown_bug_lists_the_known_ones() {
        let err = "never-ipv5".parse::<Bugs>().unwrap_err().to_string();
        assert!(err.contains("\"never-ipv5\""), "{err}");
        for bug in Bug::ALL {
            assert!(err.contains(bug.name()), "{err}");
        }
    }
}
