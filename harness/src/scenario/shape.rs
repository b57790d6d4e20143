//! Path shaping as scenario files write it:
//! `net = { delay = "200ms", jitter = "50ms", reorder = "10%", duplicate = "20%",
//! rate = "10kB/s", direction = "both", seed = 7 }`.

use std::fmt;
use std::time::Duration;

use crate::clock::ClockRate;

/// Which packets of the path between the SUT and the host are shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShapeDirection {
    /// From the SUT to the host.
    To,
    /// From the host to the SUT.
    From,
    /// Both ways (a round trip meets the delay twice).
    #[default]
    Both,
}

impl fmt::Display for ShapeDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShapeDirection::To => "to",
            ShapeDirection::From => "from",
            ShapeDirection::Both => "both",
        })
    }
}

/// A rate in bytes per second, written `"10kB/s"`, `"1MB/s"`, `"800B/s"`, `"64kbit/s"` or
/// `"2Mbit/s"` (k and M are 1000 and 1000000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second, at least 1.
    pub bytes_per_second: u64,
}

impl Rate {
    /// Parses the scenario spelling.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || {
            format!(
                "invalid rate {text:?}: write e.g. \"10kB/s\", \"1MB/s\", \"800B/s\" or \"64kbit/s\""
            )
        };
        let number_end = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(number_end);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let (multiplier, divisor) = match unit.trim() {
            "B/s" => (1, 1),
            "kB/s" => (1_000, 1),
            "MB/s" => (1_000_000, 1),
            "bit/s" => (1, 8),
            "kbit/s" => (1_000, 8),
            "Mbit/s" => (1_000_000, 8),
            _ => return Err(bad()),
        };
        let bytes_per_second = number.checked_mul(multiplier).ok_or_else(bad)? / divisor;
        if bytes_per_second == 0 {
            return Err(format!("rate {text:?} is below 1 byte per second"));
        }
        Ok(Rate { bytes_per_second })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes_per_second;
        if b.is_multiple_of(1_000_000) {
            write!(f, "{}MB/s", b / 1_000_000)
        } else if b.is_multiple_of(1_000) {
            write!(f, "{}kB/s", b / 1_000)
        } else {
            write!(f, "{b}B/s")
        }
    }
}

/// A shaped path, as the scenario gives it (durations and rate in world time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetShape {
    /// One-way delay of each shaped packet.
    pub delay: Duration,
    /// Each packet's delay varies uniformly by up to this much either way (at most `delay`).
    pub jitter: Duration,
    /// Percentage of packets sent at once, overtaking delayed ones (needs a delay).
    pub reorder: u8,
    /// Percentage of packets sent twice.
    pub duplicate: u8,
    /// Bottleneck rate.
    pub rate: Option<Rate>,
    /// Which way packets are shaped.
    pub direction: ShapeDirection,
    /// Seed of the shaper's random choices (jitter, reorder, duplicate).
    pub seed: u64,
}

impl NetShape {
    /// The keys a shaping `net = { ... }` table may have.
    pub const KEYS: &'static str = "delay, jitter, reorder, duplicate, rate, direction, seed";

    /// Whether `key` belongs to a shaping table.
    pub fn is_key(key: &str) -> bool {
        matches!(
            key,
            "delay" | "jitter" | "reorder" | "duplicate" | "rate" | "direction" | "seed"
        )
    }

    /// Builds and checks a shape from a `net = { ... }` table's entries.
    pub fn from_entries(entries: &[(String, toml::Value)]) -> Result<NetShape, String> {
        let mut shape = NetShape {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0,
            duplicate: 0,
            rate: None,
            direction: ShapeDirection::default(),
            seed: 0,
        };
        for (key, value) in entries {
            match key.as_str() {
                "delay" => shape.delay = duration(key, value)?,
                "jitter" => shape.jitter = duration(key, value)?,
                "reorder" => shape.reorder = percent(key, value)?,
                "duplicate" => shape.duplicate = percent(key, value)?,
                "rate" => {
                    let text = value
                        .as_str()
                        .ok_or_else(|| format!("rate must be a string such as \"10kB/s\", not {value}"))?;
                    shape.rate = Some(Rate::parse(text)?);
                }
                "direction" => {
                    shape.direction = match value.as_str() {
                        Some("to") => ShapeDirection::To,
                        Some("from") => ShapeDirection::From,
                        Some("both") => ShapeDirection::Both,
                        _ => {
                            return Err(format!(
                                "direction = {value} is not one of \"to\" (SUT to host), \"from\" (host to SUT) or \"both\""
                            ))
                        }
                    }
                }
                "seed" => {
                    shape.seed = value
                        .as_integer()
                        .and_then(|seed| u64::try_from(seed).ok())
                        .ok_or_else(|| format!("seed = {value} must be a whole number from 0"))?;
                }
                other => {
                    return Err(format!(
                        "unknown shaping key `{other}`; allowed: {}",
                        NetShape::KEYS
                    ))
                }
            }
        }
        shape.check()?;
        Ok(shape)
    }

    fn check(&self) -> Result<(), String> {
        if self.jitter > self.delay {
            return Err(format!(
                "jitter {} is larger than the delay {}: give a delay of at least the jitter",
                humantime::format_duration(self.jitter),
                humantime::format_duration(self.delay)
            ));
        }
        if self.reorder > 0 && self.delay.is_zero() {
            return Err(
                "reorder sends packets without the delay: it needs a delay to overtake".into(),
            );
        }
        if self.delay.is_zero() && self.rate.is_none() && self.duplicate == 0 {
            return Err("this shape changes nothing: give a delay, a rate or duplicate".into());
        }
        Ok(())
    }

    /// The same shape in wall time on a world clock running at `clock`: delays shrink and the
    /// rate grows by its factor, so the MTA, whose timers run at that rate, sees the scenario's
    /// figures.
    pub fn to_wall(self, clock: ClockRate) -> NetShape {
        NetShape {
            delay: clock.to_wall(self.delay),
            jitter: clock.to_wall(self.jitter),
            rate: self.rate.map(|rate| Rate {
                bytes_per_second: rate
                    .bytes_per_second
                    .saturating_mul(u64::from(clock.times())),
            }),
            ..self
        }
    }
}

/// Writes the scenario file's spelling (only the keys that differ from their default), so a
/// shape read back is the same shape.
impl serde::Serialize for NetShape {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if !self.delay.is_zero() {
            map.serialize_entry("delay", &humantime::format_duration(self.delay).to_string())?;
        }
        if !self.jitter.is_zero() {
            map.serialize_entry(
                "jitter",
                &humantime::format_duration(self.jitter).to_string(),
            )?;
        }
        if self.reorder > 0 {
            map.serialize_entry("reorder", &self.reorder)?;
        }
        if self.duplicate > 0 {
            map.serialize_entry("duplicate", &self.duplicate)?;
        }
        if let Some(rate) = self.rate {
            map.serialize_entry("rate", &rate.to_string())?;
        }
        map.serialize_entry("direction", &self.direction.to_string())?;
        map.serialize_entry("seed", &self.seed)?;
        map.end()
    }
}

impl fmt::Display for NetShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape")?;
        if !self.delay.is_zero() {
            write!(f, " delay {}", humantime::format_duration(self.delay))?;
            if !self.jitter.is_zero() {
                write!(f, " ± {}", humantime::format_duration(self.jitter))?;
            }
        }
        if self.reorder > 0 {
            write!(f, " reorder {}%", self.reorder)?;
        }
        if self.duplicate > 0 {
            write!(f, " duplicate {}%", self.duplicate)?;
        }
        if let Some(rate) = self.rate {
            write!(f, " rate {rate}")?;
        }
        write!(f, " {} seed {}", self.direction, self.seed)
    }
}

fn duration(key: &str, value: &toml::Value) -> Result<Duration, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("{key} must be a duration such as \"200ms\", not {value}"))?;
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid {key} {text:?} ({e}); write e.g. \"200ms\", \"1s\" or \"1m 30s\"")
    })
}

fn percent(key: &str, value: &toml::Value) -> Result<u8, String> {
    let number = match value {
        toml::Value::Integer(n) => Some(*n),
        toml::Value::String(text) => text.strip_suffix('%').and_then(|n| n.trim().parse().ok()),
        _ => None,
    };
    match number {
        Some(n @ 0..=100) => Ok(n as u8),
        _ => Err(format!(
            "{key} = {value} is not a percentage: write e.g. \"10%\" (0% to 100%)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, toml::Value)> {
        let table: toml::Table = toml::from_str(text).unwrap();
        table.into_iter().collect()
    }

    #[test]
    fn the_full_spelling_parses() {
        let shape = NetShape::from_entries(&entries(
            "delay = \"200ms\"\njitter = \"50ms\"\nreorder = \"10%\"\nduplicate = 20\nrate = \"10kB/s\"\ndirection = \"to\"\nseed = 7",
        ))
        .unwrap();
        assert_eq!(shape.delay, Duration::from_millis(200));
        assert_eq!(shape.jitter, Duration::from_millis(50));
        assert_eq!((shape.reorder, shape.duplicate), (10, 20));
        assert_eq!(shape.rate.unwrap().bytes_per_second, 10_000);
        assert_eq!(shape.direction, ShapeDirection::To);
        assert_eq!(
            shape.to_string(),
            "shape delay 200ms ± 50ms reorder 10% duplicate 20% rate 10kB/s to seed 7"
        );
    }

    #[test]
    fn rates_parse_in_bytes_and_bits() {
        let rate = |t| Rate::parse(t).map(|r| r.bytes_per_second);
        assert_eq!(rate("800B/s"), Ok(800));
        assert_eq!(rate("1MB/s"), Ok(1_000_000));
        assert_eq!(rate("64kbit/s"), Ok(8_000));
        assert!(rate("10 kb").unwrap_err().contains("invalid rate"));
        assert!(rate("kB/s").is_err());
        assert!(rate("0B/s").unwrap_err().contains("below 1 byte"));
    }

    #[test]
    fn impossible_or_empty_shapes_are_refused() {
        let error = |t| NetShape::from_entries(&entries(t)).unwrap_err();
        assert!(error("delay = \"10ms\"\njitter = \"20ms\"").contains("larger than the delay"));
        assert!(error("reorder = 10\nduplicate = 5").contains("needs a delay"));
        assert!(error("direction = \"to\"").contains("changes nothing"));
        assert!(error("delay = \"1s\"\nduplicate = 120").contains("not a percentage"));
        assert!(error("delay = \"1s\"\ndirection = \"up\"").contains("\"to\""));
        assert!(error("delay = 200").contains("must be a duration"));
        assert!(error("delay = \"1s\"\nseed = -1").contains("seed"));
    }

    #[test]
    fn an_accelerated_clock_scales_delay_and_rate() {
        let shape = NetShape::from_entries(&entries(
            "delay = \"20s\"\njitter = \"5s\"\nrate = \"10kB/s\"",
        ))
        .unwrap()
        .to_wall(ClockRate::new(100).unwrap());
        assert_eq!(shape.delay, Duration::from_millis(200));
        assert_eq!(shape.jitter, Duration::from_millis(50));
        assert_eq!(shape.rate.unwrap().bytes_per_second, 1_000_000);
    }
}
