//! The reference sender's settings (`[sut.reference]` in a scenario).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::ClockRate;
use crate::family::Family;
use crate::sut::{SutError, Timeouts};

use super::SUT;

/// How the reference sender behaves; every field has a default fit for the scenario library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Which family's addresses of an MX host are tried first (`address_preference`, default
    /// `ipv6`). AAAA and A are looked up in this order too.
    pub address_preference: Family,
    /// How long a TCP connection may take to be established (`connect_timeout`, default 3 s).
    pub connect_timeout: Duration,
    /// How long each SMTP reply, and each write of message content, may take
    /// (`reply_timeout`, default 10 s).
    pub reply_timeout: Duration,
    /// Delays between delivery attempts of a deferred message; the last one repeats.
    pub retry_delays: Vec<Duration>,
}

impl Default for Settings {
    /// The retuned defaults ([`Timeouts::Fast`]): a 3 s connect timeout, 10 s per reply,
    /// retries after 1 s, 2 s, then every 4 s.
    fn default() -> Self {
        Settings {
            address_preference: Family::Ipv6,
            connect_timeout: Duration::from_secs(3),
            reply_timeout: Duration::from_secs(10),
            retry_delays: [1, 2, 4].map(Duration::from_secs).to_vec(),
        }
    }
}

impl Settings {
    /// The defaults for `timeouts`. Stock: a 30 s connect timeout (Postfix's), 5 minutes per
    /// reply (RFC 5321 §4.5.3.2's initial greeting, MAIL and RCPT timeouts) and a retry every
    /// 30 minutes (the least interval RFC 5321 §4.5.4.1 allows).
    pub fn defaults(timeouts: Timeouts) -> Settings {
        match timeouts {
            Timeouts::Fast => Settings::default(),
            Timeouts::Stock => Settings {
                address_preference: Family::Ipv6,
                connect_timeout: Duration::from_secs(30),
                reply_timeout: Duration::from_secs(300),
                retry_delays: vec![Duration::from_secs(30 * 60)],
            },
        }
    }

    /// These settings with every duration turned from world time into wall time at `clock`.
    pub fn on_clock(&self, clock: ClockRate) -> Settings {
        Settings {
            address_preference: self.address_preference,
            connect_timeout: clock.to_wall(self.connect_timeout),
            reply_timeout: clock.to_wall(self.reply_timeout),
            retry_delays: self
                .retry_delays
                .iter()
                .map(|d| clock.to_wall(*d))
                .collect(),
        }
    }
}

/// The setting names the reference sender knows.
pub const KNOWN: [&str; 3] = ["address_preference", "connect_timeout", "reply_timeout"];

impl Settings {
    /// The retuned defaults with `raw` applied; unknown names and bad values are errors.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Settings, SutError> {
        Settings::with_defaults(Settings::default(), raw)
    }

    /// `defaults` with `raw` applied; unknown names and bad values are errors.
    pub fn with_defaults(
        defaults: Settings,
        raw: &BTreeMap<String, String>,
    ) -> Result<Settings, SutError> {
        let mut settings = defaults;
        for (key, value) in raw {
            let bad = |reason: String| SutError::bad_setting(SUT, key, reason);
            match key.as_str() {
                "address_preference" => {
                    settings.address_preference = match value.trim() {
                        "ipv6" => Family::Ipv6,
                        "ipv4" => Family::Ipv4,
                        other => {
                            return Err(bad(format!("{other:?} is neither \"ipv6\" nor \"ipv4\"")))
                        }
                    }
                }
                "connect_timeout" => settings.connect_timeout = duration(value).map_err(bad)?,
                "reply_timeout" => settings.reply_timeout = duration(value).map_err(bad)?,
                _ => return Err(bad(format!("unknown setting; known: {}", KNOWN.join(", ")))),
            }
        }
        Ok(settings)
    }
}

/// `3s`, `500ms`, `1m` or plain seconds (`3`); zero is refused.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?,
    };
    if parsed.is_zero() {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            Settings::from_raw(&BTreeMap::new()).unwrap(),
            Settings::default()
        );
        let settings = Settings::from_raw(&raw(&[
            ("address_preference", "ipv4"),
            ("connect_timeout", "1500ms"),
            ("reply_timeout", "5"),
        ]))
        .unwrap();
        assert_eq!(settings.address_preference, Family::Ipv4);
        assert_eq!(settings.connect_timeout, Duration::from_millis(1500));
        assert_eq!(settings.reply_timeout, Duration::from_secs(5));
    }

    #[test]
    fn stock_defaults_are_world_time_and_run_faster_on_an_accelerated_clock() {
        let stock = Settings::defaults(Timeouts::Stock);
        assert_eq!(stock.connect_timeout, Duration::from_secs(30));
        let wall = stock.on_clock("x100".parse().unwrap());
        assert_eq!(wall.connect_timeout, Duration::from_millis(300));
        assert_eq!(wall.reply_timeout, Duration::from_secs(3));
        assert_eq!(wall.retry_delays, vec![Duration::from_secs(18)]);
        assert_eq!(Settings::defaults(Timeouts::Fast), Settings::default());
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Settings::from_raw(&raw(&[("smtp_connect_timeout", "1s")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp_connect_timeout") && err.contains("known: address_preference"));
        let err = Settings::from_raw(&raw(&[("address_preference", "any")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"any\""), "{err}");
        assert!(Settings::from_raw(&raw(&[("connect_timeout", "0s")])).is_err());
        assert!(Settings::from_raw(&raw(&[("reply_timeout", "soon")])).is_err());
    }
}
