//! When a fault applies: one [`Activation`] (a window on the [`ScenarioClock`] and "only the
//! first N") for network, DNS and SMTP faults, built once by the plan.
//!
//! All three read the same clock, started at the first injection. Network faults are installed
//! and healed by the lab on the window's edges (`lab::schedule`); their `first` is counted by
//! the fault's nft set. SMTP rules are asked per session ([`Activation::covers`], with the
//! listener's session ordinal) and DNS faults per query ([`Activation::is_open`] and
//! [`Uses::take`]), because a session or a query, not the lab, is what they apply to.
//!
//! [`ScenarioClock`]: crate::clock::ScenarioClock

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// When a fault applies: from `from` until `until` on the scenario clock (wall time since the
/// first injection), and only to the first `first` sessions, queries or connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activation {
    /// Start of the window; the clock reads zero before the first injection.
    pub from: Duration,
    /// End of the window (exclusive); `None`: no end.
    pub until: Option<Duration>,
    /// Only the first N; `None`: all.
    pub first: Option<u32>,
}

impl Activation {
    /// Always, without a limit.
    pub const ALWAYS: Activation = Activation {
        from: Duration::ZERO,
        until: None,
        first: None,
    };

    /// Whether the window is open at `elapsed` on the scenario clock.
    pub fn is_open(&self, elapsed: Duration) -> bool {
        elapsed >= self.from && self.until.is_none_or(|until| elapsed < until)
    }

    /// Whether the `ordinal`-th (from 1) session, query or connection is among the first N.
    pub fn admits(&self, ordinal: u32) -> bool {
        self.first.is_none_or(|first| ordinal <= first)
    }

    /// Whether the `ordinal`-th (from 1) of something, starting at `elapsed`, is covered: the
    /// window is open and it is among the first N.
    pub fn covers(&self, ordinal: u32, elapsed: Duration) -> bool {
        self.is_open(elapsed) && self.admits(ordinal)
    }
}

/// How often a fault has applied, counted against its [`Activation::first`].
#[derive(Debug, Default)]
pub struct Uses(AtomicU32);

impl Uses {
    /// Counts one more application if `activation` admits it; false once its first N were
    /// counted. Without a limit it always admits (and counts nothing).
    pub fn take(&self, activation: &Activation) -> bool {
        if activation.first.is_none() {
            return true;
        }
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                activation
                    .admits(count.saturating_add(1))
                    .then_some(count + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_covers_a_window_and_the_first_sessions() {
        let when = Activation {
            from: Duration::from_secs(2),
            until: Some(Duration::from_secs(5)),
            first: Some(2),
        };
        assert!(!when.covers(1, Duration::from_secs(1)));
        assert!(when.covers(1, Duration::from_secs(2)));
        assert!(when.covers(2, Duration::from_secs(4)));
        assert!(!when.covers(3, Duration::from_secs(4)));
        assert!(!when.covers(1, Duration::from_secs(5)));
        assert!(Activation::ALWAYS.covers(1000, Duration::from_secs(1000)));
    }

    #[test]
    fn uses_admit_the_first_n_only() {
        let twice = Activation {
            first: Some(2),
            ..Activation::ALWAYS
        };
        let uses = Uses::default();
        assert!(uses.take(&twice));
        assert!(uses.take(&twice));
        assert!(!uses.take(&twice));
        assert!(!uses.take(&twice));
        let unlimited = Uses::default();
        assert!((0..5).all(|_| unlimited.take(&Activation::ALWAYS)));
    }
}
