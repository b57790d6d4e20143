//! The nftables table of a fault in the router: its script (pure text generation, one table
//! per fault) and applying it.

use std::fmt::Write;
use std::net::IpAddr;

use netns::{Firewall, Topology};

use super::{system, FaultError, InstalledFault};
use crate::plan::NetFaultPlan;
use crate::scenario::NetFault;

/// The SMTP port: `syn-drop`, `reset` and `first` are about connections to it.
pub(crate) const SMTP_PORT: u16 = 25;

/// Name of the nft table (family `inet`) of fault number `index`.
pub(crate) fn table_name(index: usize) -> String {
    format!("mxlab_fault_{index}")
}

/// The script that creates the fault's table, or `None` when the fault needs no nftables
/// (no-route, shape). `first` must already have been checked to be supported by the kind.
pub(crate) fn script(fault: &NetFaultPlan, index: usize) -> Option<String> {
    let ip = match fault.target {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    let (target, sut) = (fault.target, fault.sut);
    let port = SMTP_PORT;

    // What "a packet of the faulted traffic" means: every packet to (or from) the target, or,
    // with `first = N`, the packets of the first N TCP connections from the SUT to port 25 of
    // the target, recorded by (SUT address . SUT port) in a dynamic set of size N. Once the set
    // is full, `add @first` fails and ends that rule; a retransmitted SYN of a recorded
    // connection finds its key already there.
    let mut forward: Vec<String> = Vec::new();
    let mut set = None;
    let (to_target, from_target) = match fault.activation.first {
        None => (
            format!("{ip} daddr {target}"),
            format!("{ip} saddr {target}"),
        ),
        Some(n) => {
            let key_type = if ip == "ip" { "ipv4_addr" } else { "ipv6_addr" };
            set = Some(format!(
                "  set first {{ type {key_type} . inet_service; size {n}; flags dynamic; }}\n"
            ));
            forward.push(format!(
                "{ip} saddr {sut} {ip} daddr {target} tcp dport {port} tcp flags & (syn | ack) == syn \
                 add @first {{ {ip} saddr . tcp sport }}"
            ));
            (
                format!("{ip} daddr {target} tcp dport {port} {ip} saddr . tcp sport @first"),
                format!("{ip} saddr {target} tcp sport {port} {ip} daddr . tcp dport @first"),
            )
        }
    };
    let mut output: Vec<String> = Vec::new();
    match fault.kind {
        NetFault::NoRoute | NetFault::Shape(_) => return None,
        NetFault::Blackhole => forward.push(format!("{to_target} drop")),
        NetFault::SynDrop => forward.push(format!(
            "{to_target} tcp dport {port} tcp flags & (syn | ack) == syn drop"
        )),
        NetFault::Reset => forward.push(format!(
            "{to_target} tcp dport {port} reject with tcp reset"
        )),
        NetFault::Unreachable => forward.push(if ip == "ip" {
            format!("{to_target} reject with icmp type host-unreachable")
        } else {
            format!("{to_target} reject with icmpv6 type addr-unreachable")
        }),
        NetFault::Prohibit => forward.push(if ip == "ip" {
            format!("{to_target} reject with icmp type admin-prohibited")
        } else {
            format!("{to_target} reject with icmpv6 type admin-prohibited")
        }),
        NetFault::Loss { percent } => {
            // numgen's range is 0-99: "< 100" is rejected, and 100 % needs no dice.
            let dice = if percent >= 100 {
                String::new()
            } else {
                format!(" numgen random mod 100 < {percent}")
            };
            forward.push(format!("{to_target}{dice} drop"));
            forward.push(format!("{from_target}{dice} drop"));
        }
        NetFault::PmtuBlackhole => {
            // The router generates Packet Too Big / Fragmentation Needed itself: filter them
            // where locally generated packets leave.
            output.push(if ip == "ip" {
                format!(
                    "ip daddr {{ {sut}, {target} }} icmp type destination-unreachable \
                     icmp code frag-needed drop"
                )
            } else {
                format!("ip6 daddr {{ {sut}, {target} }} icmpv6 type packet-too-big drop")
            });
        }
    }

    let table = table_name(index);
    // `create` fails if the table exists: an index used twice cannot merge two faults.
    let mut text = format!(
        "# {}\ncreate table inet {table}\ntable inet {table} {{\n",
        fault.description
    );
    if let Some(set) = set {
        text.push_str(&set);
    }
    for (chain, hook, rules) in [
        ("forward_fault", "forward", &forward),
        ("output_fault", "output", &output),
    ] {
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(
            text,
            "  chain {chain} {{\n    type filter hook {hook} priority filter; policy accept;"
        );
        for rule in rules {
            let _ = writeln!(text, "    {rule}");
        }
        text.push_str("  }\n");
    }
    text.push_str("}\n");
    Some(text)
}

/// Applies the fault's table in the router's namespace as one transaction (nothing for
/// kinds without a table), recording it in `installed`.
pub(super) fn install(
    topology: &Topology,
    fault: &NetFaultPlan,
    index: usize,
    installed: &mut InstalledFault,
) -> Result<(), FaultError> {
    let Some(script) = script(fault, index) else {
        return Ok(());
    };
    let firewall =
        Firewall::new(topology.router()).map_err(system(fault, "reach the router's namespace"))?;
    let table = table_name(index);
    tracing::trace!(fault = %fault.description, %script, "nft script");
    firewall
        .apply(&format!("add table inet {table}"), &script)
        .map_err(system(fault, &format!("add nft table inet {table}")))?;
    installed.table = Some((firewall, table));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::family::Family;

    fn fault(kind: NetFault, v6: bool, first: Option<u32>) -> NetFaultPlan {
        let (target, sut): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8:0:3::2".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
        } else {
            ("192.0.2.26".parse().unwrap(), "192.0.2.2".parse().unwrap())
        };
        NetFaultPlan {
            description: format!("{kind} on mx1"),
            kind,
            host: "mx1".into(),
            sut_host: "sut".into(),
            family: Family::of(target),
            target,
            sut,
            activation: Activation {
                first,
                ..Activation::ALWAYS
            },
        }
    }

    #[test]
    fn blackhole_drops_everything_to_the_target() {
        let text = script(&fault(NetFault::Blackhole, false, None), 3).unwrap();
        assert!(text.contains("table inet mxlab_fault_3 {"), "{text}");
        assert!(text.contains("    ip daddr 192.0.2.26 drop\n"), "{text}");
        assert!(!text.contains("output"), "{text}");
    }

    #[test]
    fn first_records_syns_from_the_sut_in_a_bounded_set() {
        let text = script(&fault(NetFault::SynDrop, true, Some(2)), 0).unwrap();
        assert!(
            text.contains("set first { type ipv6_addr . inet_service; size 2; flags dynamic; }"),
            "{text}"
        );
        assert!(text.contains("ip6 saddr 2001:db8::2 ip6 daddr 2001:db8:0:3::2 tcp dport 25 tcp flags & (syn | ack) == syn add @first { ip6 saddr . tcp sport }"), "{text}");
        assert!(text.contains("ip6 daddr 2001:db8:0:3::2 tcp dport 25 ip6 saddr . tcp sport @first tcp dport 25 tcp flags & (syn | ack) == syn drop"), "{text}");
    }

    #[test]
    fn loss_covers_both_directions_and_pmtu_filters_locally_generated_errors() {
        let text = script(&fault(NetFault::Loss { percent: 30 }, true, None), 1).unwrap();
        assert!(text.contains("ip6 daddr 2001:db8:0:3::2 numgen random mod 100 < 30 drop"));
        assert!(text.contains("ip6 saddr 2001:db8:0:3::2 numgen random mod 100 < 30 drop"));
        let text = script(&fault(NetFault::Loss { percent: 100 }, false, None), 1).unwrap();
        assert!(text.contains("    ip saddr 192.0.2.26 drop\n"), "{text}");
        let text = script(&fault(NetFault::PmtuBlackhole, false, None), 1).unwrap();
        assert!(
            text.contains("type filter hook output priority filter"),
            "{text}"
        );
        assert!(text.contains("ip daddr { 192.0.2.2, 192.0.2.26 } icmp type destination-unreachable icmp code frag-needed drop"), "{text}");
        assert!(script(&fault(NetFault::NoRoute, false, None), 1).is_none());
    }
}
