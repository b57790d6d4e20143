//! The scenario clock: fault windows count from the first injection.

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
