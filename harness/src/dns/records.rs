//! The scenario-level description of DNS data: zones, records and their contents.
//!
//! These types are plain data: they are checked and turned into hickory zones by
//! [`DnsServer::new`](super::DnsServer::new).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The data of one resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A mail exchanger. An `exchange` of `.` with preference 0 is a null MX (RFC 7505).
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The host name of the mail exchanger.
        exchange: String,
    },
    /// An alias for the given canonical name.
    Cname(String),
    /// A reverse pointer to the given host name.
    Ptr(String),
    /// A text record, e.g. an SPF policy. Strings longer than 255 bytes are split into
    /// several character-strings on the wire, as SPF (RFC 7208 §3.3) expects.
    Txt(String),
}

impl RecordData {
    /// The record type's mnemonic, e.g. `AAAA`.
    pub fn type_name(&self) -> &'static str {
        match self {
            RecordData::A(_) => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Mx { .. } => "MX",
            RecordData::Cname(_) => "CNAME",
            RecordData::Ptr(_) => "PTR",
            RecordData::Txt(_) => "TXT",
        }
    }
}

/// Zone-file style: `MX 10 mx1.example.test`, `TXT "v=spf1 -all"`.
impl fmt::Display for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.type_name();
        match self {
            RecordData::A(addr) => write!(f, "{kind} {addr}"),
            RecordData::Aaaa(addr) => write!(f, "{kind} {addr}"),
            RecordData::Mx {
                preference,
                exchange,
            } => write!(f, "{kind} {preference} {exchange}"),
            RecordData::Cname(target) | RecordData::Ptr(target) => write!(f, "{kind} {target}"),
            RecordData::Txt(text) => write!(f, "{kind} {text:?}"),
        }
    }
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name, absolute, e.g. `mx1.example.test` or `10.2.0.192.in-addr.arpa`
    /// (see [`reverse_name`]). A trailing dot is optional; case does not matter.
    /// A leading `*` label makes a wildcard record.
    pub name: String,
    /// The record's type and data.
    pub data: RecordData,
}

impl Record {
    /// A record with the given owner name and data.
    pub fn new(name: impl Into<String>, data: RecordData) -> Self {
        Self {
            name: name.into(),
            data,
        }
    }
}

/// Zone-file style: `mx1.example.test A 192.0.2.10`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.data)
    }
}

/// One authoritative zone. Its SOA and NS records are generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's apex, e.g. `example.test`, `in-addr.arpa` or `ip6.arpa`.
    pub origin: String,
    /// The zone's records; each must lie at or below `origin`.
    pub records: Vec<Record>,
}

impl Zone {
    /// A zone with the given origin and records.
    pub fn new(origin: impl Into<String>, records: Vec<Record>) -> Self {
        Self {
            origin: origin.into(),
            records,
        }
    }
}

/// The owner name of the PTR record for `addr`, without a trailing dot:
/// `10.2.0.192.in-addr.arpa` for `192.0.2.10`, and the 32-nibble `….8.b.d.0.1.0.0.2.ip6.arpa`
/// form for IPv6 addresses.
pub fn reverse_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    name.push('.');
                }
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_follow_rfc_1035_and_rfc_3596() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::10".parse().unwrap()),
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn records_display_like_zone_file_lines() {
        let mx = Record::new(
            "example.test",
            RecordData::Mx {
                preference: 10,
                exchange: "mx1.example.test".into(),
            },
        );
        assert_eq!(mx.to_string(), "example.test MX 10 mx1.example.test");
        let txt = Record::new("example.test", RecordData::Txt("v=spf1 -all".into()));
        assert_eq!(txt.to_string(), "example.test TXT \"v=spf1 -all\"");
    }
}
