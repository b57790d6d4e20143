//! Delivery to one recipient domain (RFC 5321 §5): MX lookup, address lookup, and a session
//! per address until every recipient is settled or the addresses run out.

use std::net::{IpAddr, SocketAddr};

use super::dns::{Lookup, Resolver};
use super::dsn::Failed;
use super::netio::NetIo;
use super::route::{self, MxHost};
use super::session::{self, Envelope, RcptResult, SessionConfig};
use super::settings::Settings;
use super::Logger;
use crate::bugs::{Bug, Bugs};
use crate::sut::SutRoute;

/// The SMTP port.
const SMTP_PORT: u16 = 25;

/// What became of one recipient in one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by an MX host: the description of where and the final reply.
    Delivered(String),
    /// A temporary failure: why.
    Deferred(String),
    /// A permanent failure, as the DSN will report it.
    Bounced(Failed),
}

/// Everything a delivery attempt needs.
#[derive(Debug, Clone)]
pub struct Deliverer {
    /// The stub resolver.
    pub resolver: Resolver,
    /// Sockets.
    pub net: NetIo,
    /// Settings.
    pub settings: Settings,
    /// Planted bugs.
    pub bugs: Bugs,
    /// The name for EHLO and the DSN's Reporting-MTA.
    pub hostname: String,
    /// The routing configuration (`[route]`): relay, family restriction, source addresses.
    pub route: SutRoute,
    /// STARTTLS, verifying against the lab's CA, when the lab has one.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Deliverer {
    /// Delivers `envelope` (whose recipients all belong to `domain`) once and says what became
    /// of each recipient.
    pub async fn deliver_domain(
        &self,
        domain: &str,
        envelope: Envelope<'_>,
        log: &Logger,
    ) -> Vec<(String, Outcome)> {
        let all = |outcome: Outcome| {
            envelope
                .recipients
                .iter()
                .map(|rcpt| (rcpt.clone(), outcome.clone()))
                .collect::<Vec<_>>()
        };
        let bounce_all = |status: &str, text: &str| {
            envelope
                .recipients
                .iter()
                .map(|rcpt| {
                    (
                        rcpt.clone(),
                        Outcome::Bounced(Failed::local(rcpt, status, text)),
                    )
                })
                .collect::<Vec<_>>()
        };
        let lookup = match &self.route.relay {
            Some(relay) => {
                log.line(format!("{domain}: relaying through {relay} (no MX lookup)"));
                Lookup::NoData
            }
            None => self.resolver.mx(domain).await,
        };
        let implicit = self.route.relay.as_deref().unwrap_or(domain);
        let hosts = match lookup {
            Lookup::Found(records) if route::is_null_mx(&records) => {
                let text = format!("{domain} has a null MX (RFC 7505): it accepts no mail");
                log.line(&text);
                return bounce_all("5.1.10", &text);
            }
            Lookup::Found(records) => {
                let hosts = route::order_mx(&records, self.bugs, super::random_u64());
                log.line(format!(
                    "{domain} MX: {}",
                    hosts
                        .iter()
                        .map(|h| format!("{} {}", h.preference, h.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                hosts
            }
            Lookup::NoData => {
                if self.route.relay.is_none() {
                    log.line(format!(
                        "{domain} has no MX record: trying its own addresses (RFC 5321 §5.1)"
                    ));
                }
                vec![MxHost {
                    name: implicit.to_ascii_lowercase(),
                    preference: 0,
                }]
            }
            Lookup::NxDomain => {
                let text = format!("domain {domain} does not exist (NXDOMAIN for MX)");
                log.line(&text);
                return bounce_all("5.1.2", &text);
            }
            Lookup::Failed(why) => {
                let text = format!("MX lookup for {domain} failed: {why}");
                log.line(&text);
                return all(Outcome::Deferred(text));
            }
        };

        let mut resolved: Vec<(MxHost, Vec<IpAddr>)> = Vec::new();
        let mut dns_trouble = Vec::new();
        for host in hosts {
            if self.bugs.has(Bug::NoCnameMx) {
                let alias = self
                    .resolver
                    .lookup(&host.name, hickory_proto::rr::RecordType::CNAME)
                    .await;
                if matches!(&alias, Lookup::Found(records) if !records.is_empty()) {
                    let text = format!("{} is an alias (CNAME): refused as an MX", host.name);
                    log.line(&text);
                    dns_trouble.push(text);
                    resolved.push((host, Vec::new()));
                    continue;
                }
            }
            let mut addresses = Vec::new();
            let families = route::families(self.settings.address_preference, self.bugs)
                .into_iter()
                .filter(|family| self.route.only.is_none_or(|only| only == *family));
            for family in families {
                match self.resolver.addresses(&host.name, family).await {
                    Lookup::Found(found) => {
                        log.line(format!(
                            "{} {}: {}",
                            host.name,
                            record_type(family),
                            found
                                .iter()
                                .map(IpAddr::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                        addresses.extend(found);
                    }
                    Lookup::NoData => {
                        log.line(format!("{} {}: none", host.name, record_type(family)))
                    }
                    Lookup::NxDomain => log.line(format!(
                        "{} {}: no such host (NXDOMAIN)",
                        host.name,
                        record_type(family)
                    )),
                    Lookup::Failed(why) => {
                        log.line(format!(
                            "{} {} lookup failed: {why}",
                            host.name,
                            record_type(family)
                        ));
                        dns_trouble.push(why);
                    }
                }
            }
            resolved.push((host, addresses));
        }
        let candidates = route::candidates(&resolved, self.settings.address_preference, self.bugs);
        if candidates.is_empty() {
            if dns_trouble.is_empty() {
                let names: Vec<&str> = resolved.iter().map(|(h, _)| h.name.as_str()).collect();
                let text = format!("no usable address for {}", names.join(", "));
                log.line(&text);
                return bounce_all("5.4.4", &text);
            }
            let text = format!("address lookup failed: {}", dns_trouble.join("; "));
            return all(Outcome::Deferred(text));
        }

        let config = SessionConfig {
            net: self.net,
            helo: &self.hostname,
            connect_timeout: self.settings.connect_timeout,
            reply_timeout: self.settings.reply_timeout,
            bugs: self.bugs,
            bind: &self.route.bind,
            tls: self.tls.as_ref(),
        };
        let mut pending: Vec<String> = envelope.recipients.to_vec();
        let mut results = Vec::new();
        let mut last_trouble = None;
        for candidate in &candidates {
            let outcome = session::deliver(
                &config,
                &candidate.host,
                SocketAddr::new(candidate.address, SMTP_PORT),
                Envelope {
                    recipients: &pending,
                    ..envelope
                },
                log,
            )
            .await;
            for (rcpt, result) in outcome.settled {
                pending.retain(|p| *p != rcpt);
                let outcome = match result {
                    RcptResult::Delivered(reply) => {
                        log.line(format!(
                            "delivered to <{rcpt}> via {}[{}]: {reply}",
                            candidate.host, candidate.address
                        ));
                        Outcome::Delivered(format!(
                            "{}[{}]: {reply}",
                            candidate.host, candidate.address
                        ))
                    }
                    RcptResult::Deferred(failure) => Outcome::Deferred(failure.describe()),
                    RcptResult::Bounced(failure) => {
                        log.line(format!("<{rcpt}> refused: {}", failure.describe()));
                        Outcome::Bounced(Failed::from_failure(&rcpt, &failure))
                    }
                };
                results.push((rcpt, outcome));
            }
            match outcome.try_next {
                Some(failure) if !pending.is_empty() => last_trouble = Some(failure.describe()),
                _ => break,
            }
        }
        if !pending.is_empty() {
            let why = format!(
                "every address failed; last: {}",
                last_trouble.unwrap_or_else(|| "no address tried".into())
            );
            for rcpt in pending {
                results.push((rcpt, Outcome::Deferred(why.clone())));
            }
        }
        results
    }
}

fn record_type(family: crate::family::Family) -> &'static str {
    match family {
        crate::family::Family::Ipv4 => "A",
        crate::family::Family::Ipv6 => "AAAA",
    }
}
