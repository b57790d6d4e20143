//! Checks that need the whole scenario: names that must refer to something, families a host
//! has, addresses in the right domains.

use std::collections::BTreeSet;

use toml::Spanned;

use super::{
    DnsFaultSpec, Fault, MutantSut, NetFault, PolicySpec, Scenario, SmtpAction, SmtpFault,
    SmtpStage, Window,
};
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
    validate_route(scenario)?;
    validate_faults(scenario)?;
    validate_messages(scenario)?;
    validate_expect(scenario)?;
    validate_mutants(scenario)
}

/// Whether `name` is 1 to `max` lowercase letters, digits or '-', starting with a letter: the
/// form of host and mutant names, which end up in DNS names and test names.
fn is_short_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn validate_mutants(scenario: &Scenario) -> Result<(), Problem> {
    let mut seen = BTreeSet::new();
    for mutant in &scenario.mutants {
        let name = mutant.name.get_ref();
        if !is_short_name(name, 32) {
            return Err(problem(
                &mutant.name,
                format!("invalid mutant name {name:?}: use 1-32 lowercase letters, digits or '-', starting with a letter"),
            ));
        }
        let sut = *mutant.sut.get_ref();
        if !seen.insert((sut.name(), name.clone())) {
            return Err(problem(
                &mutant.name,
                format!("two [[mutant]] entries for {sut} are named {name:?}"),
            ));
        }
        let settings = mutant.settings.get_ref();
        match sut {
            MutantSut::Reference(bug) if !settings.is_empty() => {
                return Err(problem(
                    &mutant.settings,
                    format!("a {sut} mutant plants bug {bug} and takes no settings: remove `settings`"),
                ))
            }
            MutantSut::Reference(_) => {}
            _ if settings.is_empty() => {
                return Err(problem(
                    &mutant.sut,
                    format!("a {sut} mutant needs `settings = {{ … }}`: the raw {sut} settings that break it"),
                ))
            }
            _ => {}
        }
        if mutant.reason.get_ref().trim().is_empty() {
            return Err(problem(
                &mutant.reason,
                "a mutant needs a reason: the field bug its configuration produces".into(),
            ));
        }
    }
    Ok(())
}

fn validate_mxs(scenario: &Scenario) -> Result<(), Problem> {
    let mut seen = BTreeSet::new();
    for mx in &scenario.mxs {
        let name = mx.name.get_ref();
        if !is_short_name(name, 8) {
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
        for extra in &mx.extra_addresses {
            if !mx
                .families
                .get_ref()
                .contains(&Family::of(*extra.get_ref()))
            {
                return Err(problem(
                    extra,
                    format!("host {name:?} has no {} family for the extra address {}; add it to `families`", Family::of(*extra.get_ref()), extra.get_ref()),
                ));
            }
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

fn validate_route(scenario: &Scenario) -> Result<(), Problem> {
    let route = &scenario.route;
    if let Some(relay) = &route.relay {
        if !scenario
            .mxs
            .iter()
            .any(|mx| mx.name.get_ref() == relay.get_ref())
        {
            return Err(problem(
                relay,
                format!(
                    "route.relay names unknown host {:?}: declare it as an [[mx]]; hosts: {}",
                    relay.get_ref(),
                    mx_names(scenario)
                ),
            ));
        }
    }
    for list in [&route.families, &route.bind].into_iter().flatten() {
        if list.get_ref().is_empty() {
            return Err(problem(
                list,
                "an empty family list: give \"ipv4\", \"ipv6\" or both, or leave the key out"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Which kind of fault a `[[fault]]` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smtp,
    Net(NetFault),
    Dns,
    Ptr,
    Policy,
}

fn kind_of(fault: &Fault) -> Result<Kind, Problem> {
    let kinds: Vec<Kind> = [
        fault.smtp.as_ref().map(|_| Kind::Smtp),
        fault.net.as_ref().map(|net| Kind::Net(*net.get_ref())),
        fault.dns.as_ref().map(|_| Kind::Dns),
        fault.ptr.as_ref().map(|_| Kind::Ptr),
        fault.policy.as_ref().map(|_| Kind::Policy),
    ]
    .into_iter()
    .flatten()
    .collect();
    match kinds.as_slice() {
        [kind] => Ok(*kind),
        _ => Err(problem(
            &fault.on,
            "a [[fault]] needs exactly one of `smtp = {...}`, `net = ...`, `dns = {...}`, `ptr = ...` or `policy = ...`".into(),
        )),
    }
}

fn validate_faults(scenario: &Scenario) -> Result<(), Problem> {
    for fault in &scenario.faults {
        let kind = kind_of(fault)?;
        let host_families = fault_host(scenario, fault, kind)?;
        if let Some(family) = &fault.family {
            if kind == Kind::Dns {
                return Err(problem(
                    family,
                    "`family` does not apply to dns faults: name the record type instead, e.g. type = \"AAAA\"".into(),
                ));
            }
            if !host_families.contains(family.get_ref()) {
                return Err(problem(
                    family,
                    format!(
                        "host {:?} has no {} address; its families: {}",
                        fault.on.get_ref(),
                        family.get_ref(),
                        families(&host_families)
                    ),
                ));
            }
        }
        if let Some(smtp) = &fault.smtp {
            validate_smtp_fault(smtp)?;
        }
        if let Some(dns) = &fault.dns {
            validate_dns_fault(scenario, dns.get_ref())?;
        }
        if let Some(policy) = &fault.policy {
            match policy.get_ref() {
                PolicySpec::Rate { limit: 0, .. } => {
                    return Err(problem(
                        policy,
                        "rate limit = 0 refuses every connection: give 1 or more".into(),
                    ))
                }
                PolicySpec::Blocklist { ipv6_prefix } if !(1..=128).contains(ipv6_prefix) => {
                    return Err(problem(
                        policy,
                        format!("blocklist ipv6-prefix = {ipv6_prefix} is not a prefix length: give 1 to 128, e.g. 64"),
                    ))
                }
                _ => {}
            }
        }
        if matches!(kind, Kind::Ptr | Kind::Policy) {
            let timed = fault
                .window
                .as_ref()
                .map(|w| w.span())
                .or(fault.first.as_ref().map(|f| f.span()));
            if let Some(span) = timed {
                return Err(Problem {
                    offset: span.start,
                    message: "`window` and `first` apply to net, dns and smtp faults; ptr and policy faults are always active".into(),
                });
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
                return Err(problem(
                    first,
                    "first = 0 would never apply the fault: give 1 or more, or leave it out".into(),
                ));
            }
            if matches!(
                kind,
                Kind::Net(NetFault::NoRoute | NetFault::PmtuBlackhole | NetFault::Shape(_))
            ) {
                return Err(problem(first, "`first` does not apply to no-route, pmtu-blackhole and shapes: they are not per connection; use `window`".into()));
            }
        }
    }
    Ok(())
}

fn validate_smtp_fault(smtp: &Spanned<SmtpFault>) -> Result<(), Problem> {
    let fault = smtp.get_ref();
    let scripted = fault.reply.is_some() || fault.action.is_some();
    let shaped = !fault.disable.is_empty() || fault.ehlo_size.is_some() || fault.starttls.is_some();
    if fault.reply.is_some() && fault.action.is_some() {
        return Err(problem(
            smtp,
            "give either `reply` or `action` for a stage, not both".into(),
        ));
    }
    if scripted != fault.stage.is_some() {
        return Err(problem(
            smtp,
            "`stage` goes with `reply` or `action`, e.g. { stage = \"rcpt\", reply = \"450 4.2.0 try later\" }".into(),
        ));
    }
    if !scripted && !shaped {
        return Err(problem(
            smtp,
            "an smtp fault needs `stage` with `reply` or `action`, or `disable`, `ehlo_size` or `starttls`".into(),
        ));
    }
    if fault.recipient.is_some() && fault.stage != Some(SmtpStage::Rcpt) {
        return Err(problem(
            smtp,
            "`recipient` applies to stage = \"rcpt\" only".into(),
        ));
    }
    if fault.after.is_some() != (fault.stage == Some(SmtpStage::Content)) {
        return Err(problem(
            smtp,
            "stage = \"content\" goes with `after = BYTES` (the content bytes before the action), e.g. { stage = \"content\", after = 2000, action = \"reset\" }".into(),
        ));
    }
    if fault.stage == Some(SmtpStage::Content)
        && !matches!(
            fault.action,
            Some(SmtpAction::Reset | SmtpAction::Disconnect | SmtpAction::Stall)
        )
    {
        return Err(problem(
            smtp,
            "in the middle of the content the server can only act: action = \"reset\", \"disconnect\" or \"stall\"".into(),
        ));
    }
    if fault.action.is_some_and(SmtpAction::accepts_first)
        && fault.stage != Some(SmtpStage::EndOfData)
    {
        return Err(problem(
            smtp,
            "accept-then-reset, accept-then-disconnect and accept-then-stall apply to stage = \"end-of-data\" only".into(),
        ));
    }
    if let Some(reply) = &fault.reply {
        if !is_smtp_reply(reply.get_ref()) {
            return Err(problem(
                reply,
                format!("invalid SMTP reply {:?}: start with a code from 200 to 599, e.g. \"421 4.3.2 Service not available\"", reply.get_ref()),
            ));
        }
    }
    Ok(())
}

/// Checks the fault's `on` and returns the families that host has.
fn fault_host(scenario: &Scenario, fault: &Fault, kind: Kind) -> Result<Vec<Family>, Problem> {
    let on = fault.on.get_ref();
    let both = vec![Family::Ipv4, Family::Ipv6];
    if on.is_empty() {
        let named = fault
            .dns
            .as_ref()
            .is_some_and(|dns| dns.get_ref().name.is_some());
        return if kind == Kind::Dns && named {
            Ok(both)
        } else {
            Err(problem(
                &fault.on,
                format!(
                    "this fault needs `on = HOST`; hosts: sut, {}",
                    mx_names(scenario)
                ),
            ))
        };
    }
    if on == "sut" {
        return match kind {
            Kind::Net(NetFault::NoRoute) | Kind::Ptr | Kind::Dns => Ok(both),
            _ => Err(problem(
                &fault.on,
                format!(
                    "this fault cannot be on the SUT; hosts: {}",
                    mx_names(scenario)
                ),
            )),
        };
    }
    if kind == Kind::Net(NetFault::NoRoute) {
        return Err(problem(
            &fault.on,
            format!("net = \"no-route\" removes the SUT's route: write on = \"sut\", not {on:?}"),
        ));
    }
    scenario
        .mxs
        .iter()
        .find(|mx| mx.name.get_ref() == on)
        .map(|mx| mx.families.get_ref().clone())
        .ok_or_else(|| {
            problem(
                &fault.on,
                format!(
                    "fault on unknown host {on:?}; hosts: sut, {}",
                    mx_names(scenario)
                ),
            )
        })
}

fn validate_dns_fault(scenario: &Scenario, dns: &DnsFaultSpec) -> Result<(), Problem> {
    if let Some(name) = &dns.name {
        let lower = name.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let zones = zone_origins(scenario);
        let inside = zones
            .iter()
            .any(|zone| lower == *zone || lower.ends_with(&format!(".{zone}")));
        if !inside {
            return Err(problem(
                name,
                format!(
                    "{:?} is in no zone the scenario DNS serves; zones: {}",
                    name.get_ref(),
                    zones.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The zones the scenario DNS serves.
pub fn zone_origins(scenario: &Scenario) -> Vec<String> {
    let mut zones: BTreeSet<String> = scenario
        .mxs
        .iter()
        .map(|mx| mx.domain.get_ref().clone())
        .collect();
    zones.insert(SENDER_DOMAIN.to_string());
    zones
        .into_iter()
        .chain(["in-addr.arpa".to_string(), "ip6.arpa".to_string()])
        .collect()
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
    for (sut, xfail) in &scenario.expect.xfail {
        if let Some(unset) = xfail
            .get_ref()
            .expects
            .iter()
            .find(|key| !key.is_set_in(&scenario.expect))
        {
            return Err(problem(
                xfail,
                format!(
                    "xfail.{sut} excuses `{unset}`, which [expect] does not state: \
                     name only expectations this scenario makes"
                ),
            ));
        }
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

/// A reply line `CODE text`, or several lines `CODE-text` … `CODE text` joined with `\n`.
fn is_smtp_reply(reply: &str) -> bool {
    let lines: Vec<&str> = reply.split('\n').collect();
    let code = lines[0].get(..3);
    lines.iter().enumerate().all(|(i, line)| {
        let last = i + 1 == lines.len();
        let separator = line.as_bytes().get(3);
        let separated = if last {
            matches!(separator, None | Some(b' '))
        } else {
            separator == Some(&b'-')
        };
        let valid_code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..600).contains(&c));
        valid_code && line.get(..3) == code && separated
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::is_smtp_reply;
    use crate::scenario::{parse, MutantSut};

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
    fn mutants_parse_into_typed_values() {
        let scenario = parse(
            Path::new("s.toml"),
            &format!(
                "{BASE}\n[[mutant]]\nname = \"no-balance\"\nsut = \"postfix\"\n\
                 settings = {{ smtp_balance_inet_protocols = \"no\" }}\nreason = \"field bug 3\"\n\
                 [[mutant]]\nname = \"v6-only\"\nsut = \"reference:never-ipv4\"\nreason = \"r\"\n"
            ),
        )
        .expect("valid mutants");
        let [postfix, reference] = scenario.mutants.as_slice() else {
            panic!("two mutants: {:?}", scenario.mutants);
        };
        assert_eq!(*postfix.sut.get_ref(), MutantSut::Postfix);
        assert_eq!(postfix.change(), "smtp_balance_inet_protocols = \"no\"");
        let mutated = postfix.apply(&scenario);
        assert_eq!(mutated.sut["postfix"]["smtp_balance_inet_protocols"], "no");
        assert_eq!(
            *reference.sut.get_ref(),
            MutantSut::Reference(crate::bugs::Bug::NeverIpv4)
        );
        assert_eq!(reference.change(), "bug never-ipv4");
    }

    #[test]
    fn bad_mutants_are_refused_where_they_are() {
        let mutant = |body: &str| error_with(&format!("[[mutant]]\n{body}"));
        let message =
            mutant("name = \"m\"\nsut = \"sendmail\"\nsettings = { a = \"b\" }\nreason = \"r\"");
        assert!(
            message.starts_with("s.toml:17:7: unknown mutant sut \"sendmail\"")
                && message.contains("reference:BUG (BUG: never-ipv4,"),
            "{message}"
        );
        let message = mutant("name = \"m\"\nsut = \"reference:never-ipv5\"\nreason = \"r\"");
        assert!(
            message.contains("unknown mutant sut \"reference:never-ipv5\""),
            "{message}"
        );
        let message = mutant("name = \"m\"\nsut = \"postfix\"\nreason = \"r\"\ncolour = 1");
        assert!(message.contains("unknown field `colour`"), "{message}");
        let message = mutant("name = \"m\"\nsut = \"postfix\"\nreason = \"r\"");
        assert!(
            message.starts_with("s.toml:17:7: a postfix mutant needs `settings"),
            "{message}"
        );
        let message = mutant(
            "name = \"m\"\nsut = \"reference:never-ipv4\"\nsettings = { a = \"b\" }\nreason = \"r\"",
        );
        assert!(message.contains("takes no settings"), "{message}");
        let message = mutant(
            "name = \"No Balance\"\nsut = \"exim\"\nsettings = { a = \"b\" }\nreason = \"r\"",
        );
        assert!(
            message.starts_with("s.toml:16:8: invalid mutant name"),
            "{message}"
        );
        let message =
            mutant("name = \"m\"\nsut = \"exim\"\nsettings = { a = \"b\" }\nreason = \" \"");
        assert!(message.contains("a mutant needs a reason"), "{message}");
        let twice = "name = \"m\"\nsut = \"exim\"\nsettings = { a = \"b\" }\nreason = \"r\"\n";
        let message = mutant(&format!("{twice}[[mutant]]\n{twice}"));
        assert!(
            message.contains("two [[mutant]] entries for exim are named \"m\""),
            "{message}"
        );
    }

    #[test]
    fn an_xfail_names_the_expectations_it_excuses() {
        let message = error_with("[expect.xfail]\npostfix = \"old form\"");
        assert!(
            message.contains("an xfail names the expectations it excuses")
                && message.contains("expects = [\"outcome\"]"),
            "{message}"
        );
        let message = error_with("[expect.xfail]\npostfix = { expects = [], reason = \"r\" }");
        assert!(message.contains("`expects` is empty"), "{message}");
        let message =
            error_with("[expect.xfail]\npostfix = { expects = [\"via\"], reason = \"r\" }");
        assert!(
            message.contains("xfail.postfix excuses `via`, which [expect] does not state"),
            "{message}"
        );
        let message =
            error_with("[expect.xfail]\npostfix = { expects = [\"speed\"], reason = \"r\" }");
        assert!(message.contains("one of outcome, via, mx"), "{message}");
        parse(
            Path::new("s.toml"),
            &format!(
                "{BASE}\n[expect.xfail]\npostfix = {{ expects = [\"outcome\"], reason = \"r\" }}"
            ),
        )
        .expect("a scoped xfail on a stated expectation");
    }

    #[test]
    fn a_fault_on_an_unknown_host_lists_the_hosts() {
        let message = error_with(
            "[[fault]]\non = \"mx9\"\nsmtp = { stage = \"greeting\", reply = \"421 x\" }",
        );
        assert_eq!(
            message,
            "s.toml:16:6: fault on unknown host \"mx9\"; hosts: sut, mx1\n   |\n16 | on = \"mx9\"\n   |      ^^^^^"
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
            error_with("[[fault]]\non = \"mx1\"\nsmtp = { stage = \"hello\", reply = \"421 x\" }");
        assert!(message.contains("greeting"), "{message}");
    }

    #[test]
    fn an_unknown_net_fault_lists_the_allowed_ones() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"blackhol\"");
        assert!(
            message.starts_with(
                "s.toml:17:7: unknown network fault \"blackhol\"; allowed: \"blackhole\""
            ),
            "{message}"
        );
        assert!(message.contains("{ loss = PERCENT }"), "{message}");
    }

    #[test]
    fn loss_must_be_a_percentage() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = { loss = 120 }");
        assert!(message.contains("loss = 120 is out of range"), "{message}");
    }

    #[test]
    fn a_shape_parses_and_its_mistakes_name_line_and_column() {
        let text = format!(
            "{BASE}\n[[fault]]\non = \"mx1\"\nnet = {{ delay = \"200ms\", jitter = \"50ms\", rate = \"10kB/s\", seed = 7 }}"
        );
        let scenario = parse(Path::new("s.toml"), &text).unwrap();
        let Some(crate::scenario::NetFault::Shape(shape)) =
            scenario.faults[0].net.as_ref().map(|n| *n.get_ref())
        else {
            panic!("a shape")
        };
        assert_eq!(shape.delay, std::time::Duration::from_millis(200));
        assert_eq!(shape.rate.unwrap().bytes_per_second, 10_000);
        let message =
            error_with("[[fault]]\non = \"mx1\"\nnet = { delay = \"10ms\", jitter = \"20ms\" }");
        assert!(
            message.starts_with("s.toml:17:7: jitter 20ms is larger than the delay 10ms"),
            "{message}"
        );
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = { delay = \"1s\", lag = 3 }");
        assert!(message.contains("unknown network fault `lag`"), "{message}");
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = { delay = \"1s\" }\nfirst = 1");
        assert!(message.contains("`first` does not apply"), "{message}");
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = { loss = 5, delay = \"1s\" }");
        assert!(message.contains("`loss` stands alone"), "{message}");
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
        let text =
            format!("{BASE}\n[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nnet = \"no-route\"");
        assert!(parse(Path::new("s.toml"), &text).is_ok());
    }

    #[test]
    fn a_dns_fault_on_a_name_in_no_zone_lists_the_zones() {
        let message = error_with("[[fault]]\ndns = { name = \"mx1.other.test\", type = \"AAAA\", answer = \"servfail\" }");
        assert!(
            message.starts_with("s.toml:16:16: \"mx1.other.test\" is in no zone"),
            "{message}"
        );
        assert!(
            message.contains("zones: example.test, sender.test, in-addr.arpa, ip6.arpa"),
            "{message}"
        );
    }

    #[test]
    fn a_malformed_queried_entry_is_refused_where_it_is() {
        // The parser points at the list; the message quotes the entry.
        let message = error_with(r#"queried = ["example.test MX", "mx1.example.test AAA"]"#);
        assert!(
            message.starts_with("s.toml:15:11: expect.queried entries are \"NAME TYPE\""),
            "{message}"
        );
        assert!(
            message.contains("got \"mx1.example.test AAA\""),
            "{message}"
        );
    }

    #[test]
    fn a_dns_fault_needs_a_known_type_and_answer() {
        let message =
            error_with("[[fault]]\non = \"mx1\"\ndns = { type = \"AAA\", answer = \"servfail\" }");
        assert!(
            message.contains("unknown record type \"AAA\"; allowed: A, AAAA"),
            "{message}"
        );
        let message =
            error_with("[[fault]]\non = \"mx1\"\ndns = { type = \"AAAA\", answer = \"slow\" }");
        assert!(
            message.contains("servfail") && message.contains("delay"),
            "{message}"
        );
        let text = format!("{BASE}\n[[fault]]\non = \"mx1\"\ndns = {{ type = \"aaaa\", answer = {{ delay = \"3s\" }} }}\nfirst = 1");
        assert!(parse(Path::new("s.toml"), &text).is_ok());
    }

    #[test]
    fn a_dns_fault_without_name_or_host_is_refused() {
        let message = error_with("[[fault]]\ndns = { type = \"AAAA\", answer = \"servfail\" }");
        assert!(message.contains("needs `on = HOST`"), "{message}");
    }

    #[test]
    fn ptr_faults_are_static() {
        let message = error_with("[[fault]]\non = \"sut\"\nptr = \"missing\"\nfirst = 1");
        assert!(
            message.contains("ptr and policy faults are always active"),
            "{message}"
        );
        let text =
            format!("{BASE}\n[[fault]]\non = \"sut\"\nfamily = \"ipv6\"\nptr = \"mismatch\"");
        assert!(parse(Path::new("s.toml"), &text).is_ok());
    }

    #[test]
    fn first_does_not_apply_to_path_faults() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"pmtu-blackhole\"\nfirst = 1");
        assert!(message.contains("use `window`"), "{message}");
    }

    #[test]
    fn extra_addresses_need_their_family() {
        let text = BASE.replace(
            "families = [\"ipv4\"]",
            "families = [\"ipv4\"]\nextra_addresses = [\"fe80::25\"]",
        );
        let message = parse(Path::new("s.toml"), &text).unwrap_err().to_string();
        assert!(
            message.contains("no ipv6 family for the extra address fe80::25"),
            "{message}"
        );
    }

    #[test]
    fn a_window_that_ends_before_it_starts_is_refused() {
        let message = error_with(
            "[[fault]]\non = \"mx1\"\nnet = \"reset\"\nwindow = { from = \"10s\", until = \"5s\" }",
        );
        assert!(
            message.starts_with("s.toml:18:10: the window ends (5s) before it starts (10s)"),
            "{message}"
        );
    }

    #[test]
    fn first_zero_is_refused() {
        let message = error_with("[[fault]]\non = \"mx1\"\nnet = \"reset\"\nfirst = 0");
        assert!(message.contains("first = 0 would never apply"), "{message}");
    }

    #[test]
    fn smtp_faults_pair_stages_with_replies_or_actions() {
        for (fault, expected) in [
            (
                "{ stage = \"rcpt\" }",
                "`stage` goes with `reply` or `action`",
            ),
            (
                "{ reply = \"550 no\" }",
                "`stage` goes with `reply` or `action`",
            ),
            (
                "{ stage = \"rcpt\", reply = \"550 no\", action = \"stall\" }",
                "not both",
            ),
            (
                "{ stage = \"mail\", reply = \"550 no\", recipient = \"a@b.test\" }",
                "stage = \"rcpt\" only",
            ),
            ("{ }", "an smtp fault needs"),
            ("{ stage = \"rcpt\", action = \"wait\" }", "stall"),
            ("{ disable = [\"chunking\"] }", "pipelining"),
            ("{ starttls = \"self-signed\" }", "wrong-name"),
            (
                "{ stage = \"content\", action = \"reset\" }",
                "`after = BYTES`",
            ),
            (
                "{ stage = \"data\", action = \"reset\", after = 10 }",
                "`after = BYTES`",
            ),
            (
                "{ stage = \"content\", after = 10, reply = \"421 x\" }",
                "can only act",
            ),
            (
                "{ stage = \"rcpt\", action = \"accept-then-reset\" }",
                "\"end-of-data\" only",
            ),
        ] {
            let message = error_with(&format!("[[fault]]\non = \"mx1\"\nsmtp = {fault}"));
            assert!(message.contains(expected), "{fault}: {message}");
        }
        for fault in [
            "{ stage = \"end-of-data\", action = { slow = 20 } }",
            "{ stage = \"end-of-data\", action = \"accept-then-stall\" }",
            "{ stage = \"content\", after = 4000, action = \"reset\" }",
            "{ stage = \"mail\", action = \"reset\" }",
            "{ stage = \"rcpt\", recipient = \"bob@example.test\", reply = \"550 5.1.1 no\" }",
            "{ disable = [\"pipelining\", \"8bitmime\"], ehlo_size = 4000, starttls = \"oversized-chain\" }",
        ] {
            let text = format!("{BASE}\n[[fault]]\non = \"mx1\"\nsmtp = {fault}");
            assert!(parse(Path::new("s.toml"), &text).is_ok(), "{fault}");
        }
    }

    #[test]
    fn multi_line_replies_need_matching_codes_and_dashes() {
        assert!(is_smtp_reply("550-5.7.25 first\n550 5.7.25 last"));
        assert!(!is_smtp_reply("550 5.7.25 first\n550 5.7.25 last"));
        assert!(!is_smtp_reply("550-5.7.25 first\n451 4.0.0 last"));
        assert!(is_smtp_reply("421"));
        assert!(!is_smtp_reply("42"));
    }

    #[test]
    fn policies_parse_and_bad_ones_are_named() {
        for policy in [
            "\"require-ptr\"",
            "\"require-spf\"",
            "{ greylist = { key = \"prefix64\", for = \"5s\" } }",
            "{ rate = { limit = 2, per = \"10s\" } }",
        ] {
            let text = format!("{BASE}\n[[fault]]\non = \"mx1\"\npolicy = {policy}");
            assert!(parse(Path::new("s.toml"), &text).is_ok(), "{policy}");
        }
        let message = error_with("[[fault]]\non = \"mx1\"\npolicy = \"require-dkim\"");
        assert!(
            message.contains("require-ptr") && message.contains("greylist"),
            "{message}"
        );
        let message =
            error_with("[[fault]]\non = \"mx1\"\npolicy = { rate = { limit = 0, per = \"1s\" } }");
        assert!(message.contains("rate limit = 0"), "{message}");
        let message = error_with("[[fault]]\non = \"sut\"\npolicy = \"require-ptr\"");
        assert!(message.contains("cannot be on the SUT"), "{message}");
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

    #[test]
    fn route_relay_must_name_a_host() {
        let message = error_with("[route]\nrelay = \"smart\"");
        assert_eq!(
            message.lines().next(),
            Some("s.toml:16:9: route.relay names unknown host \"smart\": declare it as an [[mx]]; hosts: mx1")
        );
        assert!(message.contains("16 | relay = \"smart\""), "{message}");
        assert!(parse(
            Path::new("s.toml"),
            &format!("{BASE}\n[route]\nrelay = \"mx1\"")
        )
        .is_ok());
    }

    #[test]
    fn route_family_lists_must_not_be_empty() {
        for key in ["families", "bind"] {
            let message = error_with(&format!("[route]\n{key} = []"));
            assert!(message.contains("an empty family list"), "{key}: {message}");
        }
        let message = error_with("[route]\nfamilies = [\"ipv5\"]");
        assert!(message.contains("ipv5"), "{message}");
    }

    #[test]
    fn a_blocklist_needs_a_prefix_length() {
        let message =
            error_with("[[fault]]\non = \"mx1\"\npolicy = { blocklist = { ipv6-prefix = 129 } }");
        assert!(message.contains("give 1 to 128"), "{message}");
        let message =
            error_with("[[fault]]\non = \"mx1\"\npolicy = { blocklist = { prefix = 64 } }");
        assert!(message.contains("ipv6-prefix"), "{message}");
    }
}
