//! Durations written the human way in scenario files ("30s", "1m 30s", "500ms").

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A [`Duration`] parsed from a string such as `"30s"` or `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|err| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({err}); write e.g. \"30s\", \"500ms\" or \"1m 30s\""
                ))
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}
