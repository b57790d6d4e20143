//! The reference sender's settings (`[sut.reference]` in a scenario).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::family::Family;
use crate::sut::SutError;

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address_preference: Family::Ipv6,
            connect_timeout: Duration::from_secs(3),
            reply_timeout: Duration::from_secs(10),
        }
    }
}

/// The setting names the reference sender knows.
pub const KNOWN: [&str; 3] = ["address_preference", "connect_timeout", "reply_timeout"];

impl Settings {
    /// The defaults with `raw` applied; unknown names and bad values are errors.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Settings, SutError> {
        let mut settings = Settings::default();
        for (key, value) in raw {
            let bad = |reason: String| SutError::BadSetting {
                sut: SUT,
                key: key.clone(),
                reason,
            };
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
