//! IP address families.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An IP address family: what a scenario breaks and what a verdict reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// Both families, IPv6 first (the order a dual-stack MTA usually tries).
    pub const ALL: [Family; 2] = [Family::Ipv6, Family::Ipv4];

    /// The family of an address; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(
            Family::of("::ffff:192.0.2.1".parse().unwrap()),
            Family::Ipv4
        );
        assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(Family::of("192.0.2.1".parse().unwrap()), Family::Ipv4);
    }
}
