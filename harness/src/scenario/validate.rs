//! Checks that need the whole scenario: names that must refer to something, families a host
//! has, addresses in the right domains.

use std::collections::BTreeSet;

use toml::Spanned;

use super::{NetFault, Scenario, Window};
use crate::family::Family;

/// Host names the topology uses itself.
pub const RESERVED_HOSTS: [&str; 4] = ["sut", "dns", "bounces", "router"];

/// The domain of the system under test and of every sender.
pub const SENDER_DOMAIN: &str = "sender.test";

/// The largest number of `[[mx]]` hosts the address plan has room for.
pub const MAX_MX_HOSTS: usize = 28;

/// A problem and the byte offset in the file it refers to.
#[derive(Debug)]
pub struct Problem {
    /// Byte offset into the scenario text.
    pub offset: usize,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn problem<T>(at: &Spanned<T>, message: String) -> Problem {
    Problem {
        offset: at.span().start,
        message,
    }
}

/// Validates everything serde cannot: cross references and value ranges.
pub fn validate(scenario: &Scenario) -> Result<(), Problem> {
    if scenario.mxs.is_empty() {
        return Err(Problem {
            offset: 0,
            message: "no [[mx]] host: add at least one with name and domain".into(),
        });
    }
    if scenario.messages.is_empty() {
        return Err(Problem {
            offset: 0,
            message: "no [[message]]: add at least one with `to = [\"bob@example.test\"]`".into(),
        });
    }
    if scenario.mxs.len() > MAX_MX_HOSTS {
        return Err(problem(
            &scenario.mxs[MAX_MX_HOSTS].name,
            format!(
                "too many [[mx]] hosts: at most {} fit the address plan",
                MAX_MX_HOSTS
            ),
        ));
    }
    validate_mxs(scenario)?;
    validate_faults(scenario)?;
    validate_messages(scenario)?;
    validate_expect(scenario)
}

fn validate_mxs(scenario: &Scenario) -> Result<(), Problem> {
    let mut seen = BTreeSet::new();
    for mx in &scenario.mxs {
        let name = mx.name.get_ref();
        let valid = !name.is_empty()
            && name.len() <= 8
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(problem(
                &mx.name,
                format!("invalid host name {name:?}: use 1-8 lowercase letters, digits or '-', starting with a letter"),
            ));
        }
        if RESERVED_HOSTS.contains(&name.as_str()) {
            return Err(problem(
                &mx.name,
                format!(
                    "host name {name:?} is reserved; not allowed: {}",
                    RESERVED_HOSTS.join(", ")
                ),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(problem(
                &mx.name,
                format!("two [[mx]] hosts are named {name:?}"),
            ));
        }
        let domain = mx.domain.get_ref();
        if !is_test_domain(domain) || domain == SENDER_DOMAIN {
            return Err(problem(
                &mx.domain,
                format!("invalid domain {domain:?}: use a name under .test other than {SENDER_DOMAIN}, e.g. \"example.test\""),
            ));
        }
        if mx.families.get_ref().is_empty() {
            return Err(problem(
                &mx.families,
                "a host needs at least one family: \"ipv4\", \"ipv6\"".into(),
            ));
        }
    }
    Ok(())
}

fn validate_faults(scenario: &Scenario) -> Result<(), Problem> {
    for fault in &scenario.faults {
        let kind = match (&fault.smtp, &fault.net) {
            (Some(_), None) | (None, Some(_)) => (),
            _ => {
                return Err(problem(
                    &fault.on,
                    "a [[fault]] needs exactly one of `smtp = {...}` or `net = ...`".into(),
                ))
            }
        };
        let no_route = fault.net.as_ref().is_some_and(|net| *net.get_ref() == NetFault::NoRoute);
        let host_families = if no_route {
            if fault.on.get_ref() != "sut" {
                return Err(problem(
                    &fault.on,
                    format!("net = \"no-route\" removes the SUT's route: write on = \"sut\", not {:?}", fault.on.get_ref()),
                ));
            }
            vec![Family::Ipv4, Family::Ipv6]
        } else {
            let Some(mx) = scenario.mxs.iter().find(|mx| mx.name.get_ref() == fault.on.get_ref())
            else {
                return Err(problem(
                    &fault.on,
                    format!("fault on unknown host {:?}; hosts: {}", fault.on.get_ref(), mx_names(scenario)),
                ));
            };
            mx.families.get_ref().clone()
        };
        if let Some(family) = &fault.family {
            if !host_families.contains(family.get_ref()) {
                return Err(problem(
                    family,
                    format!("host {:?} has no {} address; its families: {}", fault.on.get_ref(), family.get_ref(), families(&host_families)),
                ));
            }
        }
        if let Some(smtp) = &fault.smtp {
            if let Some(span) = fault.window.as_ref().map(|w| w.span()).or(fault.first.as_ref().map(|f| f.span())) {
                return Err(Problem {
                    offset: span.start,
                    message: "`window` and `first` apply to net faults; an smtp fault is always active".into(),
                });
            }
            let reply = &smtp.get_ref().reply;
            if !is_smtp_reply(reply.get_ref()) {
                return Err(problem(
                    reply,
                    format!("invalid SMTP reply {:?}: start with a code from 200 to 599, e.g. \"421 4.3.2 Service not available\"", reply.get_ref()),
                ));
            }
        }
        if let Some(window) = &fault.window {
            let Window { from, until } = *window.get_ref();
            if until.is_some_and(|until| until <= from) {
                return Err(problem(
                    window,
                    format!("the window ends ({}) before it starts ({from}): `until` must be later than `from`", until.map_or(String::new(), |u| u.to_string())),
                ));
            }
        }
        if let Some(first) = &fault.first {
            if *first.get_ref() == 0 {
                return Err(problem(first, "first = 0 would never apply the fault: give 1 or more, or leave it out".into()));
            }
        }
        kind
    }
    Ok(())
}

fn validate_messages(scenario: &Scenario) -> Result<(), Problem> {
    for message in &scenario.messages {
        let from = message.from.get_ref();
        if domain_of(from) != Some(SENDER_DOMAIN) {
            return Err(problem(
                &message.from,
                format!("sender {from:?} must be an address in {SENDER_DOMAIN}, e.g. \"alice@{SENDER_DOMAIN}\""),
            ));
        }
        if message.to.is_empty() {
            return Err(problem(
                &message.from,
                "a [[message]] needs at least one recipient in `to`".into(),
            ));
        }
        for rcpt in &message.to {
            let served = domain_of(rcpt.get_ref())
                .is_some_and(|domain| scenario.mxs.iter().any(|mx| mx.domain.get_ref() == domain));
            if !served {
                let domains: BTreeSet<&str> = scenario
                    .mxs
                    .iter()
                    .map(|mx| mx.domain.get_ref().as_str())
                    .collect();
                return Err(problem(
                    rcpt,
                    format!(
                        "recipient {:?} is not in a domain an [[mx]] serves; domains: {}",
                        rcpt.get_ref(),
                        domains.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_expect(scenario: &Scenario) -> Result<(), Problem> {
    if let Some(mx) = &scenario.expect.mx {
        if !scenario
            .mxs
            .iter()
            .any(|m| m.name.get_ref() == mx.get_ref())
        {
            return Err(problem(
                mx,
                format!(
                    "expect.mx names unknown host {:?}; hosts: {}",
                    mx.get_ref(),
                    mx_names(scenario)
                ),
            ));
        }
    }
    if scenario.expect.within.0.is_zero() {
        return Err(Problem {
            offset: 0,
            message: "expect.within must be longer than 0s".into(),
        });
    }
    Ok(())
}

fn mx_names(scenario: &Scenario) -> String {
    scenario
        .mxs
        .iter()
        .map(|mx| mx.name.get_ref().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn families(list: &[Family]) -> String {
    list.iter()
        .map(Family::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .filter(|(local, _)| !local.is_empty())
        .map(|(_, domain)| domain)
}

fn is_test_domain(domain: &str) -> bool {
    domain.ends_with(".test")
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_smtp_reply(reply: &str) -> bool {
    let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
    let separated = matches!(reply.as_bytes().get(3), None | Some(b' '));
    code.is_some_and(|c| (200..600).contains(&c)) && separated
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::scenario::parse;

    const BASE: &str = r#"
description = "d"

[[mx]]
name = "mx1"
domain = "example.test"
families = ["ipv4"]

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#;

    fn error_with(extra: &str) -> String {
        parse(Path::new("s.toml"), &format!("{BASE}\n{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_fault_on_an_unknown_host_lists_the_hosts() {
        let message = error_with(
            "[[fault]]\non = \"mx9\"\nsmtp = { stage = \"greeting\", reply = \"421 x\" }",
        );
        assert_eq!(
            message,
            "s.toml:16:6: fault on unknown host \"mx9\"; hosts: mx1"
        );
    }

    #[test]
    fn a_fault_on_a_family_the_host_lacks_is_refused() {
        let message = error_with(
            "[[fault]]\non = \"mx1\"\nfamily = \"ipv6\"\nsmtp = { stage = \"greeting\", reply = \"421 x\" }",
        );
        assert!(
            message.contains("host \"mx1\" has no ipv6 address"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_stage_lists_the_allowed_stages() {
        let message =
            error_with("[[fault]]\non = \"mx1\"\nsmtp = { stage = \"helo\", reply = \"421 x\" }");
        assert!(message.contains("greeting"), "{message}");
    }

    #[test]
    fn an_unknown_net_fault_lists_the_allowed_ones() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"blackhol\"");
        assert!(message.starts_with("s.toml:17:7: unknown network fault \"blackhol\"; allowed: \"blackhole\""), "{message}");
        assert!(message.contains("{ loss = PERCENT }"), "{message}");
    }

    #[test]
    fn loss_must_be_a_percentage() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = { loss = 120 }");
        assert!(message.contains("loss = 120 is out of range"), "{message}");
    }

    #[test]
    fn a_fault_needs_exactly_one_kind() {
        let message = error_with("[[fault]]\non = \"mx1\"");
        assert!(message.contains("exactly one of"), "{message}");
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"reset\"\nsmtp = { stage = \"greeting\", reply = \"421 x\" }");
        assert!(message.contains("exactly one of"), "{message}");
    }

    #[test]
    fn no_route_belongs_to_the_sut() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"no-route\"");
        assert!(message.contains("write on = \"sut\""), "{message}");
        let text = format!("{BASE}\n[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nnet = \"no-route\"");
        assert!(parse(Path::new("s.toml"), &text).is_ok());
    }

    #[test]
    fn a_window_that_ends_before_it_starts_is_refused() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"reset\"\nwindow = { from = \"10s\", until = \"5s\" }");
        assert!(message.starts_with("s.toml:18:10: the window ends (5s) before it starts (10s)"), "{message}");
    }

    #[test]
    fn first_zero_is_refused() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"reset\"\nfirst = 0");
        assert!(message.contains("first = 0 would never apply"), "{message}");
    }

    #[test]
    fn a_reply_without_a_code_is_refused() {
        let message = error_with(
            "[[fault]]\non = \"mx1\"\nsmtp = { stage = \"greeting\", reply = \"go away\" }",
        );
        assert!(message.contains("invalid SMTP reply"), "{message}");
    }

    #[test]
    fn a_recipient_outside_every_mx_domain_is_refused() {
        let text = BASE.replace("bob@example.test", "bob@elsewhere.test");
        let message = parse(Path::new("s.toml"), &text).unwrap_err().to_string();
        assert!(
            message.contains("not in a domain an [[mx]] serves; domains: example.test"),
            "{message}"
        );
    }

    #[test]
    fn reserved_and_malformed_host_names_are_refused() {
        for (name, expected) in [
            ("sut", "reserved"),
            ("MX1", "invalid host name"),
            ("mx-very-long", "invalid host name"),
        ] {
            let message = parse(
                Path::new("s.toml"),
                &BASE.replace("\"mx1\"", &format!("{name:?}")),
            )
            .unwrap_err()
            .to_string();
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn expect_mx_must_name_a_host() {
        let text = BASE.replace(
            "outcome = \"delivered\"",
            "outcome = \"delivered\"\nmx = \"mx2\"",
        );
        let message = parse(Path::new("s.toml"), &text).unwrap_err().to_string();
        assert!(
            message.contains("expect.mx names unknown host \"mx2\""),
            "{message}"
        );
    }
}
