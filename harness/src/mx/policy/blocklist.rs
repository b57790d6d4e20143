//! A DNS blocklist checked at connect: a client inside a listed network gets `554 5.7.1`
//! instead of the greeting.

use std::net::IpAddr;

use ipnet::IpNet;

/// Checks `client` against `listed`. Returns the note for the event log and, if the client is
/// listed, the reply.
pub(super) fn check(listed: &[IpNet], list: &str, client: IpAddr) -> (String, Option<String>) {
    match listed.iter().find(|net| net.contains(&client)) {
        Some(net) => (
            format!("blocklist {client}: listed in {list} as {net}, 554"),
            Some(format!(
                "554 5.7.1 Service unavailable; Client host [{client}] blocked using {list}; \
                 {net} is listed (mxlab)"
            )),
        ),
        None => (format!("blocklist {client}: not listed in {list}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<IpNet> {
        vec!["2001:db8:0:1::/64".parse().unwrap()]
    }

    #[test]
    fn any_address_of_a_listed_64_is_refused() {
        for client in ["2001:db8:0:1::2", "2001:db8:0:1:ffff::9"] {
            let (note, reply) = check(&listed(), "bl.test", client.parse().unwrap());
            let reply = reply.expect("listed");
            assert!(reply.starts_with("554 5.7.1 "), "{reply}");
            assert!(reply.contains("2001:db8:0:1::/64"), "{reply}");
            assert!(note.contains("listed in bl.test"), "{note}");
        }
    }

    #[test]
    fn neighbours_and_the_other_family_pass() {
        for client in ["2001:db8:0:2::2", "192.0.2.2"] {
            let (note, reply) = check(&listed(), "bl.test", client.parse().unwrap());
            assert_eq!(reply, None, "{client}");
            assert!(note.ends_with("not listed in bl.test"), "{note}");
        }
    }
}
