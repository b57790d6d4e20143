//! SPF (RFC 7208) of the envelope sender, evaluated by mail-auth.

use std::fmt;
use std::net::IpAddr;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};

/// An SPF result, named as in RFC 7208 §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spf {
    /// `pass`.
    Pass,
    /// `fail` (`-all`).
    Fail,
    /// `softfail` (`~all`).
    SoftFail,
    /// `neutral` (`?all`).
    Neutral,
    /// `none`: no SPF record (or no domain to check).
    None,
    /// `temperror`: a DNS failure.
    TempError,
    /// `permerror`: a broken record.
    PermError,
}

impl From<SpfResult> for Spf {
    fn from(result: SpfResult) -> Self {
        match result {
            SpfResult::Pass => Spf::Pass,
            SpfResult::Fail => Spf::Fail,
            SpfResult::SoftFail => Spf::SoftFail,
            SpfResult::Neutral => Spf::Neutral,
            SpfResult::TempError => Spf::TempError,
            SpfResult::PermError => Spf::PermError,
            SpfResult::None => Spf::None,
        }
    }
}

impl fmt::Display for Spf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Spf::Pass => "pass",
            Spf::Fail => "fail",
            Spf::SoftFail => "softfail",
            Spf::Neutral => "neutral",
            Spf::None => "none",
            Spf::TempError => "temperror",
            Spf::PermError => "permerror",
        })
    }
}

/// One SPF evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpfOutcome {
    ip: IpAddr,
    helo: String,
    /// The MAIL FROM address (empty for the null sender).
    sender: String,
    /// The domain checked.
    domain: String,
    result: Spf,
    /// Why, when there is more to say (a DNS failure; the record's explanation).
    detail: Option<String>,
}

impl SpfOutcome {
    /// A `temperror` for a lookup that could not be made.
    pub(crate) fn temp_error(ip: IpAddr, helo: &str, sender: &str, why: &str) -> Self {
        Self {
            ip,
            helo: helo.to_string(),
            sender: sender.to_string(),
            domain: domain_of(helo, sender).to_string(),
            result: Spf::TempError,
            detail: Some(why.to_string()),
        }
    }

    /// Whether this is the evaluation for these identities.
    pub(super) fn is_for(&self, ip: IpAddr, helo: &str, sender: &str) -> bool {
        self.ip == ip && self.helo == helo && self.sender.eq_ignore_ascii_case(sender)
    }

    /// The note and, if refused, the reply of an SPF policy.
    pub(super) fn decide(&self, reject_softfail: bool) -> (String, Option<String>) {
        let Self {
            ip,
            helo,
            sender,
            domain,
            result,
            detail,
        } = self;
        let identity = if sender.is_empty() {
            format!("<> (helo {helo})")
        } else {
            format!("<{sender}>")
        };
        let detail = detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let what = format!("spf {identity} from {ip}: {result} for {domain}{detail}");
        let shown = if sender.is_empty() {
            format!("postmaster@{helo}")
        } else {
            sender.clone()
        };
        match result {
            Spf::Fail | Spf::SoftFail if *result == Spf::Fail || reject_softfail => (
                format!("{what}, 550 at MAIL"),
                Some(format!(
                    "550 5.7.23 <{shown}>: Sender address rejected: SPF {result}: {ip} is not \
                     allowed to send mail for {domain} (mxlab)"
                )),
            ),
            Spf::TempError => (
                format!("{what}, 451 at MAIL"),
                Some(format!(
                    "451 4.7.24 <{shown}>: SPF temperror for {domain}: temporary DNS failure \
                     (mxlab)"
                )),
            ),
            _ => (format!("{what}, passed"), None),
        }
    }
}

/// The domain SPF checks: the sender's, or the HELO name's for the null sender.
fn domain_of<'a>(helo: &'a str, sender: &'a str) -> &'a str {
    match sender.rsplit_once('@') {
        Some((_, domain)) if !sender.is_empty() => domain,
        _ => helo,
    }
}

/// The SPF check of the MAIL FROM identity (the HELO identity for the null sender), as seen
/// by the receiving host `host`.
pub(super) fn parameters<'x>(
    ip: IpAddr,
    helo: &'x str,
    sender: &'x str,
    host: &'x str,
) -> SpfParameters<'x> {
    if sender.is_empty() {
        SpfParameters::verify_ehlo(ip, helo, host)
    } else {
        SpfParameters::verify_mail_from(ip, helo, host, sender)
    }
}

/// Evaluates SPF for the MAIL FROM identity (the HELO identity for the null sender).
pub(super) async fn check(
    authenticator: &MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    sender: &str,
    host: &str,
) -> SpfOutcome {
    let output = authenticator
        .verify_spf(parameters(ip, helo, sender, host))
        .await;
    let result = Spf::from(output.result());
    SpfOutcome {
        ip,
        helo: helo.to_string(),
        sender: sender.to_string(),
        domain: if output.domain().is_empty() {
            domain_of(helo, sender).to_string()
        } else {
            output.domain().to_string()
        },
        result,
        detail: output.explanation().map(str::to_string),
    }
}
