//! The world clock: how fast a run's world goes, and when it started.
//!
//! Every duration a scenario writes (fault windows, greylist and rate periods, DNS delays,
//! `within`) is *world time*: the time the MTA under test sees. With an accelerated clock
//! ([`ClockRate`] above x1) the MTA runs under libfaketime at that rate, and the harness divides
//! its own timers by the same rate, so the world stays consistent: a 5-minute greylist is five
//! minutes to the MTA and 3 s of wall time at x100. [`ScenarioClock`] marks the first injection,
//! from which fault windows count.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Shared start time of a scenario; cheap to clone. Before [`ScenarioClock::start`] the clock
/// reads zero, so faults active "from 0s" are active while the lab comes up.
#[derive(Debug, Clone, Default)]
pub struct ScenarioClock(Arc<OnceLock<Instant>>);

impl ScenarioClock {
    /// A clock that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the clock now; later calls keep the first start.
    pub fn start(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }

    /// Time since the start; zero before it.
    pub fn elapsed(&self) -> Duration {
        self.0.get().map_or(Duration::ZERO, Instant::elapsed)
    }

    /// Waits until the clock reads `at` (starting it now if it has not started).
    pub async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until(self.start() + at).await;
    }
}

/// How many seconds of world time pass per second of wall time: `x1` (the real clock, written
/// `real`) up to `x1000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockRate(u32);

impl ClockRate {
    /// The real clock: world time is wall time.
    pub const REAL: ClockRate = ClockRate(1);
    /// The rate a run uses unless told otherwise. Measured on a 2-core machine (see the
    /// README's "World clock" section): at x100 the stock timers that matter (Postfix's 30 s
    /// connect timeout, Exim's 5-minute connect timeout, OpenSMTPD's 400 s first retry) take
    /// 0.3-4 s of wall time, while the shortest whole-second `alarm()` timer of the built-in
    /// MTAs (Exim's 5-minute command timeouts) still rounds to 3 s instead of 0, and the
    /// MTA's 2 s resolver timeout (20 ms) stays far above the scenario DNS's answer time.
    pub const DEFAULT: ClockRate = ClockRate(100);
    /// The fastest rate accepted: beyond it a one-second timer is shorter than a millisecond
    /// and scheduling noise on a loaded machine dominates what the MTA sees.
    pub const MAX: u32 = 1000;

    /// A rate of `times` world seconds per wall second.
    pub fn new(times: u32) -> Result<ClockRate, ClockRateError> {
        match times {
            0 => Err(ClockRateError::BelowOne),
            1..=Self::MAX => Ok(ClockRate(times)),
            _ => Err(ClockRateError::TooFast(times)),
        }
    }

    /// World seconds per wall second.
    pub fn times(self) -> u32 {
        self.0
    }

    /// Whether the world runs faster than the wall clock.
    pub fn is_accelerated(self) -> bool {
        self.0 > 1
    }

    /// The wall time a span of world time takes.
    pub fn to_wall(self, world: Duration) -> Duration {
        world / self.0
    }

    /// The world time that passes in a span of wall time.
    pub fn to_world(self, wall: Duration) -> Duration {
        wall.saturating_mul(self.0)
    }
}

impl Default for ClockRate {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for ClockRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_accelerated() {
            write!(f, "x{}", self.0)
        } else {
            f.write_str("real")
        }
    }
}

/// A clock rate that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockRateError {
    /// Not of the form `xN` or `real`.
    #[error("invalid clock rate {0:?}: write \"real\" or \"xN\" with N from 1 to {max}, e.g. \"x100\"", max = ClockRate::MAX)]
    Syntax(String),
    /// Slower than the real clock.
    #[error("a clock rate below x1 would slow the world down; use \"real\" or \"xN\" with N >= 1")]
    BelowOne,
    /// Faster than [`ClockRate::MAX`].
    #[error("clock rate x{0} is faster than x{max}: a one-second timer would last under a millisecond; choose x{max} or less", max = ClockRate::MAX)]
    TooFast(u32),
}

impl FromStr for ClockRate {
    type Err = ClockRateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("real") {
            return Ok(ClockRate::REAL);
        }
        let digits = text
            .strip_prefix(['x', 'X'])
            .ok_or_else(|| ClockRateError::Syntax(text.to_string()))?;
        if digits.starts_with('-') || digits.starts_with("0.") {
            return Err(ClockRateError::BelowOne);
        }
        let times: u32 = digits
            .parse()
            .map_err(|_| ClockRateError::Syntax(text.to_string()))?;
        ClockRate::new(times)
    }
}

impl<'de> serde::Deserialize<'de> for ClockRate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_from_xn_and_real() {
        assert_eq!("x100".parse(), Ok(ClockRate(100)));
        assert_eq!("X10".parse(), Ok(ClockRate(10)));
        assert_eq!("real".parse(), Ok(ClockRate::REAL));
        assert_eq!("x1".parse(), Ok(ClockRate::REAL));
        assert_eq!("x0".parse::<ClockRate>(), Err(ClockRateError::BelowOne));
        assert_eq!("x0.5".parse::<ClockRate>(), Err(ClockRateError::BelowOne));
        assert_eq!("x-3".parse::<ClockRate>(), Err(ClockRateError::BelowOne));
        assert_eq!(
            "x5000".parse::<ClockRate>(),
            Err(ClockRateError::TooFast(5000))
        );
        for bad in ["100", "fast", "x", "x1e3", ""] {
            assert!(
                matches!(bad.parse::<ClockRate>(), Err(ClockRateError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn world_and_wall_time_convert_by_the_rate() {
        let rate = ClockRate::new(100).unwrap();
        assert_eq!(
            rate.to_wall(Duration::from_secs(30)),
            Duration::from_millis(300)
        );
        assert_eq!(
            rate.to_world(Duration::from_millis(310)),
            Duration::from_secs(31)
        );
        assert_eq!(
            ClockRate::REAL.to_wall(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(rate.to_string(), "x100");
        assert_eq!(ClockRate::REAL.to_string(), "real");
    }

    #[tokio::test]
    async fn reads_zero_until_started_and_keeps_the_first_start() {
        let clock = ScenarioClock::new();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        let first = clock.start();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(clock.start(), first);
        assert!(clock.elapsed() >= Duration::from_millis(5));
    }
}
