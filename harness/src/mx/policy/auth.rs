//! SPF, DKIM and DMARC of a received message (RFC 7208, RFC 6376, RFC 7489), evaluated by
//! mail-auth against the scenario DNS, as a receiving MX records them in its
//! Authentication-Results header (RFC 8601).

use std::net::IpAddr;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, MessageAuthenticator};

use super::spf::Spf;

/// The three results of one message, each the RFC 8601 result word (`pass`, `fail`,
/// `softfail`, `neutral`, `none`, `temperror`, `permerror`), with the detail mail-auth gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthResults {
    /// SPF of the MAIL FROM identity (the HELO identity for the null sender).
    pub(crate) spf: String,
    /// DKIM of the first signature (`none` when the message is not signed).
    pub(crate) dkim: String,
    /// DMARC of the RFC 5322 From domain (`none` when it publishes no DMARC record).
    pub(crate) dmarc: String,
}

impl AuthResults {
    /// Every result a `temperror` (the lookups could not be made).
    pub(crate) fn temp_error(why: &str) -> Self {
        let word = format!("temperror ({why})");
        Self {
            spf: word.clone(),
            dkim: word.clone(),
            dmarc: word,
        }
    }
}

/// The RFC 8601 result word of mail-auth's `Display` (`temp error; …` → `temperror`).
fn word(display: String) -> String {
    let (head, detail) = display
        .split_once(';')
        .map_or((display.as_str(), ""), |(h, d)| (h, d.trim()));
    let head = head.replace(' ', "");
    if detail.is_empty() {
        head
    } else {
        format!("{head} ({detail})")
    }
}

/// Authenticates `message`, received from `ip` after `HELO helo` and `MAIL FROM:<sender>`, at
/// the receiving host `host`.
pub(super) async fn check(
    authenticator: &MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    sender: &str,
    host: &str,
    message: &[u8],
) -> AuthResults {
    let spf_output = authenticator
        .verify_spf(super::spf::parameters(ip, helo, sender, host))
        .await;
    let spf = Spf::from(spf_output.result()).to_string();
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        return AuthResults {
            spf,
            dkim: "permerror (the message does not parse)".into(),
            dmarc: "permerror (the message does not parse)".into(),
        };
    };
    let dkim_output = authenticator.verify_dkim(&parsed).await;
    let dkim = dkim_output
        .first()
        .map_or_else(|| "none".to_string(), |o| word(o.result().to_string()));
    let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d);
    let dmarc_output = authenticator
        .verify_dmarc(DmarcParameters {
            message: &parsed,
            dkim_output: &dkim_output,
            dkim2_output: None,
            rfc5321_mail_from_domain: mail_from_domain,
            spf_output: &spf_output,
        })
        .await;
    AuthResults {
        spf,
        dkim,
        dmarc: word(dmarc_output.result().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::word;

    #[test]
    fn results_are_rfc_8601_words() {
        assert_eq!(word("pass".into()), "pass");
        assert_eq!(word("none".into()), "none");
        assert_eq!(word("temp error; dns".into()), "temperror (dns)");
        assert_eq!(word("fail; not aligned".into()), "fail (not aligned)");
    }
}
