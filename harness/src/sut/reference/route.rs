//! Which MX hosts and addresses to try, in which order (RFC 5321 §5.1), and how the planted
//! bugs change that.

use std::net::IpAddr;

use super::dns::MxRecord;
use crate::bugs::{Bug, Bugs};
use crate::family::Family;

/// An MX host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Its name, lower case, no trailing dot.
    pub name: String,
    /// Its MX preference (0 for the implicit MX of a domain without MX records).
    pub preference: u16,
}

/// One address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The MX host it belongs to.
    pub host: String,
    /// The address.
    pub address: IpAddr,
}

/// Orders MX records for delivery: by preference, lowest first; hosts of equal preference in
/// an order given by `seed` (RFC 5321 §5.1: "randomize"); each host once. Then the bugs:
/// `ignore-preference` reverses the order, `no-mx-fallback` keeps only the first host.
pub fn order_mx(records: &[MxRecord], bugs: Bugs, seed: u64) -> Vec<MxHost> {
    let mut draws = fastrand::Rng::with_seed(seed);
    let mut keyed: Vec<(u16, u64, &MxRecord)> = records
        .iter()
        .map(|record| (record.preference, draws.u64(..), record))
        .collect();
    keyed.sort_by_key(|(preference, key, _)| (*preference, *key));
    let mut hosts: Vec<MxHost> = Vec::new();
    for (preference, _, record) in keyed {
        if !hosts.iter().any(|h| h.name == record.exchange) {
            hosts.push(MxHost {
                name: record.exchange.clone(),
                preference,
            });
        }
    }
    if bugs.has(Bug::IgnorePreference) {
        hosts.reverse();
    }
    if bugs.has(Bug::NoMxFallback) {
        hosts.truncate(1);
    }
    hosts
}

/// Whether `records` is a null MX (RFC 7505): one record whose exchange is the root.
pub fn is_null_mx(records: &[MxRecord]) -> bool {
    matches!(records, [only] if only.exchange.is_empty())
}

/// The families to look up and connect over, preferred first; `never-ipv4` and
/// `never-ipv6` drop one.
pub fn families(preference: Family, bugs: Bugs) -> Vec<Family> {
    let other = match preference {
        Family::Ipv6 => Family::Ipv4,
        Family::Ipv4 => Family::Ipv6,
    };
    [preference, other]
        .into_iter()
        .filter(|family| match family {
            Family::Ipv4 => !bugs.has(Bug::NeverIpv4),
            Family::Ipv6 => !bugs.has(Bug::NeverIpv6),
        })
        .collect()
}

/// Every address of every host, hosts in order and within a host the preferred family first
/// (each family in the order DNS gave). Then the bugs: `first-address-only` keeps the first
/// address, `same-family-retry` keeps only addresses of the first address's family (once that
/// fails, the sender never switches family).
pub fn candidates(
    resolved: &[(MxHost, Vec<IpAddr>)],
    preference: Family,
    bugs: Bugs,
) -> Vec<Candidate> {
    let order = families(preference, Bugs::NONE);
    let mut list: Vec<Candidate> = Vec::new();
    for (host, addresses) in resolved {
        for family in &order {
            for address in addresses.iter().filter(|a| Family::of(**a) == *family) {
                let seen = list
                    .iter()
                    .any(|c| c.host == host.name && c.address == *address);
                if !seen {
                    list.push(Candidate {
                        host: host.name.clone(),
                        address: *address,
                    });
                }
            }
        }
    }
    if bugs.has(Bug::SameFamilyRetry) {
        if let Some(first) = list.first().map(|c| Family::of(c.address)) {
            list.retain(|c| Family::of(c.address) == first);
        }
    }
    if bugs.has(Bug::FirstAddressOnly) {
        list.truncate(1);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.into(),
        }
    }

    fn names(hosts: &[MxHost]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mx_hosts_go_by_preference_and_equal_ones_are_shuffled() {
        let records = [mx(20, "b"), mx(10, "a"), mx(30, "c"), mx(10, "a")];
        assert_eq!(names(&order_mx(&records, Bugs::NONE, 7)), ["a", "b", "c"]);
        assert_eq!(
            names(&order_mx(&records, Bugs::only(Bug::IgnorePreference), 7)),
            ["c", "b", "a"]
        );
        assert_eq!(
            names(&order_mx(&records, Bugs::only(Bug::NoMxFallback), 7)),
            ["a"]
        );
        let equal = [mx(10, "x"), mx(10, "y"), mx(5, "first")];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let order = order_mx(&equal, Bugs::NONE, seed);
            assert_eq!(order[0].name, "first");
            seen.insert(names(&order).join(","));
        }
        assert_eq!(seen.len(), 2, "both orders of x and y occur: {seen:?}");
    }

    #[test]
    fn null_mx() {
        assert!(is_null_mx(&[mx(0, "")]));
        assert!(!is_null_mx(&[mx(0, ""), mx(10, "a")]));
        assert!(!is_null_mx(&[mx(10, "a")]));
    }

    #[test]
    fn families_follow_the_preference_and_the_bugs() {
        assert_eq!(
            families(Family::Ipv6, Bugs::NONE),
            [Family::Ipv6, Family::Ipv4]
        );
        assert_eq!(
            families(Family::Ipv4, Bugs::NONE),
            [Family::Ipv4, Family::Ipv6]
        );
        assert_eq!(
            families(Family::Ipv6, Bugs::only(Bug::NeverIpv4)),
            [Family::Ipv6]
        );
        assert_eq!(
            families(Family::Ipv6, Bugs::only(Bug::NeverIpv6)),
            [Family::Ipv4]
        );
    }

    fn resolved() -> Vec<(MxHost, Vec<IpAddr>)> {
        vec![
            (
                MxHost {
                    name: "mx1".into(),
                    preference: 10,
                },
                vec![ip("192.0.2.26"), ip("2001:db8:0:3::2"), ip("fd00:db8::25")],
            ),
            (
                MxHost {
                    name: "mx2".into(),
                    preference: 20,
                },
                vec![ip("192.0.2.34"), ip("2001:db8:0:4::2")],
            ),
        ]
    }

    fn listed(candidates: &[Candidate]) -> Vec<String> {
        candidates
            .iter()
            .map(|c| format!("{} {}", c.host, c.address))
            .collect()
    }

    #[test]
    fn addresses_go_host_by_host_preferred_family_first() {
        assert_eq!(
            listed(&candidates(&resolved(), Family::Ipv6, Bugs::NONE)),
            [
                "mx1 2001:db8:0:3::2",
                "mx1 fd00:db8::25",
                "mx1 192.0.2.26",
                "mx2 2001:db8:0:4::2",
                "mx2 192.0.2.34"
            ]
        );
        assert_eq!(
            listed(&candidates(&resolved(), Family::Ipv4, Bugs::NONE)),
            [
                "mx1 192.0.2.26",
                "mx1 2001:db8:0:3::2",
                "mx1 fd00:db8::25",
                "mx2 192.0.2.34",
                "mx2 2001:db8:0:4::2"
            ]
        );
    }

    #[test]
    fn address_bugs() {
        assert_eq!(
            listed(&candidates(
                &resolved(),
                Family::Ipv6,
                Bugs::only(Bug::FirstAddressOnly)
            )),
            ["mx1 2001:db8:0:3::2"]
        );
        assert_eq!(
            listed(&candidates(
                &resolved(),
                Family::Ipv6,
                Bugs::only(Bug::SameFamilyRetry)
            )),
            [
                "mx1 2001:db8:0:3::2",
                "mx1 fd00:db8::25",
                "mx2 2001:db8:0:4::2"
            ]
        );
        // An IPv4-only first host pins IPv4.
        let mut v4_first = resolved();
        v4_first[0].1.retain(|a| a.is_ipv4());
        assert_eq!(
            listed(&candidates(
                &v4_first,
                Family::Ipv6,
                Bugs::only(Bug::SameFamilyRetry)
            )),
            ["mx1 192.0.2.26", "mx2 192.0.2.34"]
        );
    }
}
