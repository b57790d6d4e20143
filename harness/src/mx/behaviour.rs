//! What a listener does: its greeting, scripted replies per SMTP stage, the extensions it
//! advertises, EHLO padding, and TLS.

use std::fmt;
use std::time::Duration;

use super::policy::Policy;
use super::stage::SmtpStage;
use super::tls::TlsMode;
use crate::activation::Activation;

/// What the server does at a stage instead of its normal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageAction {
    /// Send this reply instead of the normal one: any code, enhanced code and text, sent
    /// verbatim; `\n` separates the lines of a multi-line reply (write the `-` continuation
    /// markers yourself). The code decides what happens next, as for a real server: a 2xx
    /// MAIL starts the transaction and a 2xx RCPT adds the recipient, anything else does not;
    /// a 3xx DATA reply starts the content, anything else leaves the transaction as it was;
    /// an end-of-data reply stores the message only if it is 2xx; a 2xx STARTTLS reply starts
    /// the handshake; QUIT closes whatever the reply.
    Reply(String),
    /// Say nothing at this stage and from then on: the connection stays open (what the client
    /// sends is logged but not answered) until the client closes or the idle timeout passes
    /// (then the server closes without a reply). A stall at end of data stores nothing.
    Stall,
    /// Close the connection at this stage without a reply (replies to earlier pipelined
    /// commands are still sent). A disconnect at end of data stores nothing.
    Disconnect,
    /// Send the normal reply, but trickle it at this many bytes per second (0 counts as 1).
    Slow {
        /// The rate.
        bytes_per_second: u32,
    },
    /// Abort the connection with a TCP reset (RST, no FIN) at this stage, without a reply. A
    /// reset at end of data stores nothing.
    Reset,
    /// At end of data only: store the message, then lose the reply — the duplicate-delivery
    /// window of RFC 1047, where the server has the message but the client never hears so.
    AcceptThen(Cut),
}

/// How a reply is lost after the message was stored ([`StageAction::AcceptThen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A TCP reset instead of the `250`.
    Reset,
    /// A close (FIN) instead of the `250`.
    Disconnect,
    /// Silence: no `250`, the connection stays open until the client gives up (or the idle
    /// timeout passes).
    Stall,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cut::Reset => "reset",
            Cut::Disconnect => "disconnect",
            Cut::Stall => "silence",
        })
    }
}

/// A scripted behaviour at one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRule {
    /// Where it acts.
    pub stage: SmtpStage,
    /// What it does.
    pub action: StageAction,
    /// For [`SmtpStage::Rcpt`] only: act only on RCPTs for this address (compared without
    /// regard to case). `None` acts on every RCPT. Ignored at other stages.
    pub recipient: Option<String>,
    /// Which sessions of the listener the rule applies to: those starting inside the window
    /// on the scenario clock, and only the listener's first N sessions.
    pub when: Activation,
}

impl StageRule {
    /// A rule acting at `stage` (for every recipient, at RCPT).
    pub fn new(stage: SmtpStage, action: StageAction) -> Self {
        Self {
            stage,
            action,
            recipient: None,
            when: Activation::ALWAYS,
        }
    }

    /// A rule acting on RCPTs for `recipient` only.
    pub fn for_recipient(recipient: &str, action: StageAction) -> Self {
        Self {
            stage: SmtpStage::Rcpt,
            action,
            recipient: Some(recipient.to_string()),
            when: Activation::ALWAYS,
        }
    }

    /// Whether the rule acts at `stage` (for RCPT: for `recipient`).
    pub(crate) fn matches(&self, stage: SmtpStage, recipient: Option<&str>) -> bool {
        let same = match (self.stage, stage) {
            (SmtpStage::Content { .. }, SmtpStage::Content { .. }) => true,
            (ours, theirs) => ours == theirs,
        };
        if !same {
            return false;
        }
        match (&self.recipient, stage, recipient) {
            (Some(wanted), SmtpStage::Rcpt, Some(got)) => wanted.eq_ignore_ascii_case(got),
            (Some(_), SmtpStage::Rcpt, None) => false,
            _ => true,
        }
    }
}

/// The ESMTP extensions a listener advertises in its EHLO reply. Switching one off also makes
/// the server refuse its parameters with `555` (`BODY=8BITMIME`, `SIZE=`, `SMTPUTF8`,
/// `RET=`/`ENVID=`/`NOTIFY=`/`ORCPT=`) and, for ENHANCEDSTATUSCODES, drops the enhanced codes
/// from the server's own replies (scripted replies are sent as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// `PIPELINING` (advertisement only: pipelined input is always handled).
    pub pipelining: bool,
    /// `8BITMIME`.
    pub eightbitmime: bool,
    /// `SIZE <max_message>`. The size limit itself applies either way.
    pub size: bool,
    /// `STARTTLS`; advertised and accepted only if the listener's [`TlsMode`] is not `Off`.
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES`.
    pub enhancedstatuscodes: bool,
    /// `DSN` (the parameters are accepted and ignored).
    pub dsn: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
}

impl Default for Extensions {
    /// Everything on except `DSN` (and `STARTTLS` only shows when TLS is configured).
    fn default() -> Self {
        Self {
            pipelining: true,
            eightbitmime: true,
            size: true,
            starttls: true,
            enhancedstatuscodes: true,
            dsn: false,
            smtputf8: true,
        }
    }
}

/// How one listener (one address family of one MX host) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerBehaviour {
    /// The greeting reply, e.g. `220 mx1.example.test ESMTP mxlab` (default) or
    /// `421 4.3.2 Service not available` (then the server closes after sending it) or a 5xx
    /// (then it answers 503 to everything but QUIT until QUIT). Sent verbatim; `\n` separates
    /// the lines of a multi-line greeting (write the `220-` continuation markers yourself).
    /// A [`SmtpStage::Greeting`] rule takes precedence.
    pub greeting: String,
    /// Scripted behaviour, checked in order: at each stage the first rule whose stage (and,
    /// for RCPT, recipient) matches acts. Rules act only on commands that pass the sequence
    /// and syntax checks (a RCPT without a successful MAIL still gets `503`); they take
    /// precedence over the server's own policy replies (size and recipient limits).
    pub rules: Vec<StageRule>,
    /// Advertised extensions.
    pub extensions: Extensions,
    /// Pad the EHLO reply with `250-X-MXLAB-PAD-...` lines (after the hostname line) so the
    /// whole reply is about this many bytes on the wire (at least this many, less than 18
    /// more). `None`: no padding.
    pub ehlo_pad_to: Option<usize>,
    /// STARTTLS and the certificate offered.
    pub tls: TlsMode,
    /// Receiving-side policies (greylisting, PTR and SPF checks, rate limits), checked in
    /// order at the stages where they act; scripted [`rules`](Self::rules) that reply, stall
    /// or disconnect take precedence. See [`super::policy`].
    pub policies: Vec<Policy>,
}

impl ListenerBehaviour {
    /// A well-behaved server: `220 <hostname> ESMTP mxlab`, no rules, default extensions, no
    /// padding, no TLS, no policies.
    pub fn normal(hostname: &str) -> Self {
        Self {
            greeting: format!("220 {hostname} ESMTP mxlab"),
            rules: Vec::new(),
            extensions: Extensions::default(),
            ehlo_pad_to: None,
            tls: TlsMode::Off,
            policies: Vec::new(),
        }
    }

    /// The behaviour for one session: the listener's `ordinal`-th (from 1), starting at
    /// `elapsed` on the scenario clock; rules that do not cover it are left out.
    pub fn for_session(&self, ordinal: u32, elapsed: Duration) -> ListenerBehaviour {
        ListenerBehaviour {
            rules: self
                .rules
                .iter()
                .filter(|rule| rule.when.covers(ordinal, elapsed))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// Whether some rule applies to some sessions only.
    pub fn has_timed_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.when != Activation::ALWAYS)
    }

    /// The action of the first rule matching `stage` (and `recipient`, at RCPT).
    pub(crate) fn action(&self, stage: SmtpStage, recipient: Option<&str>) -> Option<&StageAction> {
        self.rules
            .iter()
            .find(|rule| rule.matches(stage, recipient))
            .map(|rule| &rule.action)
    }

    /// The first content rule: after how many content bytes it acts, and how.
    pub(crate) fn content_cut(&self) -> Option<(usize, &StageAction)> {
        self.rules.iter().find_map(|rule| match rule.stage {
            SmtpStage::Content { after_bytes } => Some((after_bytes, &rule.action)),
            _ => None,
        })
    }

    /// Whether STARTTLS is advertised and accepted.
    pub(crate) fn offers_starttls(&self) -> bool {
        self.extensions.starttls && self.tls != TlsMode::Off
    }
}

#[cfg(test)]
mod activation_tests {
    use super::*;

    #[test]
    fn a_session_gets_only_the_rules_that_cover_it() {
        let mut behaviour = ListenerBehaviour::normal("mx1.example.test");
        let mut first_only = StageRule::new(SmtpStage::Greeting, StageAction::Disconnect);
        first_only.when.first = Some(1);
        behaviour.rules.push(first_only);
        behaviour
            .rules
            .push(StageRule::new(SmtpStage::Quit, StageAction::Disconnect));
        assert!(behaviour.has_timed_rules());
        assert_eq!(behaviour.for_session(1, Duration::ZERO).rules.len(), 2);
        let later = behaviour.for_session(2, Duration::ZERO);
        assert_eq!(later.rules.len(), 1);
        assert_eq!(later.rules[0].stage, SmtpStage::Quit);
    }
}
