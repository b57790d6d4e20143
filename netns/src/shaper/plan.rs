//! When each packet leaves the shaper: rate pacing, delay with jitter, reordering and
//! duplication, decided by a seeded random number generator (same seed, same packets → same
//! decisions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How a shaped path treats packets, in wall time.
///
/// Each packet first crosses a bottleneck of `rate` bytes per second (if set: packets queue
/// behind each other, like `tbf` or netem's `rate`), then waits `delay` ± `jitter` (uniform).
/// Packets of one flow (addresses, protocol and ports) leave in the order they came, unless
/// `reorder` picks them: such a packet skips the delay and overtakes those still waiting
/// (netem's reorder semantics). Different flows keep no order among themselves, so each new
/// connection's first packet meets the full delay ± jitter.
/// `duplicate` sends a packet twice (both copies shaped alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Base one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform value in `-jitter..=jitter` (at most
    /// `delay`).
    pub jitter: Duration,
    /// Percentage (0-100) of packets sent without the delay, overtaking earlier ones.
    pub reorder: u8,
    /// Percentage (0-100) of packets sent twice.
    pub duplicate: u8,
    /// Bottleneck rate in bytes per second (IP packets, headers included); unlimited if `None`.
    pub rate: Option<u64>,
    /// Seed of the random number generator.
    pub seed: u64,
}

impl Shape {
    /// Checks the values; the message names the problem.
    pub fn check(&self) -> Result<(), String> {
        if self.jitter > self.delay {
            return Err(format!(
                "jitter {:?} is larger than the delay {:?}: a packet cannot leave before it came",
                self.jitter, self.delay
            ));
        }
        for (name, value) in [("reorder", self.reorder), ("duplicate", self.duplicate)] {
            if value > 100 {
                return Err(format!("{name} = {value}% is not a percentage (0-100)"));
            }
        }
        if self.rate == Some(0) {
            return Err("rate 0 would never send a packet".into());
        }
        Ok(())
    }
}

/// Flows whose last packet left this long ago are forgotten.
const FLOW_MEMORY: Duration = Duration::from_secs(60);

/// Why a packet leaves when it does (for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Release {
    /// When the copy leaves.
    pub(crate) at: Instant,
    /// It skipped the delay (reordered).
    pub(crate) reordered: bool,
    /// It is the second copy.
    pub(crate) duplicate: bool,
}

/// Decides release times packet by packet.
#[derive(Debug)]
pub(crate) struct Scheduler {
    shape: Shape,
    rng: fastrand::Rng,
    /// When each direction's bottleneck is free again.
    link_free: [Option<Instant>; 2],
    /// When each flow's last in-order packet leaves: later ones never leave before it.
    flows: HashMap<u64, Instant>,
}

impl Scheduler {
    pub(crate) fn new(shape: Shape) -> Scheduler {
        Scheduler {
            shape,
            rng: fastrand::Rng::with_seed(shape.seed),
            link_free: [None; 2],
            flows: HashMap::new(),
        }
    }

    /// The releases of a packet of `len` bytes of `flow` that arrived `now` in direction
    /// `lane` (0 or 1): one, or two for a duplicated packet.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        len: usize,
        lane: usize,
        flow: u64,
    ) -> Vec<Release> {
        if self.flows.len() > 1024 {
            self.flows
                .retain(|_, last| now.saturating_duration_since(*last) < FLOW_MEMORY);
        }
        let copies = if self.percent(self.shape.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|copy| {
                let reordered = self.percent(self.shape.reorder);
                let jitter = self.jitter();
                // The bottleneck: this copy's bytes after those already queued.
                let departs = match self.shape.rate {
                    None => now,
                    Some(rate) => {
                        let link_free = &mut self.link_free[lane];
                        let start = link_free.map_or(now, |free| free.max(now));
                        let free = start + Duration::from_secs_f64(len as f64 / rate as f64);
                        *link_free = Some(free);
                        free
                    }
                };
                let at = if reordered {
                    departs
                } else {
                    let delayed = departs + jitter;
                    let last = self.flows.entry(flow).or_insert(delayed);
                    *last = (*last).max(delayed);
                    *last
                };
                Release {
                    at,
                    reordered,
                    duplicate: copy == 1,
                }
            })
            .collect()
    }

    /// True with the given percentage (always draws, so decisions depend on packets only).
    fn percent(&mut self, percent: u8) -> bool {
        self.rng.u8(0..100) < percent
    }

    /// `delay` plus a uniform value in `-jitter..=jitter`.
    fn jitter(&mut self) -> Duration {
        let jitter = self.shape.jitter.as_nanos() as i128;
        let offset = if jitter == 0 {
            0
        } else {
            self.rng.i128(-jitter..=jitter)
        };
        let nanos = (self.shape.delay.as_nanos() as i128 + offset).max(0);
        Duration::from_nanos(nanos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            delay: Duration::from_millis(200),
            jitter: Duration::ZERO,
            reorder: 0,
            duplicate: 0,
            rate: None,
            seed: 7,
        }
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn delay_with_jitter_stays_in_its_range_keeps_order_and_spreads() {
        let now = Instant::now();
        let mut s = Scheduler::new(Shape {
            jitter: Duration::from_millis(50),
            ..shape()
        });
        let mut last = now;
        let mut delays = Vec::new();
        for i in 0..200u32 {
            // One packet every 100 ms: farther apart than the jitter, so order costs nothing.
            let arrived = now + Duration::from_millis(100 * u64::from(i));
            let [r] = s.admit(arrived, 100, 0, 1)[..] else {
                panic!("one copy")
            };
            assert!(r.at >= last, "in order");
            last = r.at;
            let delay = ms(r.at - arrived);
            assert!((150..=250).contains(&delay), "{delay} ms");
            delays.push(delay);
        }
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(min < &165 && max > &235, "spread {min}..{max}");
    }

    #[test]
    fn back_to_back_packets_stay_in_order_despite_jitter() {
        let now = Instant::now();
        let mut s = Scheduler::new(Shape {
            jitter: Duration::from_millis(50),
            ..shape()
        });
        let releases: Vec<Instant> = (0..100).map(|_| s.admit(now, 100, 0, 1)[0].at).collect();
        assert!(releases.windows(2).all(|w| w[0] <= w[1]));
        // Another flow keeps no order with this one: its packets spread over the whole range.
        let others: Vec<Instant> = (0..100u64)
            .map(|flow| s.admit(now, 100, 0, 100 + flow)[0].at)
            .collect();
        assert!(others.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn the_same_seed_gives_the_same_decisions_and_another_seed_others() {
        let now = Instant::now();
        let shaped = Shape {
            jitter: Duration::from_millis(50),
            reorder: 10,
            duplicate: 20,
            ..shape()
        };
        let run = |seed| {
            let mut s = Scheduler::new(Shape { seed, ..shaped });
            (0..100)
                .flat_map(|i| s.admit(now + Duration::from_millis(i * 10), 100, 0, i % 3))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn reorder_and_duplicate_come_at_about_their_percentages() {
        let now = Instant::now();
        let mut s = Scheduler::new(Shape {
            reorder: 10,
            duplicate: 20,
            ..shape()
        });
        let releases: Vec<Release> = (0..1000).flat_map(|_| s.admit(now, 100, 0, 1)).collect();
        let duplicates = releases.iter().filter(|r| r.duplicate).count();
        let reordered = releases.iter().filter(|r| r.reordered).count();
        assert!((150..=250).contains(&duplicates), "{duplicates}");
        assert!((80..=160).contains(&reordered), "{reordered}");
        // A reordered copy leaves at once; the others after the delay.
        assert!(releases.iter().all(|r| (r.at == now) == r.reordered));
    }

    #[test]
    fn rate_paces_each_lane_on_its_own() {
        let now = Instant::now();
        let mut s = Scheduler::new(Shape {
            delay: Duration::ZERO,
            rate: Some(10_000),
            ..shape()
        });
        // 20 packets of 1000 bytes at once: the last leaves after 20000 bytes / 10 kB/s = 2 s.
        let last = (0..20)
            .map(|_| s.admit(now, 1000, 0, 1)[0].at)
            .last()
            .unwrap();
        assert_eq!(ms(last - now), 2000);
        // The other direction has its own bottleneck.
        assert_eq!(ms(s.admit(now, 1000, 1, 2)[0].at - now), 100);
    }

    #[test]
    fn check_rejects_impossible_shapes() {
        let bad = Shape {
            jitter: Duration::from_millis(300),
            ..shape()
        };
        assert!(bad.check().unwrap_err().contains("larger than the delay"));
        assert!(Shape {
            rate: Some(0),
            ..shape()
        }
        .check()
        .is_err());
        assert!(Shape {
            duplicate: 101,
            ..shape()
        }
        .check()
        .is_err());
        shape().check().unwrap();
    }
}
